"""The two middleware layers every request passes, outermost first: errors
rendered in OpenAI's shape with the exchange recorded, then admission
(the drain gate, a CORS preflight, the credentials).

Two layers and no more: each costs a coroutine call on every request. Each
is built once, over the components it asks (setup() runs after theirs), so
a request pays no lookup to find them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from azproxy.auth.credentials import presented_token, protocol_token
from azproxy.auth.gate import GATE, Gate
from azproxy.errors import MethodNotAllowed, PayloadTooLarge, ProxyError
from azproxy.front.cors import CORS, Cors
from azproxy.front.lifecycle import LIFECYCLE, Lifecycle
from azproxy.keys import CALLER, EXCHANGE
from azproxy.observe.exchange import Exchange
from azproxy.observe.observer import OBSERVER, Observer
from azproxy.realtime.handshake import REALTIME_PATH
from azproxy.relay.mapping import unknown_url
from azproxy.server.closing import ClosingResponse

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = ["admission_middleware", "exchange_middleware", "setup"]

log = logging.getLogger("azproxy")


def setup(app: web.Application, config: Config) -> None:
    """Both layers, over app[OBSERVER], app[LIFECYCLE], app[GATE] and
    app[CORS] (absent with CORS off)."""
    app.middlewares.append(exchange_middleware(app[OBSERVER]))
    app.middlewares.append(
        admission_middleware(app[LIFECYCLE], app.get(CORS), app[GATE])
    )


def exchange_middleware(observer: Observer) -> Middleware:
    @web.middleware
    async def exchanges(request: web.Request, handler: Handler) -> web.StreamResponse:
        """The outermost layer: every error azproxy raises is rendered in
        OpenAI's shape (never a traceback), every exchange is recorded once,
        in the access log and the metrics, and a limited key's ticket is
        settled once."""
        exchange = Exchange(request.method, request.path, time.perf_counter())
        request[EXCHANGE] = exchange
        response: web.StreamResponse | None = None
        try:
            try:
                response = await handler(request)
            except ProxyError as exc:
                response = exc.response(
                    ClosingResponse if exc.closes_connection else web.Response
                )
            except web.HTTPException as exc:
                response = _from_http_exception(request, exc).response()
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception:
                log.exception("internal error on %s %s", request.method, request.path)
                response = ProxyError(
                    "azproxy failed to handle this request; its log has the details."
                ).response()
            # No x-azproxy-deployment here: an answer azproxy made itself (a
            # 429 when every deployment cools, a 502, a 504) was given by no
            # deployment; the relay names the one whose answer it relays.
            if exchange.ticket is not None and not response.prepared:
                response.headers.update(exchange.ticket.headers)  # streams: set
            return response
        finally:
            ticket = exchange.ticket
            if ticket is not None:
                # Exactly once, however the request ended: its usage replaces
                # the estimate, or the estimate stands.
                usage = exchange.usage if ticket.counts_tokens else None
                ticket.settle(usage[2] if usage is not None else None)
            observer.done(exchange, response)

    return exchanges


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> ProxyError:
    if exc.status == 404:
        return unknown_url(request.method, request.path)
    if exc.status == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}.")
    if exc.status == 413:
        return PayloadTooLarge("The request body is too large.")
    return ProxyError(
        exc.reason,
        code=f"http_{exc.status}",
        status=exc.status,
        type="invalid_request_error" if exc.status < 500 else "api_error",
    )


def admission_middleware(
    lifecycle: Lifecycle, cors: Cors | None, gate: Gate
) -> Middleware:
    @web.middleware
    async def admission(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Admit a request, before any I/O: refuse it while shutting down,
        answer a CORS preflight (browsers send those without credentials),
        and decide who calls /v1/ from the credentials presented. Counts
        requests in flight so that a graceful shutdown can wait for them.

        One middleware rather than three: each layer costs a coroutine call
        on every request, and these three checks are cheapest side by side.
        """
        if lifecycle.draining:
            lifecycle.refuse(request.path)
        if cors is not None and request.method == "OPTIONS":
            preflight = cors.preflight(request)
            if preflight is not None:
                return preflight
        if request.path.startswith("/v1/"):
            presented = presented_token(request.headers)
            if presented is None and request.path == REALTIME_PATH:
                # Browsers cannot set headers on a WebSocket: they offer the
                # key as a subprotocol, which the realtime relay never forwards.
                presented = protocol_token(request.headers)
            caller = request[CALLER] = gate.caller(presented)
            exchange = request[EXCHANGE]
            exchange.caller, exchange.key = caller.name, caller.key_name
        lifecycle.enter()
        try:
            return await handler(request)
        finally:
            lifecycle.leave()

    return admission
