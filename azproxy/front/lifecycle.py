"""Readiness and graceful shutdown.

On SIGTERM azproxy stops accepting connections, answers any new request on
connections already open with 503 (the drain gate, which the admission
middleware asks first), lets requests in flight (streams above all) finish
for up to `shutdown_grace_s`, then closes. A container stop or a rolling
update therefore never cuts a stream that ends within the grace; one still
running then ends with an explicit error event, never silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from azproxy.errors import ServiceUnavailable, ShuttingDown

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = ["LIFECYCLE", "Lifecycle", "drain", "readyz", "setup"]

log = logging.getLogger("azproxy")


@dataclass
class Lifecycle:
    ready: bool = False
    draining: bool = False
    in_flight: int = 0
    # What drain() waits on, made only then: requests never touch an Event.
    _idle: asyncio.Future[None] | None = field(default=None, init=False)
    # The Azure answers being relayed now, and whether the grace is over.
    streams: set[aiohttp.ClientResponse] = field(default_factory=set)
    cutting: bool = False
    # What readiness waits for at start besides the app's own start-up (the
    # first Entra ID token): each says when it has come, or been waited for
    # long enough.
    awaited: list[Callable[[], bool]] = field(default_factory=list)

    def started(self) -> bool:
        """Whether everything awaited at start has come; asked by /readyz
        only, and each only until it says yes."""
        self.awaited = [check for check in self.awaited if not check()]
        return not self.awaited

    def refuse(self, path: str) -> None:
        """The drain gate, asked only while draining: 503 for every request
        but the liveness probe, whose answer must not change on the way out."""
        if path != "/healthz":
            raise ServiceUnavailable(
                "azproxy is shutting down; retry on another instance.",
                headers={"Connection": "close", "Retry-After": "1"},
            )

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        idle = self._idle
        if not self.in_flight and idle is not None and not idle.done():
            idle.set_result(None)

    async def wait_idle(self) -> None:
        """Until no request is in flight (waits at the same time share one)."""
        if self.in_flight:
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)

    def relaying(self, upstream: aiohttp.ClientResponse) -> None:
        """An answer starts being relayed (one that starts after the grace
        is cut at once)."""
        self.streams.add(upstream)
        if self.cutting:
            cut(upstream)

    def relayed(self, upstream: aiohttp.ClientResponse) -> None:
        self.streams.discard(upstream)

    def cut_streams(self) -> None:
        """End every answer still being relayed, now and from now on."""
        self.cutting = True
        for upstream in list(self.streams):
            cut(upstream)


LIFECYCLE = web.AppKey("azproxy.lifecycle", Lifecycle)


def setup(app: web.Application, config: Config) -> None:
    """The app's lifecycle, ready once every startup step has run."""
    app[LIFECYCLE] = Lifecycle()
    # on_startup runs after every cleanup_ctx has started (aiohttp runs
    # those first): ready means the upstream session is open.
    app.on_startup.append(_ready)


async def _ready(app: web.Application) -> None:
    app[LIFECYCLE].ready = True


def cut(upstream: aiohttp.ClientResponse) -> None:
    """The relay's next read from Azure raises ShuttingDown (it then sends the
    error event and closes the client's connection); Azure's connection
    closes now."""
    upstream.content.set_exception(ShuttingDown())
    upstream.close()


async def readyz(request: web.Request) -> web.Response:
    state = request.app[LIFECYCLE]
    if state.draining:
        return web.json_response({"status": "draining"}, status=503)
    if not (state.ready and state.started()):
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ready"})


async def drain(runner: web.AppRunner, grace_s: float) -> None:
    """Stop listening and wait for requests in flight, up to grace_s.

    Answers still being relayed then are cut with an explicit error event;
    the caller then cleans the runner up, which ends whatever is left (the
    runner's shutdown_timeout gives those cut streams time to say so).
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
            await asyncio.wait_for(state.wait_idle(), grace_s)
        except TimeoutError:
            log.warning(
                "shutdown grace of %g s over: cutting %d request(s)",
                grace_s,
                state.in_flight,
            )
            state.cut_streams()
