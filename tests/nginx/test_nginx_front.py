"""deploy/nginx/azproxy.conf in front of the real `azproxy serve` process.

A stream must still arrive event by event through nginx: FakeAzure sends event
i+1 only after the test has read event i through nginx, so any buffering on the
way stalls the stream and the test times out. A WebSocket upgrade must pass
through the same site, to a stand-in endpoint and to azproxy's own realtime
relay in front of a recording WebSocket fake of Azure.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, MultiDict
from pytest_aiohttp import AiohttpServer

from azproxy.realtime.handshake import PREVIEW_API_VERSION
from tests.conftest import AZURE_KEY, BEARER, TOKEN
from tests.fakes import FakeAzure, sse_answer, sse_event
from tests.nginx_front import (
    SITE,
    Site,
    beyond_loopback,
    fronting,
    shipped_site,
    stock_site,
)
from tests.processes import Running, running
from tests.realtime_fake import start_fake_realtime

EVENT_TIMEOUT_S = 5.0  # far above a streaming chain's milliseconds
BODY = {
    "model": "gpt-4o",
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
def server(fake_azure: FakeAzure, tmp_path: Path) -> Iterator[Running]:
    env = {"AZPROXY_UPSTREAM": fake_azure.url}
    with running(["serve", "--port", "0"], tmp_path / "azproxy.log", env=env) as proc:
        yield proc


def test_the_sites_the_tests_run_stay_on_loopback() -> None:
    assert beyond_loopback(shipped_site(8080, 3000)) == []
    assert beyond_loopback(stock_site(8080, 3000)) == []
    # As shipped, the site listens on every interface: fine for users, never
    # in a test; so are a public upstream and a DNS resolver.
    assert beyond_loopback(SITE.read_text()) == ["listen 80"]
    elsewhere = """
    upstream up { server 10.0.0.7:3000; }
    server {
        listen [::1]:8080;
        resolver 127.0.0.53;
        location / { proxy_pass http://example.com/v1; }
        location /up { proxy_pass http://up; }
    }
    """
    assert beyond_loopback(elsewhere) == [
        "server 10.0.0.7:3000",
        "resolver 127.0.0.53",
        "proxy_pass http://example.com/v1",
    ]


async def read_event(response: aiohttp.ClientResponse) -> bytes:
    return await asyncio.wait_for(response.content.readuntil(b"\n\n"), EVENT_TIMEOUT_S)


async def gated_stream_through(site: Site, fake: FakeAzure, server: Running) -> None:
    """Stream through nginx (with `site`) and azproxy, one event per gate."""
    events = [
        sse_event({"choices": [{"delta": {"content": f"piece {i}"}}]}) for i in range(4)
    ] + [sse_event("[DONE]")]
    gates = [asyncio.Event() for _ in events[1:]]
    fake.queue(sse_answer(events, gates=gates))
    with fronting(server.port, site) as front:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{front.url}/v1/chat/completions", json=BODY, headers=BEARER
            ) as response,
        ):
            assert response.status == 200
            assert response.content_type == "text/event-stream"
            assert response.headers["x-azproxy-deployment"] == "dep1"
            assert response.headers["Cache-Control"] == "no-cache"
            assert "X-Accel-Buffering" not in response.headers  # meant for nginx
            received = []
            for i in range(len(events)):
                received.append(await read_event(response))
                if i < len(gates):
                    gates[i].set()  # only now may FakeAzure send the next event
            assert received == events
            assert await response.content.read() == b""
    sent = fake.last
    assert sent.path == "/openai/deployments/dep1/chat/completions"
    assert sent.query["api-version"] == "2024-10-21"
    assert sent.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in sent.headers
    # The client's body, and the usage azproxy asks for (docs/relaying.md).
    assert json.loads(sent.body) == BODY | {"stream_options": {"include_usage": True}}


async def test_stream_arrives_event_by_event_through_the_shipped_site(
    fake_azure: FakeAzure, server: Running
) -> None:
    await gated_stream_through(shipped_site, fake_azure, server)


async def test_stream_arrives_event_by_event_through_a_default_nginx(
    fake_azure: FakeAzure, server: Running
) -> None:
    # nginx's defaults buffer a whole answer; azproxy's `X-Accel-Buffering: no`
    # turns that off for its streams, whatever the operator's config says.
    await gated_stream_through(stock_site, fake_azure, server)


async def test_json_answer_and_error_pass_through_the_shipped_site(
    fake_azure: FakeAzure, server: Running
) -> None:
    with fronting(server.port) as front:
        async with aiohttp.ClientSession() as session:
            body = {"model": "gpt-4o", "messages": []}
            async with session.post(
                f"{front.url}/v1/chat/completions", json=body, headers=BEARER
            ) as response:
                assert response.status == 200
                answer = await response.json()
            assert answer["choices"][0]["message"]["content"] == "Hi from FakeAzure"
            async with session.get(f"{front.url}/v1/models") as response:
                assert response.status == 401  # azproxy's own error, relayed
                error = await response.json()
            assert error["error"]["code"] == "invalid_api_key"
    sent = fake_azure.last
    assert sent.path == "/openai/deployments/dep1/chat/completions"
    assert sent.headers["api-key"] == AZURE_KEY
    assert json.loads(sent.body) == body
    assert len(fake_azure.requests) == 1


class RealtimeEcho:
    """A WebSocket endpoint at /v1/realtime that greets, echoes and records.

    Standing directly behind the nginx site, it shows what nginx itself sends
    on (Upgrade, Connection, X-Forwarded-For), which azproxy would not pass to
    Azure; test_realtime_through_nginx_and_azproxy covers the whole chain.
    """

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.queries: list[MultiDict[str]] = []
        self.headers: list[CIMultiDict[str]] = []
        self.closed = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.paths.append(request.path)
        self.queries.append(MultiDict(request.query))
        self.headers.append(CIMultiDict(request.headers))
        ws = web.WebSocketResponse(protocols=("realtime",))
        await ws.prepare(request)
        await ws.send_json({"type": "session.created"})
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(f"echo {message.data}")
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        self.closed.set()
        return ws


async def test_websocket_upgrade_passes_through_the_shipped_site(
    aiohttp_server: AiohttpServer,
) -> None:
    echo = RealtimeEcho()
    upstream = await aiohttp_server(echo.app())
    assert upstream.port is not None
    audio = bytes(range(256)) * 1024  # 256 KiB, like a chunk of realtime audio
    with fronting(upstream.port) as front:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"{front.url}/v1/realtime?model=gpt-4o",
                headers={"Authorization": "Bearer access-key"},
                protocols=("realtime", "openai-beta.realtime-v1"),
                timeout=aiohttp.ClientWSTimeout(ws_receive=EVENT_TIMEOUT_S),
            ) as ws,
        ):
            assert ws.protocol == "realtime"
            assert await ws.receive_json() == {"type": "session.created"}
            await ws.send_str("hello")
            assert await ws.receive_str() == "echo hello"
            await ws.send_bytes(audio)
            assert await ws.receive_bytes() == audio[::-1]
            await ws.close()
        await asyncio.wait_for(echo.closed.wait(), EVENT_TIMEOUT_S)
    assert echo.paths == ["/v1/realtime"]
    assert echo.queries[0]["model"] == "gpt-4o"
    seen = echo.headers[0]
    assert seen["Upgrade"].lower() == "websocket"
    assert "upgrade" in seen["Connection"].lower()
    assert seen["Authorization"] == "Bearer access-key"
    assert seen["X-Forwarded-For"] == "127.0.0.1"


async def test_realtime_through_nginx_and_azproxy(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """client -> nginx (shipped site) -> `azproxy serve` -> WebSocket fake Azure:
    frames both ways byte for byte, close codes both ways."""
    fake = await start_fake_realtime(aiohttp_server)
    env = {"AZPROXY_UPSTREAM": fake.url}
    text = '{"type":"conversation.item.create","text":"h\u00e9llo"}'
    audio = bytes(range(256)) * 1024  # 256 KiB, like a chunk of realtime audio
    with (
        running(["serve", "--port", "0"], tmp_path / "azproxy.log", env=env) as proxy,
        fronting(proxy.port) as front,
    ):
        url = f"{front.url}/v1/realtime?model=gpt-4o-realtime-preview"
        headers = BEARER | {"OpenAI-Beta": "realtime=v1"}
        timeout = aiohttp.ClientWSTimeout(ws_receive=EVENT_TIMEOUT_S)
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                url, headers=headers, protocols=("realtime",), timeout=timeout
            )
            assert ws.protocol == "realtime"
            await asyncio.wait_for(fake.connected.wait(), EVENT_TIMEOUT_S)
            assert fake.socket is not None
            await fake.socket.send_str('{"type":"session.created"}')
            await fake.socket.send_bytes(b"\x00\xffaudio")
            assert await ws.receive_str() == '{"type":"session.created"}'
            assert await ws.receive_bytes() == b"\x00\xffaudio"
            await ws.send_str(text)
            await ws.send_bytes(audio)
            assert await ws.receive_str() == text  # echoed by the fake
            assert await ws.receive_bytes() == audio
            await ws.close(code=4000, message=b"bye from the client")
            await asyncio.wait_for(fake.closed.wait(), EVENT_TIMEOUT_S)
            assert fake.close == (4000, "bye from the client")

            # And the other way: Azure's close code reaches the client.
            fake.connected.clear()
            ws = await session.ws_connect(url, headers=headers, timeout=timeout)
            await asyncio.wait_for(fake.connected.wait(), EVENT_TIMEOUT_S)
            assert fake.socket is not None
            await fake.socket.close(code=4001, message=b"server says no")
            message = await ws.receive()
            assert message.type is WSMsgType.CLOSE
            assert (message.data, message.extra) == (4001, "server says no")
            await ws.close()
    assert fake.received == [
        (WSMsgType.TEXT, text.encode()),
        (WSMsgType.BINARY, audio),
    ]
    assert len(fake.handshakes) == 2
    for handshake in fake.handshakes:
        assert handshake.path == "/openai/realtime"
        assert list(handshake.query.items()) == [
            ("api-version", PREVIEW_API_VERSION),
            ("deployment", "dep1"),
        ]
        assert handshake.headers["api-key"] == AZURE_KEY
        assert handshake.headers["OpenAI-Beta"] == "realtime=v1"
        # nginx added X-Forwarded-For for azproxy; azproxy keeps it from Azure.
        for name in ("Authorization", "X-Forwarded-For", "X-Real-IP"):
            assert name not in handshake.headers
        assert TOKEN not in str(handshake.headers)
