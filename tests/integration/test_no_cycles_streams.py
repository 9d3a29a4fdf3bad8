"""Bodies relayed as they arrive leave nothing in reference cycles when they
break (as test_no_cycles.py checks for bodies read whole): an upload the
client stops or leaves, an answer Azure cuts or stops sending, a client that
leaves mid-answer. Each reader (the client's, Azure's) keeps the error it
raised; its traceback must not hold the frames that hold the request."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AZURE_KEY, BEARER, ProxyFactory
from tests.cycles import collector_off, finished, held
from tests.fakes import FakeAzure, hang_answer, sse_answer, sse_event
from tests.forms import CONTENT_TYPE, field, file_part, form
from tests.rawhttp import Conn

__all__ = ["collector_off"]  # the fixture, used by name

SIZE = 1_000_000
BODY = b'{"model": "gpt-4o", "stream": true, "input": "' + b"x" * SIZE + b'"}'
# One deployment: the upload streams through with its model field unread.
UPLOAD = {
    "Authorization": f"Bearer myresource:dep-one:{AZURE_KEY}",
    "Content-Type": CONTENT_TYPE,
}
FORM = form(field("model", "whisper"), file_part(b"x" * 2 * SIZE))
EVENTS = [
    sse_event({"choices": [{"index": 0, "delta": {"content": word}}]})
    for word in ("one", "two")
]


async def upload_half(proxy: TestClient[Any, Any]) -> tuple[Conn, bytes]:
    """An upload that has sent half its form (what it sent, to keep it
    apart from the proxy's own copies)."""
    client = await Conn.to(proxy)
    await client.send_head("POST", "/v1/audio/transcriptions", UPLOAD, len(FORM))
    half = FORM[: len(FORM) // 2]
    await client.send(half)
    return client, half


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancelled", "read-fails"])
async def test_an_upload_that_breaks_off_is_in_no_cycle(
    proxy_for: ProxyFactory,
    fake_azure: FakeAzure,
    collector_off: list[object],
    cancelled: bool,
) -> None:
    proxy = await proxy_for()
    proxy.server.runner.server.handler_cancellation = cancelled
    fake_azure.queue(hang_answer())
    client, half = await upload_half(proxy)
    await asyncio.sleep(0.2)  # on its way to Azure (a failure would pass)
    client.writer.transport.abort()  # the client leaves mid-upload
    await finished(proxy)
    assert held(collector_off, proxy, FORM, half) == []


async def test_an_upload_that_stops_is_408_and_in_no_cycle(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await proxy_for(client_body_timeout_s=0.2)
    fake_azure.queue(hang_answer())
    client, half = await upload_half(proxy)
    answer = await client.answer()
    assert answer.status == 408
    assert answer.error()["code"] == "request_timeout"
    client.close()
    await finished(proxy)
    assert held(collector_off, proxy, FORM, half) == []


async def read_until_cut(response: aiohttp.ClientResponse) -> bytes:
    """What the client got of an answer the proxy cut (no chunked ending)."""
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in response.content.iter_any():
            received += chunk
    response.close()
    return received


@pytest.mark.parametrize(
    ("then", "code"),
    [("abort", "upstream_stream_error"), ("hang", "upstream_timeout")],
    ids=["azure-breaks", "azure-stops"],
)
async def test_a_stream_azure_cuts_is_in_no_cycle(
    proxy_for: ProxyFactory,
    fake_azure: FakeAzure,
    collector_off: list[object],
    then: str,
    code: str,
) -> None:
    proxy = await proxy_for(read_timeout_s=0.2)
    fake_azure.queue(sse_answer(EVENTS, then=then))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 200
    received = await read_until_cut(response)
    assert received.startswith(b"".join(EVENTS))
    assert f'"code": "{code}"'.encode() in received  # the explicit error event
    await finished(proxy)
    assert held(collector_off, proxy, BODY) == []


async def test_a_stream_without_its_last_event_is_in_no_cycle(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await proxy_for()
    fake_azure.queue(sse_answer(EVENTS))  # no [DONE]: incomplete
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    received = await read_until_cut(response)
    assert b'"code": "upstream_stream_error"' in received
    await finished(proxy)
    assert held(collector_off, proxy, BODY) == []


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancelled", "write-fails"])
async def test_a_stream_whose_client_left_is_in_no_cycle(
    proxy_for: ProxyFactory,
    fake_azure: FakeAzure,
    collector_off: list[object],
    cancelled: bool,
) -> None:
    proxy = await proxy_for()
    proxy.server.runner.server.handler_cancellation = cancelled
    gate = asyncio.Event()
    fake_azure.queue(sse_answer(EVENTS, gates=[gate], then="hang"))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert await response.content.readany() == EVENTS[0]
    response.close()  # the client leaves mid-stream
    server = proxy.server.runner.server
    async with asyncio.timeout(5):  # until the proxy's side is closed too
        while any(c.transport is not None for c in server.connections):
            await asyncio.sleep(0.01)
    gate.set()  # Azure goes on: the next write finds the client gone
    await finished(proxy)
    async with asyncio.timeout(5):
        await fake_azure.disconnected.wait()  # the Azure request went too
    assert held(collector_off, proxy, BODY) == []
