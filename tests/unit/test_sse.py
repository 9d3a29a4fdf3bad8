"""The sse_compat=openai normaliser: Azure's extra chunks go, everything else
stays byte for byte and in order, at every split of the stream."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azproxy.relay.sse import EVENT_END, MAX_HELD_BYTES, StreamNormaliser, droppable

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


@pytest.mark.parametrize(
    ("event", "drop"),
    [
        # The usage-only chunk azproxy asked for, however it is spaced.
        (b'data: {"choices":[],"usage":{"total_tokens":1}}\n\n', True),
        (b'data: {"choices": [], "usage": {"total_tokens": 1}}\n\n', True),
        (b'data: {"choices":[],"prompt_filter_results":[],"usage":{"a":1}}\n\n', True),
        # Every other chunk says "usage": null: kept.
        (b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\n\n', False),
        (b'data: {"choices":[],"usage":null}\n\n', False),
        # A usage object beside real choices is not the usage-only chunk.
        (b'data: {"choices":[{"delta":{}}],"usage":{"total_tokens":1}}\n\n', False),
        # Text about usage is not usage: quotes inside strings are escaped.
        (b'data: {"choices":[{"delta":{"content":"\\"usage\\":{"}}]}\n\n', False),
        (b'data: {"usage":{"total_tokens":1}}\n\n', False),  # no choices at all
        (b'data: {"usage":{"total_tokens":1}\n\n', False),  # not JSON
    ],
)
def test_droppable_when_azproxy_asked_for_the_usage(event: bytes, drop: bool) -> None:
    assert droppable(event, usage=True) is drop


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_the_usage_chunk_azproxy_asked_for_goes_and_nothing_else(name: str) -> None:
    stream = STREAMS[name]
    normaliser = StreamNormaliser(drop_usage=True)
    outputs = [normaliser.feed(event) for event, _ in stream]
    expected = [
        event if keep and b'"usage":{' not in event else b"" for event, keep in stream
    ]
    assert outputs == expected
    assert normaliser.flush() == b""


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    cuts = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in pairwise(cuts)]


def split_by(data: bytes, sizes: list[int]) -> list[bytes]:
    """Pieces of the given sizes, in turn, to the end of `data`."""
    pieces, start = [], 0
    for index in range(len(data)):
        if start >= len(data):
            break
        size = sizes[index % len(sizes)]
        pieces.append(data[start : start + size])
        start += size
    return pieces


# Cuts anywhere (a few big pieces) or everywhere (many small ones).
SPLITS = st.one_of(
    st.lists(st.integers(0, 10**6), max_size=8).map(lambda p: ("at", p)),
    st.lists(st.integers(1, 9), min_size=1, max_size=8).map(lambda s: ("by", s)),
)


def pieces_of(data: bytes, split: tuple[str, list[int]]) -> list[bytes]:
    how, numbers = split
    if how == "by":
        return split_by(data, numbers)
    return split_at(data, [n % (len(data) + 1) for n in numbers])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(STREAMS)), split=SPLITS)
def test_any_splits_keep_every_kept_byte(
    name: str, split: tuple[str, list[int]]
) -> None:
    stream = STREAMS[name]
    assert relay(pieces_of(whole(stream), split))[0] == kept(stream)


# Nothing to drop, events of every size, every line-ending style SSE allows,
# stray blank lines.
PLAIN = (
    b'data: {"choices":[{"delta":{"content":"a"},"index":0}]}\n\n\n'
    b"event: x\r\ndata: " + b"y" * 150 + b"\r\n\r\n\r"
    b": comment\r\rdata: [DONE]\n\n"
)


def check_passes_unchanged(pieces: list[bytes], cap: int) -> None:
    normaliser = StreamNormaliser(max_held=cap)
    out, fed = b"", b""
    for piece in pieces:
        out += normaliser.feed(piece)
        fed += piece
        assert normaliser.held_bytes <= cap
        # Never delayed: every event complete so far is out, and nothing else
        # but the start of an oversized one (passed on raw).
        complete = max((end.end() for end in EVENT_END.finditer(fed)), default=0)
        assert out.startswith(fed[:complete]) and fed.startswith(out)
    assert out + normaliser.flush() == fed


@settings(max_examples=500, deadline=None, derandomize=True)
@given(split=SPLITS, cap=st.sampled_from([20, 10**6]))
def test_output_is_the_input_at_any_split_under_any_cap(
    split: tuple[str, list[int]], cap: int
) -> None:
    check_passes_unchanged(pieces_of(PLAIN, split), cap)


@pytest.mark.parametrize("cap", [20, 10**6])
def test_output_is_the_input_at_every_three_way_split(cap: int) -> None:
    for first in range(len(PLAIN) + 1):
        for second in range(first, min(first + 12, len(PLAIN)) + 1):
            pieces = [PLAIN[:first], PLAIN[first:second], PLAIN[second:]]
            check_passes_unchanged(pieces, cap)


def test_a_huge_event_costs_what_it_holds_and_passes_through_whole() -> None:
    # 20 MB in one event, fed in 4 KiB pieces: held up to the cap, then
    # relayed raw as it comes. (Re-joining all it held on every piece took
    # seconds; a quadratic normaliser would not finish in the test timeout.)
    event = b'data: {"x":"' + b"a" * 20_000_000 + b'"}\n\n'
    normaliser = StreamNormaliser()
    out: list[bytes] = []
    for start in range(0, len(event), 4096):
        out.append(normaliser.feed(event[start : start + 4096]))
        assert normaliser.held_bytes <= MAX_HELD_BYTES
    out.append(normaliser.flush())
    assert b"".join(out) == event
    assert sum(map(len, out[: MAX_HELD_BYTES // 4096])) == 0  # held up to the cap


def test_an_oversized_droppable_event_passes_raw_and_filtering_resumes() -> None:
    small = AZURE_CHAT[0][0]  # droppable, and under the cap
    pad = b"p" * len(small)
    big = b'data: {"choices":[],"prompt_filter_results":[],"x":"' + pad + b'"}\n\n'
    content = AZURE_CHAT[1][0]
    data = big + small + content
    normaliser = StreamNormaliser(max_held=len(small) + 10)
    out = b"".join(normaliser.feed(data[i : i + 7]) for i in range(0, len(data), 7))
    assert out + normaliser.flush() == big + content


def test_slices_without_markers_pass_without_a_look_at_each_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 64 KiB slices of small events, each slice ending mid-event: the whole
    # events go on at once and the partial one is held, without a look at
    # each event (a Python loop over 600 events per slice).
    looked: list[bytes] = []

    def judged(event: bytes, usage: bool = False) -> bool:
        looked.append(event)
        return droppable(event, usage)

    monkeypatch.setattr("azproxy.relay.sse.droppable", judged)
    event = b'data: {"choices":[{"delta":{"content":"hello"},"index":0}]}\n\n'
    stream = event * (3 * 65536 // len(event))
    slices = [stream[start : start + 65536] for start in range(0, len(stream), 65536)]
    assert not slices[0].endswith(b"\n\n")
    normaliser = StreamNormaliser()
    out = [normaliser.feed(piece) for piece in slices]
    assert b"".join(out) + normaliser.flush() == stream
    # Every whole event as soon as its slice came, nothing of a partial one.
    given_out = arrived = 0
    for piece, output in zip(slices, out, strict=True):
        arrived += len(piece)
        given_out += len(output)
        assert given_out == arrived - arrived % len(event)
    # Only the events split between two slices, once whole.
    assert len(looked) <= len(slices)


def test_thousands_of_usage_objects_in_one_chunk_are_judged_in_one_pass() -> None:
    # Each usage object once sent the normaliser one call deeper: a hostile
    # upstream's single read of them raised RecursionError mid-stream.
    usage_event = b'data: {"usage":{"total_tokens":1}}\n\n'
    chunk = (b": keep-alive\n\n" + usage_event) * 3000
    ours = b'data: {"choices":[],"usage":{"total_tokens":9}}\n\n'
    normaliser = StreamNormaliser(drop_usage=True)
    assert normaliser.feed(chunk + ours + b"data: [DONE]\n\n") == (
        chunk + b"data: [DONE]\n\n"
    )
