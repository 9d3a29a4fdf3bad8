"""fleet/board_sync.py's scripts against a real redis-server: what the board
keeps of a deployment's exhausted mark, what the events say, and entries
written by the version before marks were shared (a fleet being updated)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from azproxy.fleet.board_sync import BoardSync
from azproxy.fleet.breaker import RedisBreaker
from azproxy.fleet.connection import Client, Link
from azproxy.fleet.names import Names
from azproxy.fleet.scripts import Batch
from azproxy.relay.health_board import HealthBoard, Shared
from azproxy.settings.redis_url import read_redis_url
from tests.clock import FakeClock
from tests.redis_server import needs_redis, redis_server
from tests.unit.test_health import backend, board

pytestmark = needs_redis
NAMES = Names("t")


@pytest.fixture
async def link(tmp_path: Path) -> AsyncIterator[Link]:
    with redis_server(tmp_path / "redis") as server:
        url = read_redis_url(server.url, "test", {})
        assert url is not None
        link = Link(url, timeout_s=2)
        yield link
        await link.aclose()


def process(link: Link, origin: str) -> tuple[HealthBoard, BoardSync, Batch]:
    health = board(FakeClock())
    batch = Batch(link, RedisBreaker(timeout_s=2, where="test"), delay_s=0)
    return health, BoardSync(health, NAMES, batch, origin=origin), batch


async def events(client: Client, count: int, batch: Batch) -> list[dict[str, Any]]:
    """The next `count` events on the channel once `batch` is sent."""
    async with client.pubsub() as sub:
        await sub.subscribe(NAMES.events)
        await sub.get_message(timeout=2)  # the confirmation
        await batch.flush()
        found: list[dict[str, Any]] = []
        while len(found) < count:
            message = await sub.get_message(timeout=2)
            assert message is not None, "an event did not come"
            if message["type"] == "message":
                found.append(json.loads(message["data"]))
    return found


def waits(view: Shared) -> tuple[Any, ...]:
    """A view read back through Redis, its waits rounded (to 0.5 s: the
    test's own time passes too)."""
    mark = None if view.exhausted_s is None else round(view.exhausted_s * 2) / 2
    rounded = (round(s * 2) / 2 for s in (view.limited_s, view.cooling_s, view.open_s))
    return (*rounded, view.probing, mark)


async def test_the_board_keeps_a_mark_until_a_change_to_it(link: Link) -> None:
    client = await link.ready()
    here, _, batch = process(link, "here")
    dep = backend("dep")
    here.succeeded(dep, requests=0)  # marked: 10 s
    here.rate_limited(dep, 5.0)  # a change that leaves the mark alone
    said = await events(client, 2, batch)
    assert [e.get("x") for e in said] == [10_000, None]
    assert "x" not in said[1]
    assert [e["l"] for e in said] == [0, 5000]
    # A process that joins reads both deadlines.
    joined, sync_, _ = process(link, "joined")
    await sync_.join(client)
    assert waits(joined.view("e/dep")) == (5.0, 0.0, 0.0, False, 10.0)
    here.succeeded(dep, requests=3)  # room again: both end
    (ended,) = await events(client, 1, batch)
    assert (ended["l"], ended["x"]) == (0, 0)
    assert await client.hgetall(NAMES.board) == {}
    late, sync_, _ = process(link, "late")
    await sync_.join(client)
    assert late.records() == []


async def test_entries_of_the_version_before_read_as_no_mark(link: Link) -> None:
    client = await link.ready()
    seconds, micros = await client.time()
    now_ms = seconds * 1000 + micros // 1000
    # The previous version's entry: four deadlines, no mark.
    await client.hset(NAMES.board, "e/old", json.dumps([now_ms + 5000, 0, 0, 0]))
    joined, sync_, batch = process(link, "joined")
    await sync_.join(client)
    assert waits(joined.view("e/old")) == (5.0, 0.0, 0.0, False, None)
    # A change that leaves marks alone, written over it: still none.
    joined.started(backend("old"))
    (said,) = await events(client, 1, batch)
    assert "x" not in said and said["p"] > 0
    stored = await client.hget(NAMES.board, "e/old")
    assert stored is not None
    assert json.loads(stored)[4:] == [0]  # five deadlines, no mark
