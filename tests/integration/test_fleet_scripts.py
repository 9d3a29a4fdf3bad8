"""The plumbing the gateway's shared counters build on, against a real
redis-server: scripts by EVALSHA that survive a Redis that lost them
(NOSCRIPT), and batches sent as one pipeline, dropped while Redis is away."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from azproxy.fleet.breaker import RedisBreaker
from azproxy.fleet.connection import Link
from azproxy.fleet.names import Names
from azproxy.fleet.scripts import Batch, Script
from azproxy.settings.config import Config
from tests.clock import FakeClock
from tests.redis_server import RedisServer, needs_redis, redis_server

pytestmark = needs_redis

COUNT = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


@pytest.fixture(params=[False, True], ids=["single", "cluster"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis", cluster=request.param) as running:
        yield running


@pytest.fixture
async def link(server: RedisServer) -> AsyncIterator[Link]:
    config = Config.load(environ={"AZPROXY_REDIS_URL": server.url})
    assert config.redis_url is not None
    connection = Link(config.redis_url, timeout_s=1.0)
    assert await connection.ready() is connection.client
    assert connection.cluster == server.cluster
    yield connection
    await connection.aclose()


async def test_a_script_is_loaded_again_when_redis_lost_it(link: Link) -> None:
    client = link.client
    key = Names("t").counter(Names("t").key_tag("team-a"), "rpm")
    assert await COUNT.run(client, [key], [2]) == 2
    await client.script_flush()  # as after a restart or a failover
    assert await COUNT.run(client, [key], [3]) == 5
    assert await client.script_exists(COUNT.sha) == [True]


async def test_a_batch_survives_a_redis_that_lost_its_scripts(link: Link) -> None:
    client = link.client
    breaker = RedisBreaker(timeout_s=1.0, where="test")
    batch = Batch(link, breaker, delay_s=0.05)
    names = Names("t")
    keys = [names.counter(names.key_tag(f"team-{n}"), "tokens") for n in range(3)]
    await client.script_flush()
    for n, key in enumerate(keys):
        batch.add(COUNT, [key], [n + 1])
        batch.add(COUNT, [key], [10])
    await client.config_resetstat()
    await batch.flush()
    assert [int(await client.get(k) or 0) for k in keys] == [11, 12, 13]
    assert await client.script_exists(COUNT.sha) == [True]
    if not link.cluster:
        # One pipeline: six EVALSHA answered NOSCRIPT, the script loaded
        # once, the six sent again. (A cluster client pipelines no scripts:
        # there each call goes on its own, as Script.run.)
        stats = await client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 12
        assert stats["cmdstat_evalsha"]["failed_calls"] == 6
        assert stats["cmdstat_script|load"]["calls"] == 1
    await batch.flush()  # nothing queued: nothing sent
    assert [int(await client.get(k) or 0) for k in keys] == [11, 12, 13]


async def test_a_batch_is_dropped_while_redis_is_away(
    link: Link, server: RedisServer
) -> None:
    client = link.client
    # A clock that stands still: the back-off never ends during the test.
    breaker = RedisBreaker(timeout_s=0.2, where="test", clock=FakeClock())
    batch = Batch(link, breaker, delay_s=0.0)
    key = Names("t").counter(Names("t").key_tag("team-a"), "rpm")
    server.kill()
    batch.add(COUNT, [key], [1])
    await batch.flush()  # no exception: the process goes on alone
    assert not breaker.up
    server.start()
    batch.add(COUNT, [key], [1])
    await batch.flush()  # within the back-off: not even tried
    assert await client.get(key) is None
