"""A bare HTTP/1.1 client over a socket, for what no polite client does:
send part of a body and stop, and see whether the server closes."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

# Generous: the machines are noisy; only an upper bound is ever asserted.
WAIT_S = 15.0


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def error(self) -> dict[str, Any]:
        error = json.loads(self.body)["error"]
        assert isinstance(error, dict)
        return error


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def to(cls, proxy: TestClient[Any, Any]) -> RawClient:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        return cls(reader, writer)

    async def send_head(
        self, method: str, path: str, headers: dict[str, str], length: int | None
    ) -> None:
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
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT_S)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in filter(None, lines):
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
        length = int(headers.get("Content-Length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), WAIT_S)
        return Answer(int(status_line.split()[1]), headers, body)

    async def closed_by_server(self) -> bool:
        """Whether the server closes the connection (within WAIT_S)."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), WAIT_S)
        except ConnectionResetError:
            return True
        return rest == b""

    def close(self) -> None:
        self.writer.close()
