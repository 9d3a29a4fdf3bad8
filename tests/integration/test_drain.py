"""Shutdown past its grace: streams still running end with an explicit error
event and a closed connection, before the runner cleans up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from aiohttp import web

from azproxy import Config, create_app
from azproxy.front.lifecycle import Lifecycle, drain
from azproxy.server.runner import bound_port, start_site
from tests.conftest import TOKEN
from tests.fakes import FakeAzure, sse_answer, sse_event

CHAT_BODY = b'{"model": "gpt-4o", "stream": true, "messages": []}'


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """A chunked body's data, and whether it ended with the terminator."""
    data = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            return data, True
        data, body = data + rest[:length], rest[length + 2 :]
    return data, False


async def test_streams_running_when_the_grace_is_over_end_with_an_error_event(
    make_config: Callable[..., Config], fake_azure: FakeAzure
) -> None:
    never, headers_later = asyncio.Event(), asyncio.Event()
    events = [sse_event({"n": 1}), sse_event({"n": 2})]
    streaming = sse_answer(events, gates=[never])

    async def late(request: web.Request) -> web.StreamResponse:
        await headers_later.wait()  # answers only once the grace is over
        return await streaming(request)

    fake_azure.queue(streaming, late)
    runner = await start_site(create_app(make_config()), "127.0.0.1", 0)
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {TOKEN}\r\n".encode()
        + f"Content-Length: {len(CHAT_BODY)}\r\n\r\n".encode()
        + CHAT_BODY
    )
    clients = []
    try:
        for expected in (1, 2):  # one streaming, one waiting for Azure
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", bound_port(runner)
            )
            writer.write(request)
            clients.append((reader, writer))
            while len(fake_azure.requests) < expected:
                await asyncio.sleep(0.01)
        await drain(runner, 0.2)
        headers_later.set()
        for reader, _ in clients:
            answer = await asyncio.wait_for(reader.read(), 5)  # to the close
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            data, terminated = dechunk(body)
            assert not terminated
            # What Azure sent before the grace was over, then the error event.
            assert data.startswith(events[0] + b"data: ") and data.endswith(b"\n\n")
            error = json.loads(data[len(events[0]) + len(b"data: ") :])["error"]
            assert error["code"] == "service_unavailable"
            assert "shutting down" in error["message"]
    finally:
        for _, writer in clients:
            writer.close()
        await runner.cleanup()


async def test_the_drain_wait_ends_when_the_last_request_leaves() -> None:
    state = Lifecycle()
    await asyncio.wait_for(state.wait_idle(), 1)  # none in flight: at once
    state.enter()
    state.enter()
    waiting = asyncio.ensure_future(state.wait_idle())
    await asyncio.sleep(0)
    state.leave()
    await asyncio.sleep(0)
    assert not waiting.done()
    state.leave()
    await asyncio.wait_for(waiting, 1)
    # A wait given up on (the grace ran out) leaves nothing for leave() to trip on.
    state.enter()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(state.wait_idle(), 0.01)
    state.leave()
    assert state.in_flight == 0


async def test_a_wait_that_gives_up_leaves_another_waiting() -> None:
    state = Lifecycle()
    state.enter()
    patient = asyncio.ensure_future(state.wait_idle())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(state.wait_idle(), 0.01)
    assert not patient.done()
    state.leave()
    await asyncio.wait_for(patient, 1)
