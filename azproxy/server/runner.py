"""Running apps on a socket until a signal says stop."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import web

from azproxy.errors import CannotListen
from azproxy.front.lifecycle import drain
from azproxy.keys import CONFIG
from azproxy.server.connections import GuardedRunner
from azproxy.server.guard import ConnectionGuard
from azproxy.version import __version__

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = [
    "app_runner",
    "bound_port",
    "freeze_start_up",
    "listen_failure",
    "new_event_loop",
    "run",
    "serve_until_signal",
    "start_site",
    "wait_for_signal",
]

log = logging.getLogger("azproxy")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where available: it roughly halves the loop's per-request CPU."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# The young generation's threshold (CPython's default: 700). A request
# allocates a few hundred container objects, nearly all freed by reference
# counting when it ends (a failed request too: tests/integration/
# test_no_cycles*.py), so at 700 the collector ran every few requests and
# walked objects about to be freed anyway. The older generations keep their
# default ratios (10, 10) to this one. docs/performance.md has the numbers.
YOUNG_THRESHOLD = 10_000


def freeze_start_up() -> None:
    """Once serving: what start-up made (modules, the app, its sessions)
    lives as long as the process, so the collector stops scanning it. Each
    full collection otherwise walked those ~43,000 objects again: about 9 µs
    per request at 50 connections, 3 % of the hot path's CPU. And the
    collector runs less often (YOUNG_THRESHOLD)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


def app_runner(app: web.Application) -> web.AppRunner:
    # handler_cancellation: a client that disconnects cancels its handler and
    # with it the upstream request (aiohttp's run_app defaults to False).
    # shutdown_timeout is what remains after our own drain (lifecycle.drain)
    # has waited out the grace period: then the last requests are cut.
    config = app.get(CONFIG)
    # An app without a Config is the simulator, a test double: served as
    # aiohttp serves it, without azproxy's connection guards.
    guard = None if config is None else ConnectionGuard.for_config(config)
    return GuardedRunner(
        app, guard, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )


def listen_failure(host: str, port: int, exc: OSError) -> str:
    """One line saying why `host:port` cannot be listened on and which flag
    changes it, for `serve` (one process or --workers) and `simulate`."""
    shown = f"[{host}]" if ":" in host else host
    # asyncio's message repeats the address; the errno's own words do not.
    reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror
    hint = (
        "choose another port with --port"
        if exc.errno == errno.EADDRINUSE
        else "check --host and --port"
    )
    return f"cannot listen on {shown}:{port}: {reason or exc}; {hint}"


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    """The app served on host:port; CannotListen when the address is taken
    or cannot be had (the app is cleaned up first)."""
    runner = app_runner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(listen_failure(host, port, exc)) from None
    return runner


def bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def serve_until_signal(
    app: web.Application,
    config: Config,
    announce: Callable[[int], None] | None = None,
) -> None:
    """Serve `app` on config's host and port (CannotListen if it cannot)
    until SIGTERM or SIGINT, then drain it. `announce` gets the bound port."""
    runner = await start_site(app, config.host, config.port)
    try:
        port = bound_port(runner)
        log.info("azproxy %s listening on http://%s:%d", __version__, config.host, port)
        freeze_start_up()
        if announce is not None:
            announce(port)
        await wait_for_signal()
        await drain(runner, config.shutdown_grace_s)
    finally:
        await runner.cleanup()
