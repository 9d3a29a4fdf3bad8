"""Limits with clear errors, and clients that cannot pin the proxy."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import BEARER, ProxyFactory
from tests.fakes import FakeAzure, sse_answer, sse_event
from tests.faults.conftest import AUTH, CHAT, STREAM, ProxyMaker, Sim


async def test_past_the_concurrency_limit_requests_wait_then_get_503(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    proxy = await proxy_with(max_upstream_requests=1, queue_timeout_s=0.2)
    slow = {"x-sim-chunks": "20", "x-sim-chunk-delay-ms": "50"}
    streaming = await proxy.post(
        "/v1/chat/completions", data=STREAM, headers=AUTH | slow
    )
    await streaming.content.readany()  # holds the only upstream slot

    started = time.monotonic()
    refused = await proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    error = (await refused.json())["error"]
    assert error["code"] == "too_many_requests_in_flight"
    assert "max_upstream_requests" in error["message"]
    assert 0.2 <= time.monotonic() - started < 1
    assert sim.count("dep-a") + sim.count("dep-b") == 1  # Azure saw one request
    await streaming.read()


async def test_a_request_waits_for_a_free_slot_up_to_the_queue_timeout(
    sim: Sim, proxy_with: ProxyMaker
) -> None:
    proxy = await proxy_with(max_upstream_requests=1, queue_timeout_s=10)
    slow = {"x-sim-chunks": "6", "x-sim-chunk-delay-ms": "50"}
    streaming = await proxy.post(
        "/v1/chat/completions", data=STREAM, headers=AUTH | slow
    )
    await streaming.content.readany()
    waiting = asyncio.ensure_future(
        proxy.post("/v1/chat/completions", data=CHAT, headers=AUTH)
    )
    await asyncio.sleep(0.1)
    assert not waiting.done()  # queued behind the stream
    await streaming.read()  # the stream ends and frees the slot...
    served = await asyncio.wait_for(waiting, 5)  # ...for the waiting request
    assert served.status == 200


async def test_a_client_that_stops_reading_is_dropped_and_azure_released(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(client_write_timeout_s=0.5)
    big = sse_event({"pad": "x" * 4096})
    fake_azure.queue(sse_answer([big] * 4000, then="hang"))  # 16 MB on offer
    response = await proxy.post("/v1/chat/completions", data=STREAM, headers=BEARER)
    assert response.status == 200
    # The client reads nothing more. The proxy's writes block (backpressure),
    # so it stops reading Azure; after client_write_timeout_s it drops both.
    await asyncio.wait_for(fake_azure.disconnected.wait(), 5)
    response.close()


async def test_oversized_headers_get_a_clear_error(proxy: Any) -> None:
    response = await proxy.post(
        "/v1/chat/completions",
        data=CHAT,
        headers=BEARER | {"X-Huge": "x" * 20_000},
    )
    # aiohttp answers before any handler runs (so not in OpenAI's shape).
    assert response.status == 400
    assert "Got more than 16384 bytes" in await response.text()
