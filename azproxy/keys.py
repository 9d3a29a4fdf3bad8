"""Typed keys for state shared through the app and the request.

Kept apart so that app.py, the middlewares and the relay can share them
without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .config import Config
from .credentials import PassthroughToken

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

__all__ = ["CONFIG", "LIFECYCLE", "SESSION", "TOKEN", "UpstreamSession"]

# For annotations elsewhere; creating sessions stays banned outside app.py.
UpstreamSession = aiohttp.ClientSession

CONFIG = web.AppKey("azproxy.config", Config)
SESSION = web.AppKey("azproxy.session", aiohttp.ClientSession)
TOKEN = web.RequestKey("azproxy.token", PassthroughToken)
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("azproxy.lifecycle")
