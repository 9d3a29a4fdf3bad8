"""`azproxy serve --workers N`: N processes serving one port.

The parent binds the listening sockets, forks the workers and supervises
them; it serves no request itself. Each worker is a whole azproxy (its own
app, connection pool, limiter, cooldowns and breakers).

Why this way:
- On Linux each worker has its own listening socket, all on the same port
  with SO_REUSEPORT, and the kernel hands each new connection to one of them
  by a hash of its addresses: an even spread that does not depend on which
  worker happens to wake first, and one wake-up per connection. With one
  shared socket every worker wakes for each connection, and whichever
  accepts first takes every connection waiting (asyncio and libuv accept in
  a loop). Measured here (2 cores, 50 connections) both spread about evenly
  and perform alike; the hash is the one that is even by construction.
  Elsewhere (no load-balancing SO_REUSEPORT) the workers share one socket.
- The parent binds every socket before it forks: `--port 0` becomes one real
  port for all, a port in use fails at once with one line, and the parent
  keeps the sockets open, so connections the kernel queues for a worker that
  died wait for its replacement instead of being refused.
- fork, with no event loop or thread started yet in the parent: the workers
  begin from the parent's validated Config, nothing to re-parse or pickle.
- The parent also makes the group's private directory, where each worker
  serves its metrics to its siblings (observe/metrics_group.py), and removes
  it when azproxy stops.

supervisor.py starts, replaces and stops the workers.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from azproxy.app import create_app
from azproxy.front.lifecycle import drain
from azproxy.observe.metrics_group import WorkerGroup
from azproxy.server.runner import app_runner, freeze_start_up, listen_failure, run
from azproxy.server.supervisor import Sockets, Supervisor
from azproxy.version import __version__

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = ["BALANCED", "group_directory", "listen_sockets", "serve_workers"]

log = logging.getLogger("azproxy")

BALANCED = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
BACKLOG = 128  # aiohttp's default
# After SIGTERM the workers get the grace period plus this for their cleanup
# (aiohttp's shutdown, realtime close handshakes); then they are killed.
STOP_MARGIN_S = 15.0


def serve_workers(config: Config) -> int:
    """Run config.workers azproxy processes on one port until SIGTERM."""
    try:
        slots, port = listen_sockets(
            config.host, config.port, config.workers, reuse_port=BALANCED
        )
    except OSError as exc:
        print(
            f"azproxy: {listen_failure(config.host, config.port, exc)}", file=sys.stderr
        )
        return 1

    directory = group_directory()

    def work(slot: int, sockets: Sockets, ready: Callable[[], None]) -> None:
        group = None
        if directory is not None:
            group = WorkerGroup(directory, config.workers, slot)
        run(lambda: serve_worker(config, sockets, ready, group))

    def announce() -> None:
        log.info(
            "azproxy %s listening on http://%s:%d (%d workers)",
            __version__,
            config.host,
            port,
            config.workers,
        )

    supervisor = Supervisor(slots, work, config.shutdown_grace_s + STOP_MARGIN_S)
    try:
        return supervisor.run(announce)
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def group_directory() -> str | None:
    """The group's private directory (mode 0700), or None without one: then
    each worker's /metrics shows its own figures, as before groups."""
    try:
        return tempfile.mkdtemp(prefix="azproxy-workers-")
    except OSError as exc:
        log.warning("/metrics will show one worker per scrape: %s", exc)
        return None


async def serve_worker(
    config: Config,
    sockets: Sockets,
    ready: Callable[[], None],
    group: WorkerGroup | None,
) -> None:
    """One worker: the app on the inherited sockets, drained on SIGTERM."""
    runner = app_runner(create_app(config, group=group))
    await runner.setup()
    try:
        for sock in sockets:
            await web.SockSite(runner, sock).start()
        stop = asyncio.Event()
        # Installed for good: a second SIGTERM must not cut the drain short.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        freeze_start_up()
        ready()
        await stop.wait()
        await drain(runner, config.shutdown_grace_s)
    finally:
        await runner.cleanup()


def listen_sockets(
    host: str, port: int, count: int, *, reuse_port: bool
) -> tuple[list[Sockets], int]:
    """Listening sockets for `count` workers, all on one port (a free one
    when port is 0), and that port. With reuse_port each worker gets its own
    socket per address; without, all workers share the same sockets."""
    infos = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    addresses = list(dict.fromkeys((info[0], info[4]) for info in infos))
    if port and reuse_port:
        # SO_REUSEPORT would join another program's sockets on this port
        # (same user) and silently split its traffic: a plain bind finds it.
        for family, address in addresses:
            with new_socket(family, reuse_port=False) as probe:
                probe.bind(address)
    owned: list[Sockets] = [[] for _ in range(count if reuse_port else 1)]
    try:
        for family, address in addresses:
            for sockets in owned:
                sock = new_socket(family, reuse_port=reuse_port)
                sockets.append(sock)
                sock.bind((address[0], port, *address[2:]))
                sock.listen(BACKLOG)
                port = int(sock.getsockname()[1])
    except BaseException:
        for sockets in owned:
            for sock in sockets:
                sock.close()
        raise
    return owned + [owned[0]] * (count - len(owned)), port


def new_socket(family: int, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:  # as asyncio does: no IPv4 on an IPv6 socket
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock
