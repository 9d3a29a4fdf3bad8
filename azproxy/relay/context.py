"""What the relay uses, found once per app.

The catch-all handler is built over a RelayContext (relay/handler.py), and
each step of a request (the body read, the attempts, the answer) is handed it
and reads attributes, instead of looking each object up as
`request.app[KEY]`: a property through the match info, then a dict, about
1,800 instructions each, a dozen times a request. The objects themselves are
still made, and reachable under their keys, by their own modules' setup().
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from azproxy.front.lifecycle import LIFECYCLE
from azproxy.keys import CONFIG, SESSION
from azproxy.observe.metrics import METRICS
from azproxy.relay.bodies import BUDGETS
from azproxy.relay.health_board import HEALTH
from azproxy.relay.request_body import JSON_BOUNDS
from azproxy.relay.upstream_slots import LIMITER

if TYPE_CHECKING:
    from azproxy.keys import UpstreamSession

__all__ = ["RelayContext"]


class RelayContext:
    """The app's objects the relay reads on every request. Made after their
    setup() calls (create_app's route table); `session` once the app starts,
    as the upstream session only exists then."""

    __slots__ = (
        "budgets",
        "config",
        "health",
        "json_bounds",
        "lifecycle",
        "limiter",
        "max_body_bytes",
        "metrics",
        "session",
    )

    session: UpstreamSession

    def __init__(self, app: web.Application) -> None:
        config = self.config = app[CONFIG]
        self.max_body_bytes = config.max_body_bytes  # a Config property
        self.budgets = app[BUDGETS]
        self.limiter = app[LIMITER]
        self.json_bounds = app[JSON_BOUNDS]
        self.health = app[HEALTH]
        self.metrics = app[METRICS]
        self.lifecycle = app[LIFECYCLE]
        # After the upstream session's cleanup context, which on_startup runs
        # first.
        app.on_startup.append(self._started)

    async def _started(self, app: web.Application) -> None:
        self.session = app[SESSION]
