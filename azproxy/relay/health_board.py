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

Azure also says, on its answers, how many requests and tokens a deployment
has left in its window (x-ratelimit-remaining-*). When an answer shows none
left (no requests, or fewer tokens than a request like this one needs), the
deployment is exhausted for exhausted_cooldown_s, or until an answer shows
some left again: its siblings go first, instead of each quota window costing
one wasted 429 to find out. It is still used when nothing else can be.

The board orders a model's deployments for one request: lowest priority
number first, and within a priority a weighted random order, so traffic
spreads by weight; exhausted deployments after all the others. No
server-side sleeping: a cooling deployment is skipped, and when all of them
cool after 429s, the caller learns the shortest wait and what Azure said
about it (AllCoolingDown). The states and their names: deployment_state.py.

A fleet shares the board (fleet/board_sync.py): a listener hears each change
this process makes to a cooldown, a breaker, a probe or an exhausted mark, as
a Shared view, and apply() takes the changes other processes made. An
exhausted mark is told when it starts and when an answer with room ends it,
not when a later answer that still shows none extends it (every answer would
be a message): a process whose copy runs out first learns it again from its
own next answer. The failure count and Azure's remaining counts stay each
process's own.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from azproxy.errors import AllCoolingDown
from azproxy.relay.deployment_state import (
    BREAKER_OPEN,
    COOLING_ERRORS,
    EXHAUSTED,
    RATE_LIMITED,
    Record,
)

if TYPE_CHECKING:
    from azproxy.relay.azure_limits import Refusal
    from azproxy.relay.backends import Backend
    from azproxy.settings.config import Config

__all__ = [
    "HEALTH",
    "MIN_WAIT_S",
    "BoardListener",
    "HealthBoard",
    "Shared",
    "retry_after_headers",
    "setup",
]

# The shortest wait a refused client is told: Retry-After counts whole
# seconds, and a probe's verdict is worth waiting a second for.
MIN_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Shared:
    """What other processes learn of a deployment: seconds left of each
    cooldown (0: none), whether a probe is out, and the seconds left of its
    exhausted mark (0: ended; None: not part of this change, keep yours)."""

    limited_s: float = 0.0
    cooling_s: float = 0.0
    open_s: float = 0.0
    probing: bool = False
    exhausted_s: float | None = None

    @property
    def quiet(self) -> bool:
        """Nothing cools it, nothing probes it, no mark runs: healthy."""
        return not (
            self.limited_s
            or self.cooling_s
            or self.open_s
            or self.probing
            or self.exhausted_s
        )


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
        exhausted_cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.rate_limit_cooldown_s = rate_limit_cooldown_s
        self.error_cooldown_s = error_cooldown_s
        self.breaker_failures = breaker_failures
        self.breaker_open_s = breaker_open_s
        self.exhausted_cooldown_s = exhausted_cooldown_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._states: dict[str, Record] = {}
        self.listener: BoardListener | None = None

    def _state(self, backend: Backend) -> Record:
        state = self._states.get(backend.name)
        if state is None:
            state = self._states[backend.name] = Record(
                backend.endpoint.name, backend.deployment
            )
        return state

    def records(self) -> list[Record]:
        """Every deployment the board has heard of (for /metrics)."""
        return list(self._states.values())

    def now(self) -> float:
        """The board's clock: what its records' deadlines count in."""
        return self._clock()

    def plan(self, backends: Sequence[Backend]) -> list[Backend]:
        """The deployments to try, best first; raises AllCoolingDown if none."""
        now = self._clock()
        if len(backends) == 1:
            # The common case: one deployment, taking requests (exhausted or
            # not: it has no siblings to go after).
            state = self._states.get(backends[0].name)
            if state is None or self._wait(state, now) <= 0:
                return [backends[0]]
        ready: list[Backend] = []
        spare: list[Backend] = []  # exhausted: after the others
        waiting: list[tuple[float, Record]] = []
        failing: list[Backend] = []  # cooling for errors only
        for backend in backends:
            state = self._states.get(backend.name)
            if state is None:
                ready.append(backend)
                continue
            wait = self._wait(state, now)
            if wait <= 0:
                (spare if state.exhausted_until > now else ready).append(backend)
            elif state.probing or state.limited_until > now:
                waiting.append((wait, state))
            else:
                failing.append(backend)
        if ready or spare:
            return self._ordered(ready) + self._ordered(spare)
        if failing:
            # Panic: try the one that failed least recently, not refuse.
            return [min(failing, key=lambda b: self._states[b.name].failed_at)]
        wait, state = min(waiting, key=lambda pair: pair[0])
        limited = bool(state.limited_until)  # a 429 cooled it, not an error
        raise AllCoolingDown(
            max(wait, MIN_WAIT_S),
            kind=state.limit_kind if limited else None,
            resets=state.reset_waits(now) if limited else {},
        )

    def _wait(self, state: Record, now: float) -> float:
        if state.probing:
            # A probe is out (the first request after a cooldown or an open
            # breaker): the others wait for its verdict instead of rushing in.
            return MIN_WAIT_S
        return max(state.limited_until, state.cooling_until, state.open_until) - now

    def _ordered(self, ready: list[Backend]) -> list[Backend]:
        if len(ready) <= 1:
            return ready
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

    def succeeded(
        self,
        backend: Backend,
        requests: int | None = None,
        tokens: int | None = None,
        needs_tokens: int = 0,
    ) -> None:
        """An answer that was not a failure, with Azure's remaining requests
        and tokens on it (None: not said). None left, or fewer tokens than
        `needs_tokens` (what a request like this one needs): exhausted."""
        said = requests is not None or tokens is not None
        state = self._state(backend) if said else self._states.get(backend.name)
        if state is None:
            return  # the common case for a board that never heard of it
        state.failures = 0
        told = False  # only a change goes to the fleet
        if (
            state.limited_until
            or state.cooling_until
            or state.open_until
            or state.probing
        ):
            state.limited_until = state.cooling_until = state.open_until = 0.0
            state.probing = False
            told = True
        state.limit_kind = None
        state.resets.clear()
        marked = False  # the exhausted mark started or ended
        if said:
            state.remaining_requests, state.remaining_tokens = requests, tokens
            if requests == 0 or (tokens is not None and tokens < max(needs_tokens, 1)):
                marked = self._exhausted(state)
            elif state.exhausted_until:  # Azure has room again
                marked = state.exhausted_until > self._clock()
                state.exhausted_until = 0.0
        if told or marked:
            self._tell(backend.name, state, marked)

    def _exhausted(self, state: Record) -> bool:
        """Mark it exhausted, or extend its mark; whether the mark started
        (an extension is not news to the fleet)."""
        if self.exhausted_cooldown_s <= 0:
            return False
        now = self._clock()
        started = state.exhausted_until <= now
        if started:
            state.cooldown_started(EXHAUSTED)
        state.exhausted_until = now + self.exhausted_cooldown_s
        return started

    def rate_limited(
        self, backend: Backend, wait_s: float | None, said: Refusal | None = None
    ) -> None:
        """A 429 or 408: cool down as long as Azure asked. Not a failure for
        the breaker. `said`: what Azure's answer told about its limit."""
        state = self._state(backend)
        now = self._clock()
        if state.limited_until <= now:
            state.cooldown_started(RATE_LIMITED)
        wait = self.rate_limit_cooldown_s if wait_s is None else wait_s
        state.limited_until = max(state.limited_until, now + wait)
        state.probing = False
        if said is not None:
            state.limit_kind = said.kind
            state.resets = {name: now + s for name, s in said.resets.items()}
            if said.requests is not None or said.tokens is not None:
                state.remaining_requests = said.requests
                state.remaining_tokens = said.tokens
        self._tell(backend.name, state)

    def unreachable(self, backend: Backend) -> None:
        """The connection failed (refused, connect timeout, reset, no headers
        in time): not the request's fault, so cool down at once."""
        state = self._state(backend)
        now = self._clock()
        if state.cooling_until <= now:
            state.cooldown_started(COOLING_ERRORS)
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

    def _count_failure(self, state: Record, now: float) -> None:
        state.failures += 1
        state.failed_at = now
        # A failed half-open probe reopens the breaker at once.
        if (state.probing and state.open_until) or (
            state.failures >= self.breaker_failures
        ):
            if state.open_until <= now:
                state.cooldown_started(BREAKER_OPEN)
            state.open_until = now + self.breaker_open_s
        state.probing = False

    def _tell(self, name: str, state: Record, marked: bool = False) -> None:
        """Tell the listener; `marked`: the exhausted mark started or ended
        (other changes leave the fleet's marks as they are)."""
        if self.listener is not None:
            now = self._clock()
            exhausted = max(state.exhausted_until - now, 0.0) if marked else None
            self.listener.changed(name, self._view(state, now, exhausted))

    @staticmethod
    def _view(state: Record, now: float, exhausted_s: float | None) -> Shared:
        return Shared(
            max(state.limited_until - now, 0.0),
            max(state.cooling_until - now, 0.0),
            max(state.open_until - now, 0.0),
            state.probing,
            exhausted_s,
        )

    def view(self, name: str) -> Shared:
        """A deployment's state as other processes would learn it (its
        exhausted mark only while one runs)."""
        state = self._states.get(name)
        if state is None:
            return Shared()
        now = self._clock()
        exhausted = state.exhausted_until - now
        return self._view(state, now, exhausted if exhausted > 0 else None)

    def apply(self, name: str, view: Shared) -> None:
        """Take what another process learned of a deployment (the listener
        is not told: it came from the fleet)."""
        state = self._states.get(name)
        if state is None:
            if view.quiet:
                return  # healthy and unknown here: nothing to keep
            endpoint, _, deployment = name.partition("/")
            state = self._states[name] = Record(endpoint, deployment)
        now = self._clock()
        state.limited_until = now + view.limited_s if view.limited_s else 0.0
        state.cooling_until = now + view.cooling_s if view.cooling_s else 0.0
        state.open_until = now + view.open_s if view.open_s else 0.0
        state.probing = view.probing
        if view.exhausted_s is not None:
            state.exhausted_until = now + view.exhausted_s if view.exhausted_s else 0.0
        if view.cooling_s or view.open_s:
            state.failed_at = now
        elif not (view.limited_s or view.probing):
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
        exhausted_cooldown_s=config.exhausted_cooldown_s,
        clock=clock,
    )


def retry_after_headers(wait_s: float) -> dict[str, str]:
    """Retry-After (whole seconds, rounded up) and retry-after-ms for a client."""
    return {
        "Retry-After": str(max(1, math.ceil(wait_s))),
        "retry-after-ms": str(max(1, math.ceil(wait_s * 1000))),
    }
