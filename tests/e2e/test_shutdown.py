"""SIGTERM: stop accepting, 503 on open connections, let streams finish."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import BEARER, TOKEN
from tests.fakes import FakeAzure, sse_answer, sse_event
from tests.processes import Running, running

BODY = b'{"model": "gpt-4o", "stream": true, "messages": []}'


async def raw_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> bytes:
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head


async def wait_exit(server: Running, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while server.process.poll() is None:
        assert time.monotonic() < deadline, "azproxy did not exit"
        await asyncio.sleep(0.05)
    return server.process.returncode


async def test_sigterm_lets_running_streams_finish(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    events = [sse_event({"n": i}) for i in range(15)] + [sse_event("[DONE]")]
    fake_azure.queue(*(sse_answer(events, delay_s=0.1) for _ in range(3)))
    env = {"AZPROXY_UPSTREAM": fake_azure.url, "AZPROXY_SHUTDOWN_GRACE_S": "10"}
    with running(["serve", "--port", "0"], tmp_path / "log", env=env) as server:
        url = f"{server.url}/v1/chat/completions"
        # A keep-alive connection opened before the signal, idle at the time.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = await raw_request(
            reader, writer, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(int(head.split(b"Content-Length: ")[1].split()[0]))

        async with aiohttp.ClientSession() as session:
            responses = [
                await session.post(url, data=BODY, headers=BEARER) for _ in range(3)
            ]
            for response in responses:
                await response.content.readany()
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)

            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", server.port)
            head = await raw_request(
                reader,
                writer,
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode(),
            )
            assert head.startswith(b"HTTP/1.1 503")
            assert b"Connection: close" in head
            writer.close()

            for response in responses:
                rest = await response.read()
                assert rest.endswith(sse_event("[DONE]"))
        assert await wait_exit(server, 5) == 0
        assert "draining" in server.log()


async def test_streams_longer_than_the_grace_end_with_an_error_event(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    events = [sse_event({"n": i}) for i in range(40)]
    fake_azure.queue(sse_answer(events, delay_s=0.1))
    env = {"AZPROXY_UPSTREAM": fake_azure.url, "AZPROXY_SHUTDOWN_GRACE_S": "0.5"}
    with running(["serve", "--port", "0"], tmp_path / "log", env=env) as server:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{server.url}/v1/chat/completions", data=BODY, headers=BEARER
            ) as response,
        ):
            received = await response.content.readany()
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(aiohttp.ClientPayloadError):
                async for piece in response.content.iter_any():
                    received += piece
        assert await wait_exit(server, 5) == 0
        assert time.monotonic() - started < 3
        assert "shutdown grace of 0.5 s over" in server.log()
    # Whole events as Azure sent them, then the reason the stream stops.
    *relayed, last, end = received.split(b"\n\n")
    assert end == b"" and 1 < len(relayed) < len(events)
    assert [event + b"\n\n" for event in relayed] == events[: len(relayed)]
    error = json.loads(last.removeprefix(b"data: "))["error"]
    assert error["code"] == "service_unavailable"
    assert "shutting down" in error["message"]
    assert fake_azure.disconnected.is_set()  # and the Azure request is dropped
