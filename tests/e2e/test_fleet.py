"""A fleet: real `azproxy serve` processes sharing deployment state through a
real redis-server on loopback, in front of FakeAzure.

Each model here has two deployments, dep1 first (priority 1) and dep2 after
it, so where a request went says what its process knew: a process that
knows dep1 is cooling sends it to dep2 without trying dep1. FakeAzure
records which deployment each request reached.

Changes travel in milliseconds; the tests give them PROPAGATION_S (a
generous bound on a busy machine, not the target: the benchmark's fleet
section measures the delay against the 250 ms target).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes import CHAT_JSON, FakeAzure, json_answer
from tests.processes import Running, running
from tests.redis_server import RedisServer, needs_redis, redis_server

pytestmark = needs_redis

PROPAGATION_S = 1.0
TEAM_KEY = "team-key-0123456789abcdef"
AZURE_KEY = "fedcba9876543210fedcba9876543210"
CONFIG = """
access_keys = ["env:TEAM_KEY"]

[endpoints.e]
url = "{url}"
api_key = "env:AZ_KEY"

[model_map]
"gpt-4o" = [
  {{ endpoint = "e", deployment = "dep1", priority = 1 }},
  {{ endpoint = "e", deployment = "dep2", priority = 2 }},
]
"""
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
RATE_LIMITED = {"error": {"code": "429", "message": "Rate limit is exceeded."}}
SERVER_ERROR = {"error": {"code": "InternalServerError", "message": "boom"}}
NONE_LEFT = {
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-remaining-tokens": "900",
}
ROOM = {"x-ratelimit-remaining-requests": "40", "x-ratelimit-remaining-tokens": "900"}
OUTAGE = "goes on with its own state until it is back"
UP = re.compile(r"^azproxy_shared_state_up (\S+)$", re.MULTILINE)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server


@contextmanager
def fleet(
    tmp_path: Path,
    fake: FakeAzure,
    redis: RedisServer,
    count: int = 2,
    **settings: str,
) -> Iterator[list[Running]]:
    """`count` azproxy processes on the same Redis, one config."""
    env = {
        "TEAM_KEY": TEAM_KEY,
        "AZ_KEY": AZURE_KEY,
        "AZPROXY_REDIS_URL": redis.url,
    }
    with serving(
        tmp_path, count, CONFIG.format(url=fake.url), env, settings
    ) as servers:
        yield servers


@contextmanager
def serving(
    tmp_path: Path,
    count: int,
    config_text: str,
    env: dict[str, str],
    settings: dict[str, str],
) -> Iterator[list[Running]]:
    """`count` `azproxy serve` processes with one config file, the
    environment `env` and the AZPROXY_* `settings`; no retries, text logs."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "azproxy.toml"
    config.write_text(config_text)
    env = (
        env
        | {"AZPROXY_RETRIES": "0", "AZPROXY_LOG_FORMAT": "text"}
        | {"AZPROXY_" + k.upper(): v for k, v in settings.items()}
    )
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                running(
                    ["serve", "--port", "0", "--config", str(config)],
                    tmp_path / f"azproxy-{n}.log",
                    env=env,
                )
            )
            for n in range(count)
        ]


async def chat(server: Running) -> tuple[int, dict[str, Any], str | None]:
    """Status, body and x-azproxy-deployment of one chat through `server`."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {TEAM_KEY}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response,
    ):
        deployment = response.headers.get("x-azproxy-deployment")
        return response.status, await response.json(), deployment


async def served_by(fake: FakeAzure, server: Running) -> list[str]:
    """The deployments FakeAzure saw for one chat through `server`; it must
    answer 200 with FakeAzure's answer, from the last of them."""
    before = len(fake.requests)
    status, answer, deployment = await chat(server)
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == "Hi from FakeAzure"
    sent = fake.requests[before:]
    assert deployment == sent[-1].path.split("/")[3]
    for recorded in sent:
        assert recorded.headers["api-key"] == AZURE_KEY
        assert json.loads(recorded.body) == BODY
    return [r.path.split("/")[3] for r in sent]


async def shared_state_up(server: Running) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/metrics") as response,
    ):
        assert response.status == 200
        found = UP.search(await response.text())
    assert found is not None, "no azproxy_shared_state_up in /metrics"
    return float(found.group(1))


async def eventually(
    condition: Callable[[], Any], what: str, timeout_s: float = 15
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.1)


def log_lines(server: Running, text: str) -> int:
    return sum(line.endswith(text) for line in server.log().splitlines())


async def test_a_429_seen_by_one_process_cools_the_deployment_for_the_others(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    fake_azure.queue(
        json_answer(RATE_LIMITED, 429, headers={"retry-after-ms": "60000"})
    )
    with fleet(tmp_path, fake_azure, redis) as (first, second):
        assert await shared_state_up(first) == 1
        assert await served_by(fake_azure, first) == ["dep1", "dep2"]  # 429, then
        await asyncio.sleep(PROPAGATION_S)
        # The other process never tries dep1: it learned the cooldown.
        for _ in range(3):
            assert await served_by(fake_azure, second) == ["dep2"]
        assert await served_by(fake_azure, first) == ["dep2"]
        # A process that joins later reads the board as the fleet knows it.
        with fleet(tmp_path / "late", fake_azure, redis, count=1) as (late,):
            assert await served_by(fake_azure, late) == ["dep2"]
        for server in (first, second, late):
            assert redis.password not in server.log()
            assert f"Redis at redis://127.0.0.1:{redis.port}/0" in server.log()


async def test_a_breaker_one_process_opened_is_open_for_the_others(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    with fleet(
        tmp_path, fake_azure, redis, breaker_failures="2", breaker_open_s="60"
    ) as (first, second):
        for _ in range(2):
            fake_azure.queue(json_answer(SERVER_ERROR, 500))
            assert await served_by(fake_azure, first) == ["dep1", "dep2"]
        await asyncio.sleep(PROPAGATION_S)
        assert await served_by(fake_azure, second) == ["dep2"]
        assert await served_by(fake_azure, first) == ["dep2"]


async def test_an_exhausted_mark_one_process_learned_orders_the_others(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    """Azure says dep1 has no requests left: the others send to dep2 first,
    until an answer shows room again."""
    with fleet(tmp_path, fake_azure, redis, exhausted_cooldown_s="600") as (
        first,
        second,
    ):
        assert await served_by(fake_azure, second) == ["dep1"]
        fake_azure.queue(json_answer(CHAT_JSON, headers=NONE_LEFT))
        assert await served_by(fake_azure, first) == ["dep1"]
        await asyncio.sleep(PROPAGATION_S)
        for _ in range(2):
            assert await served_by(fake_azure, second) == ["dep2"]
        # A process that joins later reads the mark from the board.
        with fleet(tmp_path / "late", fake_azure, redis, count=1) as (late,):
            assert await served_by(fake_azure, late) == ["dep2"]
        # dep2 fails once, so the first process hears from dep1 again: room.
        fake_azure.queue(
            json_answer(SERVER_ERROR, 500), json_answer(CHAT_JSON, headers=ROOM)
        )
        assert await served_by(fake_azure, first) == ["dep2", "dep1"]
        await asyncio.sleep(PROPAGATION_S)
        assert await served_by(fake_azure, second) == ["dep1"]


async def test_an_exhausted_mark_from_another_process_runs_out_in_time(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    with fleet(tmp_path, fake_azure, redis, exhausted_cooldown_s="4") as (
        first,
        second,
    ):
        fake_azure.queue(json_answer(CHAT_JSON, headers=NONE_LEFT))
        assert await served_by(fake_azure, first) == ["dep1"]
        marked = time.monotonic()
        await asyncio.sleep(PROPAGATION_S)
        assert await served_by(fake_azure, second) == ["dep2"]
        assert time.monotonic() - marked < 4, "too slow to see the mark in time"
        # Its deadline there: 4 s after the mark, plus the time it took to
        # travel (a generous second).
        await asyncio.sleep(4 - (time.monotonic() - marked) + 1.0)
        assert await served_by(fake_azure, second) == ["dep1"]


async def test_redis_killed_then_back(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    with fleet(tmp_path, fake_azure, redis) as (first, second):
        assert await shared_state_up(first) == await shared_state_up(second) == 1
        redis.kill()
        # Requests are answered all along, on each process's own state.
        for server in (first, second):
            assert await served_by(fake_azure, server) == ["dep1"]
            await eventually(gauge_is(server, 0), "the gauge to drop")
        # What a process learns while Redis is away stays its own...
        fake_azure.queue(
            json_answer(RATE_LIMITED, 429, headers={"retry-after-ms": "60000"})
        )
        assert await served_by(fake_azure, first) == ["dep1", "dep2"]
        assert await served_by(fake_azure, second) == ["dep1"]
        for server in (first, second):
            assert log_lines(server, OUTAGE) == 1
        # ...and reaches the fleet when Redis is back.
        redis.start()
        for server in (first, second):
            await eventually(gauge_is(server, 1), "the gauge to rise")
        await asyncio.sleep(PROPAGATION_S)
        assert await served_by(fake_azure, second) == ["dep2"]
        for server in (first, second):
            assert log_lines(server, f"127.0.0.1:{redis.port}/0 is back") == 1
            assert log_lines(server, OUTAGE) == 1


async def test_a_redis_that_stops_answering_does_not_hold_requests(
    fake_azure: FakeAzure, tmp_path: Path, redis: RedisServer
) -> None:
    """SIGSTOP: connections stay open and nothing answers, as with a host
    that vanished. Requests do not wait for Redis; the heartbeat times out
    (redis_timeout_ms) and the gauge drops."""
    with fleet(tmp_path, fake_azure, redis, redis_timeout_ms="200") as servers:
        redis.freeze()
        try:
            for server in servers:
                started = time.monotonic()
                assert await served_by(fake_azure, server) == ["dep1"]
                assert time.monotonic() - started < 5  # generous: no 5 s hang
                await eventually(gauge_is(server, 0), "the gauge to drop")
            fake_azure.queue(
                json_answer(RATE_LIMITED, 429, headers={"retry-after-ms": "60000"})
            )
            assert await served_by(fake_azure, servers[0]) == ["dep1", "dep2"]
        finally:
            redis.thaw()
        for server in servers:
            await eventually(gauge_is(server, 1), "the gauge to rise")
        await asyncio.sleep(PROPAGATION_S)
        assert await served_by(fake_azure, servers[1]) == ["dep2"]


def gauge_is(server: Running, expected: float) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await shared_state_up(server) == expected

    return check


async def test_a_clustered_redis_shares_the_board_too(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    """Azure Managed Redis (OSS clustering) and Redis Cluster route keys by
    hash slot: azproxy finds out (INFO cluster) and uses a cluster client."""
    fake_azure.queue(
        json_answer(RATE_LIMITED, 429, headers={"retry-after-ms": "60000"})
    )
    with (
        redis_server(tmp_path / "cluster", cluster=True) as redis,
        fleet(tmp_path, fake_azure, redis) as (first, second),
    ):
        assert await served_by(fake_azure, first) == ["dep1", "dep2"]
        await asyncio.sleep(PROPAGATION_S)
        assert await served_by(fake_azure, second) == ["dep2"]
        for server in (first, second):
            assert await shared_state_up(server) == 1
            assert redis.password not in server.log()
