"""A bound on concurrent upstream requests per process.

Past the bound a request waits (at most queue_timeout_s) for a slot, then
gets a 503 with Retry-After: a clear answer instead of an ever-growing queue.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from .errors import ServiceUnavailable

__all__ = ["Limiter"]


class Limiter:
    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self._slots = asyncio.Semaphore(limit)

    async def __aenter__(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: no waiting, no timer
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except TimeoutError:
            raise ServiceUnavailable(
                f"azproxy is at its limit of {self.limit} concurrent upstream "
                f"requests (max_upstream_requests); retry shortly.",
                code="too_many_requests_in_flight",
                headers={"Retry-After": "1"},
            ) from None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._slots.release()
