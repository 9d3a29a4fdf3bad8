"""A bound on concurrent upstream requests per process.

Past the bound a request waits (at most queue_timeout_s) for a slot, then
gets a 503 with Retry-After: a clear answer instead of an ever-growing queue.

A free slot is taken without awaiting anything: this runs on every request,
and an async context manager (or asyncio.Semaphore) costs a few coroutine
calls each time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from aiohttp import web

from azproxy.errors import ServiceUnavailable

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = ["LIMITER", "Limiter", "setup"]


class Limiter:
    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a free slot now; False when there is none (or others wait)."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot, which release() hands over; 503 after wait_s."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait_s):
                await waiter
        except TimeoutError:
            self._abandon(waiter)
            raise ServiceUnavailable(
                f"azproxy is at its limit of {self.limit} concurrent upstream "
                f"requests (max_upstream_requests); retry shortly.",
                code="too_many_requests_in_flight",
                headers={"Retry-After": "1"},
            ) from None
        except BaseException:
            self._abandon(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the first in line
                return
        self.in_use -= 1

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        """A waiter gives up; a slot handed to it meanwhile is passed on."""
        if waiter.done() and not waiter.cancelled():
            self.release()
            return
        waiter.cancel()
        if waiter in self._waiters:
            self._waiters.remove(waiter)


LIMITER = web.AppKey("azproxy.limiter", Limiter)


def setup(app: web.Application, config: Config) -> None:
    app[LIMITER] = Limiter(config.max_upstream_requests, config.queue_timeout_s)
