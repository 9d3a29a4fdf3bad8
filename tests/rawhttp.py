"""HTTP/1.1 over raw sockets: what a test needs to send half a request (or
half a body), hold a connection idle, or see exactly when the server closes
one."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient

MARGIN_S = 5.0  # how long a test waits for something the server must do
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: azproxy\r\n\r\n"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def error(self) -> dict[str, Any]:
        """The body's OpenAI-shaped error."""
        assert self.headers["content-type"].startswith("application/json")
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        return error


class Conn:
    """One raw client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def to(cls, proxy: TestClient[Any, Any]) -> Conn:
        """A connection to a test client's server."""
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        return cls(reader, writer)

    async def send_head(
        self, method: str, path: str, headers: dict[str, str], length: int | None
    ) -> None:
        """A request's head; its body (Content-Length, or chunked when
        length is None) is up to the test to send, or not."""
        lines = [f"{method} {path} HTTP/1.1", "Host: azproxy"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if length is None:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append(f"Content-Length: {length}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> Answer:
        async with asyncio.timeout(MARGIN_S):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        return Answer(int(status_line.split()[1]), headers, body)

    async def ask(self, request: bytes = HEALTHZ) -> Answer:
        await self.send(request)
        return await self.answer()

    async def closed_by_server(self) -> bytes:
        """Wait for the server to close; what it sent until then."""
        async with asyncio.timeout(MARGIN_S):
            try:
                return await self.reader.read()
            except ConnectionResetError:
                return b""

    def close(self) -> None:
        self.writer.close()


class Clients:
    """The connections a test opens to one server, all closed at the end."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conns: list[Conn] = []

    async def connect(self) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.conns.append(Conn(reader, writer))
        return self.conns[-1]

    async def ask(self, request: bytes = HEALTHZ) -> Answer:
        """One request on a new connection."""
        return await (await self.connect()).ask(request)

    async def admitted(self) -> Conn:
        """A new connection the server admits, after a 200 on it. A place
        held by a connection that closed is free once the server has seen it
        go: new connections are tried until then."""
        async with asyncio.timeout(MARGIN_S):
            while True:
                conn = await self.connect()
                if (await conn.ask()).status == 200:
                    return conn
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for conn in self.conns:
            conn.close()
            with contextlib.suppress(ConnectionError):
                await conn.writer.wait_closed()
