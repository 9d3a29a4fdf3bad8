"""Properties of the sse_compat=openai normaliser at every split of a stream.

Streams are generated event by event, each with what it is (so whether an
OpenAI-compatible stream keeps it) as the module's docstring defines it:
Azure's prompt-filter-only first chunk and its delta-less annotation chunks
go, everything else stays byte for byte, in order, and is never delayed.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from azproxy.relay.sse import StreamNormaliser

ENDINGS = ["\n", "\r\n", "\r"]  # the line endings SSE allows
FILTER = {"hate": {"filtered": False, "severity": "safe"}}
OFFSETS = {"check_offset": 0, "start_offset": 0, "end_offset": 20}
# Text that looks like the markers the normaliser looks for.
texts = st.text(max_size=20) | st.sampled_from(
    ['"prompt_filter_results"', "content_filter_offsets", '"choices":[]', "\n\n"]
)


def chunk(choices: list[Any], **extra: Any) -> dict[str, Any]:
    document = {"id": "chatcmpl-1", "object": "chat.completion.chunk"}
    return document | {"choices": choices} | extra


@st.composite
def events(draw: st.DrawFn, drop_usage: bool = False) -> tuple[bytes, bool]:
    """One whole event and whether the normaliser keeps it (`drop_usage`:
    azproxy asked for the usage, so its usage-only chunk goes too)."""
    kind = draw(
        st.sampled_from(
            [
                "prompt_filter",
                "annotation",
                "content",
                "content_with_offsets",
                "finish_filtered",
                "usage",
                "usage_only",
                "content_usage_null",
                "text_completion",
                "done",
                "comment",
                "not_json",
                "no_choices",
            ]
        )
    )
    text = draw(texts)
    document: Any
    keep = True
    if kind == "prompt_filter":
        document = {"choices": [], "id": "", "prompt_filter_results": [FILTER]}
        keep = False
    elif kind == "annotation":
        choice: dict[str, Any] = {"index": 0, "finish_reason": None}
        choice["content_filter_offsets"] = OFFSETS
        document = {"id": "", "choices": [choice] * draw(st.integers(1, 2))}
        keep = False
    elif kind == "content":
        document = chunk([{"index": 0, "delta": {"content": text}}])
    elif kind == "content_with_offsets":
        document = chunk(
            [{"index": 0, "delta": {"content": text}, "content_filter_offsets": {}}]
        )
    elif kind == "finish_filtered":
        document = chunk(
            [
                {
                    "index": 0,
                    "finish_reason": "content_filter",
                    "content_filter_results": {},
                }
            ]
        )
    elif kind == "usage":
        # Asked for with stream_options.include_usage: kept if the client did.
        document = chunk([], prompt_filter_results=[], usage={"total_tokens": 5})
        keep = not drop_usage
    elif kind == "usage_only":
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        document = chunk([], usage=usage, note=text)
        keep = not drop_usage
    elif kind == "content_usage_null":
        # Every chunk of a stream asked for its usage: always kept.
        document = chunk([{"index": 0, "delta": {"content": text}}], usage=None)
    elif kind == "text_completion":
        completion = {"index": 0, "text": text, "content_filter_offsets": {}}
        document = {"id": "cmpl-1", "choices": [completion]}
    elif kind == "no_choices":
        document = {"prompt_filter_results": [], "note": text}
    if kind == "done":
        lines = ["data: [DONE]"]
    elif kind == "comment":
        lines = [": keep-alive " + text.replace("\r", "").replace("\n", "")]
    elif kind == "not_json":
        # Markers in a data line that is not JSON: not Azure's, so kept.
        lines = ['data: {"prompt_filter_results" ' + json.dumps(text)]
    else:
        compact = draw(st.booleans())
        separators = (",", ":") if compact else (", ", ": ")
        data = json.dumps(document, separators=separators, ensure_ascii=compact)
        space = draw(st.sampled_from(["data: ", "data:"]))
        lines = [space + data]
    if draw(st.booleans()):
        lines.insert(0, draw(st.sampled_from(["event: chunk", "id: 7", "retry: 10"])))
    ending = draw(st.sampled_from(ENDINGS))
    return "".join(line + ending for line in [*lines, ""]).encode(), keep


streams = st.lists(events(), max_size=8)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def relay(pieces: list[bytes], *, drop_usage: bool = False) -> list[bytes]:
    """What each feed gave out, and last what flush gave."""
    normaliser = StreamNormaliser(drop_usage=drop_usage)
    return [normaliser.feed(piece) for piece in pieces] + [normaliser.flush()]


@settings(max_examples=200)
@given(stream=streams, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_at_any_split_the_kept_events_come_out_whole_in_order_and_at_once(
    stream: list[tuple[bytes, bool]], cuts: list[int]
) -> None:
    check_at_every_split(stream, cuts, drop_usage=False)


@settings(max_examples=200)
@given(
    stream=st.lists(events(drop_usage=True), max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_the_usage_azproxy_asked_for_goes_at_any_split(
    stream: list[tuple[bytes, bool]], cuts: list[int]
) -> None:
    check_at_every_split(stream, cuts, drop_usage=True)


def check_at_every_split(
    stream: list[tuple[bytes, bool]], cuts: list[int], *, drop_usage: bool
) -> None:
    data = b"".join(event for event, _ in stream)
    pieces = splits(data, cuts)
    outputs = relay(pieces, drop_usage=drop_usage)
    assert b"".join(outputs) == b"".join(event for event, keep in stream if keep)
    # Never delayed: after each feed, out came every kept event that the
    # bytes so far complete (and nothing of one they do not).
    received = given_out = 0
    for piece, output in zip(pieces, outputs, strict=False):
        received += len(piece)
        given_out += len(output)
        end, complete = 0, 0
        for event, keep in stream:
            end += len(event)
            if end > received:
                break
            complete += len(event) if keep else 0
        assert given_out == complete
    assert outputs[-1] == b""  # nothing held at the end of whole events


# Any bytes at all, built from the pieces the normaliser reacts to.
FRAGMENTS = [
    b"data: ",
    b"data:",
    b'{"choices":[]',
    b',"prompt_filter_results":[]}',
    b'{"choices":[{"content_filter_offsets":{}}]}',
    b'"content_filter_offsets"',
    b'"usage":{}',
    b"[DONE]",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\r\n\r\n",
    b": x",
    b"\xff\xfe",
    b"}",
]
noise = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=6), max_size=30).map(
    b"".join
)


@settings(max_examples=200)
@given(data=noise, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_bytes_come_out_the_same_however_they_are_cut(
    data: bytes, cuts: list[int]
) -> None:
    whole = b"".join(relay([data]))
    assert b"".join(relay(splits(data, cuts))) == whole
    assert b"".join(relay([data[i : i + 1] for i in range(len(data))])) == whole
    assert len(whole) <= len(data)
