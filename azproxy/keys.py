"""The typed keys every layer shares: the config, the upstream session, and
the request's caller and exchange record.

Everything else lives under a key its own module defines, beside the
`setup(app, config)` that creates it (GATE in auth/gate.py, HEALTH in
relay/health_board.py, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from azproxy.auth.callers import Caller
    from azproxy.observe.exchange import Exchange
    from azproxy.settings.config import Config

__all__ = ["CALLER", "CONFIG", "EXCHANGE", "SESSION", "UpstreamSession"]

# For annotations elsewhere; creating sessions stays banned outside app.py.
UpstreamSession = aiohttp.ClientSession

CONFIG: web.AppKey[Config] = web.AppKey("azproxy.config")
SESSION = web.AppKey("azproxy.session", aiohttp.ClientSession)
CALLER: web.RequestKey[Caller] = web.RequestKey("azproxy.caller")
EXCHANGE: web.RequestKey[Exchange] = web.RequestKey("azproxy.exchange")
