"""A failed request's body is freed when the request ends, not at the
collector's next pass: a reference cycle holding it (an exception whose
traceback holds the frame that holds the exception) would keep every failed
body until then, and make raising the collector's threshold unsafe."""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator

import pytest
from pytest_aiohttp import AiohttpClient

from azproxy.app import create_app
from azproxy.settings.config import Config
from azproxy.settings.server_side import parse_endpoints, parse_model_map
from tests.conftest import AZURE_KEY, BEARER, ProxyFactory
from tests.fakes import FakeAzure, hang_answer, json_answer

SIZE = 1_000_000


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


def bodies_held(garbage: list[object], sent: bytes) -> list[object]:
    """Objects in cycles that hold a body-sized bytes (other than the test's
    own `sent`, which the test client holds too)."""
    return [
        holder
        for holder in garbage
        for held in gc.get_referents(holder)
        if isinstance(held, bytes) and len(held) >= SIZE and held is not sent
    ]


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


BODY = b'{"model": "gpt-4o", "input": "' + b"x" * SIZE + b'"}'


async def test_a_failed_requests_body_is_in_no_cycle(
    proxy_for: ProxyFactory, collector_off: list[object]
) -> None:
    proxy = await proxy_for(upstream=closed_port(), retries=1)
    response = await proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    assert response.status == 502
    await response.read()
    gc.collect()
    assert bodies_held(collector_off, BODY) == []


async def test_a_body_that_failed_over_and_failed_is_in_no_cycle(
    aiohttp_client: AiohttpClient, collector_off: list[object]
) -> None:
    endpoints = {
        name: {"url": closed_port(), "api_key": AZURE_KEY} for name in ("a", "b")
    }
    config = Config(
        endpoints=parse_endpoints(endpoints, {}),
        model_map=parse_model_map({"gpt-4o": ["a/dep", "b/dep"]}),
        retry_delay_s=0.01,
        allow_anonymous=True,
    )
    proxy = await aiohttp_client(create_app(config))
    response = await proxy.post("/v1/embeddings", data=BODY)
    assert response.status == 502
    await response.read()
    gc.collect()
    assert bodies_held(collector_off, BODY) == []


async def test_a_body_azure_timed_out_on_is_in_no_cycle(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await proxy_for(header_timeout_s=0.1)
    fake_azure.queue(hang_answer())
    response = await proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    assert response.status == 504
    await response.read()
    gc.collect()
    assert bodies_held(collector_off, BODY) == []


async def test_a_body_too_large_is_in_no_cycle(
    proxy_for: ProxyFactory, collector_off: list[object]
) -> None:
    proxy = await proxy_for(max_body_mb=0.5)
    response = await proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    assert response.status == 413
    await response.read()
    gc.collect()
    assert bodies_held(collector_off, BODY) == []


async def test_a_body_azure_answered_5xx_twice_is_in_no_cycle(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await proxy_for(retries=1)
    fake_azure.queue(json_answer({"error": {}}, status=500))
    fake_azure.queue(json_answer({"error": {}}, status=500))
    response = await proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    assert response.status == 500
    await response.read()
    gc.collect()
    assert bodies_held(collector_off, BODY) == []
