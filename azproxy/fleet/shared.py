"""The shared state of one process, started and stopped with the app.

At start, before the first request, the board is read as the fleet knows
it. Then three tasks run beside the requests, none of them in a request's
way:
- the batch sender (board changes now; part of each request's completion
  later), one pipeline per batch;
- the listener on the events channel, which applies other processes'
  changes, and after subscribing reads the board whole (so nothing said
  between the two is missed);
- a heartbeat that pings Redis every HEARTBEAT_S, so that an outage and a
  recovery are noticed, logged and shown (azproxy_shared_state_up) even when
  nothing changes.
While Redis is away requests go on with local state and /readyz stays ready:
a fleet without its Redis is a set of independent proxies, not a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from azproxy.errors import SharedStateDown
from azproxy.fleet.board_sync import BoardSync
from azproxy.fleet.breaker import FAILURES, RedisBreaker
from azproxy.fleet.connection import Client, Link
from azproxy.fleet.counters import SharedCounters
from azproxy.fleet.names import Names
from azproxy.fleet.scripts import Batch
from azproxy.limits.admission import COUNTERS
from azproxy.limits.store import InProcessStore
from azproxy.observe.metrics import METRICS
from azproxy.relay.health_board import HEALTH, HealthBoard

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = ["HEARTBEAT_S", "SHARED", "SharedState", "setup"]

HEARTBEAT_S = 1.0
CLOSE_WAIT_S = 1.0
log = logging.getLogger("azproxy.fleet")


class SharedState:
    def __init__(self, config: Config, board: HealthBoard) -> None:
        assert config.redis_url is not None
        self.link = Link(config.redis_url, timeout_s=config.redis_timeout_ms / 1000)
        self.names = Names(config.redis_prefix)
        self.breaker = RedisBreaker(
            timeout_s=config.redis_timeout_ms / 1000, where=config.redis_url.shown
        )
        # Board changes go at once: a cooldown must reach the others fast.
        self.board_batch = Batch(self.link, self.breaker, delay_s=0.0)
        self.board = BoardSync(
            board, self.names, self.board_batch, origin=secrets.token_hex(8)
        )
        self.breaker.recovered.append(self._recovered)
        self.breaker.went_down.append(self._went_down)
        self._tasks: list[asyncio.Task[None]] = []
        self._dropping: asyncio.Task[None] | None = None
        self._subscription: PubSub | None = None
        self._closing = False
        # Run and flushed with the board's: the per-key counters' (counters.py).
        self.jobs: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = ()
        self.batches: list[Batch] = [self.board_batch]

    @property
    def up(self) -> bool:
        return self.breaker.up

    async def start(self) -> None:
        """Read the board before the first request (a Redis away at start
        delays it by redis_timeout_ms at most), then run the tasks."""
        with contextlib.suppress(SharedStateDown):
            await self.breaker.call(self._join)
        loop = asyncio.get_running_loop()
        for job in (self.board_batch.run, self._listen, self._heartbeat, *self.jobs):
            self._tasks.append(loop.create_task(job()))

    async def close(self) -> None:
        self._closing = True
        # redis-py's pub/sub reader does not always end when cancelled (seen
        # here): closing its connection first ends it at once.
        if self._subscription is not None:
            # redis-py declares PubSub.connection as always None (it is set later).
            connection = cast("Connection | None", self._subscription.connection)
            if connection is not None:
                await connection.disconnect()
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks, timeout=CLOSE_WAIT_S)
        if self._dropping is not None:
            await asyncio.gather(self._dropping, return_exceptions=True)
        if self.breaker.up:
            for batch in self.batches:  # what this process learned last
                await batch.flush()
        await self.link.aclose()

    async def _listen(self) -> None:
        """Apply the fleet's changes as they come; resubscribe after a break."""
        while True:
            try:
                client = await self.breaker.call(self.link.ready)
                async with client.pubsub() as sub:
                    self._subscription = sub
                    await self.breaker.call(partial(self._subscribe, client, sub))
                    async for message in sub.listen():
                        if message["type"] == "message":
                            self.board.received(message["data"])
            except SharedStateDown:
                pass
            except FAILURES as exc:
                if self._closing:
                    return
                self.breaker.failed(exc)
            except Exception as exc:  # a bug: log it, and listen again
                log.exception("shared state: listening for the fleet's changes failed")
                self.breaker.failed(exc)
            await asyncio.sleep(max(self.breaker.wait_s(), 0.1))

    async def _subscribe(self, client: Client, sub: PubSub) -> None:
        """Subscribe and see Redis confirm it (a write alone can succeed on a
        connection that broke), then read the board: nothing said between
        the two is missed."""
        await sub.subscribe(self.names.events)
        confirmed = await sub.get_message(timeout=None)
        if confirmed is None or confirmed["type"] != "subscribe":
            raise RedisConnectionError("the subscription was not confirmed")
        await self.board.join(client)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await self.ping()

    async def ping(self) -> bool:
        """Whether Redis answers now (through the breaker)."""
        try:
            await self.breaker.call(self._ping)
        except SharedStateDown:
            return False
        return True

    async def _join(self) -> None:
        await self.board.join(await self.link.ready())

    async def _ping(self) -> None:
        client = await self.link.ready()
        await client.ping()

    def _went_down(self) -> None:
        # Connections to a Redis that restarted would each fail once more
        # after it is back, and mark it away again: drop them all now.
        loop = asyncio.get_running_loop()
        self._dropping = loop.create_task(self.link.drop_connections())

    def _recovered(self) -> None:
        # Tell the fleet what was learned alone; the listener re-reads the
        # board when it resubscribes.
        self.board.republish()


SHARED = web.AppKey("azproxy.shared", SharedState)


def setup(app: web.Application, config: Config) -> None:
    """app[SHARED], its tasks started and stopped with the app, the
    azproxy_shared_state_up gauge, and app[COUNTERS] shared (counters.py;
    after admission.setup)."""
    assert config.redis_url is not None
    shared = app[SHARED] = SharedState(config, app[HEALTH])
    local = app[COUNTERS]  # admission.setup's, for its clock
    assert isinstance(local, InProcessStore)
    counters = SharedCounters(
        shared.link,
        shared.breaker,
        shared.names,
        lease_s=config.redis_lease_s,
        closed=config.redis_failure == "closed",
        clock=local.clock,
    )
    app[COUNTERS] = counters
    shared.jobs += (counters.batch.run, counters.renew)
    shared.batches.append(counters.batch)
    app[METRICS].add_gauge(
        "azproxy_shared_state_up",
        "1 while Redis (redis_url) answers, 0 while each process goes on alone.",
        lambda: int(shared.up),
    )
    app.cleanup_ctx.append(_running)


async def _running(app: web.Application) -> AsyncIterator[None]:
    shared = app[SHARED]
    log.info(
        "shared state: Redis at %s, keys under %s:*",
        shared.breaker.where,
        shared.names.prefix,
    )
    await shared.start()
    yield
    await shared.close()
