from __future__ import annotations

import json
import logging
import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from azproxy.observe import access_log
from azproxy.observe.access_log import fields, json_line
from azproxy.observe.exchange import Exchange
from azproxy.observe.logging import JsonFormatter, utc_timestamp
from azproxy.observe.metrics import Metrics
from azproxy.observe.usage import UsageTail, estimate_tokens, usage_of

KEY = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        (
            b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,'
            b'"total_tokens":12}}',
            (5, 7, 12),
        ),
        (
            # nested details, and "usage" mentioned inside the answer text
            b'{"choices":[{"message":{"content":"\\"usage\\": 99"}}],"usage":'
            b'{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,'
            b'"prompt_tokens_details":{"cached_tokens":0}}}',
            (1, 2, 3),
        ),
        (
            # the Responses API's names
            b'{"usage":{"input_tokens":4,"output_tokens":6,"total_tokens":10}}',
            (4, 6, 10),
        ),
        (
            # a stream's last events
            b'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":'
            b'9,"total_tokens":17}}\n\ndata: [DONE]\n\n',
            (8, 9, 17),
        ),
        (b'{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":3}}', (3, 0, 3)),
        (b'{"choices":[]}', None),
        (b'{"usage": broken', None),
        (b"\x00\x01binary", None),
    ],
)
def test_usage_of(body: bytes, usage: tuple[int, int, int] | None) -> None:
    assert usage_of(body) == usage


@pytest.mark.parametrize(
    ("usage_text", "usage"),
    [
        # the last value of a name given twice, as a JSON parser keeps it
        (b'{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens":5}', (5, 2, 7)),
        # names inside nested objects are not the top level's
        (
            b'{"x":{"prompt_tokens":9},"prompt_tokens":1,"y":{"total_tokens":9}}',
            (1, 0, 1),
        ),
        (b'{"input_tokens":3,"output_tokens":4}', (3, 4, 7)),
        # prompt/completion win over input/output, even at 0
        (b'{"prompt_tokens":0,"input_tokens":3,"output_tokens":4}', (0, 4, 4)),
        (b'{ "prompt_tokens" :\n 2 ,\t"total_tokens": 9 }', (2, 0, 9)),
        # more than 18 digits is not read: the earlier value, or none
        (b'{"prompt_tokens":4,"prompt_tokens":1234567890123456789}', (4, 0, 4)),
        (b'{"prompt_tokens":123456789012345678}', (123456789012345678,) * 2 + (0,)),
        (b'{"prompt_tokens":12x,"total_tokens":-3}', (0, 0, 0)),
        (
            b'{"prompt_tokens_details":{"cached_tokens":1},"xprompt_tokens":5}',
            (0, 0, 0),
        ),
        # a null usage, nesting deeper than one level, an unfinished object
        (b"null", None),
        (b'{"a":{"b":{"c":1}},"prompt_tokens":1}', None),
        (b'{"prompt_tokens":1,' * 300, None),
    ],
)
def test_usage_reads_the_top_level_counts(
    usage_text: bytes, usage: tuple[int, int, int] | None
) -> None:
    if usage is not None and usage[1:] == (usage[0], 0):  # (n, n, 0): see row
        usage = (usage[0], 0, usage[0])
    assert usage_of(b'{"choices":[],"usage":' + usage_text + b"}") == usage
    event = b'data: {"choices":[],"usage":' + usage_text + b"}\n\ndata: [DONE]\n\n"
    assert usage_of(event) == usage


def test_a_usage_before_the_last_4096_bytes_is_not_looked_for() -> None:
    head = b'{"usage":{"prompt_tokens":1},"pad":"'
    assert usage_of(head + b"x" * 4000 + b'"}') == (1, 0, 1)
    assert usage_of(head + b"x" * 5000 + b'"}') is None


_NAMES = ["prompt", "completion", "total", "input", "output"]
_SPACE = st.sampled_from(["", " ", "\n", "\t "])


@st.composite
def usage_members(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A usage object's members: counts (some too long to read), other names,
    nested details holding count names, strings and nulls."""
    name = st.sampled_from([f"{n}_tokens" for n in _NAMES] + ["cached_tokens", "x"])
    value = st.one_of(
        st.integers(0, 10**25).map(str),
        st.builds(
            lambda inner, n: f'{{"{inner}":{n}}}',
            st.sampled_from([f"{n}_tokens" for n in _NAMES]),
            st.integers(0, 99),
        ),
        st.just("null"),
        st.text("abc _:,", max_size=5).map(lambda t: f'"{t}"'),
    )
    return draw(st.lists(st.tuples(name, value), max_size=8))


@settings(max_examples=300, deadline=None)
@given(members=usage_members(), space=_SPACE, stream=st.booleans())
def test_usage_is_what_a_parser_keeps_of_the_top_level_counts(
    members: list[tuple[str, str]], space: str, stream: bool
) -> None:
    text = "{" + ",".join(f'{space}"{k}"{space}:{space}{v}' for k, v in members) + "}"
    answer = f'{{"choices":[],"usage":{text}}}'.encode()
    if stream:
        answer = b"data: " + answer + b"\n\ndata: [DONE]\n\n"
    # The oracle: the last readable (at most 18 digits) value of each name.
    last: dict[str, int] = {}
    for name, value in members:
        if name.endswith("_tokens") and value.isdigit() and len(value) <= 18:
            last[name.removesuffix("_tokens")] = int(value)
    prompt = last["prompt"] if "prompt" in last else last.get("input", 0)
    completion = last["completion"] if "completion" in last else last.get("output", 0)
    total = last.get("total", prompt + completion)
    assert usage_of(answer) == (prompt, completion, total)


STREAM_END = (
    b'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":9,'
    b'"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 7, 64, 4096, 65536])
def test_the_usage_tail_finds_usage_however_the_answer_arrived(size: int) -> None:
    answer = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n' * 3000 + STREAM_END
    tail = UsageTail()
    for start in range(0, len(answer), size):
        tail.add(answer[start : start + size])
    assert tail.usage() == (8, 9, 17)


def chat_event(text: str) -> bytes:
    delta = {"content": text}
    document = {"choices": [{"delta": delta, "index": 0}], "usage": None}
    return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"


def test_an_estimate_counts_the_prompt_and_the_text_streamed() -> None:
    tail = UsageTail()
    for text in ["Hello", " wor", 'ld \\"quoted\\"']:
        tail.add(chat_event(text))
    # 5 + 4 + 18 bytes of text as sent (escapes included): 27 / 4 -> 7.
    assert tail.estimate(prompt_bytes=401) == (101, 7, 108)
    assert estimate_tokens(0) == 0 and estimate_tokens(1) == 1


@pytest.mark.parametrize("text", ["x", "four", "a much longer piece of text"])
def test_a_long_stream_is_estimated_from_its_last_bytes(text: str) -> None:
    # Far more than the window: its share of text, times every byte.
    tail = UsageTail()
    events = 5000
    for _ in range(events):
        tail.add(chat_event(text))
    _, completion, _ = tail.estimate(prompt_bytes=0)
    exact = estimate_tokens(events * len(text))
    assert exact * 0.95 <= completion <= exact * 1.05


def test_completions_text_tool_arguments_and_refusals_count() -> None:
    tail = UsageTail()
    tail.add(b'data: {"choices":[{"text":"abcd","index":0}]}\n\n')
    tail.add(b'data: {"choices":[{"delta":{"tool_calls":[{"function":')
    tail.add(b'{"arguments":"{\\"a\\":1}"}}]}}]}\n\n')
    tail.add(b'data: {"choices":[{"delta":{"refusal":"no"}}]}\n\n')
    tail.add(b'data: {"choices":[{"content_filter_results":{}}]}\n\n')
    assert tail.estimate(prompt_bytes=0)[1] == estimate_tokens(4 + 9 + 2)


def test_the_usage_tail_holds_little() -> None:
    tail = UsageTail()
    tracemalloc.start()
    try:
        for _ in range(10_000):
            tail.add(bytes(100))  # a million bytes, a new object each time
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 20_000
    assert tail.usage() is None


def test_json_log_lines_are_objects_and_redacted() -> None:
    record = logging.LogRecord(
        "azproxy.relay", logging.WARNING, __file__, 1, "key %s", (KEY,), None
    )
    line = JsonFormatter().format(record)
    document = json.loads(line)
    assert document["level"] == "warning"
    assert document["logger"] == "azproxy.relay"
    assert document["message"] == "key [redacted]"
    assert document["time"] == utc_timestamp(record.created)


_names = st.none() | st.text(max_size=80)
_times = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    method=st.text(max_size=10),
    path=st.text(max_size=40),
    request_id=st.text(max_size=40),
    model=_names,
    deployment=_names,
    endpoint=_names,
    caller=_names,
    numbers=st.tuples(
        st.integers(100, 599), st.none() | st.integers(100, 599), st.integers(0, 9)
    ),
    stream=st.booleans(),
    times=st.tuples(_times, st.none() | _times, _times),
    size=st.integers(0, 10**12),
    usage=st.none() | st.tuples(*[st.integers(0, 10**9)] * 3),
)
def test_a_json_access_line_is_json_dumps_of_its_fields(
    method: str,
    path: str,
    request_id: str,
    model: str | None,
    deployment: str | None,
    endpoint: str | None,
    caller: str | None,
    numbers: tuple[int, int | None, int],
    stream: bool,
    times: tuple[float, float | None, float],
    size: int,
    usage: tuple[int, int, int] | None,
) -> None:
    """json_line builds the text itself, for speed: byte for byte what the
    json module makes of the same fields, whatever the strings hold."""
    started, first_byte, end = times
    exchange = Exchange(method, path, started)
    exchange.model, exchange.deployment = model, deployment
    exchange.endpoint, exchange.caller = endpoint, caller
    status, exchange.upstream_status, exchange.attempts = numbers
    exchange.stream, exchange.first_byte = stream, first_byte
    exchange.bytes_out, exchange.usage = size, usage
    time_text = "2026-01-02T03:04:05.678Z"
    shown = fields(exchange, status, request_id, end, time_text)
    expected = json.dumps(shown, separators=(",", ":")) + "\n"
    assert json_line(exchange, status, request_id, end, time_text) == expected


def rendered(metrics: Metrics) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return generate_latest(registry).decode()


def label_values(text: str, label: str) -> set[str]:
    """The values `label` takes in azproxy_requests_total."""
    return {
        found.group(1)
        for line in text.splitlines()
        if line.startswith("azproxy_requests_total{")
        for found in [re.search(rf'{label}="([^"]*)"', line)]
        if found is not None
    }


def record(metrics: Metrics, model: str | None, deployment: str | None) -> None:
    exchange = Exchange("POST", "/v1/chat/completions", 0.0)
    exchange.model, exchange.deployment = model, deployment
    metrics.record(exchange, 200, 0.1)


def test_client_model_names_become_at_most_100_labels() -> None:
    metrics = Metrics({})
    for n in range(150):
        record(metrics, f"model-{n}", "dep")
    models = label_values(rendered(metrics), "model")
    assert models == {f"model-{n}" for n in range(100)} | {"other"}


def test_client_deployments_become_at_most_100_labels() -> None:
    # Pass-through tokens name any deployment that matches DEPLOYMENT_RE.
    metrics = Metrics({})
    for n in range(150):
        record(metrics, "gpt-4o", f"dep-{n}")
    deployments = label_values(rendered(metrics), "deployment")
    assert deployments == {f"dep-{n}" for n in range(100)} | {"other"}


@pytest.mark.parametrize(
    "model",
    [
        pytest.param("m" * 65, id="65-chars"),
        pytest.param("m" * 100_000, id="100k-chars"),
        pytest.param("gpt-4o\nazproxy_requests_total 1e9", id="newline"),
        pytest.param("a b", id="space"),
        pytest.param("gpt|4o", id="token-separator"),
        # MODEL_RE admits these; prometheus_client would print them raw.
        pytest.param("gpt-4o\x1b[2J", id="escape"),
        pytest.param("gpt\x00", id="nul"),
        pytest.param("gpt\x7f", id="delete"),
        pytest.param("gpt-\u202eo4", id="right-to-left-override"),
    ],
)
def test_models_that_are_not_names_are_labelled_other(model: str) -> None:
    metrics = Metrics({})
    record(metrics, model, "dep")
    record(metrics, "m" * 64, "dep")
    text = rendered(metrics)
    assert label_values(text, "model") == {"other", "m" * 64}
    assert len(text) < 20_000


def test_configured_names_stay_labels_when_clients_used_up_the_room() -> None:
    metrics = Metrics({}, models=["gpt-4o"], deployments=["gpt-4o-prod"])
    for n in range(150):
        record(metrics, f"guess-{n}", f"guess-{n}")
    record(metrics, "gpt-4o", "gpt-4o-prod")
    text = rendered(metrics)
    assert 'deployment="gpt-4o-prod",key="",model="gpt-4o",status="200"} 1.0' in text
    assert len(label_values(text, "model")) == 102  # 100 guesses, other, gpt-4o


def test_the_line_middles_the_access_log_keeps_are_bounded() -> None:
    for index in range(2000):  # a client varying its path, short and long
        exchange = Exchange(
            "POST", f"/v1/files/file-{index}" + "x" * (index % 3 * 40), 0.0
        )
        line = json.loads(json_line(exchange, 200, "id", 1.0, "t"))
        assert line["path"] == exchange.path
    kept = access_log._MIDDLES
    assert 0 < len(kept) <= access_log._MIDDLES_KEPT
    assert all(
        len(value) <= access_log._MIDDLE_CHARS
        for middle in kept
        for value in middle
        if isinstance(value, str)
    )
