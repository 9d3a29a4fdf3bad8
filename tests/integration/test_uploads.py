"""Multipart uploads (audio transcriptions and translations, image edits):
the deployment comes from the `model` form field in either part order, Azure
gets the client's bytes intact, and the body streams through."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from azproxy import Config, create_app
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.conftest import AZURE_KEY, ProxyFactory
from tests.fakes import FakeAzure, json_answer
from tests.forms import AUDIO, BOUNDARY, CONTENT_TYPE, field, file_part, form

MAPPED = {
    "Authorization": f"Bearer myresource:whisper|dep-w,gpt-image-1|dep-img:{AZURE_KEY}"
}
V1 = {"Authorization": f"Bearer myresource:whisper|dep-w:{AZURE_KEY}:v1"}
SINGLE = {"Authorization": f"Bearer myresource:dep-one:{AZURE_KEY}"}
TRANSCRIPT = {"text": "hello"}

FIELDS_FIRST = form(field("model", "whisper"), field("language", "en"), file_part())
FILE_FIRST = form(file_part(), field("language", "en"), field("model", "whisper"))


def multipart(headers: dict[str, str]) -> dict[str, str]:
    return headers | {"Content-Type": CONTENT_TYPE}


@pytest.mark.parametrize("body", [FIELDS_FIRST, FILE_FIRST], ids=["fields", "file"])
@pytest.mark.parametrize("path", ["audio/transcriptions", "audio/translations"])
async def test_model_field_picks_the_deployment_in_either_order(
    proxy: Any, fake_azure: FakeAzure, body: bytes, path: str
) -> None:
    fake_azure.queue(json_answer(TRANSCRIPT))
    response = await proxy.post(f"/v1/{path}", data=body, headers=multipart(MAPPED))
    assert response.status == 200
    assert await response.json() == TRANSCRIPT
    assert response.headers["x-azproxy-deployment"] == "dep-w"
    sent = fake_azure.last
    assert sent.path == f"/openai/deployments/dep-w/{path}"
    assert list(sent.query.items()) == [("api-version", "2024-10-21")]
    assert sent.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in sent.headers
    assert sent.headers["Content-Type"] == CONTENT_TYPE
    assert sent.headers["Content-Length"] == str(len(body))
    assert sent.body == body


async def test_image_edits(proxy: Any, fake_azure: FakeAzure) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(300)
    body = form(
        file_part(png, name="image", filename="a.png", content_type="image/png"),
        field("prompt", "add a hat"),
        field("model", "gpt-image-1"),
    )
    response = await proxy.post(
        "/v1/images/edits", data=body, headers=multipart(MAPPED)
    )
    assert response.status == 200
    assert fake_azure.last.path == "/openai/deployments/dep-img/images/edits"
    assert fake_azure.last.body == body


async def test_a_single_deployment_token_streams_without_reading_the_model(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = form(file_part(), field("model", "anything"))
    response = await proxy.post(
        "/v1/audio/transcriptions", data=body, headers=multipart(SINGLE)
    )
    assert response.status == 200
    assert fake_azure.last.path == "/openai/deployments/dep-one/audio/transcriptions"
    assert fake_azure.last.body == body


@pytest.mark.parametrize("body", [FIELDS_FIRST, FILE_FIRST], ids=["fields", "file"])
async def test_v1_replaces_the_model_field_with_the_deployment(
    proxy: Any, fake_azure: FakeAzure, body: bytes
) -> None:
    response = await proxy.post(
        "/v1/audio/transcriptions", data=body, headers=multipart(V1)
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.path == "/openai/v1/audio/transcriptions"
    # Azure's v1 API serves audio only in preview.
    assert list(sent.query.items()) == [("api-version", "preview")]
    assert sent.headers["api-key"] == AZURE_KEY
    expected = body.replace(b"\r\n\r\nwhisper\r\n", b"\r\n\r\ndep-w\r\n")
    assert expected != body
    assert sent.body == expected
    assert sent.headers["Content-Length"] == str(len(expected))


async def test_v1_adds_a_model_field_when_the_client_sent_none(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = form(file_part())
    response = await proxy.post(
        "/v1/audio/transcriptions", data=body, headers=multipart(V1)
    )
    assert response.status == 200
    assert fake_azure.last.body == form(field("model", "dep-w"), file_part())


async def test_a_mapped_caller_without_model_field_gets_the_first_deployment(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # The original proxy's rule: a model not in the map goes to the first entry.
    body = form(file_part())
    response = await proxy.post(
        "/v1/audio/transcriptions", data=body, headers=multipart(MAPPED)
    )
    assert response.status == 200
    assert fake_azure.last.path == "/openai/deployments/dep-w/audio/transcriptions"
    assert fake_azure.last.body == body


async def test_not_multipart_is_400_before_azure(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.post(
        "/v1/audio/transcriptions",
        data=b'{"model": "whisper"}',
        headers=MAPPED | {"Content-Type": "application/json"},
    )
    assert response.status == 400
    assert "multipart/form-data" in (await response.json())["error"]["message"]
    assert fake_azure.requests == []


async def test_too_large_by_content_length_is_413_before_reading(
    proxy_for: ProxyFactory, fake_azure: FakeAzure
) -> None:
    proxy = await proxy_for(max_upload_mb=0.01)
    response = await proxy.post(
        "/v1/audio/transcriptions",
        data=form(field("model", "whisper"), file_part(bytes(20_000))),
        headers=multipart(MAPPED),
    )
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "request_too_large"
    assert "max_upload_mb" in error["message"]
    assert fake_azure.requests == []


@pytest.mark.parametrize("model_first", [True, False])
async def test_too_large_chunked_upload_is_413(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, model_first: bool
) -> None:
    proxy = await proxy_for(max_upload_mb=0.05)
    head = field("model", "whisper") if model_first else b""
    parts = [head + file_part(bytes(200_000))[:1000]] + [bytes(10_000)] * 20

    async def chunked() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    response = await proxy.post(
        "/v1/audio/transcriptions", data=chunked(), headers=multipart(MAPPED)
    )
    assert response.status == 413
    assert "max_upload_mb" in (await response.json())["error"]["message"]


async def test_a_streamed_upload_is_never_retried(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # Model first: relaying starts before the file has arrived, so the body
    # cannot be sent twice and a 5xx goes straight back to the client.
    fake_azure.queue(json_answer({"error": {"code": "500"}}, status=500))

    body = form(field("model", "whisper"), file_part())
    head = len(field("model", "whisper")) + 50  # the model's part has ended

    async def slowly() -> AsyncIterator[bytes]:
        yield body[:head]
        await asyncio.sleep(0.05)
        yield body[head:]

    response = await proxy.post(
        "/v1/audio/transcriptions", data=slowly(), headers=multipart(MAPPED)
    )
    assert response.status == 500
    assert [r.body for r in fake_azure.requests] == [body]


async def test_a_spooled_upload_is_retried_like_json(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    # Model last: the whole body was spooled to find it, so it can be resent.
    fake_azure.queue(json_answer({"error": {}}, status=500), json_answer(TRANSCRIPT))
    response = await proxy.post(
        "/v1/audio/transcriptions", data=FILE_FIRST, headers=multipart(MAPPED)
    )
    assert response.status == 200
    assert [r.body for r in fake_azure.requests] == [FILE_FIRST, FILE_FIRST]


async def test_sending_starts_before_the_file_has_arrived(
    proxy_for: ProxyFactory, aiohttp_server: AiohttpServer
) -> None:
    # The upstream signals when the model field reached it; the client sends
    # the file only after that. A relay that read the whole upload first would
    # wait for ever (the test times out).
    head = field("model", "whisper") + file_part(AUDIO)[:100]
    tail = file_part(AUDIO)[100:] + b"--azproxy-test-boundary-7d3f--\r\n"
    arrived = asyncio.Event()
    received = bytearray()

    async def upstream(request: web.Request) -> web.Response:
        async for piece in request.content.iter_any():
            received.extend(piece)
            if len(received) >= len(head):
                arrived.set()
        return web.json_response(TRANSCRIPT)

    app = web.Application()
    app.router.add_post("/{path:.*}", upstream)
    server = await aiohttp_server(app)
    proxy = await proxy_for(upstream=str(server.make_url("")).rstrip("/"))

    async def client_body() -> AsyncIterator[bytes]:
        yield head
        await asyncio.wait_for(arrived.wait(), 5)
        yield tail

    response = await proxy.post(
        "/v1/audio/transcriptions",
        data=client_body(),
        headers=multipart(MAPPED) | {"Content-Length": str(len(head + tail))},
    )
    assert response.status == 200
    assert bytes(received) == head + tail


async def test_v1_splices_the_model_while_the_rest_still_streams(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = form(field("model", "whisper"), file_part())
    head = len(field("model", "whisper")) + 50  # the model's part has ended

    async def slowly() -> AsyncIterator[bytes]:
        yield body[:head]
        await asyncio.sleep(0.05)
        yield body[head:]

    response = await proxy.post(
        "/v1/audio/transcriptions",
        data=slowly(),
        headers=multipart(V1) | {"Content-Length": str(len(body))},
    )
    assert response.status == 200
    expected = form(field("model", "dep-w"), file_part())
    assert fake_azure.last.body == expected
    assert fake_azure.last.headers["Content-Length"] == str(len(expected))


async def test_a_chunked_upload_goes_upstream_chunked(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        yield FIELDS_FIRST[:100]
        yield FIELDS_FIRST[100:]

    response = await proxy.post(
        "/v1/audio/transcriptions", data=chunked(), headers=multipart(MAPPED)
    )
    assert response.status == 200
    assert fake_azure.last.body == FIELDS_FIRST
    assert "Content-Length" not in fake_azure.last.headers
    assert fake_azure.last.headers["Transfer-Encoding"] == "chunked"


async def test_a_second_model_field_in_the_head_is_400_before_azure(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    body = form(field("model", "whisper"), field("model", "gpt-image-1"), file_part())
    response = await proxy.post(
        "/v1/audio/transcriptions", data=body, headers=multipart(MAPPED)
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "ambiguous_model" and error["param"] == "model"
    assert fake_azure.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        b'Content-Disposition: form-data; name="note"\r\n'
        b'Content-Disposition: form-data; name="model"',
        b'Content-Disposition: form-data; name="note"\r\n ; name="model"',
        b'Content-Type: text/plain\nContent-Disposition: form-data; name="model"',
    ],
    ids=["two-dispositions", "folded", "bare-lf"],
)
async def test_a_part_another_parser_may_read_as_model_is_400_before_azure(
    proxy: Any, fake_azure: FakeAzure, headers: bytes
) -> None:
    # On v1 Azure reads the form's model: a hidden second one could name a
    # deployment this key may not use.
    hidden = f"--{BOUNDARY}\r\n".encode() + headers + b"\r\n\r\nother-dep\r\n"
    body = form(field("model", "whisper"), hidden, file_part())
    response = await proxy.post(
        "/v1/audio/transcriptions", data=body, headers=multipart(V1)
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_request" and "header" in error["message"]
    assert fake_azure.requests == []


async def test_a_second_model_field_while_streaming_stops_the_upload(
    aiohttp_server: AiohttpServer, proxy_for: ProxyFactory
) -> None:
    # Relaying starts after the first model field; the second one comes
    # later, and Azure must never get a whole body (nor answer it).
    arrived = asyncio.Event()
    received = bytearray()
    answered: list[int] = []

    async def upstream(request: web.Request) -> web.Response:
        async for piece in request.content.iter_any():
            received.extend(piece)
            arrived.set()
        answered.append(len(received))
        return web.json_response(TRANSCRIPT)

    app = web.Application()
    app.router.add_post("/{path:.*}", upstream)
    server = await aiohttp_server(app)
    proxy = await proxy_for(upstream=str(server.make_url("")).rstrip("/"))
    head = field("model", "whisper") + file_part(AUDIO)
    tail = field("model", "gpt-image-1") + b"--azproxy-test-boundary-7d3f--\r\n"

    async def client_body() -> AsyncIterator[bytes]:
        yield head
        await asyncio.wait_for(arrived.wait(), 5)  # Azure is reading
        yield tail

    response = await proxy.post(
        "/v1/audio/transcriptions", data=client_body(), headers=multipart(MAPPED)
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "ambiguous_model"
    assert answered == []
    assert bytes(received) == head[: len(received)]  # never the second field


async def test_an_upload_that_breaks_after_azure_answered_is_the_clients_fault(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    # Azure sends its headers while the upload still streams, then the
    # client's second model field stops it: the client gets the 400, and the
    # deployment is not taken for unreachable (its next request goes there).
    arrived = asyncio.Event()
    paths: list[str] = []

    async def upstream(request: web.Request) -> web.StreamResponse:
        paths.append(request.path)
        if len(paths) > 1:
            await request.read()
            return web.json_response(TRANSCRIPT)
        early = web.StreamResponse()
        await early.prepare(request)  # headers out, body not read yet
        async for _ in request.content.iter_any():
            arrived.set()
        return early

    app = web.Application()
    app.router.add_post("/{path:.*}", upstream)
    server = await aiohttp_server(app)
    key = "team-key-0123456789abcdef"
    routes = [
        {"endpoint": "e", "deployment": "dep-a", "priority": 1},
        {"endpoint": "e", "deployment": "dep-b", "priority": 2},
    ]
    url = str(server.make_url("")).rstrip("/")
    config = Config(
        endpoints=parse_endpoints({"e": {"url": url, "api_key": "k"}}, {}),
        model_map=parse_model_map({"whisper": routes}),
        access_keys=parse_access_keys([key], {}),
    )
    proxy = await aiohttp_client(create_app(config))
    headers = multipart({"Authorization": f"Bearer {key}"})
    head = field("model", "whisper") + file_part(AUDIO)
    tail = field("model", "gpt-image-1") + b"--azproxy-test-boundary-7d3f--\r\n"

    async def client_body() -> AsyncIterator[bytes]:
        yield head
        await asyncio.wait_for(arrived.wait(), 5)  # Azure has answered
        yield tail

    response = await asyncio.wait_for(
        proxy.post("/v1/audio/transcriptions", data=client_body(), headers=headers),
        10,  # not waiting for the rest of Azure's answer
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "ambiguous_model"
    response = await proxy.post(
        "/v1/audio/transcriptions", data=FIELDS_FIRST, headers=headers
    )
    assert response.status == 200
    assert paths == ["/openai/deployments/dep-a/audio/transcriptions"] * 2


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/files", SINGLE),
        ("/v1/audio/transcriptions", SINGLE),  # one deployment: model not read
    ],
)
async def test_a_compressed_upload_is_relayed_as_the_client_sent_it(
    proxy: Any, fake_azure: FakeAzure, path: str, headers: dict[str, str]
) -> None:
    compressed = gzip.compress(FIELDS_FIRST)
    response = await proxy.post(
        path,
        data=compressed,
        headers=multipart(headers) | {"Content-Encoding": "gzip"},
    )
    assert response.status == 200
    sent = fake_azure.last
    assert sent.body == compressed
    assert sent.headers["Content-Encoding"] == "gzip"
    assert sent.headers["Content-Length"] == str(len(compressed))


async def test_a_compressed_upload_whose_model_must_be_read_is_415(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    response = await proxy.post(
        "/v1/audio/transcriptions",
        data=gzip.compress(FIELDS_FIRST),
        headers=multipart(MAPPED) | {"Content-Encoding": "gzip"},
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_content_encoding"
    assert fake_azure.requests == []
