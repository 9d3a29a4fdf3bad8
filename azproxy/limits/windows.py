"""The arithmetic of limits, free of I/O and of any clock (`now` is given):
a per-minute rate as GCRA, and a token quota's UTC period.

GCRA (the generic cell rate algorithm) keeps one number per limit, the
theoretical arrival time `tat`: when the bucket would be empty again. A
request of `cost` units (1 for rpm, its tokens for tpm) fits when
    max(tat, now) + cost * interval - now <= WINDOW_S,   interval = WINDOW_S / limit
so a key can spend its whole minute at once, then `limit` per minute as the
bucket drains. Unlike fixed minutes, there is no double burst at a boundary,
and a refused request changes nothing. The wait it is told is exact: when
the bucket will have room for it.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field

__all__ = ["EARLY_S", "WINDOW_S", "Quota", "Rate", "period_bounds"]

WINDOW_S = 60.0
# Rounding: a request due this close to now is let in rather than told to
# wait 0 s. Rates count in seconds since their store started (InProcessStore),
# where a double's step is below 1e-8 s for a year: a timestamp (1.7e9 s)
# would round each step to 2e-7 s, a token's worth at 300000 tpm.
EARLY_S = 1e-6

UTC = datetime.UTC


@dataclass(slots=True)
class Rate:
    """A limit per minute (requests or tokens), as GCRA. (Conditional
    expressions rather than max(): this runs on every limited request.)"""

    limit: int
    tat: float = 0.0  # when the bucket is empty again (no earlier than now)
    interval: float = field(init=False)  # seconds one unit takes to drain

    def __post_init__(self) -> None:
        self.interval = WINDOW_S / self.limit

    def wait(self, now: float, cost: int) -> float:
        """Seconds until `cost` fits; 0: it fits now. A cost above the whole
        limit counts as the limit (it fits once the bucket is empty): it could
        never fit otherwise, and its real usage is charged afterwards."""
        tat = self.tat if self.tat > now else now
        late = tat + (cost if cost < self.limit else self.limit) * self.interval
        late -= now + WINDOW_S
        return late if late > EARLY_S else 0.0

    def take(self, now: float, cost: int) -> None:
        """Count `cost` (after wait() said 0), all of it: a cost above the
        limit leaves the key waiting until it has drained."""
        self.tat = (self.tat if self.tat > now else now) + cost * self.interval

    def adjust(self, units: int) -> None:
        """Count `units` more (or fewer, when negative), already used: the
        real usage replacing an estimate. No cap: tokens used are used."""
        self.tat += units * self.interval

    def remaining(self, now: float) -> int:
        """How many units would fit now."""
        room = now + WINDOW_S + EARLY_S - (self.tat if self.tat > now else now)
        return math.floor(room / self.interval) if room > 0 else 0


def period_bounds(now: float, period: str) -> tuple[float, float]:
    """The UTC period (hour, day, week from Monday 00:00, month) holding
    `now`: its start and end as timestamps."""
    moment = datetime.datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
        end = start + datetime.timedelta(hours=1)
    elif period in ("day", "week"):
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "week":
            start -= datetime.timedelta(days=start.weekday())  # Monday is 0
        end = start + datetime.timedelta(days=1 if period == "day" else 7)
    elif period == "month":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = divmod(start.month, 12)  # month 12 -> next January
        end = start.replace(year=start.year + year, month=month + 1)
    else:
        raise ValueError(f"unknown quota period {period!r}")
    return start.timestamp(), end.timestamp()


@dataclass(slots=True)
class Quota:
    """Tokens per UTC period; `used` includes reservations not yet settled."""

    limit: int
    period: str
    start: float = 0.0
    end: float = 0.0  # 0: no period yet
    used: int = 0

    def roll(self, now: float) -> None:
        """Start the period holding `now`, if the current one is over."""
        if now >= self.end:
            self.start, self.end = period_bounds(now, self.period)
            self.used = 0

    def fits(self, estimate: int) -> bool:
        """Whether `estimate` more tokens fit (after roll()). A spent quota
        admits nothing, not even a call that uses no tokens."""
        return self.used < self.limit and self.used + estimate <= self.limit

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)
