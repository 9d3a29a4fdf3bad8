"""The arithmetic of per-key limits, from tables: GCRA per minute, and the
UTC periods of token quotas (a week from Monday, months of every length)."""

from __future__ import annotations

import datetime

import pytest

from azproxy.limits.windows import Quota, Rate, period_bounds

UTC = datetime.UTC


def ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def waits_of(rate: Rate, requests: list[tuple[float, int]]) -> list[float]:
    """Each request's wait (0: admitted and counted), at (time, cost)."""
    waits = []
    for now, cost in requests:
        wait = rate.wait(now, cost)
        if not wait:
            rate.take(now, cost)
        waits.append(round(wait, 6))
    return waits


@pytest.mark.parametrize(
    ("limit", "times", "waits"),
    [
        # rpm = 5: five at once, the sixth waits 60/5 = 12 s, not a minute.
        (5, [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 12.0]),
        # A refused request is not counted: the same wait again, less the
        # time that passed.
        (5, [0, 0, 0, 0, 0, 0, 5], [0, 0, 0, 0, 0, 12.0, 7.0]),
        (5, [0, 0, 0, 0, 0, 12], [0, 0, 0, 0, 0, 0]),
        # No double burst at a minute boundary: five at 59 s, then at 61 s
        # only what drained in 2 s (none: one drains every 12 s).
        (5, [59, 59, 59, 59, 59, 61, 71], [0, 0, 0, 0, 0, 10.0, 0]),
        # Spread out at the rate, never refused.
        (2, [0, 30, 60, 90, 120], [0, 0, 0, 0, 0]),
        (1, [0, 59.5, 60], [0, 0.5, 0]),
    ],
)
def test_requests_per_minute(
    limit: int, times: list[float], waits: list[float]
) -> None:
    start = 86_400.0 * 365  # a store's clock after a year
    assert waits_of(Rate(limit), [(start + t, 1) for t in times]) == waits


@pytest.mark.parametrize(
    ("tpm", "costs", "waits"),
    [
        # 1000 tpm: 600 + 400 fit, 1 more token waits 60/1000 s.
        (1000, [600, 400, 1], [0, 0, 0.06]),
        # 600 + 600: the second waits until 200 tokens have drained, 12 s.
        (1000, [600, 600], [0, 12.0]),
        # A request above the whole limit fits an empty bucket only ...
        (1000, [5000], [0]),
        (1000, [1, 5000], [0, 0.06]),
        # ... and counts whole: the next waits until 4001 tokens drained.
        (1000, [5000, 1], [0, 240.06]),
        (1000, [0, 0], [0, 0]),  # a call with no prompt tokens always fits
    ],
)
def test_tokens_per_minute(tpm: int, costs: list[int], waits: list[float]) -> None:
    now = 1000.0
    assert waits_of(Rate(tpm), [(now, cost) for cost in costs]) == waits


def test_the_real_usage_replaces_the_estimate() -> None:
    rate, now = Rate(1000), 1000.0
    rate.take(now, 800)  # estimated
    assert rate.remaining(now) == 200
    rate.adjust(-700)  # used 100 only
    assert rate.remaining(now) == 900
    rate.adjust(1100)  # used 1200: over, the key waits it out
    assert rate.remaining(now) == 0
    assert round(rate.wait(now, 1), 6) == round(0.06 * 201, 6)


@pytest.mark.parametrize(
    ("limit", "costs", "after_s", "remaining"),
    [
        (5, [], 0, 5),
        (5, [1] * 5, 0, 0),
        (5, [1] * 5, 11.9, 0),
        (5, [1] * 5, 12, 1),
        (5, [1] * 5, 60, 5),
        (5, [1] * 2, 1000, 5),  # never more than the limit
        (7, [1] * 7, 60 / 7, 1),  # steps that are no exact float
        (200_000, [1999] * 100, 0, 100),
        (200_000, [1999] * 100, 0.0003, 101),  # 60 / 200000 s per token
    ],
)
def test_remaining(
    limit: int, costs: list[int], after_s: float, remaining: int
) -> None:
    rate, now = Rate(limit), 86_400.0 * 365
    for cost in costs:
        rate.take(now, cost)
    assert rate.remaining(now + after_s) == remaining


@pytest.mark.parametrize(
    ("now", "period", "start", "end"),
    [
        ("2026-03-04 13:05:09", "hour", "2026-03-04 13:00", "2026-03-04 14:00"),
        ("2026-03-04 23:59:59", "hour", "2026-03-04 23:00", "2026-03-05 00:00"),
        ("2026-03-04 13:05:09", "day", "2026-03-04 00:00", "2026-03-05 00:00"),
        ("2026-03-04 00:00:00", "day", "2026-03-04 00:00", "2026-03-05 00:00"),
        # Weeks start on Monday 00:00 UTC: 2026-03-02 is a Monday.
        ("2026-03-04 13:05:09", "week", "2026-03-02 00:00", "2026-03-09 00:00"),
        ("2026-03-02 00:00:00", "week", "2026-03-02 00:00", "2026-03-09 00:00"),
        ("2026-03-01 23:59:59", "week", "2026-02-23 00:00", "2026-03-02 00:00"),
        # A week across a year's end.
        ("2026-12-31 12:00:00", "week", "2026-12-28 00:00", "2027-01-04 00:00"),
        # Months of every length, a leap February, December to January.
        ("2026-03-31 23:59:59", "month", "2026-03-01 00:00", "2026-04-01 00:00"),
        ("2026-04-15 00:00:00", "month", "2026-04-01 00:00", "2026-05-01 00:00"),
        ("2028-02-29 12:00:00", "month", "2028-02-01 00:00", "2028-03-01 00:00"),
        ("2026-02-28 12:00:00", "month", "2026-02-01 00:00", "2026-03-01 00:00"),
        ("2026-12-31 23:00:00", "month", "2026-12-01 00:00", "2027-01-01 00:00"),
    ],
)
def test_quota_periods_start_at_utc_boundaries(
    now: str, period: str, start: str, end: str
) -> None:
    assert period_bounds(ts(now), period) == (ts(start), ts(end))


def test_a_quota_renews_when_its_period_ends() -> None:
    quota = Quota(1000, "day")
    quota.roll(ts("2026-03-04 13:00:00"))
    quota.used = 1000
    assert not quota.fits(0)  # spent: not even a call that uses no tokens
    quota.roll(ts("2026-03-04 23:59:59"))
    assert quota.remaining == 0
    quota.roll(ts("2026-03-05 00:00:00"))
    assert quota.remaining == 1000 and quota.fits(1000) and not quota.fits(1001)
