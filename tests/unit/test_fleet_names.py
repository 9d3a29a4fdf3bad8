"""Key names in Redis: one hash tag per access key (Redis Cluster places keys
by it), never a raw access key, everything under redis_prefix."""

from __future__ import annotations

import re

import pytest

from azproxy.fleet.names import Names

TAG = re.compile(r"\{([^}]*)\}")


def hash_tag(name: str) -> str:
    found = TAG.search(name)
    assert found is not None and found.group(1), f"no hash tag in {name}"
    return found.group(1)


def test_the_board_and_the_channel_are_under_the_prefix() -> None:
    names = Names("fleet-1")
    assert names.board == "fleet-1:{board}:deployments"
    assert names.events == "fleet-1:events"


def test_all_of_one_keys_counters_share_its_hash_tag() -> None:
    names = Names("azproxy")
    tag = names.key_tag("team-a")
    counters = [names.counter(tag, what) for what in ("rpm", "tpm", "leases")]
    assert {hash_tag(c) for c in counters} == {"key:n-team-a"}
    assert all(c.startswith("azproxy:{key:n-team-a}:") for c in counters)
    assert hash_tag(names.counter(names.key_tag("team-b"), "rpm")) != "key:n-team-a"


@pytest.mark.parametrize("name", ["a}b", "a{b}", "x" * 65, "tëam", "a b", ""])
def test_a_name_that_could_break_the_tag_is_hashed(name: str) -> None:
    tag = Names("azproxy").key_tag(name)
    assert re.fullmatch(r"azproxy:\{key:h-[0-9a-f]{32}\}", tag)
