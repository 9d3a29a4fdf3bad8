"""Per-key limits shared by a fleet: real `azproxy serve` processes counting
one access key's rpm, max_concurrent and token quota in a real redis-server,
in front of FakeAzure (which records what reached it)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.test_fleet import BODY, eventually, gauge_is, serving
from tests.fakes import CHAT_JSON, Answer, FakeAzure
from tests.processes import Running
from tests.redis_server import RedisServer, needs_redis, redis_server

pytestmark = needs_redis

TEAM_KEY = "team-key-0123456789abcdef"
QUOTA_KEY = "quota-key-0123456789abcdef"
CONFIG = """
access_keys = [
  {{ key = "env:TEAM_KEY", name = "team", {team} }},
  {{ key = "env:QUOTA_KEY", name = "budget", token_quota = 20 }},
]

[endpoints.e]
url = "{url}"
api_key = "env:AZ_KEY"

[model_map]
"gpt-4o" = "dep1"
"""


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


@contextmanager
def fleet(
    tmp_path: Path, fake: FakeAzure, redis: RedisServer, team: str, **settings: str
) -> Iterator[list[Running]]:
    """Two azproxy processes on the same Redis; `team`: the team key's limits."""
    env = {
        "TEAM_KEY": TEAM_KEY,
        "QUOTA_KEY": QUOTA_KEY,
        "AZ_KEY": "fedcba9876543210fedcba9876543210",
        "AZPROXY_REDIS_URL": redis.url,
        # Generous on a busy machine: a timeout would send a process local.
        "AZPROXY_REDIS_TIMEOUT_MS": "2000",
    }
    config = CONFIG.format(url=fake.url, team=team)
    with serving(tmp_path, 2, config, env, settings) as servers:
        yield servers


async def chat(
    session: aiohttp.ClientSession, server: Running, key: str = TEAM_KEY
) -> tuple[int, dict[str, str], dict[str, object]]:
    async with session.post(
        f"{server.url}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as response:
        return response.status, dict(response.headers), await response.json()


def held(release: asyncio.Event) -> Answer:
    """FakeAzure's answer once `release` is set."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response(CHAT_JSON)

    return answer


def error_code(answer: dict[str, object]) -> object:
    error = answer["error"]
    assert isinstance(error, dict)
    return error["code"]


async def test_rpm_holds_across_two_processes(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    # 200 connections at once: aiohttp's default pool holds 100.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        with fleet(tmp_path, fake_azure, redis, "rpm = 50") as servers:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(chat(session, servers[n % 2]) for n in range(200))
            )
            elapsed = time.monotonic() - started
    statuses = [status for status, _, _ in answers]
    # 50 at once, then one more each 1.2 s the burst lasted (GCRA drains):
    # exactly 50 unless the machine took that long (never 100).
    allowed = 50 + int(elapsed / 1.2)
    assert 50 <= statuses.count(200) <= allowed, elapsed
    assert statuses.count(429) == 200 - statuses.count(200)
    assert len(fake_azure.requests) == statuses.count(200)
    for status, headers, answer in answers:
        if status == 429:
            assert error_code(answer) == "rate_limit_exceeded"
            assert int(headers["Retry-After"]) >= 1
    # No raw access key names a key in Redis; the key's name does.
    names = redis.command("KEYS *")
    assert TEAM_KEY.encode() not in names
    assert b"{key:n-team}" in names


async def test_max_concurrent_holds_across_two_processes_and_a_dead_ones_slot_expires(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    release = asyncio.Event()
    fake_azure.queue(held(release), held(release))
    async with aiohttp.ClientSession() as session:
        with fleet(
            tmp_path, fake_azure, redis, "max_concurrent = 2", redis_lease_s="2"
        ) as (first, second):
            one = asyncio.create_task(chat(session, first))
            two = asyncio.create_task(chat(session, second))
            await eventually(_async(lambda: len(fake_azure.requests) == 2), "2 sent")
            # Both slots are taken, one in each process; longer than the lease's
            # TTL too (the holders renew their leases).
            await asyncio.sleep(3)
            for server in (first, second):
                status, headers, answer = await chat(session, server)
                assert status == 429, answer
                assert error_code(answer) == "rate_limit_exceeded"
                assert headers["Retry-After"] == "1"
            assert len(fake_azure.requests) == 2
            # The first process dies mid-request: its slot comes back after the
            # TTL; the second's stays taken.
            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
            await asyncio.sleep(3)
            fake_azure.queue(held(release))
            three = asyncio.create_task(chat(session, second))
            await eventually(_async(lambda: len(fake_azure.requests) == 3), "3 sent")
            status, _, _ = await chat(session, second)
            assert status == 429
            release.set()
            assert (await two)[0] == 200
            assert (await three)[0] == 200
            one.cancel()
            await asyncio.gather(one, return_exceptions=True)
            # Slots given back: a request is let through again.
            await asyncio.sleep(0.5)
            assert (await chat(session, second))[0] == 200


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped


async def test_a_spent_quota_survives_a_restart_of_every_process(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    """The prompt is estimated at 17 tokens and FakeAzure reports 7 used: of a
    quota of 20, 13 are left after one request, too few for the next."""
    async with aiohttp.ClientSession() as session:
        with fleet(tmp_path / "a", fake_azure, redis, "rpm = 100") as (first, _):
            status, headers, _ = await chat(session, first, QUOTA_KEY)
            assert status == 200
        with fleet(tmp_path / "b", fake_azure, redis, "rpm = 100") as servers:
            for server in servers:
                status, headers, answer = await chat(session, server, QUOTA_KEY)
                assert status == 403, answer
                assert error_code(answer) == "quota_exceeded"
                assert headers["x-azproxy-quota-remaining-tokens"] == "13"
    assert len(fake_azure.requests) == 1
    assert json.loads(fake_azure.requests[0].body) == BODY


async def test_while_redis_is_away_keys_go_on_locally_from_what_was_left(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    async with aiohttp.ClientSession() as session:
        with fleet(tmp_path, fake_azure, redis, "rpm = 4", redis_failure="closed") as (
            first,
            second,
        ):
            # The first process last heard from Redis that one request was left.
            assert (await chat(session, second))[0] == 200
            assert (await chat(session, second))[0] == 200
            assert (await chat(session, first))[0] == 200
            assert (await chat(session, first, QUOTA_KEY))[0] == 200
            redis.kill()
            await eventually(gauge_is(first, 0), "the gauge to drop")
            # One request of the minute was left when Redis went: one more, not 3.
            status, headers, _ = await chat(session, first)
            assert status == 200
            assert headers["x-azproxy-ratelimit-remaining-requests"] == "0"
            status, _, answer = await chat(session, first)
            assert status == 429, answer
            # redis_failure = closed: a key with a quota waits for Redis.
            status, headers, answer = await chat(session, first, QUOTA_KEY)
            assert status == 503, answer
            assert error_code(answer) == "service_unavailable"
            assert int(headers["Retry-After"]) >= 1
            assert "Redis" in str(answer)
            # Redis is back, empty (no persistence here): the request the
            # first process let through meanwhile is added back, so the
            # second finds 3 of the minute's 4 left.
            redis.start()
            for server in (first, second):
                await eventually(gauge_is(server, 1), "the gauge to rise")
            await asyncio.sleep(0.5)
            statuses = [(await chat(session, second))[0] for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
    assert len(fake_azure.requests) == 8


async def test_a_clustered_redis_counts_a_key_in_one_slot(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    """Every counter of a key shares its hash tag: one script call, one shard."""
    async with aiohttp.ClientSession() as session:
        with (
            redis_server(tmp_path / "cluster", cluster=True) as redis,
            fleet(
                tmp_path, fake_azure, redis, "rpm = 3, max_concurrent = 5"
            ) as servers,
        ):
            statuses = [(await chat(session, servers[n % 2]))[0] for n in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert len(fake_azure.requests) == 3
