"""The one layer every request passes, wrapped around each route's handler:
admission (the drain gate, a CORS preflight, the credentials), errors
rendered in OpenAI's shape, and the exchange recorded once.

A wrapper rather than aiohttp middlewares: as soon as an app has one
middleware, aiohttp adds a layer of its own (_fix_request_current_app), and
every layer is a coroutine and a partial on every request. Admission, errors
and the record in one coroutine cost about 26,000 instructions (3 %) less per
request than the two middlewares and aiohttp's layer did. Every route's
handler is wrapped (app.add_routes), and the catch-all route takes every
path and method, so no request reaches aiohttp's own plain-text 404 or 405.

Observer.done, in the wrapper's `finally`, is where every request ends: the
place for anything that settles a request (the access log, the metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from azproxy.auth.credentials import presented_token, protocol_token
from azproxy.auth.gate import GATE
from azproxy.errors import MethodNotAllowed, PayloadTooLarge, ProxyError
from azproxy.front.cors import CORS
from azproxy.front.lifecycle import LIFECYCLE
from azproxy.keys import CALLER, EXCHANGE
from azproxy.observe.exchange import Exchange
from azproxy.observe.observer import OBSERVER
from azproxy.realtime.handshake import REALTIME_PATH
from azproxy.relay.mapping import unknown_url
from azproxy.server.closing import ClosingResponse

__all__ = ["entered", "tokens_spent"]

log = logging.getLogger("azproxy")


def entered(app: web.Application, handler: Handler) -> Handler:
    """`handler` behind the layer, built over app[OBSERVER], app[LIFECYCLE],
    app[GATE] and app[CORS] (absent with CORS off): call it once their
    setup() has run. A request pays no lookup to find them."""
    observer, lifecycle, gate = app[OBSERVER], app[LIFECYCLE], app[GATE]
    cors = app.get(CORS)

    async def entry(request: web.Request) -> web.StreamResponse:
        """Every error azproxy raises is rendered in OpenAI's shape (never a
        traceback), and every exchange is recorded once, in the access log
        and the metrics. Before any I/O, a request is refused while shutting
        down, a CORS preflight is answered (browsers send those without
        credentials), and who calls /v1/ is decided from the credentials
        presented. Requests in flight are counted, so that a graceful
        shutdown can wait for them. A limited key's ticket is settled once."""
        method, path = request.method, request.path
        exchange = request[EXCHANGE] = Exchange(method, path, time.perf_counter())
        response: web.StreamResponse | None = None
        try:
            try:
                if lifecycle.draining:
                    lifecycle.refuse(path)
                if cors is not None and method == "OPTIONS":
                    preflight = cors.preflight(request)
                    if preflight is not None:
                        response = preflight
                        return response
                if path.startswith("/v1/"):
                    presented = presented_token(request.headers)
                    if presented is None and path == REALTIME_PATH:
                        # Browsers cannot set headers on a WebSocket: they
                        # offer the key as a subprotocol, which the realtime
                        # relay never forwards.
                        presented = protocol_token(request.headers)
                    caller = request[CALLER] = gate.caller(presented)
                    exchange.caller, exchange.key = caller.name, caller.key_name
                lifecycle.enter()
                try:
                    response = await handler(request)
                finally:
                    lifecycle.leave()
            except ProxyError as exc:
                response = exc.response(
                    ClosingResponse if exc.closes_connection else web.Response
                )
            except web.HTTPException as exc:
                response = _from_http_exception(request, exc).response()
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception:
                log.exception("internal error on %s %s", method, path)
                response = ProxyError(
                    "azproxy failed to handle this request; its log has the details."
                ).response()
            # No x-azproxy-deployment here: an answer azproxy made itself (a
            # 429 when every deployment cools, a 502, a 504) was given by no
            # deployment; the relay names the one whose answer it relays.
            if not response.prepared:  # streams set these before they start
                if exchange.ticket is not None:
                    response.headers.update(exchange.ticket.headers)
                if cors is not None:
                    cors.add_headers(request.headers, response.headers)
            return response
        finally:
            ticket = exchange.ticket
            if ticket is not None:
                ticket.settle(tokens_spent(exchange, ticket.counts_tokens))
            observer.done(exchange, response)

    return entry


def tokens_spent(exchange: Exchange, counted: bool) -> int | None:
    """What a limited key's request cost in tokens, settled exactly once
    however it ended: Azure's usage; 0 when no deployment served it (azproxy
    answered itself, or Azure said 408, 429 or 5xx: nothing was processed);
    None (the estimate stands) when an answer came without usage."""
    status = exchange.upstream_status
    if status is not None and (status in (408, 429) or status >= 500):
        return 0
    usage = exchange.usage if counted else None
    if usage is not None:
        return usage[2]  # a realtime session's is the sum of its response.done
    return 0 if status is None else None


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
