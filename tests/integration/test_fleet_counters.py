"""fleet/counters.py's scripts against a real redis-server: the tpm and quota
arithmetic (windows.py's, in Lua), settlements summed per key, the fallback
to this process's counters seeded from Redis' last word."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from azproxy.errors import ServiceUnavailable
from azproxy.fleet.breaker import RedisBreaker
from azproxy.fleet.connection import Link
from azproxy.fleet.counters import SharedCounters
from azproxy.fleet.names import Names
from azproxy.limits.store import Kind, Refusal, Ticket
from azproxy.settings.redis_url import read_redis_url
from azproxy.settings.server_side import Limits
from tests.redis_server import RedisServer, needs_redis, redis_server

pytestmark = needs_redis


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


Make = Callable[..., SharedCounters]


@pytest.fixture
async def counters(redis: RedisServer) -> AsyncIterator[Make]:
    """SharedCounters on `redis`; their connections closed after the test."""
    links: list[Link] = []

    def make(*, closed: bool = False) -> SharedCounters:
        url = read_redis_url(redis.url, "test", {})
        assert url is not None
        links.append(link := Link(url, timeout_s=2))
        breaker = RedisBreaker(timeout_s=2, where="test")
        return SharedCounters(
            link, breaker, Names("t"), lease_s=30, closed=closed, clock=time.time
        )

    yield make
    for link in links:
        await link.aclose()


async def test_tpm_and_the_quota_count_the_estimate_then_the_real_usage(
    redis: RedisServer, counters: Make
) -> None:
    store = counters()
    limits = Limits("team", tpm=100, token_quota=1000)
    first = await store.admit(limits, 60)
    assert isinstance(first, Ticket)
    assert first.headers["x-azproxy-ratelimit-remaining-tokens"] == "40"
    assert first.headers["x-azproxy-quota-remaining-tokens"] == "940"
    refused = await store.admit(limits, 60)
    assert isinstance(refused, Refusal)
    assert refused.kind is Kind.TPM
    # 20 tokens too many, at 0.6 s each to drain.
    assert 11 < refused.wait_s <= 12
    first.settle(10)  # the real usage: 50 fewer than the estimate
    await store.batch.flush()
    second = await store.admit(limits, 60)
    assert isinstance(second, Ticket)
    assert second.headers["x-azproxy-quota-remaining-tokens"] == "930"
    assert redis.command("KEYS *").count(b"{key:n-team}") >= 2


async def test_settlements_of_one_key_go_as_one_call(counters: Make) -> None:
    store = counters()
    limits = Limits("team", tpm=1000, max_concurrent=5)
    tickets = [await store.admit(limits, 10) for _ in range(5)]
    assert all(isinstance(t, Ticket) for t in tickets)
    assert isinstance(await store.admit(limits, 10), Refusal)
    for ticket in tickets:
        assert isinstance(ticket, Ticket)
        ticket.settle(20)
    store._gather()
    assert len(store.batch._calls) == 2  # one charge, one release, for 5 requests
    await store.batch.flush()
    assert isinstance(await store.admit(limits, 10), Ticket)


async def test_away_redis_the_key_goes_on_from_what_was_left(
    redis: RedisServer, counters: Make
) -> None:
    store = counters()
    limits = Limits("team", rpm=3)
    budget = Limits("budget", token_quota=100)
    for _ in range(2):
        assert isinstance(await store.admit(limits, 0), Ticket)
    redis.kill()
    assert isinstance(await store.admit(limits, 0), Ticket)  # the third, locally
    refused = await store.admit(limits, 0)
    assert isinstance(refused, Refusal)
    assert refused.kind is Kind.RPM
    assert isinstance(await store.admit(budget, 10), Ticket)  # open: locally
    closed = counters(closed=True)
    with pytest.raises(ServiceUnavailable) as refusal:
        await closed.admit(budget, 10)
    assert refusal.value.status == 503
