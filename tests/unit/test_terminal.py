"""Each streaming family's last event, found in any split of the stream, and
never in text that only looks like it."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from azproxy.relay.jsonbody import JsonObject
from azproxy.relay.jsonshape import JsonBounds
from azproxy.relay.target import Outgoing
from azproxy.relay.terminal import (
    DONE,
    IN_PLACE_FROM,
    RESPONSE_END,
    RUN_END,
    StreamEnd,
    Terminal,
    asked_to_stream,
    terminal_for,
)


def event(data: Any, name: str | None = None, eol: bytes = b"\n") -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    head = b"event: " + name.encode() + eol if name else b""
    return head + b"data: " + text.encode() + eol + eol


def delta(text: str) -> bytes:
    return event({"choices": [{"index": 0, "delta": {"content": text}}]})


# A content delta whose text is every marker, with the line breaks around it:
# JSON escapes them (\n), so none of it is a line of the stream.
IMPOSTOR = delta(
    "\n\ndata: [DONE]\n\nevent: done\n\nevent: response.completed\n\n"
    'data: {"type":"response.failed"}\n\n'
)
CHAT = delta("Hel") + IMPOSTOR + delta("lo") + event("[DONE]")
RESPONSES = (
    event({"type": "response.created"}, "response.created")
    + event({"type": "response.output_text.delta", "delta": "[DONE]"}, "x")
    + event(
        {"type": "response.completed", "response": {"output": []}}, "response.completed"
    )
)
RUN = (
    event({"id": "run_1", "status": "queued"}, "thread.run.created")
    + event(
        {"delta": {"content": [{"text": {"value": "done"}}]}}, "thread.message.delta"
    )
    + event("[DONE]", "done")
)
WHOLE = {
    "chat": (DONE, CHAT),
    "responses": (RESPONSE_END, RESPONSES),
    "run": (RUN_END, RUN),
}


def complete_after(terminal: Terminal, pieces: list[bytes]) -> bool:
    end = StreamEnd(terminal)
    for piece in pieces:
        end.feed(piece)
    return end.complete


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_the_last_event_is_found_at_every_split_point(name: str) -> None:
    terminal, stream = WHOLE[name]
    for split in range(len(stream) + 1):
        assert complete_after(terminal, [stream[:split], stream[split:]]), split


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_a_stream_cut_anywhere_before_its_blank_line_is_incomplete(name: str) -> None:
    terminal, stream = WHOLE[name]
    # Cut anywhere up to and including the last event's first line end: no
    # blank line after the marker yet, whatever the split.
    for cut in range(len(stream) - 1):
        assert not complete_after(terminal, [stream[:cut]]), cut


# Chunks this large are searched where they are, not copied after the carry.
PADDING = IMPOSTOR * (IN_PLACE_FROM // len(IMPOSTOR) + 1)
TRAILER = b": keep-alive\n\n" * (IN_PLACE_FROM // 14 + 1)  # after the end


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_the_last_event_is_found_at_every_split_point_of_large_chunks(
    name: str,
) -> None:
    terminal, stream = WHOLE[name]
    for split in range(len(stream) + 1):
        first, second = PADDING + stream[:split], stream[split:] + TRAILER
        assert len(first) >= IN_PLACE_FROM and len(second) >= IN_PLACE_FROM
        assert complete_after(terminal, [first, second]), split
        # Cut before the last event's blank line: incomplete.
        if split < len(stream) - 1:
            assert not complete_after(terminal, [first]), split
            no_line_end = b"x" * IN_PLACE_FROM
            assert not complete_after(terminal, [first, no_line_end]), split


def test_a_large_chunk_is_not_copied() -> None:
    chunk = PADDING + delta("more")
    end = StreamEnd(DONE)
    end.feed(delta("a start"))
    tracemalloc.start()
    try:
        end.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not end.complete
    assert peak < len(chunk) // 4  # a seam and a carry, not carry + chunk


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(sorted(WHOLE)),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6),
)
def test_any_pieces(name: str, sizes: list[int]) -> None:
    terminal, stream = WHOLE[name]
    pieces, start, index = [], 0, 0
    while start < len(stream):
        pieces.append(stream[start : start + sizes[index % len(sizes)]])
        start += sizes[index % len(sizes)]
        index += 1
    assert complete_after(terminal, pieces)
    assert not complete_after(terminal, pieces[:-1]) or len(pieces[-1]) == 0


@pytest.mark.parametrize(
    ("terminal", "stream", "complete"),
    [
        (DONE, IMPOSTOR, False),
        (DONE, b"data:[DONE]\n\n", True),
        (DONE, b"data: [DONE]\r\n\r\n", True),
        (DONE, b"data: [DONE]\r\r", True),
        (DONE, b"data: [DONE]\n", False),  # the event is not whole yet
        (DONE, b"data: [DONE] \n\n", False),
        (DONE, b"xdata: [DONE]\n\n", False),
        (DONE, b'data: {"x": "[DONE]"}\n\n', False),
        (RESPONSE_END, IMPOSTOR, False),
        (RESPONSE_END, event({"type": "response.failed"}, "response.failed"), True),
        (RESPONSE_END, event({}, "response.incomplete"), True),
        # Without an event line, the data's leading "type" says it.
        (RESPONSE_END, b'data: {"type": "response.completed", "x": 1}\n\n', True),
        (RESPONSE_END, event({}, "response.completed.extra"), False),
        (RESPONSE_END, event({}, "response.in_progress"), False),
        # The last event is long: the stream is whole only after its end.
        (RESPONSE_END, b'event: response.completed\ndata: {"a": 1', False),
        (RUN_END, IMPOSTOR, False),
        (RUN_END, b"event:done\ndata: [DONE]\n\n", True),
        (RUN_END, event("[DONE]"), False),  # a run stream ends with event: done
        (RUN_END, event({}, "thread.run.step.done"), False),
    ],
)
def test_markers(terminal: Terminal, stream: bytes, complete: bool) -> None:
    assert complete_after(terminal, [stream]) is complete


@pytest.mark.parametrize(
    ("path", "terminal"),
    [
        ("/v1/chat/completions", DONE),
        ("/v1/completions", DONE),
        ("/v1/responses", RESPONSE_END),
        ("/v1/responses/resp_1", RESPONSE_END),
        ("/v1/threads/runs", RUN_END),
        ("/v1/threads/thread_1/runs", RUN_END),
        ("/v1/threads/thread_1/runs/run_1/submit_tool_outputs", RUN_END),
        ("/v1/threads/thread_1/runs/run_1", None),
        ("/v1/responses/resp_1/input_items", None),
        ("/v1/embeddings", None),
        ("/v1/audio/speech", None),
    ],
)
def test_families(path: str, terminal: Terminal | None) -> None:
    assert terminal_for(path) is terminal


BOUNDS = JsonBounds(64, 100_000, 1_000_000)


def outgoing(body: bytes, stream: object = None, *, parsed: bool = False) -> Outgoing:
    fields = JsonObject(None, None, 1, False, stream) if parsed else None
    return Outgoing(
        "POST", "chat/completions", CIMultiDictProxy(CIMultiDict()), None, body, fields
    )


@pytest.mark.parametrize(
    ("body", "asked"),
    [
        (b'{"model": "m", "stream": true}', True),
        (b'{"stream":true,"model":"m"}', True),
        (b'{"model": "m", "stream": false}', False),
        (b'{"model": "m"}', False),
        (b'{"model": "m", "metadata": {"stream": true}}', False),  # not the top level
        (b'{"content": "\\"stream\\": true"}', False),
        (b'{"stream": true', False),  # not JSON
        (b"[" * 100_000 + b'"stream": true', False),
    ],
)
def test_asked_to_stream_from_the_bytes(body: bytes, asked: bool) -> None:
    assert asked_to_stream(outgoing(body), BOUNDS) is asked


def test_asked_to_stream_from_the_parsed_document() -> None:
    # Parsed already (the model mattered): the bytes are not looked at again.
    assert asked_to_stream(outgoing(b"", True, parsed=True), BOUNDS)
    assert not asked_to_stream(
        outgoing(b'{"stream": true}', False, parsed=True), BOUNDS
    )
