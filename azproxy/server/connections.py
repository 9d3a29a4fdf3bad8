"""Client connections: the bounds aiohttp's server does not set itself.

aiohttp's RequestHandler is the protocol of one client connection. It has a
keep-alive timer (keepalive_timeout_s, set through the app's handler_args)
but none for headers: a client that sends half a request line, or trickles
one byte a second, is waited for as long as the keep-alive timer allows, and
aiohttp's own error replies quote the request line or header they could not
parse, a pass-through token included. GuardedRequestHandler adds:

- client_header_timeout_s: a request's headers must be complete within it,
  from the moment the connection opens (first request) or from the first
  byte of the next request on a kept-alive connection (nginx's rule). Then
  408 if part of a request arrived, or a plain close for a silent connection;
- max_connections: a connection past it gets 503 and is closed, and the
  refusals are logged at most every 10 s (guard.py counts them).
  A WebSocket session stays counted until its connection closes;
- error replies in OpenAI's shape with a fixed message.

GuardedRunner, which runner.app_runner builds, makes aiohttp use it. The
hooks lean on aiohttp 3.14 internals (RequestHandler's _waiter,
_request_count, _force_close, _keepalive_handle and _process_keepalive;
Server's _kwargs): tests/integration/test_connections.py fails if they move.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from azproxy.errors import BadRequest, ProxyError
from azproxy.server.closing import send_and_close
from azproxy.server.guard import ConnectionGuard, RefusedConnection

__all__ = [
    "GuardedRequestHandler",
    "GuardedRunner",
    "GuardedServer",
    "unparsed_request_error",
]


def unparsed_request_error(status: int) -> ProxyError:
    """What azproxy answers where aiohttp would answer with its own text,
    which quotes the offending request line or header (a token with it)."""
    if status < 500:
        return BadRequest("azproxy could not parse this HTTP request.")
    return ProxyError(
        "azproxy failed to handle this request; its log has the details.",
        status=status,
    )


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol for one client connection, with the guards above.

    The header clock is a deadline and one timer that is never cancelled on
    the way: when headers complete, the deadline is cleared and the timer,
    when it fires, finds nothing to time; a timer armed for an earlier
    request is moved on to the current deadline. So a kept-alive connection
    costs a clock read per request, and a timer per client_header_timeout_s
    at most, instead of a timer per request.
    """

    __slots__ = (
        "_admitted",
        "_guard",
        "_header_bytes",
        "_header_deadline",
        "_header_timer",
        "_linger",
    )

    def __init__(
        self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._admitted = False
        self._header_deadline: float | None = None  # None: no headers awaited
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = False  # has part of the awaited request arrived
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if not guard.admit():
            # aiohttp never learns of it: no handler task, no timers.
            RefusedConnection(cast(asyncio.Transport, transport), guard)
            return
        self._admitted = True
        self._start_header_clock()
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._header_timer, self._linger):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._linger = self._header_deadline = None
        if self._admitted:
            self._admitted = False
            self._guard.release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None:
            waiter = self._waiter
            if waiter is None or waiter.done() or not data or self._force_close:
                # A request in progress (these are body bytes) or a WebSocket.
                RequestHandler.data_received(self, data)
                return
            # The first byte of the next request on a kept-alive connection.
            self._start_header_clock()
        if data:
            self._header_bytes = True
        parsed = self._request_count
        # The base named, not super(): this runs for every read.
        RequestHandler.data_received(self, data)
        if self._request_count != parsed:  # headers complete, or malformed
            self._header_deadline = None

    def _start_header_clock(self) -> None:
        loop = self._loop
        deadline = self._header_deadline = loop.time() + self._guard.header_timeout_s
        if self._header_timer is None:
            self._header_timer = loop.call_at(deadline, self._check_header_clock)

    def _check_header_clock(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if deadline is None:
            return  # the headers it was armed for arrived in time
        loop = self._loop
        if loop.time() < deadline:  # armed for an earlier request
            self._header_timer = loop.call_at(deadline, self._check_header_clock)
            return
        self._header_deadline = None
        transport = self.transport
        if transport is None or self._force_close:
            return
        if self._header_bytes:
            self._send_and_close(transport, self._guard.header_timeout_response)
        else:
            self.force_close()  # nothing to answer on a silent connection

    def _process_keepalive(self) -> None:
        if self._header_deadline is not None:
            # A request's headers are arriving: client_header_timeout_s rules
            # until they are complete. aiohttp re-arms its keep-alive timer
            # after the response, since this one is gone.
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def _send_and_close(self, transport: asyncio.Transport, response: bytes) -> None:
        self._force_close = True  # aiohttp's data_received drops what arrives
        self._linger = send_and_close(transport, response)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs the error (log.quiet_protocol_errors makes a
        # malformed request one line, without its text) and refuses to
        # answer after a response has started; its reply is replaced.
        super().handle_error(request, status, exc, message)
        response = unparsed_request_error(status).response()
        response.force_close()
        return response


class GuardedServer(web.Server):
    """The app's aiohttp Server, with a GuardedRequestHandler per connection."""

    def __init__(self, app_server: web.Server, guard: ConnectionGuard) -> None:
        super().__init__(
            app_server.request_handler,
            request_factory=app_server.request_factory,
            handler_cancellation=app_server.handler_cancellation,
            **app_server._kwargs,
        )
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, self.guard, loop=self._loop, **self._kwargs)

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for refused in list(self.guard.refused):  # aiohttp does not know them
            refused.transport.close()


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server guards its connections (none given: the
    app is served as aiohttp serves it)."""

    __slots__ = ("_guard",)

    def __init__(
        self, app: web.Application, guard: ConnectionGuard | None, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return server if self._guard is None else GuardedServer(server, self._guard)
