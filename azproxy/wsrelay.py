"""The frame relay of a realtime session: two WebSockets torn down together.

Two pumps, one per direction, each relaying one message at a time: it reads
the next frame only after the previous one is written, so a slow side holds
the other back through TCP rather than a queue. Whichever side ends first
(close frame, lost connection, error) decides the close code and reason that
both get; azproxy's own shutdown closes both with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

__all__ = [
    "CLOSE_TIMEOUT_S",
    "REALTIME_SESSIONS",
    "Ending",
    "RealtimeSession",
    "Side",
    "close_sessions",
    "pump",
]

log = logging.getLogger("azproxy.realtime")

CLOSE_TIMEOUT_S = 5.0  # how long to wait for the peer's answer to a close
MAX_REASON_BYTES = 123  # RFC 6455 §5.5: 125-byte control frames, 2 for the code
# RFC 6455 §7.4: codes a peer may receive; 1005, 1006 and 1015 are never sent.
SENDABLE_CODES = frozenset(
    {1000, 1001, 1002, 1003, *range(1007, 1015)} | set(range(3000, 5000))
)


class Side(Enum):
    CLIENT = "client"
    UPSTREAM = "upstream"
    SERVER = "azproxy"


@dataclass(frozen=True, slots=True)
class Ending:
    """Who ended the session, and the close code and reason both sides get."""

    side: Side
    code: int
    reason: str


CLIENT_GONE = Ending(Side.CLIENT, WSCloseCode.GOING_AWAY, "client went away")
UPSTREAM_GONE = Ending(
    Side.UPSTREAM, WSCloseCode.BAD_GATEWAY, "Azure OpenAI connection lost"
)
SHUTTING_DOWN = Ending(Side.SERVER, WSCloseCode.GOING_AWAY, "azproxy is shutting down")
INTERNAL = Ending(Side.SERVER, WSCloseCode.INTERNAL_ERROR, "azproxy internal error")

AnySocket = web.WebSocketResponse[Any] | aiohttp.ClientWebSocketResponse[Any]


async def pump(source: AnySocket, sink: AnySocket, side: Side) -> Ending:
    """Relay `source`'s frames to `sink` until `source` ends; say how it ended."""
    while True:
        message = await source.receive()
        kind = message.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            try:
                await sink.send_frame(message.data, kind)
            except (ConnectionError, aiohttp.ClientError):
                return UPSTREAM_GONE if side is Side.CLIENT else CLIENT_GONE
        elif kind is WSMsgType.CLOSE:
            code = message.data if message.data in SENDABLE_CODES else 1000
            return Ending(side, code, message.extra or "")
        else:  # CLOSING, CLOSED or ERROR: gone without a close frame
            return CLIENT_GONE if side is Side.CLIENT else UPSTREAM_GONE


class RealtimeSession:
    """One client WebSocket and its Azure WebSocket, torn down together."""

    def __init__(
        self,
        client: web.WebSocketResponse[Any],
        upstream: aiohttp.ClientWebSocketResponse[Any],
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.done = asyncio.Event()
        self._pumps: list[asyncio.Task[Ending]] = []
        self._stop: Ending | None = None

    def stop(self, ending: Ending) -> None:
        self._stop = ending
        for task in self._pumps:
            task.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._pumps = [
            loop.create_task(pump(self.client, self.upstream, Side.CLIENT)),
            loop.create_task(pump(self.upstream, self.client, Side.UPSTREAM)),
        ]
        if self._stop is not None:
            self.stop(self._stop)
        # Cancelled means the client's connection dropped (aiohttp cancels
        # the handler) or the server is cutting requests.
        ending = CLIENT_GONE
        try:
            await asyncio.wait(self._pumps, return_when=asyncio.FIRST_COMPLETED)
            ending = self._stop or self._first_ending()
        finally:
            try:
                for task in self._pumps:
                    task.cancel()
                await asyncio.wait(self._pumps)
                await self._close(ending)
            finally:
                self.done.set()

    def _first_ending(self) -> Ending:
        for task in self._pumps:
            if task.done() and not task.cancelled():
                exc = task.exception()
                if exc is None:
                    return task.result()
                log.error("realtime relay failed", exc_info=exc)
                return INTERNAL
        return INTERNAL

    async def _close(self, ending: Ending) -> None:
        """Close Azure's side first, then the client's: once the client's
        connection closes, aiohttp cancels this handler."""
        reason = ending.reason.encode()[:MAX_REASON_BYTES]
        reason = reason.decode(errors="ignore").encode()  # no split character
        log.debug(
            "realtime session ended by %s: %d %s",
            ending.side.value,
            ending.code,
            ending.reason,
        )
        with contextlib.suppress(Exception):
            await self.upstream.close(code=ending.code, message=reason)
        with contextlib.suppress(Exception):
            await self.client.close(code=ending.code, message=reason)


REALTIME_SESSIONS: web.AppKey[set[RealtimeSession]] = web.AppKey(
    "azproxy.realtime_sessions"
)


async def close_sessions(app: web.Application) -> None:
    """On shutdown, after the drain's grace period: sessions still open are
    closed on both sides with 1001 (going away), which tells clients to
    reconnect, rather than cut."""
    registered = app[REALTIME_SESSIONS]
    sessions = list(registered)
    if not sessions:
        return
    log.info("closing %d realtime session(s): shutting down", len(sessions))
    for session in sessions:
        session.stop(SHUTTING_DOWN)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(s.done.wait() for s in sessions)), 2 * CLOSE_TIMEOUT_S
        )
