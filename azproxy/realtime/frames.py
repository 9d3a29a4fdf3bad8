"""The frame relay of a realtime session: two WebSockets torn down together.

Two relays, one per direction, each relaying one message at a time: it reads
the next frame only after the previous one is written, so a slow side holds
the other back through TCP rather than a queue. Whichever side ends first
(close frame, lost connection, error) decides the close code and reason that
both get; azproxy's own shutdown closes both with 1001 (going away).

Bounds: aiohttp refuses a message over the cap before buffering it (the
sender gets 1009 from aiohttp, the other side 1009 with a reason from here);
a session with no text or binary message either way for the idle timeout is
closed with 1001. Idleness costs one clock read per message and one timer
per session, re-armed at most once per idle timeout. Closing takes at most
CLOSE_TIMEOUT_S per side, and a client that stopped reading is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
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
    "Usage",
    "close_sessions",
    "response_usage",
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
Usage = tuple[int, int, int]  # input (prompt), output (completion), total tokens

# Azure reports a realtime response's tokens in its `response.done` event:
# {"type": "response.done", "response": {..., "usage": {"total_tokens": N,
# "input_tokens": N, "output_tokens": N, "input_token_details": {...}, ...}}}.
# The details nest deeper and name other counts (text_tokens, audio_tokens,
# cached_tokens), so the first of each name after "usage" is the top level.
RESPONSE_DONE = b'"response.done"'
# At most 18 digits: int() of thousands would raise (a hostile upstream).
_USAGE_COUNT = re.compile(rb'"(input|output|total)_tokens"\s*:\s*(\d{1,18})\b')


def response_usage(data: bytes) -> Usage | None:
    """The usage of a `response.done` text frame; None for any other frame.
    A marker search per frame (memchr speed); only response.done is parsed.
    In JSON text a quote inside a string is escaped, so neither marker can
    be matched inside a transcript."""
    if RESPONSE_DONE not in data:
        return None
    at = data.rfind(b'"usage"')
    if at < 0:
        return None
    counts: dict[bytes, int] = {}
    for found in _USAGE_COUNT.finditer(data, at):
        counts.setdefault(found[1], int(found[2]))
        if len(counts) == 3:
            break
    if not counts:
        return None  # "usage": null (a cancelled or failed response)
    prompt, completion = counts.get(b"input", 0), counts.get(b"output", 0)
    return prompt, completion, counts.get(b"total", prompt + completion)


def too_big(message: aiohttp.WSMessage) -> bool:
    """Whether `message` is aiohttp's refusal of a message over max_msg_size."""
    error = message.data
    return (
        isinstance(error, aiohttp.WebSocketError)
        and error.code == WSCloseCode.MESSAGE_TOO_BIG
    )


class RealtimeSession:
    """One client WebSocket and its Azure WebSocket, torn down together."""

    def __init__(
        self,
        client: web.WebSocketResponse[Any],
        upstream: aiohttp.ClientWebSocketResponse[Any],
        *,
        client_transport: asyncio.Transport | None,
        idle_timeout_s: float,
        max_message_mb: float,
        on_usage: Callable[[Usage], None] | None = None,
    ) -> None:
        self.client = client
        # Told each response.done's usage, as Azure's frames pass.
        self.on_usage = on_usage
        self.upstream = upstream
        self.done = asyncio.Event()
        self.idle_timeout_s = idle_timeout_s
        self.too_big_reason = f"message over {max_message_mb:g} MB"
        # loop.time() of the last text or binary message, either direction.
        self.last_message = 0.0
        self._client_transport = client_transport
        self._idle_timer: asyncio.TimerHandle | None = None
        self._relays: list[asyncio.Task[Ending]] = []
        self._stop: Ending | None = None

    def stop(self, ending: Ending) -> None:
        self._stop = ending
        for task in self._relays:
            task.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.last_message = loop.time()
        self._idle_timer = loop.call_at(
            self.last_message + self.idle_timeout_s, self._check_idle
        )
        self._relays = [
            loop.create_task(
                self._relay_frames(self.client, self.upstream, Side.CLIENT)
            ),
            loop.create_task(
                self._relay_frames(self.upstream, self.client, Side.UPSTREAM)
            ),
        ]
        if self._stop is not None:
            self.stop(self._stop)
        try:
            await asyncio.wait(self._relays, return_when=asyncio.FIRST_COMPLETED)
        finally:
            try:
                self._idle_timer.cancel()
                ending = self._stop or self._first_ending()
                for task in self._relays:
                    task.cancel()
                await asyncio.wait(self._relays)
                await self._close(ending)
            finally:
                self.done.set()

    def _check_idle(self) -> None:
        """The timer's callback: stop the session if no message passed for the
        idle timeout, else look again when it next could have."""
        loop = asyncio.get_running_loop()
        deadline = self.last_message + self.idle_timeout_s
        if loop.time() < deadline:
            self._idle_timer = loop.call_at(deadline, self._check_idle)
            return
        reason = f"idle for {self.idle_timeout_s:g} s"
        self.stop(Ending(Side.SERVER, WSCloseCode.GOING_AWAY, reason))

    async def _relay_frames(
        self, source: AnySocket, sink: AnySocket, side: Side
    ) -> Ending:
        """Relay `source`'s frames to `sink` until `source` ends; say how it
        ended. Pings never come out of receive() (autoping): no activity."""
        clock = asyncio.get_running_loop().time
        while True:
            message = await source.receive()
            kind = message.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                self.last_message = clock()
                try:
                    await sink.send_frame(message.data, kind)
                except (ConnectionError, aiohttp.ClientError):
                    return UPSTREAM_GONE if side is Side.CLIENT else CLIENT_GONE
                if (
                    kind is WSMsgType.TEXT
                    and side is Side.UPSTREAM
                    and self.on_usage is not None
                    and (usage := response_usage(message.data)) is not None
                ):
                    self.on_usage(usage)
            elif kind is WSMsgType.CLOSE:
                code = message.data if message.data in SENDABLE_CODES else 1000
                return Ending(side, code, message.extra or "")
            elif kind is WSMsgType.ERROR and too_big(message):
                # aiohttp already closed `source` with 1009 (and no reason).
                return Ending(side, WSCloseCode.MESSAGE_TOO_BIG, self.too_big_reason)
            else:  # CLOSING, CLOSED or ERROR: gone without a close frame
                return CLIENT_GONE if side is Side.CLIENT else UPSTREAM_GONE

    def _first_ending(self) -> Ending:
        """How the first relay to finish ended. None finished when this handler
        was cancelled: the client's connection dropped (aiohttp cancels the
        handler) or the server is cutting requests. A relay may have finished
        just before: aiohttp closes the client's connection after its close
        handshake (1009 for a message too big) and before run() wakes up."""
        for task in self._relays:
            if task.done() and not task.cancelled():
                exc = task.exception()
                if exc is None:
                    return task.result()
                log.error("realtime relay failed", exc_info=exc)
                return INTERNAL
        return CLIENT_GONE

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
        # Each in a finally: aiohttp can raise CancelledError from a close when
        # a relay was cancelled while waiting to write (its drain waiter stays
        # cancelled), and the client must still be closed.
        try:
            await close_within_timeout(self.upstream, ending.code, reason)
        finally:
            try:
                await close_within_timeout(self.client, ending.code, reason)
            finally:
                self._drop_unread_client()

    def _drop_unread_client(self) -> None:
        """Abort the client's connection if bytes are still waiting to go out:
        a client that stopped reading never answers the close, and a plain
        close would keep its socket and buffers until it reads again."""
        transport = self._client_transport
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()


async def close_within_timeout(socket: AnySocket, code: int, reason: bytes) -> None:
    """Send a close frame and wait for the answer, CLOSE_TIMEOUT_S at most:
    aiohttp bounds the wait for the answer but not the write of the frame."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await socket.close(code=code, message=reason)


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
