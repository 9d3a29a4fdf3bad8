"""Per-key limits shared by a fleet: limits/store.py's CounterStore on Redis.

Admission is ONE script call (EVALSHA through the breaker) covering all of
one access key's counters, which share the key's hash tag (names.key_tag:
its configured name, never the key), so it works on a cluster too:
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

__all__ = ["ADMIT", "BATCH_DELAY_S", "CHARGE", "LocalCounters", "SharedCounters"]

BATCH_DELAY_S = 0.05
QUOTA_KEPT_S = 86400  # a period's counter outlives it by a day

# KEYS: rate, leases, quota. ARGV: rpm, tpm, max_concurrent, token_quota (0:
# none), the quota key's expiry (a timestamp), the wait at max_concurrent,
# the lease's TTL in seconds, then what changes per request (last, so that
# the rest is packed once per key: coalesce.py): the estimate, the lease id.
# Returns the refusing
# limit (0: admitted; 1 rpm, 2 tpm, 3 concurrency, 4 quota), the wait as a
# string (Lua numbers become integers in a reply), then what is left of rpm,
# tpm and the quota (-1: no such limit). windows.py has the same arithmetic.
ADMIT = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local maxc, quota = tonumber(ARGV[3]), tonumber(ARGV[4])
local est = tonumber(ARGV[8])
local tats = redis.call('HMGET', KEYS[1], 'r', 't')
local rtat = math.max(tonumber(tats[1]) or 0, now)
local ttat = math.max(tonumber(tats[2]) or 0, now)
local used = 0
if quota > 0 then used = tonumber(redis.call('GET', KEYS[3]) or '0') end
local function left(tat, limit)
  if limit == 0 then return -1 end
  local room = now + 60 + 0.000001 - tat
  if room <= 0 then return 0 end
  return math.floor(room / (60 / limit))
end
local function answer(kind, wait)
  local q = -1
  if quota > 0 then q = math.max(quota - used, 0) end
  return {kind, string.format('%.6f', wait), left(rtat, rpm), left(ttat, tpm), q}
end
local function late(tat, cost, limit)
  if cost > limit then cost = limit end
  local l = tat + cost * (60 / limit) - now - 60
  if l > 0.000001 then return l end
  return 0
end
if quota > 0 and not (used < quota and used + est <= quota) then
  return answer(4, 0)
end
local kind, wait = 1, 0
if rpm > 0 then wait = late(rtat, 1, rpm) end
if tpm > 0 then
  local w = late(ttat, est, tpm)
  if w > wait then kind, wait = 2, w end
end
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local busy = tonumber(ARGV[6])
  if redis.call('ZCARD', KEYS[2]) >= maxc and wait < busy then
    kind, wait = 3, busy
  end
end
if wait > 0 then return answer(kind, wait) end
if rpm > 0 then rtat = rtat + 60 / rpm end
if tpm > 0 then ttat = ttat + est * (60 / tpm) end
if rpm > 0 or tpm > 0 then
  redis.call('HSET', KEYS[1], 'r', string.format('%.6f', rtat),
             't', string.format('%.6f', ttat))
  redis.call('EXPIRE', KEYS[1], math.ceil(math.max(rtat, ttat) - now) + 60)
end
if quota > 0 then
  used = redis.call('INCRBY', KEYS[3], est)
  redis.call('EXPIREAT', KEYS[3], ARGV[5])
end
if maxc > 0 then
  local ttl = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[9])
  redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 1)
end
return answer(0, 0)
"""
)

# KEYS: rate, quota. ARGV: tokens (fewer when negative), tpm, requests, rpm,
# the quota key's expiry (0: the period is over, or no quota), and 1 for usage
# made while Redis was away (counted from now, as the key's counters in
# this process did; 0: a settlement, adjusting what admission counted).
CHARGE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local requests, rpm = tonumber(ARGV[3]), tonumber(ARGV[4])
local expiry, back = tonumber(ARGV[5]), ARGV[6] == '1'
local last = 0
local function add(field, units, limit)
  local tat = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  if back then tat = math.max(tat, now) end
  tat = tat + units * (60 / limit)
  redis.call('HSET', KEYS[1], field, string.format('%.6f', tat))
  last = math.max(last, tat)
end
if tpm > 0 and tokens ~= 0 then add('t', tokens, tpm) end
if rpm > 0 and requests > 0 then add('r', requests, rpm) end
if last > now and redis.call('TTL', KEYS[1]) < last - now + 60 then
  redis.call('EXPIRE', KEYS[1], math.ceil(last - now) + 60)
end
if expiry > 0 and tokens ~= 0 then
  if back or redis.call('EXISTS', KEYS[2]) == 1 then
    if redis.call('INCRBY', KEYS[2], tokens) < 0 then
      redis.call('SET', KEYS[2], 0)
    end
    redis.call('EXPIREAT', KEYS[2], expiry)
  end
end
return 1
"""
)

# KEYS: leases. ARGV: the lease ids to give back.
RELEASE = Script("return redis.call('ZREM', KEYS[1], unpack(ARGV))")

# KEYS: leases. ARGV: the TTL in seconds, then the lease ids to keep: each
# expires a TTL from now (if it did not already).
RENEW = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
return 1
"""
)

# EVALSHA, the SHA-1, the number of keys, 3 keys and 9 arguments.
ADMIT_ARGUMENTS = 15
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
