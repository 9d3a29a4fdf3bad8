"""What a failed request leaves in reference cycles: the collector held off
during a test, then one collection, whose finds are kept for the test to
look at (gc.DEBUG_SAVEALL) instead of freed.

A failed request must leave nothing of its own there: no body-sized buffer,
no request, no frame of azproxy's code (a frame in a cycle holds its locals:
the body, the request, the headers that carry the Azure key). Raising the
collector's threshold (server/runner.py) is safe only while that holds.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import azproxy
from azproxy.front.lifecycle import LIFECYCLE

__all__ = ["closed_port", "collector_off", "finished", "held"]

# Larger than anything of azproxy's own a request holds but its body (or a
# piece of it): a buffer this large in a cycle is the client's bytes.
BODY_SIZED = 100_000
AZPROXY = str(Path(azproxy.__file__).parent)


@pytest.fixture
def collector_off() -> Iterator[list[object]]:
    """The collector held off; what a collection then finds unreachable is
    kept in the list (gc.garbage) instead of freed, for the test to see."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def held(garbage: list[object], proxy: TestClient[Any, Any], *own: bytes) -> list[str]:
    """Collect, then describe what of azproxy's requests the cycles found
    hold: body-sized buffers (other than the test's `own` bytes, which the
    test and its client hold too), the proxy's requests, azproxy's frames."""
    gc.collect()
    found = []
    for holder in garbage:
        if isinstance(holder, web.Request) and holder.app is proxy.app:
            found.append(f"request {holder.method} {holder.path}")
        elif isinstance(holder, FrameType) and holder.f_code.co_filename.startswith(
            AZPROXY
        ):
            found.append(f"frame {holder.f_code.co_qualname}")
        for part in gc.get_referents(holder):
            if sys.getsizeof(part) >= BODY_SIZED and all(part is not b for b in own):
                found.append(f"{type(part).__name__} held by {type(holder).__name__}")
    return found


async def finished(proxy: TestClient[Any, Any]) -> None:
    """Until the proxy has no request in hand (its handlers have returned)."""
    lifecycle = proxy.app[LIFECYCLE]
    async with asyncio.timeout(5):
        await asyncio.sleep(0)
        while lifecycle.in_flight:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the tasks a handler leaves (writers) end too


def closed_port() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
