"""A breaker around Redis: every call short, none while Redis is away.

redis-py waits 5 s for a reply by default, and a host that vanished without
closing its connections would hold every request that long. Here each call
gets redis_timeout_ms; the first failure marks Redis as away (logged once),
and no call is made until a back-off has passed (0.5 s, doubling to 5 s).
The went_down callbacks drop the client's pooled connections then, so that
none that broke silently is used after Redis is back.
Then one call at a time tries again: the first that succeeds marks Redis as
back (logged once) and runs the recovery callbacks (re-reading the board,
giving back what was counted locally meanwhile). While Redis is away, callers
get SharedStateDown at once and go on with their own process's state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from azproxy.errors import SharedStateDown

__all__ = ["FAILURES", "RedisBreaker"]

T = TypeVar("T")
log = logging.getLogger("azproxy.fleet")

# What a call to an away or broken Redis raises: redis-py's errors (its
# timeouts and connection errors among them), the socket's, and our timeout.
FAILURES = (RedisError, OSError, asyncio.TimeoutError)
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0


class RedisBreaker:
    def __init__(
        self,
        *,
        timeout_s: float,
        where: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.where = where  # the URL without its password, for the log
        self.up = True
        self.went_down: list[Callable[[], None]] = []
        self.recovered: list[Callable[[], None]] = []
        self._clock = clock
        self._retry_at = 0.0
        self._backoff_s = FIRST_BACKOFF_S

    def allowed(self) -> bool:
        """Whether a call may be made now. While Redis is away, one call is
        let through each back-off, and the others wait for its verdict."""
        if self.up:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.timeout_s  # this one tries; others wait
        return True

    def wait_s(self) -> float:
        """How long until a call may be made (0 while Redis is up)."""
        return 0.0 if self.up else max(self._retry_at - self._clock(), 0.0)

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """operation() within the timeout; SharedStateDown if Redis is away
        or does not answer in time."""
        if not self.allowed():
            raise SharedStateDown("Redis is away")
        return await self.run(operation)

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """call() for a caller that asked allowed() itself (fleet/coalesce.py:
        once for the calls of many requests)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await operation()
        except FAILURES as exc:
            self.failed(exc)
            raise SharedStateDown(
                f"Redis did not answer: {type(exc).__name__}"
            ) from None
        self.succeeded()
        return result

    def failed(self, why: BaseException) -> None:
        if self.up:
            self.up = False
            self._backoff_s = FIRST_BACKOFF_S
            log.warning(
                "shared state: Redis at %s is unreachable (%s); each process "
                "goes on with its own state until it is back",
                self.where,
                type(why).__name__,
            )
            for callback in self.went_down:
                callback()
        else:
            self._backoff_s = min(self._backoff_s * 2, MAX_BACKOFF_S)
        self._retry_at = self._clock() + self._backoff_s

    def succeeded(self) -> None:
        if self.up:
            return
        self.up = True
        log.warning("shared state: Redis at %s is back", self.where)
        for callback in self.recovered:
            callback()
