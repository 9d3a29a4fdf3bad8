"""Budgets for the request bodies a process holds: in memory, then on disk,
then 503 naming the setting to raise; everything given back on close."""

from __future__ import annotations

import pytest

from azproxy.errors import ServiceUnavailable
from azproxy.relay.bodies import BodyBuffer, Budgets, too_large
from azproxy.relay.uploads import StreamBody
from tests.spoolfaults import FullDisk, fill_disk_after, no_descriptor_left


def contents(buffer: BodyBuffer) -> bytes:
    return b"".join(buffer.read_range(0, buffer.size))


def test_a_body_within_the_memory_budget_stays_in_memory() -> None:
    budgets = Budgets(memory_bytes=100, disk_bytes=100)
    buffer = BodyBuffer(budgets, spill=False)
    buffer.write(b"a" * 60)
    buffer.write(b"b" * 40)
    assert not buffer.on_disk and budgets.memory.used == 100
    data = buffer.take_bytes()
    assert data == b"a" * 60 + b"b" * 40
    buffer.close()  # what was taken is the caller's to give back
    assert budgets.memory.used == 100
    budgets.memory.give(len(data))
    assert budgets.memory.used == 0


def test_past_the_memory_budget_a_body_that_may_spill_goes_to_disk() -> None:
    budgets = Budgets(memory_bytes=100, disk_bytes=1000)
    budgets.memory.take(50)  # another request's body
    buffer = BodyBuffer(budgets, spill=True)
    buffer.write(b"a" * 40)
    buffer.write(b"b" * 40)
    assert buffer.on_disk
    assert (budgets.memory.used, budgets.disk.used) == (50, 80)
    assert contents(buffer) == b"a" * 40 + b"b" * 40
    assert b"".join(buffer.read_range(30, 50)) == b"a" * 10 + b"b" * 10
    buffer.close()
    assert (budgets.memory.used, budgets.disk.used) == (50, 0)


def test_a_memory_cap_sends_the_rest_to_disk() -> None:
    budgets = Budgets(memory_bytes=1000, disk_bytes=1000)
    buffer = BodyBuffer(budgets, spill=True, memory_cap=64)
    buffer.write(b"x" * 64)
    assert (buffer.on_disk, budgets.memory.used) == (False, 64)
    buffer.write(b"y")
    assert (buffer.on_disk, budgets.memory.used, budgets.disk.used) == (True, 0, 65)
    buffer.close()
    assert budgets.disk.used == 0


@pytest.mark.parametrize(
    ("spill", "setting"), [(False, "max_buffered_body_mb"), (True, "max_spool_mb")]
)
def test_past_every_budget_it_is_503_naming_the_setting(
    spill: bool, setting: str
) -> None:
    budgets = Budgets(memory_bytes=100, disk_bytes=100)
    budgets.memory.take(50)  # other requests' bodies
    budgets.disk.take(50)
    buffer = BodyBuffer(budgets, spill=spill)
    buffer.write(b"a" * 30)
    with pytest.raises(ServiceUnavailable) as raised:
        buffer.write(b"b" * 30)
    error = raised.value
    assert error.status == 503 and error.code == "server_busy"
    assert error.headers["Retry-After"] == "1"
    assert f"as many as {setting} allows; retry shortly" in error.message
    buffer.close()
    assert budgets.memory.used == 50 and budgets.disk.used == 50


def test_a_body_larger_than_the_whole_budget_is_told_so() -> None:
    budgets = Budgets(memory_bytes=100, disk_bytes=100)
    buffer = BodyBuffer(budgets, spill=False)
    with pytest.raises(ServiceUnavailable) as raised:
        buffer.write(b"a" * 101)
    assert "never fits in max_buffered_body_mb; raise it" in raised.value.message
    buffer.close()


def assert_spool_failed(raised: pytest.ExceptionInfo[ServiceUnavailable]) -> None:
    error = raised.value
    assert error.status == 503 and error.code == "server_busy"
    assert error.headers["Retry-After"] == "1"
    assert "spool on disk failed" in error.message
    assert error.__cause__ is None and error.__suppress_context__


def test_a_spool_file_that_cannot_be_made_is_503_and_gives_the_disk_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    no_descriptor_left(monkeypatch)
    budgets = Budgets(memory_bytes=50, disk_bytes=1000)
    buffer = BodyBuffer(budgets, spill=True)
    buffer.write(b"a" * 40)
    with pytest.raises(ServiceUnavailable) as raised:
        buffer.write(b"b" * 40)
    assert_spool_failed(raised)
    assert (budgets.memory.used, budgets.disk.used) == (40, 0)
    buffer.close()
    assert (budgets.memory.used, budgets.disk.used) == (0, 0)
    assert [r.getMessage() for r in caplog.records] == [
        "cannot spool a request body to disk: Too many open files"
    ]
    assert caplog.records[0].exc_info is None


def test_a_spool_that_fails_while_moving_to_disk_is_closed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill_disk_after(monkeypatch, 10)
    budgets = Budgets(memory_bytes=50, disk_bytes=1000)
    buffer = BodyBuffer(budgets, spill=True)
    buffer.write(b"a" * 40)
    with pytest.raises(ServiceUnavailable) as raised:
        buffer.write(b"b" * 40)
    assert_spool_failed(raised)
    [spool] = FullDisk.made
    assert spool.closed and not buffer.on_disk
    assert (budgets.memory.used, budgets.disk.used) == (40, 0)
    buffer.close()
    assert (budgets.memory.used, budgets.disk.used) == (0, 0)


def test_a_spool_write_that_fails_later_gives_its_bytes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill_disk_after(monkeypatch, 100)
    budgets = Budgets(memory_bytes=50, disk_bytes=1000)
    buffer = BodyBuffer(budgets, spill=True)
    buffer.write(b"a" * 40)
    buffer.write(b"b" * 40)
    assert buffer.on_disk and budgets.disk.used == 80
    with pytest.raises(ServiceUnavailable) as raised:
        buffer.write(b"c" * 40)
    assert_spool_failed(raised)
    assert (budgets.memory.used, budgets.disk.used) == (0, 80)
    buffer.close()
    assert FullDisk.made[0].closed
    assert (budgets.memory.used, budgets.disk.used) == (0, 0)


def test_too_large_names_the_limit_and_the_setting() -> None:
    error = too_large("upload", 512 * 1024 * 1024, "max_upload_mb")
    assert (error.status, error.code) == (413, "request_too_large")
    assert error.message == (
        "The upload is larger than 512 MB (raise max_upload_mb to accept it)."
    )


async def test_a_spooled_body_is_sent_whole_as_often_as_needed() -> None:
    budgets = Budgets(memory_bytes=10, disk_bytes=1000)
    buffer = BodyBuffer(budgets, spill=True)
    buffer.write(b"a" * 40)
    assert buffer.on_disk
    body = StreamBody.from_spool(buffer)
    assert body.replayable and body.length == 40
    for _ in range(2):
        assert b"".join([chunk async for chunk in body.chunks()]) == b"a" * 40
    body.close()
    assert budgets.disk.used == 0
