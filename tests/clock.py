"""A clock that moves only when a test says so, for create_app's clocks
(the health board's cooldowns and breakers, Entra ID token expiry): a test
advances it past a window instead of sleeping through it, or racing it."""

from __future__ import annotations

import asyncio

__all__ = ["FakeClock"]


class FakeClock:
    """Call it for the time; `sleep` returns once advance() reaches the end."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move on, waking every sleeper whose time has come."""
        self.now += seconds
        for sleeper in [s for s in self._sleepers if s[0] <= self.now]:
            self._sleepers.remove(sleeper)
            if not sleeper[1].done():
                sleeper[1].set_result(None)

    @property
    def sleeping(self) -> int:
        """How many sleepers wait for advance()."""
        return len(self._sleepers)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        sleeper = (self.now + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(sleeper)
        try:
            await sleeper[1]
        finally:
            if sleeper in self._sleepers:  # cancelled before its time
                self._sleepers.remove(sleeper)
