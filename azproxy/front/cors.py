"""CORS, so that browser apps can call azproxy (cors_origins; empty: off).

azproxy answers a preflight itself, before any credential is asked for
(browsers send preflights without them), and adds Access-Control-* headers
to every response from an on_response_prepare hook: a middleware runs after
a streamed response has already sent its headers. With CORS off nothing is
wired: no preflight answer, no hook, no cost per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = ["ALLOW_METHODS", "CORS", "EXPOSE_HEADERS", "Cors", "setup"]

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

    async def on_response_prepare(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        """CORS headers on every response to an allowed origin, streamed ones
        included (a preflight answer carries its own already)."""
        origin = request.headers.get("Origin")
        headers = response.headers
        if origin and "Access-Control-Allow-Origin" not in headers:
            allowed = self.allowed(origin)
            if allowed is not None:
                headers["Access-Control-Allow-Origin"] = allowed
                headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
                if allowed != "*":
                    headers.add("Vary", "Origin")


CORS = web.AppKey("azproxy.cors", Cors)


def setup(app: web.Application, config: Config) -> None:
    """With CORS on, app[CORS] answers preflights (the entry layer
    asks it) and its hook adds the headers; with CORS off, neither exists."""
    if config.cors_origins:
        cors = app[CORS] = Cors(config.cors_origins)
        app.on_response_prepare.append(cors.on_response_prepare)
