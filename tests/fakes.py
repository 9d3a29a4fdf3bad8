"""FakeAzure: a real aiohttp app on a loopback port that records every request
and answers as each test scripts it.

Answers are queued per test (`fake.queue(...)`); when the queue is empty the
fake answers with a small chat completion. Streams can be gated: the fake sends
an event, then waits on an asyncio.Event the test sets, which proves that a
relay forwards each event before the next one exists.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, MultiDict

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]

CHAT_JSON = {
    "id": "chatcmpl-fake",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi from FakeAzure"},
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}
AZURE_HEADERS = {"apim-request-id": "apim-0001", "x-ms-region": "Sweden Central"}


@dataclass
class Recorded:
    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    body: bytes
    peer_port: int = 0  # the proxy's end of the connection, to tell processes apart
    at: float = 0.0  # time.monotonic() when the request arrived


@dataclass
class FakeAzure:
    requests: list[Recorded] = field(default_factory=list)
    answers: deque[Answer] = field(default_factory=deque)
    # Set when a streaming answer notices its client (the proxy) went away.
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected_at: float | None = None
    url: str = ""

    def app(self) -> web.Application:
        # Record bodies as azproxy sent them: never decompressed.
        app = web.Application(
            client_max_size=1024**3, handler_args={"auto_decompress": False}
        )
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    def queue(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                MultiDict(request.query),
                CIMultiDict(request.headers),
                await request.read(),
                peer_port(request),
                arrived,
            )
        )
        answer = self.answers.popleft() if self.answers else json_answer(CHAT_JSON)
        try:
            return await answer(request)
        except (asyncio.CancelledError, ConnectionError):
            self.disconnected_at = time.monotonic()
            self.disconnected.set()
            raise

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


def peer_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else 0


def json_answer(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        body = json.dumps(document).encode()
        return web.Response(
            status=status,
            body=body,
            content_type="application/json",
            headers=AZURE_HEADERS | (headers or {}),
        )

    return answer


def raw_answer(
    body: bytes,
    content_type: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.Response(
            status=status, body=body, headers=AZURE_HEADERS | (headers or {})
        )
        response.content_type = content_type
        return response

    return answer


def sse_event(document: Any) -> bytes:
    data = document if isinstance(document, str) else json.dumps(document)
    return f"data: {data}\n\n".encode()


def sse_answer(
    events: Sequence[bytes],
    *,
    gates: Sequence[asyncio.Event | None] = (),
    delay_s: float = 0.0,
    then: str = "end",
    content_type: str = "text/event-stream",
) -> Answer:
    """Stream `events`; before event i (i >= 1) wait on gates[i-1] if given.

    then: "end" finishes cleanly, "abort" cuts the connection after the events,
    "hang" sends nothing more until the client goes away.
    """

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=AZURE_HEADERS)
        response.content_type = content_type
        await response.prepare(request)
        for index, event in enumerate(events):
            if index and index - 1 < len(gates) and gates[index - 1] is not None:
                gate = gates[index - 1]
                assert gate is not None
                await asyncio.wait_for(gate.wait(), 5)
            if index and delay_s:
                await asyncio.sleep(delay_s)
            await response.write(event)
        if then == "abort":
            assert request.transport is not None
            request.transport.abort()
        elif then == "hang":
            while True:  # write keep-nothing pauses until the proxy disconnects
                await asyncio.sleep(0.05)
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError
        return response

    return answer


def hang_answer() -> Answer:
    """Never send response headers."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return answer


def close_answer() -> Answer:
    """Drop the connection without answering (a connection error upstream)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    return answer


@dataclass
class CloseDelimitedAzure:
    """An upstream whose answers have neither Content-Length nor chunked
    encoding: the body ends when the connection closes (RFC 9112 §6.3), so a
    stream that stops early looks, to an HTTP client, like a whole one.

    Each request gets the next queued (content type, pieces); before piece i
    (i >= 1) the server waits on gates[i-1] when given.
    """

    answers: deque[tuple[str, Sequence[bytes], Sequence[asyncio.Event]]] = field(
        default_factory=deque
    )
    requests: list[bytes] = field(default_factory=list)
    url: str = ""
    server: asyncio.Server | None = None

    def queue(
        self,
        content_type: str,
        pieces: Sequence[bytes],
        gates: Sequence[asyncio.Event] = (),
    ) -> None:
        self.answers.append((content_type, pieces, gates))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.requests.append(head + await reader.readexactly(length))
            content_type, pieces, gates = self.answers.popleft()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: "
                + content_type.encode()
                + b"\r\nConnection: close\r\n\r\n"
            )
            for index, piece in enumerate(pieces):
                if index and index - 1 < len(gates):
                    await asyncio.wait_for(gates[index - 1].wait(), 5)
                writer.write(piece)
                await writer.drain()
        finally:
            writer.close()
