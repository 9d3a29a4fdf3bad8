from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest

from azproxy import Config
from azproxy.server.fdlimit import (
    MAX_AUTO_CONNECTIONS,
    RESERVE_FDS,
    auto_max_connections,
    max_connections,
    open_file_limit,
    raise_open_file_limit,
    start_with_open_file_limit,
)
from azproxy.server.guard import ConnectionGuard

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE")
LOW = 512


@pytest.fixture
def low_soft_limit() -> Iterator[int]:
    """This process's soft open-file limit lowered to LOW for the test."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * LOW:
        pytest.skip(f"hard open-file limit {hard} is too low to test a raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_limit(low_soft_limit: int) -> None:
    hard = low_soft_limit
    assert open_file_limit() == LOW
    assert raise_open_file_limit() == (LOW, hard)
    assert open_file_limit() == hard
    assert raise_open_file_limit() is None  # nothing left to raise


def test_auto_is_a_third_of_what_the_reserve_leaves() -> None:
    # A client socket, one to Azure and a spool file each.
    assert auto_max_connections(1024) == (1024 - RESERVE_FDS) // 3 == 320
    assert auto_max_connections(RESERVE_FDS) == 1
    assert auto_max_connections(None) is None
    assert max_connections(7) == 7


def test_auto_is_capped_where_memory_bounds_more_than_descriptors() -> None:
    # A container's usual hard limit would give some 350,000 connections.
    assert auto_max_connections(1_048_576) == MAX_AUTO_CONNECTIONS == 10_000
    assert auto_max_connections(3 * 10_000 + RESERVE_FDS - 1) == 9_999


def test_the_guard_resolves_auto_from_this_process_limit(low_soft_limit: int) -> None:
    assert ConnectionGuard.for_config(Config()).limit == auto_max_connections(LOW)
    assert ConnectionGuard.for_config(Config(max_connections=3)).limit == 3


def test_the_start_raises_and_reports(
    low_soft_limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    hard = low_soft_limit
    caplog.set_level(logging.INFO, "azproxy")
    start_with_open_file_limit(None)
    assert open_file_limit() == hard
    assert caplog.messages == [
        f"max_connections {auto_max_connections(hard)} per process "
        f"(open-file limit {hard}, raised from {LOW})"
    ]


def test_a_max_connections_past_the_limit_is_warned_about(
    low_soft_limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    hard = low_soft_limit
    caplog.set_level(logging.INFO, "azproxy")
    # Two descriptors a connection would fit; the spool file's third does not.
    setting = (hard - RESERVE_FDS) // 2
    start_with_open_file_limit(setting)
    assert caplog.messages[-1] == (
        f"max_connections {setting} may not fit the open-file limit of {hard}: "
        "a client connection can hold a connection to Azure and a spool file too"
    )
    assert caplog.records[-1].levelno == logging.WARNING
