"""FakeRealtime: a WebSocket upstream on loopback that records each handshake
and every frame it receives (raw bytes, text never decoded), echoes frames
back, and lets a test drive it: send frames, close with a code, drop the
connection, or refuse the next handshakes with an HTTP status."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web
from multidict import CIMultiDict, MultiDict
from pytest_aiohttp import AiohttpServer

from azproxy.auth.credentials import KEY_PROTOCOL, offered_protocols


@dataclass
class Handshake:
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    protocols: list[str]


@dataclass
class FakeRealtime:
    handshakes: list[Handshake] = field(default_factory=list)
    received: list[tuple[WSMsgType, bytes]] = field(default_factory=list)
    # The close code and reason the proxy sent; None when it dropped the TCP
    # connection without a close frame.
    close: tuple[int, str] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    refusals: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    echo: bool = True
    protocol: str | None = "realtime"  # the subprotocol this fake selects
    socket: web.WebSocketResponse[Any] | None = None
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.handle)
        return app

    def refuse(
        self, status: int, times: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        self.refusals.extend([(status, headers or {})] * times)

    @property
    def last(self) -> Handshake:
        return self.handshakes[-1]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.handshakes.append(
            Handshake(
                request.path,
                MultiDict(request.query),
                CIMultiDict(request.headers),
                offered_protocols(request.headers),
            )
        )
        if self.refusals:
            status, headers = self.refusals.popleft()
            body = {"error": {"code": str(status), "message": "refused by the fake"}}
            return web.Response(
                status=status,
                text=json.dumps(body),
                content_type="application/json",
                headers=headers,
            )
        ws = web.WebSocketResponse(
            protocols=(self.protocol,) if self.protocol else (), decode_text=False
        )
        await ws.prepare(request)
        self.socket = ws
        self.connected.set()
        try:
            while True:
                message = await ws.receive()
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.received.append((message.type, message.data))
                    if self.echo:
                        await ws.send_frame(message.data, message.type)
                    continue
                if message.type is WSMsgType.CLOSE:
                    self.close = (message.data, message.extra or "")
                break
        finally:
            self.closed.set()
        return ws


async def start_fake_realtime(aiohttp_server: AiohttpServer) -> FakeRealtime:
    fake = FakeRealtime()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


def key_protocol(token: str) -> str:
    """What a browser app offers: the token through encodeURIComponent."""
    return KEY_PROTOCOL + quote(token, safe="")


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


async def raw_handshake(
    port: int, target: str, headers: dict[str, str]
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a WebSocket by hand: the response head, and the raw connection (to
    drop it without a close frame, as a client that vanishes does)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (UPGRADE | headers).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head, reader, writer
