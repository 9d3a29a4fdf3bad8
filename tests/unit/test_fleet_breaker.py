"""The breaker around Redis, timed by a fake clock: a call within the
timeout; after a failure no call for a back-off, then one at a time; the
outage and the recovery logged once each."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from azproxy.errors import SharedStateDown
from azproxy.fleet.breaker import FIRST_BACKOFF_S, MAX_BACKOFF_S, RedisBreaker
from tests.clock import FakeClock

WHERE = "redis://cache:6379/0"


class Redis:
    """A stand-in whose answers the test sets, counting the calls made."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False
        self.hanging = False

    async def ping(self) -> str:
        self.calls += 1
        if self.hanging:
            await asyncio.sleep(10)
        if self.failing:
            raise RedisConnectionError("Connection refused")
        return "PONG"


def breaker(clock: FakeClock) -> RedisBreaker:
    return RedisBreaker(timeout_s=0.05, where=WHERE, clock=clock)


async def test_a_failure_stops_calls_for_a_backoff_then_one_tries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, redis = FakeClock(), Redis()
    guard = breaker(clock)
    assert await guard.call(redis.ping) == "PONG"
    redis.failing = True
    with pytest.raises(SharedStateDown):
        await guard.call(redis.ping)
    assert not guard.up and redis.calls == 2
    # Away: refused at once, Redis not called.
    for _ in range(5):
        with pytest.raises(SharedStateDown):
            await guard.call(redis.ping)
    assert redis.calls == 2
    assert guard.wait_s() == pytest.approx(FIRST_BACKOFF_S)
    clock.advance(FIRST_BACKOFF_S)
    with pytest.raises(SharedStateDown):
        await guard.call(redis.ping)  # one try, failing again: back-off doubles
    assert redis.calls == 3
    assert guard.wait_s() == pytest.approx(2 * FIRST_BACKOFF_S)
    for _ in range(10):
        clock.advance(MAX_BACKOFF_S)
        with pytest.raises(SharedStateDown):
            await guard.call(redis.ping)
    assert guard.wait_s() == pytest.approx(MAX_BACKOFF_S)
    outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outages) == 1
    assert WHERE in outages[0].getMessage()


async def test_recovery_is_logged_once_and_runs_the_callbacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, redis = FakeClock(), Redis()
    guard = breaker(clock)
    recovered: list[str] = []
    guard.recovered.append(lambda: recovered.append("back"))
    redis.failing = True
    with pytest.raises(SharedStateDown):
        await guard.call(redis.ping)
    redis.failing = False
    clock.advance(FIRST_BACKOFF_S)
    assert await guard.call(redis.ping) == "PONG"
    assert await guard.call(redis.ping) == "PONG"
    assert guard.up and guard.wait_s() == 0
    assert recovered == ["back"]
    back = f"shared state: Redis at {WHERE} is back"
    backs = [r for r in caplog.records if r.getMessage() == back]
    assert len(backs) == 1


async def test_a_redis_that_does_not_answer_costs_the_timeout_once() -> None:
    clock, redis = FakeClock(), Redis()
    guard = breaker(clock)
    redis.hanging = True
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(SharedStateDown, match="TimeoutError"):
        await guard.call(redis.ping)
    assert loop.time() - started < 5  # the timeout (0.05 s), not the hang (10 s)
    with pytest.raises(SharedStateDown):
        await guard.call(redis.ping)
    assert redis.calls == 1


async def test_while_away_only_one_call_tries_at_a_time() -> None:
    clock, redis = FakeClock(), Redis()
    guard = breaker(clock)
    redis.failing = True
    with pytest.raises(SharedStateDown):
        await guard.call(redis.ping)
    clock.advance(FIRST_BACKOFF_S)
    assert guard.allowed()  # this caller tries
    assert not guard.allowed()  # the next waits for its verdict


def test_no_log_line_without_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    guard = breaker(FakeClock())
    guard.succeeded()
    assert guard.up and not caplog.records
