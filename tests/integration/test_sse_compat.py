"""sse_compat over real sockets: `openai` drops Azure's extra chunks, `raw`
relays every byte, and either way a failure mid-stream is explicit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import BEARER, ProxyFactory
from tests.fakes import FakeAzure, sse_answer, sse_event
from tests.unit.test_sse import AZURE_CHAT, AZURE_COMPLETIONS, kept, whole

# The client asks for the usage (as the recorded streams did): azproxy asks
# for nothing and drops no usage chunk (test_stream_usage.py: when it does).
STREAM_BODY = (
    b'{"model": "gpt-4o", "stream": true, "messages": [], '
    b'"stream_options": {"include_usage": true}}'
)


def split_unevenly(data: bytes) -> list[bytes]:
    """Pieces that cut events anywhere, several events per piece too."""
    sizes = [7, 300, 1, 90, 555, 2, 40]
    pieces, start, index = [], 0, 0
    while start < len(data):
        size = sizes[index % len(sizes)]
        pieces.append(data[start : start + size])
        start += size
        index += 1
    return pieces


@pytest.mark.parametrize(
    ("path", "stream"),
    [("/v1/chat/completions", AZURE_CHAT), ("/v1/completions", AZURE_COMPLETIONS)],
)
async def test_openai_mode_drops_azure_only_chunks(
    proxy: Any, fake_azure: FakeAzure, path: str, stream: list[tuple[bytes, bool]]
) -> None:
    fake_azure.queue(sse_answer(split_unevenly(whole(stream)), delay_s=0.001))
    response = await proxy.post(path, data=STREAM_BODY, headers=BEARER)
    assert response.status == 200
    assert await response.read() == kept(stream)
    assert fake_azure.last.body == STREAM_BODY  # the request is not changed


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_raw_mode_relays_every_byte(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, path: str
) -> None:
    proxy = await proxy_for(sse_compat="raw")
    data = whole(AZURE_CHAT)
    fake_azure.queue(sse_answer(split_unevenly(data), delay_s=0.001))
    response = await proxy.post(path, data=STREAM_BODY, headers=BEARER)
    assert await response.read() == data


async def test_other_streams_are_never_normalised(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # A Responses stream that happens to carry the same field names.
    data = (
        b'event: response.created\ndata: {"choices":[],"prompt_filter_results":[]}\n\n'
        b'event: response.completed\ndata: {"type":"response.completed"}\n\n'
    )
    fake_azure.queue(sse_answer([data]))
    response = await proxy.post(
        "/v1/responses", data=b'{"model": "dep1", "stream": true}', headers=BEARER
    )
    assert await response.read() == data


async def test_a_kept_event_is_not_held_back(proxy: Any, fake_azure: FakeAzure) -> None:
    # Azure sends the prompt-filter chunk and one content chunk, then waits
    # until the client has read the content chunk through the proxy.
    gate = asyncio.Event()
    first, content = AZURE_CHAT[0][0], AZURE_CHAT[1][0]
    fake_azure.queue(sse_answer([first + content, sse_event("[DONE]")], gates=[gate]))
    response = await proxy.post(
        "/v1/chat/completions", data=STREAM_BODY, headers=BEARER
    )
    received = b""
    while received != content:
        received += await asyncio.wait_for(response.content.readany(), 2)
    gate.set()
    assert await response.content.read() == sse_event("[DONE]")


async def test_usage_chunk_reaches_a_client_that_asked(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    usage = sse_event(
        {
            "choices": [],
            "id": "c1",
            "prompt_filter_results": [],
            "usage": {"total_tokens": 5},
        }
    )
    events = [AZURE_CHAT[0][0], AZURE_CHAT[1][0], usage, sse_event("[DONE]")]
    fake_azure.queue(sse_answer(events))
    body = {
        "model": "gpt-4o",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await proxy.post("/v1/chat/completions", json=body, headers=BEARER)
    assert await response.read() == AZURE_CHAT[1][0] + usage + sse_event("[DONE]")
    assert json.loads(fake_azure.last.body) == body


@pytest.mark.parametrize("mode", ["openai", "raw"])
async def test_failure_mid_stream_is_an_error_event_in_both_modes(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, mode: str
) -> None:
    proxy = await proxy_for(sse_compat=mode)
    content = AZURE_CHAT[1][0]
    # Azure dies in the middle of its next event.
    fake_azure.queue(
        sse_answer([AZURE_CHAT[0][0], content, b'data: {"cho'], then="abort")
    )
    response = await proxy.post(
        "/v1/chat/completions", data=STREAM_BODY, headers=BEARER
    )
    received = b""
    try:
        async for piece in response.content.iter_any():
            received += piece
    except aiohttp.ClientPayloadError:
        pass  # the connection is cut after the error event, on purpose
    events = [e for e in received.split(b"\n\n") if e]
    error = json.loads(events[-1].removeprefix(b"data: "))
    assert error["error"]["code"] == "upstream_stream_error"
    if mode == "openai":
        assert events[:-1] == [content.rstrip(b"\n")]
    else:
        assert received.startswith(AZURE_CHAT[0][0] + content + b'data: {"cho')
