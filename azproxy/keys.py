"""Typed keys for state shared through the app and the request.

Kept apart so that app.py, the middlewares and the relay can share them
without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from azproxy.relay.jsonshape import JsonBounds
from azproxy.settings.config import Config

if TYPE_CHECKING:
    from azproxy.auth.callers import Caller
    from azproxy.auth.gate import Gate
    from azproxy.front.lifecycle import Lifecycle
    from azproxy.observe.exchange import Exchange, Observer
    from azproxy.observe.metrics import Metrics
    from azproxy.relay.bodies import Budgets
    from azproxy.relay.health_board import HealthBoard
    from azproxy.relay.upstream_slots import Limiter

__all__ = [
    "BUDGETS",
    "CALLER",
    "CONFIG",
    "EXCHANGE",
    "GATE",
    "HEALTH",
    "JSON_BOUNDS",
    "LIFECYCLE",
    "LIMITER",
    "METRICS",
    "OBSERVER",
    "SESSION",
    "UpstreamSession",
]

# For annotations elsewhere; creating sessions stays banned outside app.py.
UpstreamSession = aiohttp.ClientSession

CONFIG = web.AppKey("azproxy.config", Config)
SESSION = web.AppKey("azproxy.session", aiohttp.ClientSession)
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("azproxy.lifecycle")
GATE: web.AppKey[Gate] = web.AppKey("azproxy.gate")
HEALTH: web.AppKey[HealthBoard] = web.AppKey("azproxy.health")
LIMITER: web.AppKey[Limiter] = web.AppKey("azproxy.limiter")
CALLER: web.RequestKey[Caller] = web.RequestKey("azproxy.caller")
EXCHANGE: web.RequestKey[Exchange] = web.RequestKey("azproxy.exchange")
METRICS: web.AppKey[Metrics] = web.AppKey("azproxy.metrics")
OBSERVER: web.AppKey[Observer] = web.AppKey("azproxy.observer")
BUDGETS: web.AppKey[Budgets] = web.AppKey("azproxy.budgets")
# The config's max_json_* settings, built once: every parse is held to them.
JSON_BOUNDS = web.AppKey("azproxy.json_bounds", JsonBounds)
