"""Calls that create or change state on Azure are sent once: a resource-scoped
POST or DELETE is never resent once any of it may have reached Azure; only a
connection that was never made may be tried again."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from pytest_aiohttp import AiohttpClient
from yarl import URL

from azproxy import Config, create_app
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.conftest import AZURE_KEY, BEARER, ProxyFactory
from tests.fakes import FakeAzure, close_answer, json_answer, sse_answer, sse_event

SERVER_ERROR = {"error": {"code": "InternalServerError", "message": "oops"}}
BATCH = {
    "input_file_id": "file-abc",
    "endpoint": "/chat/completions",
    "completion_window": "24h",
}
OVERLOADED = {
    "error": {
        "message": "That model is currently overloaded with other requests.",
        "type": "server_error",
    }
}


@pytest.mark.parametrize(
    ("method", "path", "body", "upstream_path"),
    [
        ("POST", "/v1/batches", BATCH, "/openai/batches"),
        (
            "POST",
            "/v1/threads/thread_1/runs",
            {"assistant_id": "asst_1"},
            "/openai/threads/thread_1/runs",
        ),
        # Responses are served on Azure's v1 API whatever the dated version.
        ("POST", "/v1/responses", {"input": "hi"}, "/openai/v1/responses"),
        ("POST", "/v1/batches/batch_1/cancel", None, "/openai/batches/batch_1/cancel"),
        ("DELETE", "/v1/files/file-abc", None, "/openai/files/file-abc"),
    ],
)
async def test_a_5xx_to_a_stateful_call_is_relayed_not_resent(
    proxy: Any,
    fake_azure: FakeAzure,
    method: str,
    path: str,
    body: Any,
    upstream_path: str,
) -> None:
    fake_azure.queue(*(json_answer(SERVER_ERROR, status=500) for _ in range(4)))
    response = await proxy.request(method, path, json=body, headers=BEARER)
    assert response.status == 500
    assert await response.json() == SERVER_ERROR
    assert len(fake_azure.requests) == 1
    assert fake_azure.last.method == method
    assert fake_azure.last.path == upstream_path


async def test_a_reset_on_a_run_is_502_after_one_request(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(*(close_answer() for _ in range(4)))
    response = await proxy.post(
        "/v1/threads/thread_1/runs", json={"assistant_id": "asst_1"}, headers=BEARER
    )
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_unreachable"
    assert "attempts" not in error["message"]
    assert len(fake_azure.requests) == 1
    assert json.loads(fake_azure.last.body) == {"assistant_id": "asst_1"}


async def test_an_overloaded_first_event_of_a_streamed_response_is_relayed(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(*(sse_answer([sse_event(OVERLOADED)]) for _ in range(4)))
    response = await proxy.post(
        "/v1/responses", json={"input": "hi", "stream": True}, headers=BEARER
    )
    received = b""
    # The stream ends without response.completed: azproxy says so and cuts it.
    with contextlib.suppress(aiohttp.ClientPayloadError):
        async for chunk in response.content.iter_any():
            received += chunk
    assert received.startswith(sse_event(OVERLOADED))
    assert b'"code": "upstream_stream_error"' in received
    assert len(fake_azure.requests) == 1


async def test_reads_are_still_retried(proxy: Any, fake_azure: FakeAzure) -> None:
    fake_azure.queue(
        json_answer(SERVER_ERROR, status=500),
        close_answer(),
        json_answer({"id": "batch_1", "status": "completed"}),
    )
    response = await proxy.get("/v1/batches/batch_1", headers=BEARER)
    assert response.status == 200
    assert (await response.json())["id"] == "batch_1"
    assert [r.path for r in fake_azure.requests] == ["/openai/batches/batch_1"] * 3


async def test_inference_calls_keep_the_original_retries(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    fake_azure.queue(json_answer(SERVER_ERROR, status=500), close_answer())
    response = await proxy.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=BEARER
    )
    assert response.status == 200
    assert len(fake_azure.requests) == 3


@pytest.fixture
def mocked_upstream() -> Iterator[aioresponses]:
    # Only the proxy's calls to Azure are mocked; the test client's own
    # requests to the proxy on 127.0.0.1 pass through (aioresponses #94).
    with aioresponses(passthrough=["http://127.0.0.1"]) as mocked:
        yield mocked


def refused(host: str) -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey(host, 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))


@pytest.mark.parametrize(
    ("never_connected", "status"),
    [
        (refused("myresource.openai.azure.com"), 502),
        (aiohttp.ConnectionTimeoutError("connect timed out"), 504),
    ],
)
async def test_a_stateful_call_that_never_left_is_retried(
    proxy_for: ProxyFactory,
    mocked_upstream: aioresponses,
    never_connected: Exception,
    status: int,
) -> None:
    proxy = await proxy_for(upstream="https://{resource}.openai.azure.com")
    url = "https://myresource.openai.azure.com/openai/batches?api-version=2024-10-21"
    for _ in range(4):
        mocked_upstream.post(url, exception=never_connected)
    response = await proxy.post("/v1/batches", json=BATCH, headers=BEARER)
    assert response.status == status
    assert (await response.json())["error"]["message"].endswith(", after 4 attempts.")
    assert len(mocked_upstream.requests[("POST", URL(url))]) == 4


async def test_a_stateful_call_to_a_closed_port_is_retried(
    proxy_for: ProxyFactory,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = await proxy_for(upstream=f"http://127.0.0.1:{port}", retries=2)
    response = await proxy.post("/v1/batches", json=BATCH, headers=BEARER)
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_unreachable"
    assert error["message"].endswith(", after 3 attempts.")


async def test_server_side_resource_calls_are_sent_once_too(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure
) -> None:
    key = "team-key-0123456789abcdef"
    config = Config(
        endpoints=parse_endpoints({"e": {"url": fake_azure.url, "api_key": "k"}}, {}),
        model_map=parse_model_map({"gpt-4o": "e/dep-4o"}),
        access_keys=parse_access_keys([key], {}),
        retry_delay_s=0.01,
    )
    proxy = await aiohttp_client(create_app(config))
    fake_azure.queue(*(json_answer(SERVER_ERROR, status=503) for _ in range(4)))
    response = await proxy.post(
        "/v1/batches", json=BATCH, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status == 503
    assert len(fake_azure.requests) == 1
    assert fake_azure.last.headers["api-key"] == "k"
    assert AZURE_KEY not in fake_azure.last.headers.values()
