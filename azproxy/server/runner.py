"""Running apps on a socket until a signal says stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from azproxy.keys import CONFIG
from azproxy.server.connections import GuardedRunner
from azproxy.server.guard import ConnectionGuard

__all__ = [
    "app_runner",
    "bound_port",
    "new_event_loop",
    "run",
    "start_site",
    "wait_for_signal",
]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where available: it roughly halves the loop's per-request CPU."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


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


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = app_runner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
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
