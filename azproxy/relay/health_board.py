"""Which deployments may take a request now: cooldowns and circuit breakers.

One client's bad request must not take a deployment away from everyone, so
only what is not request-specific cools a deployment on first sight:
- a 429 or 408: it cools down for as long as Azure asked (retry-after-ms,
  x-ms-retry-after-ms or retry-after; rate_limit_cooldown_s when it did not
  say);
- a failure of the connection itself (refused, connect timeout, reset, no
  headers in time): error_cooldown_s.
A 5xx answer (or an "overloaded" first event) may be the request's own fault
(a malformed body): it only counts toward the breaker, which opens after
breaker_failures failures in a row (a success resets the count) and skips
the deployment for breaker_open_s. Then a single request probes it
(half-open) and closes the breaker on success. After any cooldown, too, one
request probes alone while the others wait for its verdict.

When every deployment of a model is cooling for errors (none for a 429, and
none being probed), the one that failed least recently is tried anyway
rather than refusing everyone: Envoy's panic threshold, for a model whose
deployments may all have been cooled by one client's requests.

The board orders a model's deployments for one request: lowest priority
number first, and within a priority a weighted random order, so traffic
spreads by weight. No server-side sleeping: a cooling deployment is skipped,
and when all of them cool after 429s, the caller learns the shortest wait.

A fleet shares the board (fleet/board_sync.py): a listener hears each change
this process makes, as a Shared view, and apply() takes the changes other
processes made. The failure count stays each process's own.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from azproxy.errors import AllCoolingDown
from azproxy.relay.backends import Backend
from azproxy.settings.config import Config

__all__ = [
    "HEALTH",
    "BoardListener",
    "HealthBoard",
    "Shared",
    "retry_after_s",
    "setup",
]

# The shortest wait a refused client is told: Retry-After counts whole
# seconds, and a probe's verdict is worth waiting a second for.
MIN_WAIT_S = 1.0


@dataclass(slots=True)
class _State:
    limited_until: float = 0.0  # cooling after a 429 or 408 (Azure asked)
    cooling_until: float = 0.0  # cooling after a connection failure
    failures: int = 0  # in a row
    failed_at: float = 0.0  # the last failure, for the panic choice
    open_until: float = 0.0  # breaker open (skipped) until then
    probing: bool = False  # half-open: one request is testing it


@dataclass(frozen=True, slots=True)
class Shared:
    """What other processes learn of a deployment: seconds left of each
    cooldown (0: none) and whether a probe is out."""

    limited_s: float = 0.0
    cooling_s: float = 0.0
    open_s: float = 0.0
    probing: bool = False


class BoardListener(Protocol):
    def changed(self, name: str, view: Shared) -> None:
        """This process changed a deployment's state (no I/O here)."""


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
        self.listener: BoardListener | None = None

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
        failing: list[Backend] = []  # cooling for errors only
        for backend in backends:
            state = self._state(backend)
            wait = self._wait(state, now)
            if wait <= 0:
                ready.append(backend)
            elif state.probing or state.limited_until > now:
                waits.append(wait)
            else:
                failing.append(backend)
        if ready:
            return self._ordered(ready)
        if failing:
            # Panic: try the one that failed least recently, not refuse.
            return [min(failing, key=lambda b: self._states[b.name].failed_at)]
        raise AllCoolingDown(max(min(waits), MIN_WAIT_S))

    def _wait(self, state: _State, now: float) -> float:
        if state.probing:
            # A probe is out (the first request after a cooldown or an open
            # breaker): the others wait for its verdict instead of rushing in.
            return MIN_WAIT_S
        return max(state.limited_until, state.cooling_until, state.open_until) - now

    def _ordered(self, ready: list[Backend]) -> list[Backend]:
        ordered: list[Backend] = []
        for priority in sorted({b.priority for b in ready}):
            ordered.extend(
                self._by_weight([b for b in ready if b.priority == priority])
            )
        return ordered

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
        if state is not None and (
            state.limited_until or state.cooling_until or state.open_until
        ):
            state.probing = True
            self._tell(backend.name, state)

    def abandoned(self, backend: Backend) -> None:
        """A try ended without a verdict: a half-open breaker may be probed
        again (it stays open otherwise until a probe reports)."""
        state = self._states.get(backend.name)
        if state is not None and state.probing:
            state.probing = False
            self._tell(backend.name, state)

    def succeeded(self, backend: Backend) -> None:
        state = self._states.get(backend.name)
        if state is not None:
            state.failures = 0
            if state.limited_until or state.cooling_until or state.open_until:
                state.limited_until = state.cooling_until = state.open_until = 0.0
                state.probing = False
                self._tell(backend.name, state)

    def rate_limited(self, backend: Backend, wait_s: float | None) -> None:
        """A 429 or 408: cool down as long as Azure asked. Not a failure for
        the breaker."""
        state = self._state(backend)
        wait = self.rate_limit_cooldown_s if wait_s is None else wait_s
        state.limited_until = max(state.limited_until, self._clock() + wait)
        state.probing = False
        self._tell(backend.name, state)

    def unreachable(self, backend: Backend) -> None:
        """The connection failed (refused, connect timeout, reset, no headers
        in time): not the request's fault, so cool down at once."""
        state = self._state(backend)
        now = self._clock()
        state.cooling_until = max(state.cooling_until, now + self.error_cooldown_s)
        self._count_failure(state, now)
        self._tell(backend.name, state)

    def server_error(self, backend: Backend) -> None:
        """A 5xx answer or an "overloaded" first event: maybe the request's
        own fault, so it only counts toward the breaker."""
        state = self._state(backend)
        before = (state.open_until, state.probing)
        self._count_failure(state, self._clock())
        if (state.open_until, state.probing) != before:
            self._tell(backend.name, state)

    def _count_failure(self, state: _State, now: float) -> None:
        state.failures += 1
        state.failed_at = now
        # A failed half-open probe reopens the breaker at once.
        if (state.probing and state.open_until) or (
            state.failures >= self.breaker_failures
        ):
            state.open_until = now + self.breaker_open_s
        state.probing = False

    def _tell(self, name: str, state: _State) -> None:
        if self.listener is not None:
            self.listener.changed(name, self._view(state, self._clock()))

    @staticmethod
    def _view(state: _State, now: float) -> Shared:
        return Shared(
            max(state.limited_until - now, 0.0),
            max(state.cooling_until - now, 0.0),
            max(state.open_until - now, 0.0),
            state.probing,
        )

    def view(self, name: str) -> Shared:
        """A deployment's state as other processes would learn it."""
        state = self._states.get(name)
        return Shared() if state is None else self._view(state, self._clock())

    def apply(self, name: str, view: Shared) -> None:
        """Take what another process learned of a deployment (the listener
        is not told: it came from the fleet)."""
        state = self._states.get(name)
        if state is None:
            if view == Shared():
                return  # healthy and unknown here: nothing to keep
            state = self._states[name] = _State()
        now = self._clock()
        state.limited_until = now + view.limited_s if view.limited_s else 0.0
        state.cooling_until = now + view.cooling_s if view.cooling_s else 0.0
        state.open_until = now + view.open_s if view.open_s else 0.0
        state.probing = view.probing
        if view.cooling_s or view.open_s:
            state.failed_at = now
        elif view == Shared():
            state.failures = 0  # a success elsewhere closes the breaker here


HEALTH = web.AppKey("azproxy.health", HealthBoard)


def setup(
    app: web.Application,
    config: Config,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """app[HEALTH], timed by `clock` (a test's fake clock moves at will)."""
    app[HEALTH] = HealthBoard(
        rate_limit_cooldown_s=config.rate_limit_cooldown_s,
        error_cooldown_s=config.error_cooldown_s,
        breaker_failures=config.breaker_failures,
        breaker_open_s=config.breaker_open_s,
        clock=clock,
    )


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
