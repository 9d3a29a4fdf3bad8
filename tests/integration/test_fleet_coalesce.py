"""fleet/coalesce.py against a real redis-server: the admits of one loop tick
go in one write on one connection, each request answered with its own result;
a batch that Redis does not answer fails all its requests at its one deadline
and counts once for the breaker; a Redis that lost the script is handled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from azproxy.fleet.breaker import FIRST_BACKOFF_S, RedisBreaker
from azproxy.fleet.connection import Link
from azproxy.fleet.counters import SharedCounters
from azproxy.fleet.names import Names
from azproxy.limits.store import Kind, Refusal, Ticket
from azproxy.settings.redis_url import read_redis_url
from azproxy.settings.server_side import Limits
from tests.redis_server import RedisServer, needs_redis, redis_server

pytestmark = needs_redis

TIMEOUT_S = 0.3


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def store(redis: RedisServer) -> AsyncIterator[SharedCounters]:
    """SharedCounters on `redis`, which it knows to be a single node (after
    one admit of another key, made one call at a time)."""
    url = read_redis_url(redis.url, "test", {})
    assert url is not None
    link = Link(url, timeout_s=TIMEOUT_S)
    breaker = RedisBreaker(timeout_s=TIMEOUT_S, where="test")
    counters = SharedCounters(
        link, breaker, Names("t"), lease_s=30, closed=False, clock=time.time
    )
    assert isinstance(await counters.admit(Limits("warm-up", rpm=5), 0), Ticket)
    assert link.cluster is False
    yield counters
    redis.thaw()
    await link.aclose()


def _clients(redis: RedisServer) -> int:
    """The connections Redis has, the one asking included."""
    info = redis.command("INFO clients").decode()
    line = next(x for x in info.splitlines() if x.startswith("connected_clients:"))
    return int(line.split(":")[1])


async def test_one_tick_of_admits_is_one_batch_each_with_its_own_answer(
    redis: RedisServer, store: SharedCounters
) -> None:
    limits = Limits("team", rpm=10, max_concurrent=8)
    results = await asyncio.gather(*(store.admit(limits, 5) for _ in range(12)))
    # Redis ran them in the order they were made, one after the other: the
    # first 8 admitted (the concurrency slots), each told its own remaining
    # requests, then 4 refused at max_concurrent.
    tickets = [r for r in results if isinstance(r, Ticket)]
    assert len(tickets) == 8 and all(isinstance(r, Ticket) for r in results[:8])
    remaining = [t.headers["x-azproxy-ratelimit-remaining-requests"] for t in tickets]
    assert remaining == [str(n) for n in range(9, 1, -1)]
    assert len({t.lease for t in tickets}) == 8
    refusals = [r for r in results if isinstance(r, Refusal)]
    assert [r.kind for r in refusals] == [Kind.CONCURRENCY] * 4
    assert redis.command("ZCARD t:{key:n-team}:leases").endswith(b":8\r\n")
    # One connection wrote the 12 calls (plus the test's own, asking): one
    # call at a time, the pool would have opened one per request.
    assert _clients(redis) == 2


async def test_a_batch_redis_does_not_answer_fails_each_request_once(
    redis: RedisServer, store: SharedCounters
) -> None:
    breaker = store._breaker
    downs: list[int] = []
    breaker.went_down.append(lambda: downs.append(1))
    limits = Limits("team", rpm=100)
    redis.freeze()  # connections stay open; nothing answers
    started = time.monotonic()
    results = await asyncio.gather(*(store.admit(limits, 5) for _ in range(10)))
    waited = time.monotonic() - started
    # All answered from this process's counters, at the batch's one
    # deadline rather than one each, and the breaker counted one failure:
    # its first back-off, not doubled for each request of the batch.
    assert all(isinstance(r, Ticket) for r in results)
    assert waited < TIMEOUT_S + 1.0
    assert not breaker.up and downs == [1]
    assert FIRST_BACKOFF_S - 0.1 < breaker.wait_s() <= FIRST_BACKOFF_S
    redis.thaw()


async def test_admits_go_on_after_redis_lost_the_script(
    redis: RedisServer, store: SharedCounters
) -> None:
    limits = Limits("team", rpm=3)
    redis.command("SCRIPT FLUSH")  # as after a restart or a failover
    redis.command("CONFIG RESETSTAT")
    results = await asyncio.gather(*(store.admit(limits, 0) for _ in range(4)))
    assert [isinstance(r, Ticket) for r in results] == [True, True, True, False]
    assert store._breaker.up
    stats = redis.command("INFO commandstats").decode()
    # The four answered NOSCRIPT, the script loaded once, the four again.
    assert "cmdstat_evalsha:calls=8," in stats and "failed_calls=4" in stats
    assert "cmdstat_script|load:calls=1," in stats


async def test_an_unexpected_error_in_a_batch_reaches_each_request(
    store: SharedCounters, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise LookupError("a bug")

    monkeypatch.setattr(store._link, "ready", broken)
    limits = Limits("team", rpm=100)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(store.admit(limits, 0) for _ in range(3)), return_exceptions=True
        ),
        5,
    )
    assert [type(r) for r in results] == [LookupError] * 3
