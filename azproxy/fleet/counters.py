"""Per-key limits shared by a fleet: limits/store.py's CounterStore on Redis.

Admission is ONE script call (EVALSHA) covering all of one access key's
counters, which share the key's hash tag (names.key_tag: its configured
name, never the key), so it works on a cluster too. On a single node the
calls of one loop tick go to Redis together (coalesce.py), each packed
mostly once per key; on a cluster each goes on its own, through the breaker.
- `TAG:rate`: a hash with the GCRA theoretical arrival times of rpm (`r`)
  and tpm (`t`), in Redis' own time (TIME): processes' clocks do not matter;
- `TAG:leases`: the concurrency slots in use, a sorted set of lease ids
  scored by when they expire; expired ones are dropped by the script, so a
  process that dies mid-stream gives its slots back after redis_lease_s.
  Each process renews its live leases every third of that, in one batch;
- `TAG:quota:START`: the tokens counted in the quota period that started at
  START (UTC, computed here), expiring a day after the period's end.
The check and the reservation happen in one script, atomically: rpm,
max_concurrent and quota reservations are exact across processes.

What happens after (the real usage replacing the estimate, a lease given
back) needs no answer: it is summed per key and goes in a Batch, at most
BATCH_DELAY_S later, as one call per key and batch rather than per request.

While Redis is away (the breaker says so), a key goes on in this process's
own counters, seeded from what Redis last said was left for it; what is used
meanwhile is added back to Redis when it returns. With redis_failure =
"closed", keys with a token quota are refused (503) instead.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from azproxy.errors import ServiceUnavailable, SharedStateDown
from azproxy.fleet.coalesce import Coalescer, command, evalsha_head
from azproxy.fleet.counter_scripts import (
    ADMIT,
    ADMIT_ARGUMENTS,
    CHARGE,
    RELEASE,
    RENEW,
)
from azproxy.fleet.scripts import Batch, Script
from azproxy.limits.store import (
    CONCURRENCY_WAIT_S,
    InProcessStore,
    Kind,
    Refusal,
    Remaining,
    Ticket,
)
from azproxy.limits.windows import period_bounds

if TYPE_CHECKING:
    from azproxy.fleet.breaker import RedisBreaker
    from azproxy.fleet.connection import Link
    from azproxy.fleet.names import Names
    from azproxy.settings.server_side import Limits

__all__ = ["BATCH_DELAY_S", "LocalCounters", "SharedCounters"]

BATCH_DELAY_S = 0.05
QUOTA_KEPT_S = 86400  # a period's counter outlives it by a day

KINDS = {1: Kind.RPM, 2: Kind.TPM, 3: Kind.CONCURRENCY, 4: Kind.QUOTA}


class _Key:
    """What this process knows of one access key's shared counters."""

    __slots__ = (
        "end",
        "head",
        "leases",
        "packed_for",
        "quota",
        "rate",
        "seen",
        "start",
        "tag",
    )

    def __init__(self, names: Names, name: str) -> None:
        self.tag = names.key_tag(name)
        self.rate = names.counter(self.tag, "rate")
        self.leases = names.counter(self.tag, "leases")
        self.quota = ""  # the current period's counter
        self.start = 0.0  # the current quota period
        self.end = 0.0
        self.seen: Remaining | None = None  # what Redis last said was left
        # ADMIT's call packed up to its per-request arguments, and for which
        # limits and quota period.
        self.head = b""
        self.packed_for: tuple[Limits, float] | None = None


@dataclass(slots=True)
class _Spent:
    """What one key used in this process while Redis was away."""

    limits: Limits
    period: float
    requests: int = 0
    tokens: int = 0


class LocalCounters(InProcessStore):
    """The counters of this process while Redis is away, keeping note of
    what they counted, to add it to Redis when it is back."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.spent: dict[str, _Spent] = {}

    async def admit(self, limits: Limits, estimate: int) -> Ticket | Refusal:
        result = await super().admit(limits, estimate)
        if isinstance(result, Ticket):
            self._note(limits, result.period, 1, estimate)
        return result

    def charge(self, limits: Limits, tokens: int, period: float) -> None:
        super().charge(limits, tokens, period)
        self._note(limits, period, 0, tokens)

    def _note(self, limits: Limits, period: float, requests: int, tokens: int) -> None:
        spent = self.spent.get(limits.name)
        if spent is None or spent.period != period:
            spent = self.spent[limits.name] = _Spent(limits, period)
        spent.requests += requests
        spent.tokens += tokens


class SharedCounters:
    """The CounterStore of a process with redis_url set."""

    def __init__(
        self,
        link: Link,
        breaker: RedisBreaker,
        names: Names,
        *,
        lease_s: float,
        closed: bool,
        clock: Callable[[], float],
    ) -> None:
        self._link = link
        self._breaker = breaker
        self._names = names
        self.lease_s = lease_s
        self._closed = closed  # redis_failure = "closed"
        self._clock = clock  # wall-clock time: quota periods are UTC
        self.batch = Batch(link, breaker, delay_s=BATCH_DELAY_S)
        self._coalescer = Coalescer(link, breaker, ADMIT)
        self.local = LocalCounters(clock)
        self._keys: dict[str, _Key] = {}
        self._seeded: set[str] = set()  # keys seeded since Redis went away
        self._leases: dict[str, _Key] = {}  # live leases of this process
        self._lease_ids = itertools.count()
        self._origin = secrets.token_hex(6)
        self._charges: dict[str, dict[tuple[Limits, float], int]] = {}
        self._releases: dict[str, list[str]] = {}  # lease ids, by leases key
        self.batch.gathering.append(self._gather)
        breaker.went_down.append(self._seeded.clear)
        breaker.recovered.append(self._add_back)

    def _key(self, limits: Limits) -> _Key:
        key = self._keys.get(limits.name)
        if key is None:
            key = self._keys[limits.name] = _Key(self._names, limits.name)
        if limits.token_quota is not None:
            wall = self._clock()
            if wall >= key.end:
                key.start, key.end = period_bounds(wall, limits.token_quota_period)
                key.quota = self._names.counter(key.tag, f"quota:{int(key.start)}")
        return key

    async def admit(self, limits: Limits, estimate: int) -> Ticket | Refusal:
        key = self._key(limits)
        lease = ""
        if limits.max_concurrent is not None:
            lease = f"{self._origin}-{next(self._lease_ids)}"
        try:
            if self._link.cluster is False:
                found = await self._coalescer.call(
                    self._packed(key, limits, estimate, lease)
                )
            else:  # a cluster (each call to its shard), or not known yet
                args = (*self._constants(key, limits), estimate, lease)
                found = await self._breaker.call(
                    partial(self._run, ADMIT, self._admit_keys(key), args)
                )
        except SharedStateDown:
            return await self._locally(limits, estimate, key)
        kind, wait, requests, tokens, quota = found
        remaining = key.seen = Remaining(
            requests if requests >= 0 else None,
            tokens if tokens >= 0 else None,
            quota if quota >= 0 else None,
        )
        if kind:
            renews = key.end if kind == 4 else None
            wait_s = key.end - self._clock() if kind == 4 else float(wait)
            return Refusal(KINDS[kind], wait_s, remaining, renews)
        if lease:
            self._leases[lease] = key
        return Ticket(self, limits, estimate, key.start, remaining, lease)

    def _admit_keys(self, key: _Key) -> tuple[str, str, str]:
        return (key.rate, key.leases, key.quota or key.rate)

    def _constants(self, key: _Key, limits: Limits) -> tuple[int | float, ...]:
        """ADMIT's arguments that change only with the limits or the period."""
        return (
            limits.rpm or 0,
            limits.tpm or 0,
            limits.max_concurrent or 0,
            limits.token_quota or 0,
            int(key.end) + QUOTA_KEPT_S,
            CONCURRENCY_WAIT_S,
            self.lease_s,
        )

    def _packed(self, key: _Key, limits: Limits, estimate: int, lease: str) -> bytes:
        """ADMIT's call for one request, its constant part packed once per key."""
        if key.packed_for != (limits, key.end):
            constants = self._constants(key, limits)
            key.head = evalsha_head(ADMIT, self._admit_keys(key), constants)
            key.packed_for = (limits, key.end)
        return command(ADMIT_ARGUMENTS, key.head, b"%d" % estimate, lease.encode())

    async def _run(
        self, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        return await script.run(await self._link.ready(), keys, args)

    async def _locally(
        self, limits: Limits, estimate: int, key: _Key
    ) -> Ticket | Refusal:
        """Redis is away: this process's counters, seeded from Redis' last word."""
        if self._closed and limits.token_quota is not None:
            wait = max(math.ceil(self._breaker.wait_s()), 1)
            raise ServiceUnavailable(
                f"This access key ({limits.name}) has a token quota, counted in "
                "the fleet's shared state (Redis), which is unreachable; "
                "redis_failure is closed, so its requests wait until it is back. "
                f"Retry after {wait} s.",
                headers={"Retry-After": str(wait)},
            )
        if limits.name not in self._seeded:
            self._seeded.add(limits.name)
            if key.seen is not None:
                self.local.seed(limits, key.seen, key.start)
        return await self.local.admit(limits, estimate)

    def charge(self, limits: Limits, tokens: int, period: float) -> None:
        if not self._breaker.up:
            self.local.charge(limits, tokens, period)
            return
        # Summed per key and period until the batch goes: one call per key.
        found = (limits, period)
        pending = self._charges.setdefault(limits.name, {})
        pending[found] = pending.get(found, 0) + tokens
        self.batch.wake()

    def release(self, limits: Limits, lease: str) -> None:
        key = self._leases.pop(lease, None)
        if key is not None:
            self._releases.setdefault(key.leases, []).append(lease)
            self.batch.wake()

    def _gather(self) -> None:
        """The settlements since the last batch, as one call per key."""
        charges, self._charges = self._charges, {}
        releases, self._releases = self._releases, {}
        for pending in charges.values():
            for (limits, period), tokens in pending.items():
                if not tokens:
                    continue
                key = self._key(limits)
                expiry = 0
                if limits.token_quota is not None and key.start == period:
                    expiry = int(key.end) + QUOTA_KEPT_S
                args = (tokens, limits.tpm or 0, 0, 0, expiry, 0)
                self.batch.add(CHARGE, (key.rate, key.quota or key.rate), args)
        for leases, ids in releases.items():
            self.batch.add(RELEASE, (leases,), ids)

    def _add_back(self) -> None:
        """Redis is back: count there what was used here meanwhile."""
        spent, self.local.spent = self.local.spent, {}
        for name, used in spent.items():
            limits = used.limits
            key = self._key(limits)
            expiry = 0
            if limits.token_quota is not None and key.start == used.period:
                expiry = int(key.end) + QUOTA_KEPT_S
            args = (
                used.tokens,
                limits.tpm or 0,
                used.requests,
                limits.rpm or 0,
                expiry,
                1,
            )
            self.batch.add(CHARGE, (key.rate, key.quota or key.rate), args)
            self._seeded.discard(name)

    async def renew(self) -> None:
        """Keep this process's live leases from expiring, until cancelled."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            by_key: dict[str, list[str]] = {}
            for lease, key in self._leases.items():
                by_key.setdefault(key.leases, []).append(lease)
            for leases, ids in by_key.items():
                self.batch.add(RENEW, (leases,), (self.lease_s, *ids))
