"""The app factory: the only way to build the azproxy web.Application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from azproxy.auth.azure_auth import ApiKeyAuth, BearerAuth, EntraAuth, UpstreamAuth
from azproxy.auth.callers import Router
from azproxy.auth.credentials import presented_token
from azproxy.auth.gate import Gate, match_access_key
from azproxy.errors import InvalidCredentials
from azproxy.front.lifecycle import Lifecycle, readyz
from azproxy.front.middlewares import (
    admission_middleware,
    exchange_middleware,
    on_response_prepare,
)
from azproxy.front.models import get_model, list_models
from azproxy.keys import (
    BUDGETS,
    CONFIG,
    GATE,
    HEALTH,
    JSON_BOUNDS,
    LIFECYCLE,
    LIMITER,
    METRICS,
    OBSERVER,
    SESSION,
)
from azproxy.observe.exchange import AccessLog, Observer
from azproxy.observe.metrics import Metrics, metrics_handler
from azproxy.realtime.handshake import setup_realtime
from azproxy.relay.bodies import READ_BYTES, Budgets
from azproxy.relay.handler import handle
from azproxy.relay.health_board import HealthBoard
from azproxy.relay.mapping import DEPLOYMENT_PATHS
from azproxy.relay.request_body import json_bounds
from azproxy.relay.send import refuse_redirects
from azproxy.relay.upstream_slots import Limiter
from azproxy.settings.config import Config, ConfigError
from azproxy.settings.server_side import EndpointConfig

__all__ = ["create_app"]

# Headers aiohttp would otherwise invent. Azure must see what the client sent
# and no more: an invented Accept-Encoding would make Azure compress answers
# that azproxy relays untouched to a client that never asked for compression.
NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[exchange_middleware, admission_middleware],
        client_max_size=config.max_body_bytes,
        handler_args={
            "max_line_size": config.max_header_kb * 1024,
            "max_field_size": config.max_header_kb * 1024,
            "keepalive_timeout": config.keepalive_timeout_s,
            # Bodies arrive as the client sent them: uploads are relayed
            # with their own Content-Encoding and Content-Length, and a
            # compressed body azproxy must read is refused (415).
            "auto_decompress": False,
        },
    )
    app[CONFIG] = config
    app[JSON_BOUNDS] = json_bounds(config)
    app[LIFECYCLE] = Lifecycle()
    app[BUDGETS] = Budgets(config.max_buffered_body_bytes, config.max_spool_bytes)
    entra = entra_auth(config)
    app[GATE] = Gate(config, Router(config, lambda e: upstream_auth(e, entra)))
    app[HEALTH] = HealthBoard(
        rate_limit_cooldown_s=config.rate_limit_cooldown_s,
        error_cooldown_s=config.error_cooldown_s,
        breaker_failures=config.breaker_failures,
        breaker_open_s=config.breaker_open_s,
    )
    limiter = app[LIMITER] = Limiter(
        config.max_upstream_requests, config.queue_timeout_s
    )
    lifecycle = app[LIFECYCLE]
    metrics = app[METRICS] = Metrics(
        {
            "azproxy_requests_in_flight": (
                "Requests being handled now.",
                lambda: lifecycle.in_flight,
            ),
            "azproxy_upstream_requests_in_flight": (
                "Requests holding one of the max_upstream_requests slots.",
                lambda: limiter.in_use,
            ),
        },
        models=config.model_map,
        deployments=(r.deployment for rs in config.model_map.values() for r in rs),
    )
    app[OBSERVER] = Observer(None, metrics)
    app.cleanup_ctx.append(access_log)
    app.cleanup_ctx.append(upstream_session)
    if entra is not None:
        app.cleanup_ctx.append(entra_tokens(entra))
    app.on_response_prepare.append(on_response_prepare)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(metrics, metrics_guard(config)))
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    setup_realtime(app)  # GET /v1/realtime (WebSocket), before the catch-all
    # The paths most requests take, as plain routes: aiohttp finds those with
    # a dict lookup, while the catch-all below costs a regex match.
    for path in sorted(DEPLOYMENT_PATHS):
        app.router.add_route("*", f"/v1/{path}", handle)
    app.router.add_route("*", "/{path:.*}", handle)
    return app


async def access_log(app: web.Application) -> AsyncIterator[None]:
    """One line per request on stdout (log_format json or text)."""
    config = app[CONFIG]
    observer = app[OBSERVER]
    if config.access_log:
        observer.access_log = AccessLog(asyncio.get_running_loop(), config.log_format)
    yield
    if observer.access_log is not None:
        observer.access_log.flush()


def metrics_guard(config: Config) -> Callable[[web.Request], None]:
    """Who may read /metrics: anyone, or (with metrics_key or
    metrics_require_key) whoever presents metrics_key or an access key."""
    metrics_key, require_key = config.metrics_key, config.metrics_require_key
    wanted = []
    if metrics_key is not None:
        wanted.append("the metrics key (metrics_key)")
    if require_key:
        wanted.append("an azproxy access key (metrics_require_key)")
    refusal = f"GET /metrics needs {' or '.join(wanted)}."

    def check(request: web.Request) -> None:
        if not wanted:
            return
        presented = presented_token(request.headers)
        if presented is not None:
            # Both compared in constant time (Secret.matches).
            if metrics_key is not None and metrics_key.matches(presented):
                return
            keys = config.access_keys
            if require_key and match_access_key(keys, presented) is not None:
                return
        raise InvalidCredentials(refusal)

    return check


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    """The one ClientSession this process uses to reach Azure."""
    config = app[CONFIG]
    timeout = aiohttp.ClientTimeout(
        total=None,  # reasoning models may stream for many minutes
        sock_connect=config.connect_timeout_s,
        # Until response headers arrive; the relay then switches the
        # connection to read_timeout_s, the idle gap between chunks.
        sock_read=config.header_timeout_s,
    )
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,  # relay bytes and Content-Encoding exactly as sent
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=NO_AUTO_HEADERS,
        # No redirect is followed with a key: for ws_connect, which follows
        # them; send_once checks its answers inline, without this layer.
        middlewares=(refuse_redirects,),
        # Bounded reads: a stream whose client stops reading holds about two
        # slices of Azure's answer here (aiohttp's default is 256 KiB, x2).
        read_bufsize=READ_BYTES,
    ) as session:
        app[SESSION] = session
        app[LIFECYCLE].ready = True
        yield


def upstream_auth(endpoint: EndpointConfig, entra: EntraAuth | None) -> UpstreamAuth:
    if endpoint.api_key is not None:
        return ApiKeyAuth(endpoint.api_key)
    if endpoint.ad_token is not None:
        return BearerAuth(endpoint.ad_token)
    assert entra is not None  # an endpoint with entra = true exists
    return entra


def entra_auth(config: Config) -> EntraAuth | None:
    """One Entra ID token source shared by every endpoint that uses Entra ID."""
    if not any(e.entra for e in config.endpoints):
        return None
    try:
        from azure.identity.aio import DefaultAzureCredential
    except ImportError:
        raise ConfigError(
            [
                "entra: Entra ID needs the azure-identity package: "
                "pip install 'azproxy[entra]'"
            ]
        ) from None
    return EntraAuth(DefaultAzureCredential(), config.entra_scope)


def entra_tokens(
    entra: EntraAuth,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await entra.start()  # a failure is logged and retried in the background
        yield
        await entra.close()

    return lifetime


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
