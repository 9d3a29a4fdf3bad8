"""Which deployments may take a request now: cooldowns and circuit breakers.

A deployment that answers 429 cools down for as long as Azure asked
(retry-after-ms, x-ms-retry-after-ms or retry-after; rate_limit_cooldown_s
when it did not say); one that fails (5xx, connection error, no headers in
time) cools down for error_cooldown_s. After breaker_failures failures in a
row its breaker opens: it is skipped for breaker_open_s, then a single request
probes it (half-open) and closes the breaker on success.

The board orders a model's deployments for one request: lowest priority
number first, and within a priority a weighted random order, so traffic
spreads by weight. No server-side sleeping: a cooling deployment is skipped,
and when all of them cool, the caller learns the shortest wait at once.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .routing import Backend

__all__ = ["AllCoolingDown", "HealthBoard", "retry_after_s"]


class AllCoolingDown(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(f"every deployment is cooling down for {wait_s:.3f} s")
        self.wait_s = wait_s


@dataclass(slots=True)
class _State:
    cooling_until: float = 0.0
    failures: int = 0  # in a row
    open_until: float = 0.0  # breaker open (skipped) until then
    probing: bool = False  # half-open: one request is testing it


class HealthBoard:
    def __init__(
        self,
        *,
        rate_limit_cooldown_s: float,
        error_cooldown_s: float,
        breaker_failures: int,
        breaker_open_s: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.rate_limit_cooldown_s = rate_limit_cooldown_s
        self.error_cooldown_s = error_cooldown_s
        self.breaker_failures = breaker_failures
        self.breaker_open_s = breaker_open_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._states: dict[str, _State] = {}

    def _state(self, backend: Backend) -> _State:
        state = self._states.get(backend.name)
        if state is None:
            state = self._states[backend.name] = _State()
        return state

    def plan(self, backends: Sequence[Backend]) -> list[Backend]:
        """The deployments to try, best first; raises AllCoolingDown if none."""
        if len(backends) == 1 and backends[0].name not in self._states:
            return [backends[0]]  # the common case: nothing to decide
        now = self._clock()
        ready: list[Backend] = []
        waits: list[float] = []
        for backend in backends:
            wait = self._wait(self._state(backend), now)
            if wait <= 0:
                ready.append(backend)
            else:
                waits.append(wait)
        if not ready:
            raise AllCoolingDown(min(waits))
        ready.sort(key=lambda b: b.priority)
        ordered: list[Backend] = []
        for priority in sorted({b.priority for b in ready}):
            ordered.extend(
                self._by_weight([b for b in ready if b.priority == priority])
            )
        return ordered

    def _wait(self, state: _State, now: float) -> float:
        if state.probing:
            # A probe is out (the first request after a cooldown or an open
            # breaker): the others wait for its verdict instead of rushing in.
            return self.error_cooldown_s
        if now < state.open_until:
            return state.open_until - now
        return state.cooling_until - now

    def _by_weight(self, group: list[Backend]) -> list[Backend]:
        """A weighted random order (Efraimidis-Spirakis): each deployment is
        first with a probability proportional to its weight."""
        if len(group) == 1:
            return group
        keys = {b.name: self._rng.random() ** (1.0 / b.weight) for b in group}
        return sorted(group, key=lambda b: keys[b.name], reverse=True)

    def started(self, backend: Backend) -> None:
        """A request goes to this deployment. If it has cooled down or its
        breaker is half-open, that request is a probe: one alone, not a herd
        of concurrent requests that would all meet the same 429 again."""
        state = self._states.get(backend.name)
        if state is not None and (state.cooling_until or state.open_until):
            state.probing = True

    def abandoned(self, backend: Backend) -> None:
        """A try ended without a verdict: a half-open breaker may be probed
        again (it stays open otherwise until a probe reports)."""
        state = self._states.get(backend.name)
        if state is not None:
            state.probing = False

    def succeeded(self, backend: Backend) -> None:
        state = self._states.get(backend.name)
        if state is not None:
            state.failures = 0
            state.cooling_until = 0.0
            state.open_until = 0.0
            state.probing = False

    def rate_limited(self, backend: Backend, wait_s: float | None) -> None:
        """A 429: cool down as long as Azure asked. Not a failure for the breaker."""
        state = self._state(backend)
        wait = self.rate_limit_cooldown_s if wait_s is None else wait_s
        state.cooling_until = max(state.cooling_until, self._clock() + wait)
        state.probing = False

    def failed(self, backend: Backend) -> None:
        """A 5xx, a connection error or no headers in time."""
        state = self._state(backend)
        now = self._clock()
        state.failures += 1
        state.cooling_until = max(state.cooling_until, now + self.error_cooldown_s)
        # A failed half-open probe reopens the breaker at once.
        if (state.probing and state.open_until) or (
            state.failures >= self.breaker_failures
        ):
            state.open_until = now + self.breaker_open_s
        state.probing = False


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long Azure asked us to wait, from the headers it uses for that."""
    for name, scale in (("retry-after-ms", 1e-3), ("x-ms-retry-after-ms", 1e-3)):
        value = headers.get(name)
        if value:
            try:
                return max(float(value) * scale, 0.0)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(when - (time.time() if now is None else now), 0.0)


def retry_after_headers(wait_s: float) -> dict[str, str]:
    """Retry-After (whole seconds, rounded up) and retry-after-ms for a client."""
    return {
        "Retry-After": str(max(1, math.ceil(wait_s))),
        "retry-after-ms": str(max(1, math.ceil(wait_s * 1000))),
    }
