"""Timeouts: connect, time to response headers, idle gap; no total timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from tests.conftest import BEARER, ProxyFactory
from tests.fakes import FakeAzure, hang_answer, sse_answer, sse_event

BODY = b'{"model": "gpt-4o", "messages": []}'


@pytest.fixture
def mocked_upstream() -> Iterator[aioresponses]:
    # Only the proxy's calls to Azure are mocked; the test client's own
    # requests to the proxy on 127.0.0.1 pass through (aioresponses #94).
    with aioresponses(passthrough=["http://127.0.0.1"]) as mocked:
        yield mocked


async def test_no_response_headers_in_time_is_504(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(header_timeout_s=0.2)
    fake_azure.queue(hang_answer())
    started = time.monotonic()
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 504
    error = (await response.json())["error"]
    assert error["code"] == "upstream_timeout"
    assert "header_timeout_s" in error["message"]
    assert time.monotonic() - started < 2
    assert len(fake_azure.requests) == 1  # a timeout is not retried


async def test_long_stream_with_short_gaps_has_no_total_timeout(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    # 0.6 s in total, gaps of 0.1 s: header and idle timeouts of 0.3 s must
    # not cut it, because neither bounds the whole request.
    proxy = await proxy_for(header_timeout_s=0.3, read_timeout_s=0.3)
    events = [sse_event({"n": i}) for i in range(6)] + [sse_event("[DONE]")]
    fake_azure.queue(sse_answer(events, delay_s=0.1))
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert await response.read() == b"".join(events)


async def test_connect_timeout_is_retried_then_504(
    proxy_for: ProxyFactory, mocked_upstream: aioresponses
) -> None:
    proxy = await proxy_for(upstream="https://{resource}.openai.azure.com", retries=1)
    url = "https://myresource.openai.azure.com/openai/deployments/dep1/chat/completions"
    for _ in range(2):
        mocked_upstream.post(
            f"{url}?api-version=2024-10-21",
            exception=aiohttp.ConnectionTimeoutError("connect timed out"),
        )
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 504
    error = (await response.json())["error"]
    assert error["code"] == "upstream_timeout"
    assert error["message"].endswith(", after 2 attempts.")


async def test_dns_failure_is_502(
    proxy_for: ProxyFactory, mocked_upstream: aioresponses
) -> None:
    proxy = await proxy_for(upstream="https://{resource}.openai.azure.com", retries=0)
    url = "https://myresource.openai.azure.com/openai/deployments/dep1/chat/completions"
    mocked_upstream.post(
        f"{url}?api-version=2024-10-21",
        exception=aiohttp.ClientConnectorDNSError(
            aiohttp.client_reqrep.ConnectionKey(
                "myresource.openai.azure.com", 443, True, True, None, None, None
            ),
            OSError(-2, "Name or service not known"),
        ),
    )
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_unreachable"
    assert "myresource.openai.azure.com" in error["message"]


async def test_slow_first_body_byte_after_headers_is_504(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(read_timeout_s=0.2)

    async def headers_then_nothing(request: Any) -> Any:
        from aiohttp import web

        response = web.StreamResponse()
        response.content_type = "text/event-stream"
        await response.prepare(request)
        await asyncio.sleep(5)
        return response

    fake_azure.queue(headers_then_nothing)
    response = await proxy.post("/v1/chat/completions", data=BODY, headers=BEARER)
    assert response.status == 504
    assert "read_timeout_s" in (await response.json())["error"]["message"]
