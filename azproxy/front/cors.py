"""CORS, so that browser apps can call azproxy (cors_origins; empty: off).

azproxy answers a preflight itself, before any credential is asked for
(browsers send preflights without them), and adds Access-Control-* headers
to every response: the entry layer to the answers it returns, and what sends
its answer itself (a stream, a WebSocket) before it does (add_cors_headers),
as with x-request-id. Not an on_response_prepare hook: a signal and a
coroutine on every response, whether the request has an Origin or not. With
CORS off nothing is wired: no preflight answer, no headers, no cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = [
    "ALLOW_METHODS",
    "CORS",
    "EXPOSE_HEADERS",
    "Cors",
    "add_cors_headers",
    "setup",
]

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
        "x-azproxy-ratelimit-remaining-requests",
        "x-azproxy-ratelimit-remaining-tokens",
        "x-azproxy-quota-remaining-tokens",
    )
)


class Cors:
    """The policy for the configured origins (`*` allows any)."""

    __slots__ = ("_any", "_origins")

    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(origins)

    def allowed(self, origin: str) -> str | None:
        """The Access-Control-Allow-Origin value for this origin, or None."""
        if not origin:
            return None
        if self._any:
            return "*"
        return origin if origin in self._origins else None

    def preflight(self, request: web.Request) -> web.Response | None:
        """The answer to a preflight, or None when this is none (or its
        origin is not allowed: the request then goes on, without CORS
        headers)."""
        if "Access-Control-Request-Method" not in request.headers:
            return None
        allowed = self.allowed(request.headers.get("Origin", ""))
        if allowed is None:
            return None
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

    def add_headers(
        self, request_headers: CIMultiDictProxy[str], headers: CIMultiDict[str]
    ) -> None:
        """CORS headers on a response to an allowed origin (a preflight
        answer carries its own already)."""
        origin = request_headers.get("Origin")
        if origin and "Access-Control-Allow-Origin" not in headers:
            allowed = self.allowed(origin)
            if allowed is not None:
                headers["Access-Control-Allow-Origin"] = allowed
                headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
                if allowed != "*":
                    headers.add("Vary", "Origin")


CORS = web.AppKey("azproxy.cors", Cors)


def add_cors_headers(request: web.Request, headers: CIMultiDict[str]) -> None:
    """For what sends its answer itself (a stream, a WebSocket): the CORS
    headers, set before it does. The entry layer sets them on the rest."""
    cors = request.app.get(CORS)
    if cors is not None:
        cors.add_headers(request.headers, headers)


def setup(app: web.Application, config: Config) -> None:
    """With CORS on, app[CORS] answers preflights and adds the headers (the
    entry layer asks it); with CORS off, it does not exist."""
    if config.cors_origins:
        app[CORS] = Cors(config.cors_origins)
