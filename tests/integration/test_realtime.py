"""Realtime WebSocket relay: handshake mapping, credentials, frames, close
codes and teardown, asserted at both ends (client and a WebSocket fake Azure)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from azproxy import Config, create_app
from azproxy.auth.credentials import BAD_CREDENTIAL_PROTOCOL, BAD_SUBPROTOCOL
from azproxy.realtime.handshake import PREVIEW_API_VERSION
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.conftest import AZURE_KEY, BEARER, TOKEN
from tests.procfs import connection_owner, needs_proc
from tests.realtime_fake import (
    UPGRADE,
    FakeRealtime,
    key_protocol,
    raw_handshake,
    start_fake_realtime,
)

PATH = "/v1/realtime?model=gpt-4o-realtime-preview"
ACCESS_KEY = "team-key-0123456789abcdef"


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeRealtime:
    return await start_fake_realtime(aiohttp_server)


@pytest.fixture
def proxy_to(aiohttp_client: AiohttpClient, fake: FakeRealtime) -> Any:
    async def start(**overrides: Any) -> Any:
        values: dict[str, Any] = {"upstream": fake.url, "retry_delay_s": 0.01}
        return await aiohttp_client(create_app(Config(**(values | overrides))))

    return start


@pytest.fixture
async def rt(proxy_to: Any) -> Any:
    return await proxy_to()


def all_header_text(fake: FakeRealtime) -> str:
    return "\n".join(f"{k}: {v}" for k, v in fake.last.headers.items())


async def test_classic_handshake(rt: Any, fake: FakeRealtime) -> None:
    headers = BEARER | {
        "OpenAI-Beta": "realtime=v1",
        "OpenAI-Organization": "org-should-not-leak",
        "Cookie": "session=should-not-leak",
    }
    target = PATH + "&intent=transcription&api-key=leaked&api-version=1999-01-01"
    async with rt.ws_connect(target, headers=headers) as ws:
        await ws.send_str("ping")
        assert await ws.receive_str() == "ping"
    hs = fake.last
    assert hs.path == "/openai/realtime"
    assert list(hs.query.items()) == [
        ("api-version", PREVIEW_API_VERSION),
        ("deployment", "dep1"),
        ("intent", "transcription"),
    ]
    assert hs.headers["api-key"] == AZURE_KEY
    assert hs.headers["OpenAI-Beta"] == "realtime=v1"
    for name in ("Authorization", "OpenAI-Organization", "Cookie"):
        assert name not in hs.headers
    assert TOKEN not in all_header_text(fake)


@pytest.mark.parametrize(
    ("version", "path", "query"),
    [
        (
            "2024-12-01-preview",
            "/openai/realtime",
            [("api-version", "2024-12-01-preview"), ("deployment", "dep1")],
        ),
        ("2024-10-21", "/openai/realtime", [("api-version", PREVIEW_API_VERSION)]),
        ("v1", "/openai/v1/realtime", [("model", "dep1")]),
    ],
)
async def test_api_version_picks_the_url(
    rt: Any, fake: FakeRealtime, version: str, path: str, query: list[Any]
) -> None:
    token = f"{TOKEN}:{version}"
    async with rt.ws_connect(PATH, headers={"Authorization": f"Bearer {token}"}):
        pass
    assert fake.last.path == path
    assert list(fake.last.query.items())[: len(query)] == query
    if version == "v1":
        assert "api-version" not in fake.last.query


async def test_subprotocol_credentials_are_used_and_never_forwarded(
    rt: Any, fake: FakeRealtime
) -> None:
    protocols = ("realtime", key_protocol(TOKEN), "openai-beta.realtime-v1")
    async with rt.ws_connect(PATH, protocols=protocols) as ws:
        assert ws.protocol == "realtime"
        await ws.send_str('{"type":"session.update"}')
        assert await ws.receive_str() == '{"type":"session.update"}'
    assert fake.last.protocols == ["realtime", "openai-beta.realtime-v1"]
    assert fake.last.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in fake.last.headers
    text = all_header_text(fake)
    assert "insecure" not in text
    assert quote(TOKEN, safe="") not in text


async def test_101_names_the_deployment_and_never_echoes_the_key(
    rt: Any, fake: FakeRealtime
) -> None:
    offered = f"{key_protocol(TOKEN)}, realtime"
    head, _, writer = await raw_handshake(
        rt.port, PATH, {"Sec-WebSocket-Protocol": offered}
    )
    writer.close()
    assert head.startswith(b"HTTP/1.1 101")
    assert b"x-azproxy-deployment: dep1" in head
    assert b"Sec-WebSocket-Protocol: realtime\r\n" in head
    assert b"insecure" not in head


async def test_101_to_an_allowed_origin_carries_cors_headers(
    proxy_to: Any, fake: FakeRealtime
) -> None:
    # The relay sends its 101 itself, so it sets the CORS headers itself.
    rt = await proxy_to(cors_origins=("https://a.example",))
    for origin, allowed in (("https://a.example", True), ("https://b.example", False)):
        head, _, writer = await raw_handshake(
            rt.port, PATH, BEARER | {"Origin": origin}
        )
        writer.close()
        assert head.startswith(b"HTTP/1.1 101")
        assert (f"Access-Control-Allow-Origin: {origin}".encode() in head) is allowed
        assert (b"Vary: Origin" in head) is allowed


async def test_client_gets_a_protocol_even_when_azure_selects_none(
    rt: Any, fake: FakeRealtime
) -> None:
    fake.protocol = None
    protocols = ("realtime", key_protocol(TOKEN))
    async with rt.ws_connect(PATH, protocols=protocols) as ws:
        assert ws.protocol == "realtime"  # browsers fail a handshake without one


async def test_access_key_in_the_subprotocol(
    aiohttp_client: AiohttpClient, fake: FakeRealtime
) -> None:
    config = Config(
        endpoints=parse_endpoints(
            {"sweden": {"url": fake.url, "api_key": AZURE_KEY, "api_version": "v1"}},
            {},
        ),
        model_map=parse_model_map({"gpt-realtime": "sweden/rt-deploy"}),
        access_keys=parse_access_keys([ACCESS_KEY], {}),
    )
    proxy = await aiohttp_client(create_app(config))
    protocols = ("realtime", key_protocol(ACCESS_KEY))
    async with proxy.ws_connect("/v1/realtime?model=gpt-realtime", protocols=protocols):
        pass
    assert fake.last.path == "/openai/v1/realtime"
    assert list(fake.last.query.items()) == [("model", "rt-deploy")]
    assert fake.last.headers["api-key"] == AZURE_KEY
    assert ACCESS_KEY not in all_header_text(fake)


@pytest.mark.parametrize("status", [401, 403])
async def test_azure_refusing_a_server_side_key_is_502_not_the_clients_401(
    aiohttp_client: AiohttpClient, fake: FakeRealtime, status: int
) -> None:
    config = Config(
        endpoints=parse_endpoints(
            {"sweden": {"url": fake.url, "ad_token": AZURE_KEY, "api_version": "v1"}},
            {},
        ),
        model_map=parse_model_map({"gpt-realtime": "sweden/rt-deploy"}),
        access_keys=parse_access_keys([ACCESS_KEY], {}),
    )
    proxy = await aiohttp_client(create_app(config))
    fake.refuse(status, headers={"apim-request-id": "apim-7"})
    protocols = "realtime, " + key_protocol(ACCESS_KEY)
    response = await proxy.get(
        "/v1/realtime?model=gpt-realtime",
        headers=UPGRADE | {"Sec-WebSocket-Protocol": protocols},
    )
    # The client's access key is fine: the endpoint's Entra ID token is not.
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_auth_failed"
    assert f"endpoint 'sweden' (HTTP {status})" in error["message"]
    assert fake.url not in error["message"] and AZURE_KEY not in error["message"]
    assert response.headers["x-request-id"] == "apim-7"
    assert fake.last.headers["Authorization"] == f"Bearer {AZURE_KEY}"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Sec-WebSocket-Protocol": "realtime"},
        {"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.wrong"},
        {"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key."},
    ],
)
async def test_no_or_bad_credentials_are_401_before_upgrading(
    rt: Any, fake: FakeRealtime, headers: dict[str, str]
) -> None:
    response = await rt.get(PATH, headers=UPGRADE | headers)
    assert response.status == 401
    body = await response.json()
    assert body["error"]["code"] == "invalid_api_key"
    assert fake.handshakes == []


@pytest.mark.parametrize(
    ("headers", "offered"),
    [
        # Percent-encoded CR LF (or NUL) would reach Azure's api-key header.
        ({}, "realtime, " + key_protocol("myresource:dep1:key\r\nX-Injected: 1")),
        ({}, "realtime, " + key_protocol("myresource:dep1:key\x00more")),
        ({}, "realtime, " + key_protocol("myresource:dep1:k\u00e9y")),
        # Not tokens (RFC 6455 §4.1): never forwarded to Azure or echoed.
        ({}, f"realtime, openai-insecure-api-key.{TOKEN}"),  # raw ':'
        (BEARER, "real\ttime"),
        (BEARER, "realtime, caf\u00e9"),
        (BEARER, 'realtime, "quoted"'),
    ],
)
async def test_subprotocol_that_is_no_token_is_400_before_any_io(
    rt: Any,
    fake: FakeRealtime,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    offered: str,
) -> None:
    request_headers = UPGRADE | headers | {"Sec-WebSocket-Protocol": offered}
    response = await rt.get(PATH, headers=request_headers)
    assert response.status == 400
    body = await response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "invalid_subprotocol"
    # A fixed text: nothing offered is echoed.
    assert body["error"]["message"] in (BAD_SUBPROTOCOL, BAD_CREDENTIAL_PROTOCOL)
    assert "Injected" not in json.dumps(body)
    assert fake.handshakes == []
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


async def test_plain_get_is_426(rt: Any, fake: FakeRealtime) -> None:
    response = await rt.get(PATH, headers=BEARER)
    assert response.status == 426
    assert response.headers["Upgrade"] == "websocket"
    assert (await response.json())["error"]["code"] == "websocket_required"
    assert fake.handshakes == []


async def test_text_and_binary_frames_both_ways_byte_for_byte(
    rt: Any, fake: FakeRealtime
) -> None:
    text = '{"type":"conversation.item.create","text":"héllo 🎧 \\u00e9"}'
    binary = bytes(range(256)) * 64
    async with rt.ws_connect(PATH, headers=BEARER) as ws:
        await fake.connected.wait()
        assert fake.socket is not None
        await fake.socket.send_str('{"type":"session.created"}')
        await fake.socket.send_bytes(b"\x00\xffaudio")
        assert await ws.receive_str() == '{"type":"session.created"}'
        assert await ws.receive_bytes() == b"\x00\xffaudio"
        await ws.send_str(text)
        await ws.send_bytes(binary)
        assert await ws.receive_str() == text  # echoed by the fake
        assert await ws.receive_bytes() == binary
    assert fake.received == [
        (WSMsgType.TEXT, text.encode()),
        (WSMsgType.BINARY, binary),
    ]


async def test_client_close_code_reaches_azure(rt: Any, fake: FakeRealtime) -> None:
    ws = await rt.ws_connect(PATH, headers=BEARER)
    await fake.connected.wait()
    await ws.close(code=4000, message=b"bye now")
    await asyncio.wait_for(fake.closed.wait(), 5)
    assert fake.close == (4000, "bye now")
    assert ws.close_code == 4000


@pytest.mark.parametrize("code", [1011, 4001])
async def test_azure_close_code_reaches_the_client(
    rt: Any, fake: FakeRealtime, code: int
) -> None:
    async with rt.ws_connect(PATH, headers=BEARER) as ws:
        await fake.connected.wait()
        assert fake.socket is not None
        await fake.socket.close(code=code, message=b"server says no")
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (code, "server says no")


async def test_client_that_vanishes_closes_azure_at_once(
    rt: Any, fake: FakeRealtime
) -> None:
    head, _, writer = await raw_handshake(rt.port, PATH, BEARER)
    assert head.startswith(b"HTTP/1.1 101")
    await asyncio.wait_for(fake.connected.wait(), 5)
    writer.transport.abort()  # no close frame, no FIN handshake
    await asyncio.wait_for(fake.closed.wait(), 1.0)
    assert fake.close == (1001, "client went away")


async def test_azure_connection_lost_closes_the_client_with_1014(
    rt: Any, fake: FakeRealtime
) -> None:
    async with rt.ws_connect(PATH, headers=BEARER) as ws:
        await fake.connected.wait()
        assert fake.socket is not None
        # Drop Azure's side without a close frame.
        writer = fake.socket._payload_writer
        assert writer is not None and writer.transport is not None
        writer.transport.abort()
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (1014, "Azure OpenAI connection lost")


CAP_MB = 0.001  # realtime_max_message_mb in the cap tests
CAP = int(CAP_MB * 1024 * 1024)  # 1048 bytes: the largest message relayed
TOO_BIG = (aiohttp.WSCloseCode.MESSAGE_TOO_BIG, f"message over {CAP_MB:g} MB")


async def test_client_message_over_the_cap_closes_both_with_1009(
    proxy_to: Any, fake: FakeRealtime
) -> None:
    rt = await proxy_to(realtime_max_message_mb=CAP_MB, max_body_mb=1)
    async with rt.ws_connect(PATH, headers=BEARER) as ws:
        await fake.connected.wait()
        await ws.send_bytes(b"a" * CAP)  # at the cap: relayed both ways
        assert await ws.receive_bytes() == b"a" * CAP
        await ws.send_bytes(b"b" * (CAP + 1))
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        # aiohttp refuses it itself: 1009, with no reason.
        assert message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await asyncio.wait_for(fake.closed.wait(), 5)
    assert fake.close == TOO_BIG
    assert fake.received == [(WSMsgType.BINARY, b"a" * CAP)]


async def test_azure_message_over_the_cap_closes_both_with_1009(
    proxy_to: Any, fake: FakeRealtime
) -> None:
    rt = await proxy_to(realtime_max_message_mb=CAP_MB, max_body_mb=1)
    async with rt.ws_connect(PATH, headers=BEARER) as ws:
        await fake.connected.wait()
        assert fake.socket is not None
        await fake.socket.send_bytes(b"a" * CAP)
        assert await ws.receive_bytes() == b"a" * CAP
        await fake.socket.send_str("b" * (CAP + 1))
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == TOO_BIG
    await asyncio.wait_for(fake.closed.wait(), 5)
    assert fake.close is not None
    assert fake.close[0] == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert fake.received == []


async def test_idle_session_is_closed_and_an_active_one_is_not(
    proxy_to: Any, fake: FakeRealtime
) -> None:
    """Idle timeout 1 s. Messages every 0.1 s, first from the client only,
    then from Azure only, keep the session open for 2 timeouts; after that
    only pings flow, which are no activity, and both sides are closed."""
    rt = await proxy_to(realtime_idle_timeout_s=1.0)
    fake.echo = False
    async with rt.ws_connect(PATH, headers=BEARER) as ws:
        await fake.connected.wait()
        assert fake.socket is not None
        for n in range(10):
            await ws.send_str(f"client {n}")
            await asyncio.sleep(0.1)
        for n in range(10):
            await fake.socket.send_str(f"azure {n}")
            assert await ws.receive_str() == f"azure {n}"
            await asyncio.sleep(0.1)
        pinging = asyncio.get_running_loop().create_task(keep_pinging(ws))
        try:
            message = await asyncio.wait_for(ws.receive(), 10)
        finally:
            pinging.cancel()
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (1001, "idle for 1 s")
    await asyncio.wait_for(fake.closed.wait(), 5)
    assert fake.close == (1001, "idle for 1 s")
    assert len(fake.received) == 10


@needs_proc
async def test_idle_client_that_stopped_reading_is_dropped(
    proxy_to: Any, fake: FakeRealtime
) -> None:
    """Azure sends until every buffer is full while the client reads nothing:
    the session goes idle, Azure's side is closed, and the client's connection
    is dropped rather than kept waiting for a close answer that never comes."""
    rt = await proxy_to(realtime_idle_timeout_s=0.5)
    _, _, writer = await raw_handshake(rt.port, PATH, BEARER)
    client_port = writer.get_extra_info("sockname")[1]
    await fake.connected.wait()
    assert fake.socket is not None
    flood = asyncio.get_running_loop().create_task(send_until_closed(fake.socket))
    try:
        await asyncio.wait_for(fake.closed.wait(), 10)
        assert fake.close == (1001, "idle for 0.5 s")
        for _ in range(100):
            if connection_owner(rt.port, client_port, [os.getpid()]) is None:
                break
            await asyncio.sleep(0.1)
        assert connection_owner(rt.port, client_port, [os.getpid()]) is None
    finally:
        flood.cancel()
        writer.close()


async def send_until_closed(socket: web.WebSocketResponse[Any]) -> None:
    with contextlib.suppress(ConnectionError):
        for _ in range(100):
            await socket.send_bytes(b"x" * 1_000_000)


async def keep_pinging(ws: aiohttp.ClientWebSocketResponse[Any]) -> None:
    while not ws.closed:
        await ws.ping(b"still here?")
        await asyncio.sleep(0.1)


async def test_pings_are_answered_by_the_proxy(rt: Any, fake: FakeRealtime) -> None:
    async with rt.ws_connect(PATH, headers=BEARER, autoping=False) as ws:
        await ws.ping(b"are you there")
        message = await ws.receive()
        assert (message.type, message.data) == (WSMsgType.PONG, b"are you there")
    assert fake.received == []


@pytest.mark.parametrize(
    ("status", "code", "headers"),
    [
        (401, "upstream_unauthorized", {}),
        (403, "upstream_unauthorized", {}),
        (404, "deployment_not_found", {}),
        (429, "rate_limit_exceeded", {"retry-after": "7", "apim-request-id": "a1"}),
    ],
)
async def test_refused_handshake_is_an_openai_error_with_azures_status(
    rt: Any,
    fake: FakeRealtime,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
    headers: dict[str, str],
) -> None:
    fake.refuse(status, headers=headers)
    response = await rt.get(PATH, headers=UPGRADE | BEARER)
    assert response.status == status
    body = await response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert body["error"]["type"] == "invalid_request_error"
    assert "dep1" in body["error"]["message"]
    assert "'myresource'" in body["error"]["message"]  # the endpoint's name
    assert "127.0.0.1" not in json.dumps(body)  # not its URL: that is logged
    assert AZURE_KEY not in json.dumps(body)
    for name, value in headers.items():
        assert response.headers[name] == value
    assert len(fake.handshakes) == 1  # 4xx is never retried
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(fake.url in line and f"HTTP {status}" in line for line in logged)


async def test_5xx_handshake_is_retried(rt: Any, fake: FakeRealtime) -> None:
    fake.refuse(503, times=2)
    async with rt.ws_connect(PATH, headers=BEARER) as ws:
        await ws.send_str("hi")
        assert await ws.receive_str() == "hi"
    assert len(fake.handshakes) == 3


async def test_5xx_after_the_last_retry_keeps_its_status(
    proxy_to: Any, fake: FakeRealtime
) -> None:
    rt = await proxy_to(retries=1)
    fake.refuse(502, times=2)
    response = await rt.get(PATH, headers=UPGRADE | BEARER)
    assert response.status == 502
    body = await response.json()
    assert body["error"]["type"] == "api_error"
    assert body["error"]["code"] == "upstream_error"
    assert body["error"]["message"].endswith("(HTTP 502), after 2 attempts.")
    assert len(fake.handshakes) == 2


async def test_unreachable_azure_is_502(aiohttp_client: AiohttpClient) -> None:
    config = Config(upstream="http://127.0.0.1:1", retries=0)
    proxy = await aiohttp_client(create_app(config))
    response = await proxy.get(PATH, headers=UPGRADE | BEARER)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_unreachable"


async def test_unreachable_azure_is_retried_and_says_so(
    aiohttp_client: AiohttpClient,
) -> None:
    config = Config(upstream="http://127.0.0.1:1", retries=2, retry_delay_s=0.01)
    proxy = await aiohttp_client(create_app(config))
    response = await proxy.get(PATH, headers=UPGRADE | BEARER)
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_unreachable"
    # The HTTP relay's wording (tests/integration/test_retries.py).
    assert error["message"].startswith("Could not reach Azure OpenAI at 127.0.0.1 (")
    assert error["message"].endswith("), after 3 attempts.")


def fallback_config(fake: FakeRealtime) -> Config:
    """One endpoint, no model mapped: model_fallback guesses the deployment."""
    return Config(
        endpoints=parse_endpoints(
            {"sweden": {"url": fake.url, "api_key": AZURE_KEY, "api_version": "v1"}},
            {},
        ),
        model_fallback=True,
        access_keys=parse_access_keys([ACCESS_KEY], {}),
        retry_delay_s=0.01,
    )


async def test_a_guessed_deployment_azure_does_not_know_moves_to_the_next_guess(
    aiohttp_client: AiohttpClient, fake: FakeRealtime
) -> None:
    proxy = await aiohttp_client(create_app(fallback_config(fake)))
    fake.refuse(404)
    protocols = ("realtime", key_protocol(ACCESS_KEY))
    path = "/v1/realtime?model=gpt-4.1-realtime"
    async with proxy.ws_connect(path, protocols=protocols) as ws:
        await ws.send_str("hi")
        assert await ws.receive_str() == "hi"
    # The model's own name, then Azure's dotless habit; neither retried.
    assert [h.query["model"] for h in fake.handshakes] == [
        "gpt-4.1-realtime",
        "gpt-41-realtime",
    ]


async def test_a_404_for_the_last_guess_reaches_the_client(
    aiohttp_client: AiohttpClient, fake: FakeRealtime
) -> None:
    proxy = await aiohttp_client(create_app(fallback_config(fake)))
    fake.refuse(404, times=2)
    protocols = "realtime, " + key_protocol(ACCESS_KEY)
    response = await proxy.get(
        "/v1/realtime?model=gpt-4.1-realtime",
        headers=UPGRADE | {"Sec-WebSocket-Protocol": protocols},
    )
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["code"] == "deployment_not_found"
    assert "'gpt-41-realtime'" in error["message"]
    assert len(fake.handshakes) == 2


async def test_closing_the_app_closes_sessions_with_going_away(
    aiohttp_client: AiohttpClient, fake: FakeRealtime
) -> None:
    config = Config(upstream=fake.url)
    proxy = await aiohttp_client(create_app(config))
    ws = await proxy.ws_connect(PATH, headers=BEARER)
    await fake.connected.wait()
    closing = asyncio.get_running_loop().create_task(proxy.server.close())
    message = await ws.receive()
    assert message.type is WSMsgType.CLOSE
    assert (message.data, message.extra) == (1001, "azproxy is shutting down")
    await ws.close()
    await closing
    assert fake.close == (1001, "azproxy is shutting down")
