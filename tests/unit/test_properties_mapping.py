"""Properties of `classify`, the first judge of a client's path, for any path.

tests/integration/test_properties_paths.py checks the other end: what Azure
receives for such paths, sent raw through the whole proxy.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from azproxy.errors import MethodNotAllowed, NotFound
from azproxy.relay.mapping import Scope, classify

# Words azproxy knows, ids, and everything a path can hide a trick in.
WORDS = [
    "chat",
    "completions",
    "embeddings",
    "audio",
    "transcriptions",
    "images",
    "edits",
    "files",
    "file-abc123",
    "content",
    "batches",
    "responses",
    "resp_1.2",
    "threads",
    "runs",
    "assistants",
    "vector_stores",
    "fine_tuning",
    "jobs",
    "uploads",
    "moderations",
    "deployments",
    "openai",
    "v1",
    "evil.example",
    "",
    ".",
    "..",
    "...",
    ".hidden",
    "%2e%2e",
    "%2F",
    "%5c",
    "a\\b",
    "..\\..",
    ";x=1",
    "@evil.example",
    "x:443",
    "?q=1",
    "#frag",
    " ",
    "\t",
    "\x00",
    "\u00e9",
    "\u0663",
    "a" * 300,
]
# Paths azproxy serves, into which the tricks go.
ROUTES = [
    "chat/completions",
    "embeddings",
    "audio/speech",
    "audio/transcriptions",
    "files",
    "files/file-abc123/content",
    "batches/batch_1/cancel",
    "responses/resp_1",
    "threads/thread_1/runs",
    "vector_stores",
]
tricks = st.sampled_from(WORDS) | st.sampled_from(WORDS) | st.text(max_size=8)
# A served path with up to three tricks put in anywhere (mostly after its
# first word, where they get past the first check), or tricks alone.
subpaths = st.builds(
    lambda route, words, at: "/".join([*route[:at], *words, *route[at:]]),
    st.sampled_from([r.split("/") for r in ROUTES]) | st.just([]),
    st.lists(tricks, min_size=1, max_size=3),
    st.integers(0, 3) | st.just(1) | st.just(3),
)
methods = st.sampled_from(["GET", "POST", "DELETE"] * 3 + ["PUT", "HEAD", "get"])


@settings(max_examples=300)
@given(method=methods, subpath=subpaths)
def test_a_path_is_refused_or_every_segment_is_plain(method: str, subpath: str) -> None:
    try:
        scope = classify(method, subpath)
    except (NotFound, MethodNotAllowed):
        return
    assert isinstance(scope, Scope)
    # Whatever is accepted goes into the upstream path as it is: no segment
    # may climb, be empty, or carry anything a URL would read differently.
    for segment in subpath.split("/"):
        assert segment not in ("", ".", "..")
        assert segment.isascii() and segment.isprintable()
        assert not set(segment) & set("%\\?#@:; /")
