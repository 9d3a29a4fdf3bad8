"""Client connections, over real sockets, against a server started the way
production starts it (azproxy.server.start_site): the header timeout, the
keep-alive timeout, max_connections and aiohttp's own error replies.

Timeouts are tiny (0.3 s) and every wait for the server has a margin of
seconds: a test fails when the server never acts, never because it is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from azproxy import Config, create_app
from azproxy.observe.logging import quiet_protocol_errors
from azproxy.server import closing
from azproxy.server import guard as connection_guard
from azproxy.server.connections import GuardedServer
from azproxy.server.guard import MAX_LINGERING
from azproxy.server.runner import bound_port, start_site
from tests.conftest import AZURE_KEY, BEARER, TOKEN
from tests.fakes import FakeAzure
from tests.rawhttp import MARGIN_S, Clients
from tests.realtime_fake import FakeRealtime, start_fake_realtime

SHORT_S = 0.3  # the timeouts under test
CHAT = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: azproxy\r\n"
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    b"Content-Type: application/json\r\nContent-Length: 15\r\n\r\n"
    b'{"messages":[]}'
)


Serve = Callable[..., Awaitable[Clients]]


@pytest.fixture
async def serve(make_config: Callable[..., Config]) -> AsyncIterator[Serve]:
    """Start azproxy as `azproxy serve` does."""
    runners = []
    proxies = []

    async def start(**overrides: Any) -> Clients:
        runner = await start_site(create_app(make_config(**overrides)), "127.0.0.1", 0)
        runners.append(runner)
        proxies.append(Clients(bound_port(runner)))
        return proxies[-1]

    yield start
    for proxy in proxies:
        await proxy.close()
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
async def test_half_sent_headers_get_408_and_a_closed_connection(
    serve: Serve, fake_azure: FakeAzure, trickle: bool
) -> None:
    proxy = await serve(client_header_timeout_s=SHORT_S, keepalive_timeout_s=30)
    conn = await proxy.connect()
    headers = CHAT.split(b"\r\n\r\n")[0] + b"\r\n"  # the blank line never comes

    async def send_slowly() -> None:
        # A slowloris: always sending, never done. The timeout counts from
        # the connection's start, not from the last byte.
        with contextlib.suppress(ConnectionError):
            for i in range(len(headers)):
                await conn.send(headers[i : i + 1])
                await asyncio.sleep(0.05)

    sender = asyncio.get_running_loop().create_task(
        send_slowly() if trickle else conn.send(headers)
    )
    try:
        answer = await conn.answer()
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    assert answer.status == 408
    assert answer.headers["connection"] == "close"
    error = answer.error()
    assert error["code"] == "request_timeout"
    assert "client_header_timeout_s" in error["message"]
    assert TOKEN.encode() not in answer.body
    assert await conn.closed_by_server() == b""
    assert fake_azure.requests == []


async def test_a_silent_connection_is_closed_after_the_header_timeout(
    serve: Serve,
) -> None:
    proxy = await serve(client_header_timeout_s=SHORT_S, keepalive_timeout_s=30)
    conn = await proxy.connect()
    assert await conn.closed_by_server() == b""  # closed, and nothing to answer


async def test_an_idle_kept_alive_connection_is_closed_after_keepalive_timeout(
    serve: Serve,
) -> None:
    proxy = await serve(client_header_timeout_s=30, keepalive_timeout_s=SHORT_S)
    conn = await proxy.connect()
    answer = await conn.ask()
    assert answer.status == 200
    assert "connection" not in answer.headers  # kept alive
    assert await conn.closed_by_server() == b""


async def test_the_header_timeout_times_headers_only(
    serve: Serve, fake_azure: FakeAzure
) -> None:
    """From the connection's start to its first request's headers, then from
    the first byte of each next request to its headers: not a body, not the
    idle time between requests (keepalive_timeout_s rules there)."""
    proxy = await serve(client_header_timeout_s=SHORT_S, keepalive_timeout_s=30)
    conn = await proxy.connect()
    head, body = CHAT.split(b"\r\n\r\n")
    await conn.send(head + b"\r\n\r\n")
    await asyncio.sleep(3 * SHORT_S)  # a slow body is not a slow header
    assert (await conn.ask(body)).status == 200
    assert [r.body for r in fake_azure.requests] == [body]

    await asyncio.sleep(3 * SHORT_S)  # idle between requests
    assert (await conn.ask()).status == 200

    await conn.send(b"GET /healthz HTTP/1.1\r\n")
    answer = await conn.answer()
    assert answer.status == 408
    assert answer.error()["code"] == "request_timeout"
    assert await conn.closed_by_server() == b""


async def test_a_connection_past_max_connections_gets_503_and_is_closed(
    serve: Serve, fake_azure: FakeAzure
) -> None:
    proxy = await serve(max_connections=3)
    held = [await proxy.connect() for _ in range(3)]
    for conn in held:
        assert (await conn.ask()).status == 200

    extra = await proxy.connect()
    answer = await extra.ask(CHAT)
    assert answer.status == 503
    assert answer.headers["connection"] == "close"
    assert answer.headers["retry-after"] == "1"
    error = answer.error()
    assert error["code"] == "too_many_connections"
    assert "max_connections" in error["message"]
    assert await extra.closed_by_server() == b""
    assert fake_azure.requests == []

    # The three admitted ones keep working, to Azure and back.
    for conn in held:
        assert (await conn.ask(CHAT)).status == 200
    assert len(fake_azure.requests) == 3
    assert all(r.headers["api-key"] == AZURE_KEY for r in fake_azure.requests)

    # One closes: its place is free again (once the server has seen it go).
    held.pop().close()
    await proxy.admitted()
    # And the limit holds again with it.
    assert (await proxy.ask()).status == 503


async def test_refused_connections_linger_within_a_bound_until_shutdown(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection reads what its client still sends until the
    client closes (so its 503 is not lost to a reset), but only MAX_LINGERING
    at once, and none past the server's shutdown."""
    monkeypatch.setattr(closing, "LINGER_S", 60.0)
    app = create_app(make_config(max_connections=1))
    runner = await start_site(app, "127.0.0.1", 0)
    assert isinstance(runner.server, GuardedServer)
    guard = runner.server.guard
    clients = Clients(bound_port(runner))
    try:
        await clients.admitted()
        refused = [await clients.connect() for _ in range(MAX_LINGERING + 8)]
        for conn in refused:
            answer = await conn.ask(CHAT)
            assert answer.error()["code"] == "too_many_connections"
        assert len(guard.refused) == MAX_LINGERING
    finally:
        await runner.cleanup()
    try:
        async with asyncio.timeout(MARGIN_S):
            while guard.refused:  # closed by the shutdown, not by the clients
                await asyncio.sleep(0.01)
    finally:
        await clients.close()


async def refusal_lines(
    proxy: Clients, refusals: int, caplog: pytest.LogCaptureFixture
) -> list[logging.LogRecord]:
    for _ in range(refusals):
        assert (await proxy.ask()).status == 503
    return [r for r in caplog.records if "max_connections" in r.getMessage()]


async def test_refusals_are_logged_once_per_interval(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "azproxy")
    proxy = await serve(max_connections=1)
    held = await proxy.connect()
    assert (await held.ask()).status == 200
    lines = await refusal_lines(proxy, 20, caplog)
    assert len(lines) == 1
    assert "refused 1 connection" in lines[0].getMessage()
    assert lines[0].levelno == logging.WARNING


async def test_refusal_reports_count_every_refusal(
    serve: Serve, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_guard, "REPORT_EVERY_S", SHORT_S)
    caplog.set_level(logging.WARNING, "azproxy")
    proxy = await serve(max_connections=1)
    held = await proxy.connect()
    assert (await held.ask()).status == 200
    await refusal_lines(proxy, 20, caplog)
    await asyncio.sleep(3 * SHORT_S)  # the last report is due
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    counts = [int(line.split()[1]) for line in lines]
    assert counts[0] == 1
    assert sum(counts) == 20


@pytest.fixture
async def fake_realtime(aiohttp_server: AiohttpServer) -> FakeRealtime:
    return await start_fake_realtime(aiohttp_server)


async def test_a_realtime_session_counts_until_it_closes(
    serve: Serve, fake_realtime: FakeRealtime
) -> None:
    proxy = await serve(
        max_connections=1, client_header_timeout_s=SHORT_S, upstream=fake_realtime.url
    )
    url = f"http://127.0.0.1:{proxy.port}/v1/realtime?model=gpt-4o-realtime-preview"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=BEARER) as ws:
            await ws.send_str("ping")
            assert await ws.receive_str() == "ping"
            # The upgraded connection holds the only place.
            answer = await proxy.ask()
            assert answer.status == 503
            assert answer.error()["code"] == "too_many_connections"
            # Frames are not headers: no header timeout inside a session.
            await asyncio.sleep(3 * SHORT_S)
            await ws.send_str("pong")
            assert await ws.receive_str() == "pong"
        assert len(fake_realtime.handshakes) == 1
    await proxy.admitted()


# A pass-through token where aiohttp's parser quotes it in its 400 reply.
BAD_REQUESTS = {
    "request line": f"GET /v1/models?api-key={TOKEN} HTTP/1.1 x\r\n\r\n",
    "method": f"G@T /v1/models?api-key={TOKEN} HTTP/1.1\r\n\r\n",
    "header": f"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\x01\r\n\r\n",
    "target": f"GET http://{TOKEN}@/v1/models HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("request_text", BAD_REQUESTS.values(), ids=BAD_REQUESTS)
async def test_a_malformed_request_gets_a_fixed_400_without_its_text(
    serve: Serve,
    fake_azure: FakeAzure,
    caplog: pytest.LogCaptureFixture,
    request_text: str,
) -> None:
    caplog.set_level(logging.DEBUG, "aiohttp.server")
    proxy = await serve()
    conn = await proxy.connect()
    # A kept-alive connection first: the malformed request is not its first.
    assert (await conn.ask()).status == 200
    await conn.send(request_text.encode("latin-1"))
    answer = await conn.answer()
    rest = await conn.closed_by_server()
    assert answer.status == 400
    assert answer.error() == {
        "message": "azproxy could not parse this HTTP request.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request",
    }
    for part in (AZURE_KEY, "myresource", "dep1"):
        assert part.encode() not in answer.body + rest
        assert part not in str(answer.headers)
    assert fake_azure.requests == []
    # The log line, before any redaction: it names the error, not the request.
    logged = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert logged
    for record in logged:
        quiet_protocol_errors(record)
        assert AZURE_KEY not in record.getMessage()
        assert record.exc_info is None
