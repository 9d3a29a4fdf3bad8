"""The counters behind per-key limits: one small interface (CounterStore)
and the in-process store (per worker with --workers); with redis_url,
fleet/counters.py's shared store takes its place:
- admit() is the one call before a request is sent: it checks and reserves
  all of one key's counters together (one script call on a shared store,
  every counter under the key's name), and is async for that round trip;
- charge() and release() report what happened afterwards, without waiting
  for an answer (a shared store batches them);
- a concurrency slot is a reservation that release() gives back (a lease
  that expires, on a shared store).
Everything is keyed by the key's name: entries sharing a name (a key being
rotated) share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from azproxy.limits.windows import WINDOW_S, Quota, Rate

if TYPE_CHECKING:
    from azproxy.settings.server_side import Limits

__all__ = [
    "CONCURRENCY_WAIT_S",
    "CounterStore",
    "InProcessStore",
    "Kind",
    "Refusal",
    "Remaining",
    "Ticket",
]

# How long a key at max_concurrent is told to wait: nobody knows when one of
# its requests will end, and they usually end within seconds.
CONCURRENCY_WAIT_S = 1.0


class Kind(StrEnum):
    """Which limit refused a request (the metrics' `kind` label)."""

    RPM = "rpm"
    TPM = "tpm"
    CONCURRENCY = "concurrency"
    QUOTA = "quota"


@dataclass(frozen=True, slots=True)
class Remaining:
    """A key's budgets left; None for a limit it does not have."""

    requests: int | None = None  # this minute (rpm)
    tokens: int | None = None  # this minute (tpm)
    quota: int | None = None  # this period (token_quota)

    def headers(self) -> dict[str, str]:
        """The x-azproxy-*-remaining-* headers every answer to the key carries."""
        found = {}
        if self.requests is not None:
            found["x-azproxy-ratelimit-remaining-requests"] = str(self.requests)
        if self.tokens is not None:
            found["x-azproxy-ratelimit-remaining-tokens"] = str(self.tokens)
        if self.quota is not None:
            found["x-azproxy-quota-remaining-tokens"] = str(self.quota)
        return found


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused: by which limit, how long until it would fit (for a
    quota: until the period ends, at `renews_at`), and what is left."""

    kind: Kind
    wait_s: float
    remaining: Remaining
    renews_at: float | None = None  # a timestamp, for a quota


class CounterStore(Protocol):
    async def admit(self, limits: Limits, estimate: int) -> Ticket | Refusal:
        """Check every limit of the key for one more request of `estimate`
        tokens; if all allow it, reserve them (a request, a concurrency
        slot, the estimate in tpm and quota) and give the Ticket."""
        ...

    def charge(self, limits: Limits, tokens: int, period: float) -> None:
        """Count `tokens` more (fewer when negative) toward tpm, and toward
        the quota period that started at `period` if it is still current."""
        ...

    def release(self, limits: Limits, lease: str) -> None:
        """Give back a concurrency slot (`lease`: which one, on a shared
        store; "" in a process)."""
        ...


class Ticket:
    """An admitted request's reservation: settled exactly once, when the
    request ends, whatever ended it."""

    __slots__ = (
        "_charged",
        "_settled",
        "counts_tokens",
        "headers",
        "lease",
        "limits",
        "period",
        "reserved",
        "store",
    )

    def __init__(
        self,
        store: CounterStore,
        limits: Limits,
        reserved: int,
        period: float,
        remaining: Remaining,
        lease: str = "",
    ) -> None:
        self.store = store
        self.lease = lease  # the concurrency slot's id on a shared store
        self.limits = limits
        self.reserved = reserved  # the estimate counted at admission
        self.period = period  # the quota period it was counted in
        self.headers = remaining.headers()  # computed once, for every answer
        # Whether the answer's usage counts (admission.prompt_estimate says
        # which calls' tokens do).
        self.counts_tokens = True
        self._charged = 0
        self._settled = False

    def charge(self, tokens: int) -> None:
        """Count usage as it comes, before the end (a realtime session's
        `response.done` events)."""
        if tokens and not self._settled:
            self._charged += tokens
            self.store.charge(self.limits, tokens, self.period)

    def settle(self, used: int | None) -> None:
        """The request ended, having used `used` tokens in all (None:
        unknown; what was reserved and charged stands). Gives back its
        concurrency slot. Only the first call counts."""
        if self._settled:
            return
        self._settled = True
        if used is not None:
            difference = used - self.reserved - self._charged
            if difference:
                self.store.charge(self.limits, difference, self.period)
        if self.limits.max_concurrent is not None:
            self.store.release(self.limits, self.lease)


@dataclass(slots=True)
class _Counters:
    """One key's counters in this process."""

    requests: Rate | None
    tokens: Rate | None
    quota: Quota | None
    in_flight: int = 0


class InProcessStore:
    """The counters in this process's memory: exact within it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # wall-clock time: quota periods are UTC
        # Rates count from here (windows.EARLY_S says why).
        self.origin = clock()
        self._keys: dict[str, _Counters] = {}

    def _counters(self, limits: Limits) -> _Counters:
        found = self._keys.get(limits.name)
        if found is None:
            found = self._keys[limits.name] = _Counters(
                Rate(limits.rpm) if limits.rpm else None,
                Rate(limits.tpm) if limits.tpm else None,
                Quota(limits.token_quota, limits.token_quota_period)
                if limits.token_quota
                else None,
            )
        return found

    async def admit(self, limits: Limits, estimate: int) -> Ticket | Refusal:
        wall = self.clock()
        now = wall - self.origin
        counters = self._counters(limits)
        requests, tokens, quota = counters.requests, counters.tokens, counters.quota
        if quota is not None:
            quota.roll(wall)
            if not quota.fits(estimate):
                remaining = _remaining(counters, now)
                return Refusal(Kind.QUOTA, quota.end - wall, remaining, quota.end)
        kind, wait = Kind.RPM, 0.0
        if requests is not None:
            wait = requests.wait(now, 1)
        if tokens is not None and (tpm_wait := tokens.wait(now, estimate)) > wait:
            kind, wait = Kind.TPM, tpm_wait
        if (
            limits.max_concurrent is not None
            and counters.in_flight >= limits.max_concurrent
            and wait < CONCURRENCY_WAIT_S
        ):
            kind, wait = Kind.CONCURRENCY, CONCURRENCY_WAIT_S
        if wait:
            return Refusal(kind, wait, _remaining(counters, now))
        if requests is not None:
            requests.take(now, 1)
        if tokens is not None:
            tokens.take(now, estimate)
        if quota is not None:
            quota.used += estimate
        if limits.max_concurrent is not None:
            counters.in_flight += 1
        period = quota.start if quota is not None else 0.0
        return Ticket(self, limits, estimate, period, _remaining(counters, now))

    def charge(self, limits: Limits, tokens: int, period: float) -> None:
        counters = self._counters(limits)
        if counters.tokens is not None:
            counters.tokens.adjust(tokens)
        quota = counters.quota
        # Usage of a period already over is dropped with it.
        if quota is not None and quota.start == period:
            quota.used = max(quota.used + tokens, 0)

    def release(self, limits: Limits, lease: str = "") -> None:
        counters = self._counters(limits)
        counters.in_flight = max(counters.in_flight - 1, 0)

    def seed(self, limits: Limits, seen: Remaining, period: float) -> None:
        """Start the key's counters from what a shared store last said was
        left (`period`: the quota period it was in), so that a key does not
        get its whole budget again when the shared store goes away."""
        wall = self.clock()
        now = wall - self.origin
        counters = self._counters(limits)
        for rate, left in (
            (counters.requests, seen.requests),
            (counters.tokens, seen.tokens),
        ):
            if rate is not None and left is not None:
                rate.tat = now + WINDOW_S - left * rate.interval
        quota = counters.quota
        if quota is not None and seen.quota is not None:
            quota.roll(wall)
            if quota.start == period:
                quota.used = max(quota.limit - seen.quota, 0)


def _remaining(counters: _Counters, now: float) -> Remaining:
    requests, tokens, quota = counters.requests, counters.tokens, counters.quota
    return Remaining(
        requests.remaining(now) if requests is not None else None,
        tokens.remaining(now) if tokens is not None else None,
        quota.remaining if quota is not None else None,
    )
