"""Lua scripts, called by their SHA-1 (EVALSHA), and calls sent in batches.

A script is sent whole only once per Redis: EVALSHA names it, and a Redis
that does not know it (restarted, failed over, flushed) answers NOSCRIPT,
upon which it is loaded and the call made again.

A Batch gathers calls that need no answer, such as the board's changes or
the completion of a request (a lease to release, tokens to reconcile), and
sends them together in one pipeline, one round trip, at most `delay_s` after
the first was added. On a cluster, whose client pipelines no scripts (each
key may live on another shard), they go out together, each on its own.
While Redis is away a batch is dropped: the process's own state has it, and
the recovery callbacks restore what must be.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import RedisCluster
from redis.exceptions import NoScriptError

from azproxy.errors import SharedStateDown

if TYPE_CHECKING:
    from azproxy.fleet.breaker import RedisBreaker
    from azproxy.fleet.connection import Client, Link

__all__ = ["Batch", "Script"]

Arg = str | int | float | bytes
log = logging.getLogger("azproxy.fleet")


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def run(
        self, client: Client, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


Call = tuple[Script, Sequence[str], Sequence[Arg]]


class Batch:
    """Script calls whose answers nobody waits for, sent together."""

    def __init__(
        self,
        link: Link,
        breaker: RedisBreaker,
        *,
        delay_s: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._link = link
        self._breaker = breaker
        self._delay_s = delay_s
        self._sleep = sleep
        self._calls: list[Call] = []
        self._added = asyncio.Event()
        # Called as a batch is sent: to add calls gathered meanwhile (one per
        # access key rather than one per request), after wake().
        self.gathering: list[Callable[[], None]] = []

    def add(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Send this call with the next batch (no I/O here)."""
        self._calls.append((script, keys, args))
        self._added.set()

    def wake(self) -> None:
        """Send a batch soon: a gathering callback has calls to add."""
        self._added.set()

    async def run(self) -> None:
        """Send batches until cancelled."""
        while True:
            await self._added.wait()
            if self._delay_s:
                await self._sleep(self._delay_s)
            await self.flush()

    async def flush(self) -> None:
        for gather in self.gathering:
            gather()
        calls, self._calls = self._calls, []
        self._added.clear()
        if not calls:
            return
        try:
            await self._breaker.call(lambda: self._send(calls))
        except SharedStateDown:
            log.debug("shared state: %d update(s) kept local", len(calls))

    async def _send(self, calls: list[Call]) -> None:
        client = await self._link.ready()
        if isinstance(client, RedisCluster):
            await asyncio.gather(*(s.run(client, k, a) for s, k, a in calls))
            return
        results = await self._pipeline(client, calls)
        # A Redis that lost its scripts: load each once, send those calls again.
        lost = [c for c, r in zip(calls, results, strict=True) if _noscript(r)]
        for error in results:
            if isinstance(error, Exception) and not _noscript(error):
                raise error
        if lost:
            for script in {id(c[0]): c[0] for c in lost}.values():
                await client.script_load(script.source)
            for error in await self._pipeline(client, lost):
                if isinstance(error, Exception):
                    raise error

    @staticmethod
    async def _pipeline(client: Client, calls: list[Call]) -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results


def _noscript(result: Any) -> bool:
    return isinstance(result, NoScriptError)
