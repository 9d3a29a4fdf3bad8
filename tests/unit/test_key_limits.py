"""Access keys with limits: parsed from the config file's entries (each bad
value a clear problem), and the in-process counters behind them: admit,
refuse with the real wait, settle the real usage exactly once."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from azproxy.errors import ConfigError
from azproxy.limits.store import InProcessStore, Kind, Refusal, Remaining, Ticket
from azproxy.settings.server_side import Limits, parse_access_keys
from tests.clock import FakeClock

KEY = "team-a-key-0123456789abcdef"
OTHER = "team-b-key-0123456789abcdef"


def entry(**fields: Any) -> dict[str, Any]:
    return {"key": KEY, "name": "team-a"} | fields


def test_the_entry_of_the_issue() -> None:
    (key,) = parse_access_keys(
        [
            entry(
                rpm=600,
                tpm=200000,
                max_concurrent=20,
                token_quota=5000000,
                token_quota_period="day",
            )
        ],
        {},
    )
    assert key.limits == Limits("team-a", 600, 200000, 20, 5000000, "day")
    assert key.limits.describe() == (
        "rpm 600, tpm 200000, max_concurrent 20, token_quota 5000000 per day (UTC)"
    )


def test_no_limit_is_none_and_a_quota_is_monthly_by_default() -> None:
    plain, quota = parse_access_keys(
        [KEY, {"key": OTHER, "name": "b", "token_quota": 10}], {}
    )
    assert plain.limits is None
    assert quota.limits == Limits("b", token_quota=10, token_quota_period="month")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"rpm": 0}, "access_keys #1.rpm: expected a whole number above 0"),
        ({"tpm": -5}, "access_keys #1.tpm: expected a whole number above 0"),
        ({"max_concurrent": 2.5}, "#1.max_concurrent: expected a whole number"),
        ({"token_quota": True}, "#1.token_quota: expected a whole number above 0"),
        ({"rpm": "600"}, "access_keys #1.rpm: expected a whole number above 0"),
        (
            {"token_quota_period": "day"},
            "#1.token_quota_period: set only with token_quota",
        ),
        (
            {"token_quota": 5, "token_quota_period": "year"},
            "'year' is not one of hour, day, week, month",
        ),
        ({"rpm": 5, "name": None}, "a key with limits needs a name"),
        ({"name": "team a"}, "#1.name: 'team a' is not a key name"),
        ({"name": "x" * 65}, "is not a key name"),
        ({"name": "passthrough"}, "is what metrics call callers without"),
        ({"rpms": 5}, "unknown key 'rpms' (did you mean 'rpm'?)"),
    ],
)
def test_bad_limits_are_clear_problems(fields: dict[str, Any], problem: str) -> None:
    table = {k: v for k, v in (entry() | fields).items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        parse_access_keys([table], {})
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_entries_sharing_a_name_must_share_their_limits() -> None:
    # A key being rotated: old and new share one name, and its counters.
    old, new = parse_access_keys(
        [entry(rpm=5), {"key": OTHER, "name": "team-a", "rpm": 5}], {}
    )
    assert old.limits == new.limits
    with pytest.raises(ConfigError, match="different limits"):
        parse_access_keys([entry(rpm=5), {"key": OTHER, "name": "team-a"}], {})


NOON = datetime.datetime(2026, 3, 4, 12, tzinfo=datetime.UTC).timestamp()


async def admitted(store: InProcessStore, limits: Limits, estimate: int) -> Ticket:
    found = await store.admit(limits, estimate)
    assert isinstance(found, Ticket), found
    return found


async def refused(store: InProcessStore, limits: Limits, estimate: int) -> Refusal:
    found = await store.admit(limits, estimate)
    assert isinstance(found, Refusal), found
    return found


async def test_rpm_refuses_with_the_real_wait_and_counts_no_refusal() -> None:
    clock = FakeClock(NOON)
    store, limits = InProcessStore(clock), Limits("a", rpm=5)
    tickets = [await admitted(store, limits, 0) for _ in range(5)]
    assert [t.headers for t in tickets[-2:]] == [
        {"x-azproxy-ratelimit-remaining-requests": "1"},
        {"x-azproxy-ratelimit-remaining-requests": "0"},
    ]
    refusal = await refused(store, limits, 0)
    assert (refusal.kind, refusal.wait_s) == (Kind.RPM, 12.0)
    clock.advance(11)
    assert (await refused(store, limits, 0)).wait_s == pytest.approx(1.0)
    clock.advance(1)
    await admitted(store, limits, 0)
    # Another key's counters are its own.
    await admitted(store, Limits("b", rpm=5), 0)


async def test_settling_replaces_the_estimate_once() -> None:
    clock = FakeClock(NOON)
    store, limits = InProcessStore(clock), Limits("a", tpm=1000, token_quota=5000)
    ticket = await admitted(store, limits, 600)
    assert ticket.headers == {
        "x-azproxy-ratelimit-remaining-tokens": "400",
        "x-azproxy-quota-remaining-tokens": "4400",
    }
    assert (await refused(store, limits, 500)).kind is Kind.TPM
    ticket.settle(100)
    ticket.settle(100_000)  # only the first settle counts
    after = await admitted(store, limits, 0)
    assert after.headers == {
        "x-azproxy-ratelimit-remaining-tokens": "900",
        "x-azproxy-quota-remaining-tokens": "4900",
    }
    after.settle(None)  # unknown usage: its estimate (0) stands


async def test_concurrency_slots_come_back_when_settled() -> None:
    store, limits = InProcessStore(FakeClock(NOON)), Limits("a", max_concurrent=2)
    first = await admitted(store, limits, 0)
    await admitted(store, limits, 0)
    refusal = await refused(store, limits, 0)
    assert (refusal.kind, refusal.wait_s, refusal.remaining) == (
        Kind.CONCURRENCY,
        1.0,
        Remaining(),
    )
    first.settle(None)
    first.settle(None)  # twice: still one slot back
    await admitted(store, limits, 0)
    assert (await refused(store, limits, 0)).kind is Kind.CONCURRENCY


async def test_a_quota_refuses_until_its_period_ends() -> None:
    clock = FakeClock(NOON)
    limits = Limits("a", rpm=100, token_quota=1000, token_quota_period="day")
    store = InProcessStore(clock)
    ticket = await admitted(store, limits, 100)
    ticket.charge(300)  # a realtime session's response.done, as it comes
    ticket.settle(1200)  # in all: over the quota (reconciled, never refused)
    refusal = await refused(store, limits, 0)
    midnight = datetime.datetime(2026, 3, 5, tzinfo=datetime.UTC).timestamp()
    assert refusal.kind is Kind.QUOTA
    assert refusal.renews_at == midnight
    assert refusal.wait_s == midnight - NOON
    assert refusal.remaining == Remaining(99, None, 0)
    clock.advance(midnight - NOON)
    assert (await admitted(store, limits, 1000)).headers[
        "x-azproxy-quota-remaining-tokens"
    ] == "0"


async def test_usage_settled_after_its_period_ended_is_dropped_with_it() -> None:
    clock = FakeClock(NOON)
    limits = Limits("a", token_quota=1000, token_quota_period="hour")
    store = InProcessStore(clock)
    ticket = await admitted(store, limits, 100)
    clock.advance(3600)
    ticket.settle(900)  # a long stream that ended in the next hour
    fresh = await admitted(store, limits, 0)
    assert fresh.headers == {"x-azproxy-quota-remaining-tokens": "1000"}
