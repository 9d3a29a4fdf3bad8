"""Middlewares (errors; admission: shutdown, CORS preflight, credentials) and
the response hook.

Headers that every response carries (CORS, x-request-id) are added in the
on_response_prepare hook, not in a middleware: a middleware runs after a
streamed response has already sent its headers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from azproxy.auth.credentials import presented_token, protocol_token
from azproxy.errors import (
    MethodNotAllowed,
    PayloadTooLarge,
    ProxyError,
    ServiceUnavailable,
)
from azproxy.keys import CALLER, CONFIG, EXCHANGE, GATE, LIFECYCLE, OBSERVER
from azproxy.observe.exchange import Exchange, ensure_request_id
from azproxy.realtime.handshake import REALTIME_PATH
from azproxy.relay.mapping import unknown_url
from azproxy.settings.config import Config

__all__ = [
    "admission_middleware",
    "cors_preflight",
    "exchange_middleware",
    "on_response_prepare",
]

log = logging.getLogger("azproxy")

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
# Response headers a browser app may read: the ones OpenAI SDKs look at.
EXPOSE_HEADERS = ", ".join(
    (
        "x-request-id",
        "x-azproxy-deployment",
        "apim-request-id",
        "openai-processing-ms",
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
    )
)


@web.middleware
async def exchange_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """The outermost layer: every error azproxy raises is rendered in OpenAI's
    shape (never a traceback), and every exchange is recorded once, in the
    access log and the metrics."""
    exchange = Exchange(request.method, request.path, time.perf_counter())
    request[EXCHANGE] = exchange
    response: web.StreamResponse | None = None
    try:
        try:
            response = await handler(request)
        except ProxyError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            response = _from_http_exception(request, exc).response()
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            response = ProxyError(
                "azproxy failed to handle this request; its log has the details."
            ).response()
        if exchange.deployment and not response.prepared:
            # DESIGN §2: say which deployment was used, errors included.
            response.headers.setdefault("x-azproxy-deployment", exchange.deployment)
        return response
    finally:
        request.app[OBSERVER].done(exchange, response)


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> ProxyError:
    if exc.status == 404:
        return unknown_url(request.method, request.path)
    if exc.status == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}.")
    if exc.status == 413:
        return PayloadTooLarge("The request body is too large.")
    error = ProxyError(exc.reason, code=f"http_{exc.status}")
    error.status = exc.status
    error.type = "invalid_request_error" if exc.status < 500 else "api_error"
    return error


@web.middleware
async def admission_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Admit a request, before any I/O: refuse it while shutting down, answer
    a CORS preflight (browsers send those without credentials), and decide who
    calls /v1/ from the credentials presented. Counts requests in flight so
    that a graceful shutdown can wait for them.

    One middleware rather than three: each layer costs a coroutine call on
    every request, and these three checks are cheapest side by side.
    """
    app = request.app
    lifecycle = app[LIFECYCLE]
    if lifecycle.draining and request.path != "/healthz":
        raise ServiceUnavailable(
            "azproxy is shutting down; retry on another instance.",
            headers={"Connection": "close", "Retry-After": "1"},
        )
    if request.method == "OPTIONS":
        preflight = cors_preflight(request, app[CONFIG])
        if preflight is not None:
            return preflight
    if request.path.startswith("/v1/"):
        presented = presented_token(request.headers)
        if presented is None and request.path == REALTIME_PATH:
            # Browsers cannot set headers on a WebSocket: they offer the key
            # as a subprotocol, which the realtime relay never forwards.
            presented = protocol_token(request.headers)
        caller = request[CALLER] = app[GATE].caller(presented)
        request[EXCHANGE].caller = caller.name
    lifecycle.enter()
    try:
        return await handler(request)
    finally:
        lifecycle.leave()


def cors_preflight(request: web.Request, config: Config) -> web.Response | None:
    """The answer to a CORS preflight, or None when this is none (or CORS is off)."""
    if "Access-Control-Request-Method" not in request.headers:
        return None
    allowed = _allowed_origin(config, request.headers.get("Origin", ""))
    if allowed is None:
        return None  # CORS off or origin not allowed: no CORS headers
    headers = {
        "Access-Control-Allow-Origin": allowed,
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        # Fetch §3.2.3: echo what the browser asks for; chat UIs send
        # Authorization, api-key, OpenAI-Beta and x-stainless-* headers.
        "Access-Control-Allow-Headers": request.headers.get(
            "Access-Control-Request-Headers", "*"
        ),
        "Access-Control-Max-Age": "86400",
    }
    if allowed != "*":
        headers["Vary"] = "Origin"
    return web.Response(status=204, headers=headers)


def _allowed_origin(config: Config, origin: str) -> str | None:
    """The Access-Control-Allow-Origin value for this origin, or None."""
    origins = config.cors_origins
    if not origins or not origin:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


async def on_response_prepare(
    request: web.Request, response: web.StreamResponse
) -> None:
    """Add the headers every response carries, streamed ones included."""
    headers = response.headers
    ensure_request_id(headers)
    origin = request.headers.get("Origin")
    if origin and "Access-Control-Allow-Origin" not in headers:
        allowed = _allowed_origin(request.app[CONFIG], origin)
        if allowed is not None:
            headers["Access-Control-Allow-Origin"] = allowed
            headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            if allowed != "*":
                headers.add("Vary", "Origin")
