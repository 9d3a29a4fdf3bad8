"""The app factory: the only way to build the azproxy web.Application.

create_app is a list of setup(app, config) calls, each component creating
the object under its own key (and its hooks), then the route table. Order
matters where a component uses another: the metrics read the lifecycle and
the upstream slots, the observer feeds the metrics, and the route table,
built last, puts every handler behind the layer every request passes
(front/entry.py), which asks the gate, the lifecycle, CORS and the observer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from azproxy import fleet
from azproxy.auth import gate
from azproxy.auth.gate import GATE
from azproxy.front import cors, lifecycle
from azproxy.front.entry import entered
from azproxy.front.lifecycle import readyz
from azproxy.front.models import get_model, list_models
from azproxy.keys import CONFIG, SESSION
from azproxy.limits import admission
from azproxy.observe import metrics, metrics_group, observer
from azproxy.observe.metrics import METRICS, metrics_handler
from azproxy.observe.metrics_group import MEMBER, WorkerGroup, group_metrics_handler
from azproxy.realtime.handshake import REALTIME_PATH, handle_realtime, setup_realtime
from azproxy.relay import bodies, health_board, request_body, upstream_slots
from azproxy.relay.bodies import READ_BYTES
from azproxy.relay.context import RelayContext
from azproxy.relay.handler import handle
from azproxy.relay.mapping import DEPLOYMENT_PATHS
from azproxy.relay.send import refuse_redirects

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = ["create_app"]

# Headers aiohttp would otherwise invent. Azure must see what the client sent
# and no more: an invented Accept-Encoding would make Azure compress answers
# that azproxy relays untouched to a client that never asked for compression.
NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


def create_app(
    config: Config,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    group: WorkerGroup | None = None,
) -> web.Application:
    """The app for `config`. The clocks are there for tests: `monotonic` times
    the health board's cooldowns and breakers; `wall_clock` and `sleep` time
    Entra ID tokens (whose expiry is wall-clock time); `wall_clock` also
    times per-key limits (quota periods start at UTC boundaries). `group`:
    the `--workers` group this app is one worker of; its /metrics then
    answers for the whole group (observe/metrics_group.py)."""
    app = web.Application(
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
    lifecycle.setup(app, config)
    request_body.setup(app, config)  # the JSON bounds
    bodies.setup(app, config)  # the memory and disk budgets
    health_board.setup(app, config, clock=monotonic)
    upstream_slots.setup(app, config)
    metrics.setup(app, config)
    admission.setup(app, config, clock=wall_clock)  # per-key limits' counters
    fleet.setup(app, config)  # with redis_url: the board shared, a gauge
    # Three of them hold something open while the app runs, opened in this
    # order and closed in the reverse: the access log (flushed last), the
    # upstream session, and the Entra ID token source.
    observer.setup(app, config)
    app.cleanup_ctx.append(upstream_session)
    gate.setup(app, config, clock=wall_clock, sleep=sleep)
    cors.setup(app, config)
    setup_realtime(app)
    if group is not None:
        metrics_group.setup(app, group)
    add_routes(app)
    return app


def add_routes(app: web.Application) -> None:
    """The route table, every handler behind the layer of front/entry.py."""
    router = app.router
    router.add_get("/healthz", entered(app, healthz))
    router.add_get("/readyz", entered(app, readyz))
    authorize = app[GATE].may_read_metrics
    member = app.get(MEMBER)  # with --workers: /metrics for the whole group
    if member is None:
        metrics = metrics_handler(app[METRICS], authorize)
    else:
        metrics = group_metrics_handler(member, authorize)
    router.add_get("/metrics", entered(app, metrics))
    router.add_get("/v1/models", entered(app, list_models))
    router.add_get("/v1/models/{model}", entered(app, get_model))
    router.add_get(REALTIME_PATH, entered(app, handle_realtime))  # a WebSocket
    # The paths most requests take, as plain routes: aiohttp finds those with
    # a dict lookup, while the catch-all below costs a regex match.
    relay = entered(app, partial(handle, RelayContext(app)))
    for path in sorted(DEPLOYMENT_PATHS):
        router.add_route("*", f"/v1/{path}", relay)
    # Every other path and method, a newline (%0A) included: no request
    # reaches aiohttp's own plain-text 404 or 405.
    router.add_route("*", r"/{path:[\s\S]*}", relay)


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
        yield


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
