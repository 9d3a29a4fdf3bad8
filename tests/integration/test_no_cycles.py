"""A failed request's body is freed when the request ends, not at the
collector's next pass: a reference cycle holding it (an exception whose
traceback holds the frame that holds the exception) would keep every failed
body until then, and make raising the collector's threshold unsafe.
(tests/cycles.py says what is looked for; streams and the realtime
handshake: test_no_cycles_streams.py, test_no_cycles_realtime.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from azproxy.app import create_app
from azproxy.settings.config import Config
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.conftest import AZURE_KEY, BEARER, ProxyFactory
from tests.cycles import closed_port, collector_off, finished, held
from tests.fakes import CHAT_JSON, FakeAzure, hang_answer, json_answer, sse_answer
from tests.rawhttp import Conn

__all__ = ["collector_off"]  # the fixture, used by name

SIZE = 1_000_000
BODY = b'{"model": "gpt-4o", "input": "' + b"x" * SIZE + b'"}'
# A caller whose model is read: the body is parsed, and may be refused.
MAPPED = {
    "Authorization": f"Bearer myresource:gpt-4o|dep-4o,gpt-4o-mini|dep-mini:{AZURE_KEY}"
}
TEAM = "team-key-0123456789abcdef"


def failover_config(*urls: str, **settings: Any) -> Config:
    """gpt-4o on one deployment per URL, best first; anonymous callers."""
    endpoints = {
        f"e{i}": {"url": url, "api_key": AZURE_KEY} for i, url in enumerate(urls)
    }
    return Config(
        endpoints=parse_endpoints(endpoints, {}),
        model_map=parse_model_map({"gpt-4o": [f"{name}/dep" for name in endpoints]}),
        retry_delay_s=0.01,
        **({"allow_anonymous": True} | settings),
    )


async def test_a_failed_requests_body_is_in_no_cycle(
    proxy_for: ProxyFactory, collector_off: list[object]
) -> None:
    proxy = await proxy_for(upstream=closed_port(), retries=1)
    response = await proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    assert response.status == 502
    await response.read()
    assert held(collector_off, proxy, BODY) == []


async def test_a_body_that_failed_over_and_failed_is_in_no_cycle(
    aiohttp_client: AiohttpClient, collector_off: list[object]
) -> None:
    proxy = await aiohttp_client(create_app(failover_config(*[closed_port()] * 2)))
    response = await proxy.post("/v1/embeddings", data=BODY)
    assert response.status == 502
    await response.read()
    assert held(collector_off, proxy, BODY) == []


async def test_a_body_that_failed_over_from_429_and_5xx_is_in_no_cycle(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await aiohttp_client(create_app(failover_config(*[fake_azure.url] * 3)))
    fake_azure.queue(
        json_answer({"error": {}}, status=429, headers={"retry-after": "5"}),
        json_answer({"error": {}}, status=500),
    )
    response = await proxy.post("/v1/embeddings", data=BODY)
    assert response.status == 200  # the third deployment's answer
    await response.read()
    assert [r.body for r in fake_azure.requests] == [BODY] * 3
    assert held(collector_off, proxy, BODY) == []


async def test_a_body_azure_timed_out_on_is_in_no_cycle(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await proxy_for(header_timeout_s=0.1)
    fake_azure.queue(hang_answer())
    response = await proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    assert response.status == 504
    await response.read()
    assert held(collector_off, proxy, BODY) == []


async def test_a_body_too_large_is_in_no_cycle(
    proxy_for: ProxyFactory, collector_off: list[object]
) -> None:
    proxy = await proxy_for(max_body_mb=0.5)
    response = await proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    assert response.status == 413
    await response.read()
    assert held(collector_off, proxy, BODY) == []


@pytest.mark.parametrize(
    ("then", "status"), [("hang", 504), ("abort", 502)], ids=["stops", "breaks"]
)
async def test_a_body_azure_answered_only_headers_to_is_in_no_cycle(
    proxy_for: ProxyFactory,
    fake_azure: FakeAzure,
    collector_off: list[object],
    then: str,
    status: int,
) -> None:
    proxy = await proxy_for(read_timeout_s=0.2, retries=0)
    fake_azure.queue(sse_answer([], then=then))  # headers, then no body
    response = await proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    assert response.status == status
    await response.read()
    assert fake_azure.last.body == BODY
    assert held(collector_off, proxy, BODY) == []


@pytest.mark.parametrize("then", [500, 200])
async def test_a_body_azure_answered_5xx_is_in_no_cycle(
    proxy_for: ProxyFactory,
    fake_azure: FakeAzure,
    collector_off: list[object],
    then: int,
) -> None:
    proxy = await proxy_for(retries=1)
    fake_azure.queue(json_answer({"error": {}}, status=500))
    fake_azure.queue(json_answer({"error": {}}, status=then))
    response = await proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    assert response.status == then
    await response.read()
    assert [r.body for r in fake_azure.requests] == [BODY] * 2
    assert held(collector_off, proxy, BODY) == []


async def test_a_body_whose_client_left_before_azures_headers_is_in_no_cycle(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await proxy_for()
    proxy.server.runner.server.handler_cancellation = True  # as served
    fake_azure.queue(hang_answer())
    sending = asyncio.ensure_future(
        proxy.post("/v1/embeddings", data=BODY, headers=BEARER)
    )
    async with asyncio.timeout(5):
        while not fake_azure.requests:
            await asyncio.sleep(0.01)
    sending.cancel()  # the client leaves
    with pytest.raises(asyncio.CancelledError):
        await sending
    await finished(proxy)
    assert fake_azure.last.body == BODY
    assert held(collector_off, proxy, BODY) == []


async def test_a_body_refused_by_its_keys_limit_is_in_no_cycle(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    keys = parse_access_keys([{"key": TEAM, "name": "team", "rpm": 1}], {})
    config = failover_config(fake_azure.url, access_keys=keys, allow_anonymous=False)
    proxy = await aiohttp_client(create_app(config))
    team = {"Authorization": f"Bearer {TEAM}"}
    assert (await proxy.post("/v1/embeddings", data=BODY, headers=team)).status == 200
    response = await proxy.post("/v1/embeddings", data=BODY, headers=team)
    assert response.status == 429
    await response.read()
    assert len(fake_azure.requests) == 1  # the refused one never left
    assert held(collector_off, proxy, BODY) == []


async def test_a_body_past_the_memory_budget_is_in_no_cycle(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await proxy_for(max_body_mb=1.5, max_buffered_body_mb=1.5)
    release = asyncio.Event()

    async def held_answer(request: web.Request) -> web.StreamResponse:
        await release.wait()  # the first body stays held in azproxy meanwhile
        return await json_answer(CHAT_JSON)(request)

    fake_azure.queue(held_answer)
    first = asyncio.ensure_future(
        proxy.post("/v1/embeddings", data=BODY, headers=MAPPED)
    )
    async with asyncio.timeout(5):
        while not fake_azure.requests:
            await asyncio.sleep(0.01)
    second = BODY.replace(b"x" * 10, b"y" * 10)
    response = await proxy.post("/v1/embeddings", data=second, headers=MAPPED)
    assert response.status == 503  # both do not fit in 1.5 MB
    assert "max_buffered_body_mb" in (await response.json())["error"]["message"]
    release.set()
    assert (await first).status == 200
    assert [r.body for r in fake_azure.requests] == [BODY]
    assert held(collector_off, proxy, BODY, second) == []


async def test_a_json_bomb_is_in_no_cycle(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await proxy_for()
    nested = b"[" * 50_000 + b"]" * 50_000
    text = b"x" * 900_000  # under aiohttp's 1 MiB warning for a bytes body
    bomb = b'{"model": "gpt-4o", "input": "' + text + b'", "a": ' + nested + b"}"
    response = await proxy.post("/v1/embeddings", data=bomb, headers=MAPPED)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "body_too_complex"
    assert fake_azure.requests == []
    assert held(collector_off, proxy, bomb) == []


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancelled", "read-fails"])
async def test_a_body_that_breaks_off_is_in_no_cycle(
    proxy_for: ProxyFactory,
    fake_azure: FakeAzure,
    collector_off: list[object],
    cancelled: bool,
) -> None:
    proxy = await proxy_for()
    proxy.server.runner.server.handler_cancellation = cancelled
    client = await Conn.to(proxy)
    await client.send_head("POST", "/v1/embeddings", BEARER, 2 * SIZE)
    await client.send(BODY)
    await asyncio.sleep(0.1)  # read by the proxy (a failure would pass)
    client.writer.transport.abort()  # the client leaves mid-body
    await finished(proxy)
    assert fake_azure.requests == []
    assert held(collector_off, proxy, BODY) == []


async def test_a_body_that_stops_is_408_and_in_no_cycle(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, collector_off: list[object]
) -> None:
    proxy = await proxy_for(client_body_timeout_s=0.2)
    client = await Conn.to(proxy)
    await client.send_head("POST", "/v1/embeddings", BEARER, 2 * SIZE)
    await client.send(BODY)  # ... and nothing more
    assert (await client.answer()).status == 408
    client.close()
    await finished(proxy)
    assert fake_azure.requests == []
    assert held(collector_off, proxy, BODY) == []
