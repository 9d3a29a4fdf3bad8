"""Tables in different modules that must agree, checked against each other
over every path they can be asked about: a path one of them gains and the
other lacks fails here, not as a 500 or a stream cut for nothing."""

from __future__ import annotations

import itertools

from azproxy.relay.families import DEPLOYMENT_FAMILIES, RESOURCE_ROOTS, family_of
from azproxy.relay.mapping import (
    DEPLOYMENT_PATHS,
    UPLOAD_PATHS,
    Scope,
    classify,
    model_names_deployment,
)
from azproxy.relay.sse import NORMALISED_PATHS
from azproxy.relay.terminal import BY_PATH, DONE, RESPONSE_END, RUN_END, terminal_for

# Path words and ids of the resource calls that create runs and responses,
# and of their neighbours.
WORDS = [
    "threads",
    "thread_1",
    "runs",
    "run_1",
    "submit_tool_outputs",
    "steps",
    "cancel",
    "messages",
    "responses",
    "resp_1",
    "input_items",
    "assistants",
    "asst_1",
]
PATHS = [
    "/".join(words)
    for size in range(1, 6)
    for words in itertools.product(WORDS, repeat=size)
]


def test_every_path_classify_accepts_has_a_family() -> None:
    # family_of raising KeyError would be a 500 for a path that is served.
    for subpath in DEPLOYMENT_PATHS | UPLOAD_PATHS:
        assert classify("POST", subpath) in (Scope.DEPLOYMENT, Scope.UPLOAD)
        assert family_of(subpath) in DEPLOYMENT_FAMILIES
    for root in RESOURCE_ROOTS:
        for subpath in (root, f"{root}/obj_1", f"{root}/obj_1/more"):
            assert classify("GET", subpath) is Scope.RESOURCE
            assert family_of(subpath) not in DEPLOYMENT_FAMILIES


def test_the_normaliser_tidies_exactly_the_streams_that_end_with_done() -> None:
    # Both sse.py and terminal.py know chat's and completions' streams.
    assert {path for path, end in BY_PATH.items() if end is DONE} == NORMALISED_PATHS


def test_a_run_or_response_made_with_a_mapped_model_has_a_known_end() -> None:
    # model_names_deployment (mapping.py) and terminal_for (terminal.py) each
    # know which resource calls create a run or a response: a stream of one
    # must end with its family's terminal event, whatever model it names.
    seen = set()
    for subpath in PATHS:
        model = model_names_deployment("POST", subpath)
        end = terminal_for("/v1/" + subpath)
        if model and subpath.startswith("threads"):
            assert end is RUN_END, subpath
        if model and subpath.startswith("responses"):
            assert end is RESPONSE_END, subpath
        if end is RUN_END and not subpath.endswith("/submit_tool_outputs"):
            assert model, subpath  # a run is created with a deployment
        if end is RESPONSE_END and subpath == "responses":
            assert model, subpath
        seen.add((model, end))
    # Every kind was met, so the checks above did check something.
    assert {(True, RUN_END), (True, RESPONSE_END), (False, RUN_END)} <= seen
