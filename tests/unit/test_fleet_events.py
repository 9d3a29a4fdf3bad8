"""What the fleet's events channel may bring into a process's board."""

from __future__ import annotations

import json
from typing import Any

import pytest

from azproxy.fleet.board_sync import MAX_NAMES, BoardSync
from azproxy.fleet.names import Names
from azproxy.relay.health_board import Shared
from tests.clock import FakeClock
from tests.unit.test_health import board


class NoBatch:
    def add(self, *args: Any) -> None:
        raise AssertionError("nothing received is sent back to the fleet")


def sync() -> tuple[BoardSync, Any]:
    health = board(FakeClock())
    names = Names("azproxy")
    return BoardSync(health, names, NoBatch(), origin="here"), health  # type: ignore[arg-type]


def event(name: str, limited: Any = 0, **more: Any) -> bytes:
    fields = {"by": "there", "d": name, "l": limited, "c": 0, "o": 0, "p": 0}
    return json.dumps(fields | more).encode()


def test_a_well_formed_event_cools_the_deployment() -> None:
    sync_, health = sync()
    sync_.received(event("e/dep", 4000))
    assert health.view("e/dep") == Shared(limited_s=4.0)


@pytest.mark.parametrize(
    "data",
    [
        b'{"by":"there","d":"e/dep","l":1e400,"c":0,"o":0,"p":0}',  # inf
        event("e/dep", -5),
        event("e/dep", 10**12),  # longer than a day
        event("e/" + "x" * 200, 1000),
        event("no slash", 1000),
        event("e/dep\n", 1000),
        b"not json",
    ],
)
def test_events_azproxy_could_not_have_sent_are_ignored(data: bytes) -> None:
    sync_, health = sync()
    sync_.received(data)  # neither raises nor changes anything
    assert health.records() == []


def test_names_from_the_channel_are_bounded() -> None:
    sync_, health = sync()
    for i in range(MAX_NAMES + 50):
        sync_.received(event(f"e/dep-{i}", 1000))
    assert len(health.records()) == MAX_NAMES
    sync_.received(event("e/dep-0", 2000))  # a known name still updates
    assert health.view("e/dep-0") == Shared(limited_s=2.0)
