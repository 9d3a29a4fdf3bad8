"""What the fleet's events channel may bring into a process's board."""

from __future__ import annotations

import json
from typing import Any

import pytest

from azproxy.fleet.board_sync import MAX_NAMES, MAX_WAIT_MS, NOT_SAID, BoardSync
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


class Recorded:
    """A batch that keeps the script calls it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def add(self, script: Any, keys: Any, args: Any) -> None:
        self.calls.append(tuple(args))


@pytest.mark.parametrize(
    ("view", "sent"),
    [
        (Shared(exhausted_s=10.0), [0, 0, 0, 0, 10_000]),
        (Shared(exhausted_s=0.0), [0, 0, 0, 0, 0]),  # room again
        (Shared(limited_s=2.5), [2500, 0, 0, 0, NOT_SAID]),  # marks stay
        (Shared(exhausted_s=10.0**9), [0, 0, 0, 0, MAX_WAIT_MS]),  # as accepted
        (Shared(open_s=10.0**9), [0, 0, MAX_WAIT_MS, 0, NOT_SAID]),
    ],
)
def test_what_a_change_sends_to_the_board_script(view: Shared, sent: list[int]) -> None:
    batch = Recorded()
    health = board(FakeClock())
    sync_ = BoardSync(health, Names("azproxy"), batch, origin="here")  # type: ignore[arg-type]
    sync_.changed("e/dep", view)
    assert batch.calls == [("azproxy:events", "e/dep", *sent, "here")]


def test_an_exhausted_mark_travels_and_its_end_too() -> None:
    sync_, health = sync()
    sync_.received(event("e/dep", x=5000))
    assert health.view("e/dep") == Shared(exhausted_s=5.0)
    sync_.received(event("e/dep", 1000))  # no "x": the mark stays
    assert health.view("e/dep") == Shared(limited_s=1.0, exhausted_s=5.0)
    sync_.received(event("e/dep", x=0))  # room again
    assert health.view("e/dep") == Shared()


def test_an_event_from_the_version_before_leaves_the_marks_alone() -> None:
    """In a fleet being updated, the processes not yet updated send no "x"."""
    sync_, health = sync()
    sync_.received(event("e/dep", x=5000))
    old = {"by": "old", "d": "e/dep", "l": 2000, "c": 0, "o": 0, "p": 0}
    sync_.received(json.dumps(old).encode())
    assert health.view("e/dep") == Shared(limited_s=2.0, exhausted_s=5.0)


@pytest.mark.parametrize(
    "mark",
    [-5, 10**12, MAX_WAIT_MS + 1, "soon", None, [1]],
)
def test_marks_azproxy_could_not_have_sent_are_ignored(mark: Any) -> None:
    sync_, health = sync()
    sync_.received(event("e/dep", x=mark))
    sync_.received(b'{"by":"there","d":"e/dep","l":0,"c":0,"o":0,"p":0,"x":1e400}')
    assert health.records() == []
