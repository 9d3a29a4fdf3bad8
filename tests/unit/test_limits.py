from __future__ import annotations

import asyncio

import pytest

from azproxy.errors import ServiceUnavailable
from azproxy.relay.upstream_slots import Limiter


async def test_free_slots_are_taken_without_waiting() -> None:
    limiter = Limiter(2, wait_s=1)
    assert limiter.try_acquire() and limiter.try_acquire()
    assert not limiter.try_acquire()
    limiter.release()
    assert limiter.try_acquire()


async def test_a_released_slot_goes_to_the_first_waiter() -> None:
    limiter = Limiter(1, wait_s=5)
    assert limiter.try_acquire()
    first = asyncio.ensure_future(limiter.acquire())
    second = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    assert not limiter.try_acquire()  # no jumping the queue
    limiter.release()
    await asyncio.wait_for(first, 1)
    assert not second.done()
    limiter.release()
    await asyncio.wait_for(second, 1)
    limiter.release()
    assert limiter.in_use == 0


async def test_waiting_too_long_is_a_503() -> None:
    limiter = Limiter(1, wait_s=0.05)
    assert limiter.try_acquire()
    with pytest.raises(ServiceUnavailable) as caught:
        await limiter.acquire()
    assert caught.value.headers["Retry-After"] == "1"
    limiter.release()
    assert limiter.in_use == 0 and limiter.try_acquire()


async def test_a_cancelled_waiter_leaks_no_slot() -> None:
    limiter = Limiter(1, wait_s=5)
    assert limiter.try_acquire()
    waiting = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    limiter.release()  # the slot is handed to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limiter.in_use == 0
    assert limiter.try_acquire()
