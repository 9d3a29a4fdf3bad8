"""Streams: events are relayed as they arrive, intact, and failures are explicit."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from tests.conftest import BEARER, ProxyFactory
from tests.fakes import FakeAzure, sse_answer, sse_event

STREAM_BODY = b'{"model": "gpt-4o", "stream": true, "messages": []}'


def chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


async def test_each_event_reaches_the_client_before_azure_sends_the_next(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # Azure sends event 1, then waits until the test has read it through the
    # proxy. A relay that buffers would never deliver it: the test times out.
    gates = [asyncio.Event(), asyncio.Event()]
    events = [sse_event(chunk("one")), sse_event(chunk("two")), sse_event("[DONE]")]
    fake_azure.queue(sse_answer(events, gates=gates))
    response = await proxy.post(
        "/v1/chat/completions", data=STREAM_BODY, headers=BEARER
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    received = b""
    for index, gate in enumerate(gates):
        while not received.endswith(events[index]):
            received += await asyncio.wait_for(response.content.readany(), 2)
        gate.set()
    received += await response.content.read()
    assert received == b"".join(events)


async def test_forty_concurrent_streams_complete_intact(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    def events_for(n: int) -> list[bytes]:
        return [sse_event(chunk(f"s{n}-{i}")) for i in range(20)] + [
            sse_event("[DONE]")
        ]

    fake_azure.queue(*(sse_answer(events_for(n), delay_s=0.002) for n in range(40)))

    async def one() -> bytes:
        response = await proxy.post(
            "/v1/chat/completions", data=STREAM_BODY, headers=BEARER
        )
        assert response.status == 200
        body: bytes = await response.read()
        return body

    bodies = await asyncio.gather(*(one() for _ in range(40)))
    expected = {b"".join(events_for(n)) for n in range(40)}
    assert set(bodies) == expected


async def test_azure_dying_mid_stream_ends_with_an_error_event(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    events = [sse_event(chunk("partial")), sse_event(chunk(" answer"))]
    fake_azure.queue(sse_answer(events, then="abort"))
    response = await proxy.post(
        "/v1/chat/completions", data=STREAM_BODY, headers=BEARER
    )
    assert response.status == 200
    received = b""
    try:
        async for piece in response.content.iter_any():
            received += piece
    except aiohttp.ClientPayloadError:
        pass  # the connection ends without the chunked terminator: expected
    assert received.startswith(b"".join(events))
    tail = received[len(b"".join(events)) :]
    assert tail.startswith(b"data: ") and tail.endswith(b"\n\n")
    error = json.loads(tail[len(b"data: ") :])["error"]
    assert error["code"] == "upstream_stream_error"
    assert "incomplete" in error["message"]
    assert len(fake_azure.requests) == 1  # never retried after the first byte


async def test_the_stream_end_is_a_broken_transfer_not_a_clean_one(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(sse_answer([sse_event(chunk("x"))], then="abort"))
    response = await proxy.post(
        "/v1/chat/completions", data=STREAM_BODY, headers=BEARER
    )
    try:
        await response.read()
    except aiohttp.ClientPayloadError:
        return
    raise AssertionError("the stream ended cleanly after an upstream failure")


async def test_a_partial_event_does_not_swallow_the_error_event(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(sse_answer([b'data: {"choices": [{"del'], then="abort"))
    response = await proxy.post(
        "/v1/chat/completions", data=STREAM_BODY, headers=BEARER
    )
    received = b""
    try:
        async for piece in response.content.iter_any():
            received += piece
    except aiohttp.ClientPayloadError:
        pass
    events = received.split(b"\n\n")
    assert events[-1] == b""
    assert json.loads(events[-2][len(b"data: ") :])["error"]["code"]


async def test_idle_gap_longer_than_read_timeout_ends_with_a_timeout_event(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(read_timeout_s=0.2)
    fake_azure.queue(sse_answer([sse_event(chunk("x"))], then="hang"))
    started = time.monotonic()
    response = await proxy.post(
        "/v1/chat/completions", data=STREAM_BODY, headers=BEARER
    )
    received = b""
    try:
        async for piece in response.content.iter_any():
            received += piece
    except aiohttp.ClientPayloadError:
        pass
    assert time.monotonic() - started < 2
    last = received.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert json.loads(last[len(b"data: ") :])["error"]["code"] == "upstream_timeout"


async def test_client_disconnect_cancels_the_upstream_request(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    events = [sse_event(chunk(str(i))) for i in range(3)]
    fake_azure.queue(sse_answer(events, then="hang"))
    response = await proxy.post(
        "/v1/chat/completions", data=STREAM_BODY, headers=BEARER
    )
    await response.content.readany()
    response.close()  # the client goes away mid-stream
    gone = time.monotonic()
    await asyncio.wait_for(fake_azure.disconnected.wait(), 1.0)
    assert fake_azure.disconnected_at is not None
    assert fake_azure.disconnected_at - gone < 1.0


async def test_non_sse_body_cut_midway_is_not_relayed_as_complete(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # Audio arrives in pieces; Azure dies after two of them.
    fake_azure.queue(
        sse_answer(
            [b"\x00" * 1000, b"\x01" * 1000], content_type="audio/mpeg", then="abort"
        )
    )
    response = await proxy.post(
        "/v1/audio/speech", data=b'{"model": "tts"}', headers=BEARER
    )
    assert response.status == 200
    try:
        await response.read()
    except aiohttp.ClientPayloadError:
        return
    raise AssertionError("a cut binary body looked complete")
