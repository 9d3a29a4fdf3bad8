"""Readiness and graceful shutdown.

On SIGTERM azproxy stops accepting connections, answers any new request on
connections already open with 503, lets requests in flight (streams above
all) finish for up to `shutdown_grace_s`, then closes. A container stop or
a rolling update therefore never cuts a stream that ends within the grace.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web

from .keys import LIFECYCLE

__all__ = ["Lifecycle", "drain", "readyz"]

log = logging.getLogger("azproxy")


@dataclass
class Lifecycle:
    ready: bool = False
    draining: bool = False
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()


async def readyz(request: web.Request) -> web.Response:
    state = request.app[LIFECYCLE]
    if state.ready and not state.draining:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "draining"}, status=503)


async def drain(runner: web.AppRunner, grace_s: float) -> None:
    """Stop listening and wait for requests in flight, up to grace_s.

    The caller then cleans the runner up, which cuts whatever is left.
    """
    app = runner.app
    state = app[LIFECYCLE]
    state.draining = True
    for site in list(runner.sites):
        await site.stop()
    if state.in_flight:
        log.info(
            "draining: waiting up to %g s for %d request(s) in flight",
            grace_s,
            state.in_flight,
        )
        try:
            await asyncio.wait_for(state.idle.wait(), grace_s)
        except TimeoutError:
            log.warning(
                "shutdown grace of %g s over: cutting %d request(s)",
                grace_s,
                state.in_flight,
            )
