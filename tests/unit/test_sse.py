"""The sse_compat=openai normaliser: Azure's extra chunks go, everything else
stays byte for byte and in order, at every split of the stream."""

from __future__ import annotations

import json

import pytest

from azproxy.sse import StreamNormaliser, droppable

CFR = (
    '{"hate":{"filtered":false,"severity":"safe"},'
    '"self_harm":{"filtered":false,"severity":"safe"}}'
)
# A recorded-shape Azure stream (asynchronous filter on, usage asked for):
# (event bytes, whether an OpenAI-compatible stream keeps it).
AZURE_CHAT = [
    (
        b'data: {"choices":[],"created":0,"id":"","model":"","object":"",'
        b'"prompt_filter_results":[{"prompt_index":0,"content_filter_results":'
        + CFR.encode()
        + b"}]}\n\n",
        False,
    ),
    (
        b'data: {"choices":[{"content_filter_results":{},"delta":{"content":"",'
        b'"refusal":null,"role":"assistant"},"finish_reason":null,"index":0,'
        b'"logprobs":null}],"created":1,"id":"chatcmpl-1","model":"gpt-4o",'
        b'"object":"chat.completion.chunk","system_fingerprint":"fp"}\n\n',
        True,
    ),
    (
        b'data: {"choices":[{"content_filter_results":{},"delta":{"content":'
        b'"The \\"prompt_filter_results\\" word"},"finish_reason":null,"index":0}],'
        b'"created":1,"id":"chatcmpl-1","model":"gpt-4o",'
        b'"object":"chat.completion.chunk"}\n\n',
        True,
    ),
    (
        b'data: {"choices":[{"content_filter_offsets":{"check_offset":0,'
        b'"start_offset":0,"end_offset":20},"content_filter_results":'
        + CFR.encode()
        + b',"finish_reason":null,"index":0}],"created":0,"id":"","model":"",'
        b'"object":""}\n\n',
        False,
    ),
    (
        b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1",'
        b'"type":"function","function":{"name":"f","arguments":""}}]},'
        b'"finish_reason":null,"index":0,"content_filter_offsets":{"check_offset":0,'
        b'"start_offset":0,"end_offset":20}}],"created":1,"id":"chatcmpl-1",'
        b'"model":"gpt-4o","object":"chat.completion.chunk"}\n\n',
        True,
    ),
    (
        b'data: {"choices":[{"content_filter_offsets":{"check_offset":20,'
        b'"start_offset":20,"end_offset":40},"content_filter_results":{"hate":'
        b'{"filtered":true,"severity":"high"}},"finish_reason":"content_filter",'
        b'"index":0}],"created":1,"id":"chatcmpl-1","model":"gpt-4o",'
        b'"object":"chat.completion.chunk"}\n\n',
        True,
    ),
    (
        b'data: {"choices":[],"created":1,"id":"chatcmpl-1","model":"gpt-4o",'
        b'"object":"chat.completion.chunk","prompt_filter_results":[],'
        b'"usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}\n\n',
        True,
    ),
    (b"data: [DONE]\n\n", True),
]
AZURE_COMPLETIONS = [
    (
        b'data: {"choices":[],"created":0,"id":"","model":"","object":"",'
        b'"prompt_filter_results":[{"prompt_index":0}]}\r\n\r\n',
        False,
    ),
    (
        b'data: {"choices":[{"content_filter_results":' + CFR.encode() + b","
        b'"finish_reason":null,"index":0,"logprobs":null,"text":"Hi"}],'
        b'"id":"cmpl-1","object":"text_completion"}\r\n\r\n',
        True,
    ),
    (
        b'data: {"choices":[{"content_filter_offsets":{"check_offset":0},'
        b'"content_filter_results":{},"finish_reason":null,"index":0}],'
        b'"id":"","object":""}\r\n\r\n',
        False,
    ),
    (
        b'data: {"choices":[{"finish_reason":"stop","index":0,"text":""}],'
        b'"id":"cmpl-1","object":"text_completion"}\r\n\r\n',
        True,
    ),
    (b"data: [DONE]\r\n\r\n", True),
]
STREAMS = {"chat": AZURE_CHAT, "completions": AZURE_COMPLETIONS}


def whole(stream: list[tuple[bytes, bool]]) -> bytes:
    return b"".join(event for event, _ in stream)


def kept(stream: list[tuple[bytes, bool]]) -> bytes:
    return b"".join(event for event, keep in stream if keep)


def relay(pieces: list[bytes]) -> tuple[bytes, list[bytes]]:
    normaliser = StreamNormaliser()
    outputs = [normaliser.feed(piece) for piece in pieces]
    return b"".join(outputs) + normaliser.flush(), outputs


def test_the_recording_is_valid_json_events() -> None:
    for stream in STREAMS.values():
        for event, _ in stream:
            data = event.split(b"data: ", 1)[1].strip()
            if data != b"[DONE]":
                json.loads(data)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_whole_stream_in_one_chunk(name: str) -> None:
    stream = STREAMS[name]
    assert relay([whole(stream)])[0] == kept(stream)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_each_event_in_its_own_chunk(name: str) -> None:
    stream = STREAMS[name]
    out, outputs = relay([event for event, _ in stream])
    assert out == kept(stream)
    # Never delayed: each kept event comes out of the feed that completed it.
    assert outputs == [event if keep else b"" for event, keep in stream]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_split_point(name: str) -> None:
    stream = STREAMS[name]
    data = whole(stream)
    for split in range(len(data) + 1):
        out, outputs = relay([data[:split], data[split:]])
        assert out == kept(stream), split
        # Never delayed: the first piece gave out every kept event it completed.
        complete, seen = b"", 0
        for event, keep in stream:
            seen += len(event)
            if seen > split:
                break
            complete += event if keep else b""
        assert outputs[0] == complete, split


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_three_way_splits(name: str) -> None:
    stream = STREAMS[name]
    data = whole(stream)
    step = 13
    for first in range(0, len(data), step):
        for second in range(first, len(data), step):
            out, _ = relay([data[:first], data[first:second], data[second:]])
            assert out == kept(stream), (first, second)


def test_byte_by_byte() -> None:
    data = whole(AZURE_CHAT)
    out, _ = relay([data[i : i + 1] for i in range(len(data))])
    assert out == kept(AZURE_CHAT)


def test_a_stream_without_azure_extras_passes_as_the_same_objects() -> None:
    normaliser = StreamNormaliser()
    chunk = b'data: {"choices":[{"delta":{"content":"x"},"index":0}]}\n\n'
    assert normaliser.feed(chunk) is chunk


def test_an_unterminated_last_event_is_flushed_at_the_end() -> None:
    normaliser = StreamNormaliser()
    assert normaliser.feed(b"data: [DONE]") == b""
    assert normaliser.flush() == b"data: [DONE]"
    assert normaliser.flush() == b""


@pytest.mark.parametrize(
    ("event", "drop"),
    [
        (b'data: {"choices":[],"prompt_filter_results":[]}\n\n', True),
        (b'data:{"choices":[],"prompt_filter_results":[]}\n\n', True),
        # usage asked for: kept even with prompt_filter_results beside it
        (b'data: {"choices":[],"prompt_filter_results":[],"usage":{"a":1}}\n\n', False),
        (b'data: {"choices":[],"usage":{"total_tokens":1}}\n\n', False),
        # one real choice among annotations: kept whole
        (
            b'data: {"choices":[{"content_filter_offsets":{},"index":0},'
            b'{"delta":{"content":"x"},"index":1}]}\n\n',
            False,
        ),
        (b'data: {"choices":[{"content_filter_offsets":{},"index":0}]}\n\n', True),
        (b'data: {"choices":[{"content_filter_offsets":{},"delta":{}}]}\n\n', False),
        (b'data: {"prompt_filter_results":[]}\n\n', False),  # no choices at all
        (b'data: {"content_filter_offsets" broken json\n\n', False),
        (b'event: x\ndata: "prompt_filter_results"\n\n', False),
        (b": comment\n\n", False),
    ],
)
def test_droppable(event: bytes, drop: bool) -> None:
    assert droppable(event) is drop
