"""No redirect is ever followed with a key, nor relayed for the client to
follow with its own: a 3xx from upstream becomes 502 `upstream_redirect`,
after one request, with no retry and no failover."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from azproxy import Config, create_app
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.conftest import AZURE_KEY, BEARER, ProxyFactory
from tests.fakes import FakeAzure, raw_answer
from tests.realtime_fake import UPGRADE, FakeRealtime, start_fake_realtime

CHAT = {"model": "gpt-4o", "messages": []}
SECRET = "sig=do-not-echo-this"


@pytest.fixture
async def elsewhere(aiohttp_server: AiohttpServer) -> FakeAzure:
    """Another origin on loopback, where a redirect points."""
    fake = FakeAzure()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


def redirect_to(location: str, status: int) -> Any:
    return raw_answer(b"", "text/plain", status=status, headers={"Location": location})


async def assert_refused(response: aiohttp.ClientResponse) -> None:
    assert response.status == 502
    assert "Location" not in response.headers
    text = await response.text()
    assert SECRET not in text
    error = (await response.json())["error"]
    assert error["code"] == "upstream_redirect"
    assert "redirect" in error["message"]
    assert "never follows" in error["message"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirected_chat_request_is_502(
    proxy: Any,
    fake_azure: FakeAzure,
    elsewhere: FakeAzure,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_azure.queue(redirect_to(f"{elsewhere.url}/steal?{SECRET}", status))
    response = await proxy.post(
        "/v1/chat/completions", json=CHAT, headers=BEARER, allow_redirects=False
    )
    await assert_refused(response)
    assert len(fake_azure.requests) == 1  # not retried, though 5xx-like
    assert elsewhere.requests == []
    assert f"with a redirect (HTTP {status}); not followed" in caplog.text
    assert SECRET not in caplog.text


async def test_a_redirected_read_is_not_retried(
    proxy: Any, fake_azure: FakeAzure, elsewhere: FakeAzure
) -> None:
    fake_azure.queue(redirect_to(f"{elsewhere.url}/files/x?{SECRET}", 302))
    response = await proxy.get(
        "/v1/files/file-abc/content", headers=BEARER, allow_redirects=False
    )
    await assert_refused(response)
    assert len(fake_azure.requests) == 1
    assert elsewhere.requests == []


async def test_not_modified_is_not_a_redirect(
    proxy: Any, fake_azure: FakeAzure
) -> None:
    async def not_modified(request: web.Request) -> web.StreamResponse:
        return web.Response(status=304, headers={"ETag": '"v1"'})

    fake_azure.queue(not_modified)
    response = await proxy.get(
        "/v1/files/file-abc/content", headers=BEARER | {"If-None-Match": '"v1"'}
    )
    assert response.status == 304
    assert fake_azure.last.headers["If-None-Match"] == '"v1"'


async def test_a_redirect_does_not_fail_over(
    aiohttp_client: AiohttpClient, fake_azure: FakeAzure, elsewhere: FakeAzure
) -> None:
    key = "team-key-0123456789abcdef"
    routes = [
        {"endpoint": "e", "deployment": "dep-a", "priority": 1},
        {"endpoint": "e", "deployment": "dep-b", "priority": 2},
    ]
    config = Config(
        endpoints=parse_endpoints({"e": {"url": fake_azure.url, "api_key": "k"}}, {}),
        model_map=parse_model_map({"gpt-4o": routes}),
        access_keys=parse_access_keys([key], {}),
    )
    proxy = await aiohttp_client(create_app(config))
    fake_azure.queue(redirect_to(f"{elsewhere.url}/steal?{SECRET}", 307))
    response = await proxy.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {key}"},
        allow_redirects=False,
    )
    await assert_refused(response)
    assert [r.path for r in fake_azure.requests] == [
        "/openai/deployments/dep-a/chat/completions"
    ]
    assert elsewhere.requests == []
    # dep-a is not held against: the next request goes to it as before.
    again = await proxy.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}
    )
    assert again.headers["x-azproxy-deployment"] == "dep-a"


@pytest.mark.parametrize("status", [302, 307])
async def test_a_redirected_realtime_handshake_is_502(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    status: int,
) -> None:
    azure: FakeRealtime = await start_fake_realtime(aiohttp_server)
    other: FakeRealtime = await start_fake_realtime(aiohttp_server)
    config = Config(upstream=azure.url, retry_delay_s=0.01)
    proxy = await aiohttp_client(create_app(config))
    location = f"{other.url}/openai/realtime?deployment=dep1&{SECRET}"
    azure.refuse(status, headers={"Location": location})
    path = "/v1/realtime?model=gpt-4o-realtime-preview"
    try:
        ws = await proxy.ws_connect(path, headers=BEARER)
    except aiohttp.WSServerHandshakeError as refused:
        status_seen = refused.status
    else:
        await ws.close()  # followed: the test fails, without hanging
        status_seen = 101
    assert status_seen == 502
    assert len(azure.handshakes) == 1  # not retried
    assert azure.last.headers["api-key"] == AZURE_KEY
    assert other.handshakes == []  # the key went nowhere else
    # The same refusal, read as a plain answer: OpenAI's error shape.
    azure.refuse(status, headers={"Location": location})
    response = await proxy.get(path, headers=BEARER | UPGRADE)
    await assert_refused(response)
    assert len(azure.handshakes) == 2
    assert other.handshakes == []


async def test_a_redirected_upload_is_502(
    proxy_for: ProxyFactory, fake_azure: FakeAzure, elsewhere: FakeAzure
) -> None:
    # A body streamed from the client, through the same session.
    proxy = await proxy_for()
    fake_azure.queue(redirect_to(f"{elsewhere.url}/steal?{SECRET}", 307))
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="model"\r\n\r\n'
        "whisper\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
        "RIFF....\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    response = await proxy.post(
        "/v1/audio/transcriptions",
        data=body,
        headers=BEARER | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        allow_redirects=False,
    )
    await assert_refused(response)
    assert len(fake_azure.requests) == 1
    assert elsewhere.requests == []
