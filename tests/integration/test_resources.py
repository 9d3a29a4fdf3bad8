"""Resource-scoped calls (files, batches, fine-tuning, assistants, threads,
vector stores, responses): /openai/{path} (or /openai/v1/{path}, where Azure
serves the family) with the client's method and query, files streamed
through, and the model mapped where Azure reads a deployment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from yarl import URL

from tests.conftest import AZURE_KEY, BEARER, ProxyFactory
from tests.fakes import FakeAzure, json_answer, raw_answer, sse_answer
from tests.forms import CONTENT_TYPE, field, file_part, form

MAPPED = {
    "Authorization": f"Bearer myresource:gpt-4o|dep-4o,gpt-4o-mini|dep-mini:{AZURE_KEY}"
}
V1 = {"Authorization": f"Bearer myresource:gpt-4o|dep-4o:{AZURE_KEY}:v1"}


GA, PREVIEW = "2024-10-21", "2025-04-01-preview"


@pytest.mark.parametrize(
    ("method", "path", "azure_path", "version"),
    [
        ("GET", "/v1/files", "/openai/files", GA),
        ("GET", "/v1/files/file-abc", "/openai/files/file-abc", GA),
        ("DELETE", "/v1/files/file-abc", "/openai/files/file-abc", GA),
        ("GET", "/v1/batches/batch_1", "/openai/batches/batch_1", GA),
        ("POST", "/v1/batches/batch_1/cancel", "/openai/batches/batch_1/cancel", GA),
        ("GET", "/v1/fine_tuning/jobs", "/openai/fine_tuning/jobs", GA),
        # 2024-10-21 serves no assistants: the latest preview does.
        ("GET", "/v1/assistants/asst_1", "/openai/assistants/asst_1", PREVIEW),
        ("DELETE", "/v1/assistants/asst_1", "/openai/assistants/asst_1", PREVIEW),
        (
            "GET",
            "/v1/threads/thread_1/messages",
            "/openai/threads/thread_1/messages",
            PREVIEW,
        ),
        # GA on Azure's v1 API, preview-only as dated versions: v1.
        (
            "GET",
            "/v1/vector_stores/vs_1/files",
            "/openai/v1/vector_stores/vs_1/files",
            None,
        ),
        ("GET", "/v1/responses/resp_1", "/openai/v1/responses/resp_1", None),
        ("DELETE", "/v1/responses/resp_1", "/openai/v1/responses/resp_1", None),
        (
            "GET",
            "/v1/responses/resp_1/input_items",
            "/openai/v1/responses/resp_1/input_items",
            None,
        ),
    ],
)
async def test_resource_paths_keep_method_and_go_where_azure_serves_them(
    proxy: Any,
    fake_azure: FakeAzure,
    method: str,
    path: str,
    azure_path: str,
    version: str | None,
) -> None:
    fake_azure.queue(json_answer({"object": "thing"}))
    response = await proxy.request(method, path, headers=BEARER)
    assert response.status == 200
    assert await response.json() == {"object": "thing"}
    assert "x-azproxy-deployment" not in response.headers
    sent = fake_azure.last
    assert (sent.method, sent.path) == (method, azure_path)
    expected = [("api-version", version)] if version else []
    assert list(sent.query.items()) == expected
    assert sent.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in sent.headers
    assert sent.body == b""
    if method == "GET":
        assert "Content-Length" not in sent.headers


async def test_the_clients_query_is_kept_but_not_its_api_version(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.get(
        "/v1/files?purpose=batch&limit=2&after=file-x&api-version=1999-01-01",
        headers=BEARER,
    )
    assert response.status == 200
    assert list(fake_azure.last.query.items()) == [
        ("purpose", "batch"),
        ("limit", "2"),
        ("after", "file-x"),
        ("api-version", "2024-10-21"),
    ]


async def test_json_bodies_pass_byte_for_byte(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = b'{"input_file_id": "file-1", "endpoint": "/chat/completions",  "x": 1}'
    response = await proxy.post(
        "/v1/batches", data=body, headers=BEARER | {"Content-Type": "application/json"}
    )
    assert response.status == 200
    assert fake_azure.last.path == "/openai/batches"
    assert fake_azure.last.body == body
    assert fake_azure.last.headers["Content-Type"] == "application/json"


async def test_file_content_is_relayed_as_bytes(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    content = bytes(range(256)) * 10
    fake_azure.queue(raw_answer(content, "application/octet-stream"))
    response = await proxy.get("/v1/files/file-abc/content", headers=BEARER)
    assert response.status == 200
    assert await response.read() == content
    assert fake_azure.last.path == "/openai/files/file-abc/content"


async def test_a_file_upload_is_relayed_intact(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = form(field("purpose", "batch"), file_part(b'{"a": 1}\n' * 100))
    response = await proxy.post(
        "/v1/files", data=body, headers=BEARER | {"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/files"
    assert sent.headers["Content-Type"] == CONTENT_TYPE
    assert sent.headers["Content-Length"] == str(len(body))
    assert sent.body == body


async def test_a_file_upload_streams_through_chunk_by_chunk(
    proxy_for: ProxyFactory, aiohttp_server: AiohttpServer
) -> None:
    # The client sends the second half only once the upstream has the first:
    # a relay that buffered the upload would never get there.
    body = form(field("purpose", "batch"), file_part(bytes(300_000)))
    half = len(body) // 2
    arrived = asyncio.Event()
    received = bytearray()

    async def upstream(request: web.Request) -> web.Response:
        async for piece in request.content.iter_any():
            received.extend(piece)
            if len(received) >= half:
                arrived.set()
        return web.json_response({"id": "file-1", "object": "file"})

    app = web.Application()
    app.router.add_post("/{path:.*}", upstream)
    server = await aiohttp_server(app)
    proxy = await proxy_for(upstream=str(server.make_url("")).rstrip("/"))

    async def client_body() -> AsyncIterator[bytes]:
        yield body[:half]
        await asyncio.wait_for(arrived.wait(), 5)
        yield body[half:]

    response = await proxy.post(
        "/v1/files", data=client_body(), headers=BEARER | {"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 200
    assert bytes(received) == body


async def test_a_file_upload_over_the_limit_is_413(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(max_upload_mb=0.01)
    body = form(field("purpose", "batch"), file_part(bytes(20_000)))
    response = await proxy.post(
        "/v1/files", data=body, headers=BEARER | {"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 413
    assert fake_azure.requests == []


async def test_a_file_upload_is_not_retried(proxy: Any, fake_azure: FakeAzure) -> None:
    fake_azure.queue(json_answer({"error": {"code": "503"}}, status=503))
    body = form(field("purpose", "batch"), file_part(b"{}\n"))
    response = await proxy.post(
        "/v1/files", data=body, headers=BEARER | {"Content-Type": CONTENT_TYPE}
    )
    assert response.status == 503
    assert len(fake_azure.requests) == 1


@pytest.mark.parametrize(
    ("path", "azure_path"),
    [
        ("/v1/responses", "/openai/v1/responses"),
        ("/v1/assistants", "/openai/assistants"),
        ("/v1/assistants/asst_1", "/openai/assistants/asst_1"),
        ("/v1/threads/runs", "/openai/threads/runs"),
        ("/v1/threads/thread_1/runs", "/openai/threads/thread_1/runs"),
    ],
)
async def test_the_model_is_mapped_where_azure_reads_a_deployment(
    proxy: Any, fake_azure: FakeAzure, path: str, azure_path: str
) -> None:
    body = {"model": "gpt-4o-mini", "input": "héllo", "tools": []}
    response = await proxy.post(path, json=body, headers=MAPPED)
    assert response.status == 200
    assert response.headers["x-azproxy-deployment"] == "dep-mini"
    assert fake_azure.last.path == azure_path
    assert json.loads(fake_azure.last.body) == body | {"model": "dep-mini"}


async def test_a_body_already_naming_the_deployment_is_untouched(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = b'{"input": "x",   "model": "dep1"}'
    response = await proxy.post("/v1/responses", data=body, headers=BEARER)
    assert response.status == 200
    assert fake_azure.last.body == body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/fine_tuning/jobs", b'{"model": "gpt-4o-mini-2024-07-18"}'),
        ("/v1/threads/thread_1/runs", b'{"assistant_id": "asst_1"}'),
        ("/v1/threads/thread_1/messages", b'{"role": "user", "content": "hi"}'),
    ],
)
async def test_other_bodies_are_not_touched(
    proxy: Any, fake_azure: FakeAzure, path: str, body: bytes
) -> None:
    response = await proxy.post(path, data=body, headers=MAPPED)
    assert response.status == 200
    assert fake_azure.last.body == body


async def test_v1_resource_calls_carry_no_api_version(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.get("/v1/files?limit=1", headers=V1)
    assert response.status == 200
    assert fake_azure.last.path == "/openai/v1/files"
    assert list(fake_azure.last.query.items()) == [("limit", "1")]
    response = await proxy.post(
        "/v1/responses?api-version=preview",
        json={"model": "gpt-4o", "input": "x"},
        headers=V1,
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/v1/responses"
    assert list(sent.query.items()) == [("api-version", "preview")]
    assert json.loads(sent.body) == {"model": "dep-4o", "input": "x"}
    assert sent.headers["api-key"] == AZURE_KEY


async def test_a_streaming_run_passes_event_lines_untouched(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    events = [
        b'event: thread.run.created\ndata: {"id":"run_1","object":"thread.run"}\n\n',
        b"event: thread.message.delta\ndata: "
        b'{"id":"msg_1","delta":{"content":[{"index":0,"type":"text"}]}}\n\n',
        b"event: done\ndata: [DONE]\n\n",
    ]
    fake_azure.queue(sse_answer(events))
    response = await proxy.post(
        "/v1/threads/thread_1/runs",
        json={"assistant_id": "asst_1", "stream": True},
        headers=BEARER,
    )
    assert response.status == 200
    assert await response.read() == b"".join(events)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1/files/a%2Fb",
        "/v1/files/%2E%2E/deployments",
        "/v1/files/file-1%2Fcontent",
        "/v1/files/../deployments/x/chat/completions",
        "/v1/files/.%2E/x",
    ],
)
async def test_encoded_or_climbing_paths_are_404_and_never_reach_azure(
    proxy: Any, fake_azure: FakeAzure, raw_path: str
) -> None:
    response = await proxy.get(URL(raw_path, encoded=True), headers=BEARER)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "unknown_url"
    assert fake_azure.requests == []


async def test_wrong_method_on_a_resource_is_405(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.put("/v1/files/file-1", headers=BEARER)
    assert response.status == 405
    assert fake_azure.requests == []


@pytest.mark.parametrize("path", ["/v1/moderations", "/v1/images/variations"])
async def test_no_azure_equivalent_stays_a_404_saying_so(
    proxy: Any, fake_azure: FakeAzure, path: str
) -> None:
    response = await proxy.post(path, json={"input": "x"}, headers=BEARER)
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["code"] == "unsupported_endpoint"
    assert "Azure OpenAI has no" in error["message"]
    assert fake_azure.requests == []


async def test_an_unknown_path_stays_unknown_url(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.get("/v1/containers", headers=BEARER)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "unknown_url"
