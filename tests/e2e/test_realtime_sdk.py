"""The official openai SDK's realtime clients drive the real `azproxy serve`
process over WebSocket: against a recording fake Azure (both ends asserted),
against the built-in simulator (`--demo`), and through a graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import websockets
from pytest_aiohttp import AiohttpServer

from azproxy.demo import DEMO_TOKEN
from azproxy.realtime.handshake import PREVIEW_API_VERSION
from tests.conftest import AZURE_KEY
from tests.processes import Running, running
from tests.realtime_fake import FakeRealtime, key_protocol, start_fake_realtime

TOKEN = f"myresource:gpt-realtime|rt-dep,gpt-4o-realtime-preview|rt-preview:{AZURE_KEY}"


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeRealtime:
    return await start_fake_realtime(aiohttp_server)


@pytest.fixture
def server(fake: FakeRealtime, tmp_path: Path) -> Iterator[Running]:
    env = {"AZPROXY_UPSTREAM": fake.url, "AZPROXY_LOG_LEVEL": "debug"}
    with running(["serve", "--port", "0"], tmp_path / "azproxy.log", env=env) as proc:
        yield proc


def client_for(server: Running, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.url}/v1",
        # The beta realtime client always picks wss:// unless told otherwise.
        websocket_base_url=f"ws://127.0.0.1:{server.port}/v1",
        api_key=token,
        max_retries=0,
    )


async def wait_received(fake: FakeRealtime, count: int) -> None:
    async with asyncio.timeout(5):
        while len(fake.received) < count:
            await asyncio.sleep(0.01)


async def test_ga_client_through_azproxy(fake: FakeRealtime, server: Running) -> None:
    fake.echo = False
    created = {"type": "session.created", "event_id": "e1", "session": {"id": "s1"}}
    async with client_for(server, f"{TOKEN}:v1") as client:
        async with client.realtime.connect(model="gpt-realtime") as connection:
            await asyncio.wait_for(fake.connected.wait(), 5)
            assert fake.socket is not None
            await fake.socket.send_str(json.dumps(created))
            event = await connection.recv()
            assert event.type == "session.created"
            await connection.session.update(
                session={"type": "realtime", "output_modalities": ["text"]}
            )
            await wait_received(fake, 1)
            await connection.close(code=4000, reason="done here")
        await asyncio.wait_for(fake.closed.wait(), 5)
    sent = json.loads(fake.received[0][1])
    assert sent["type"] == "session.update"
    assert sent["session"] == {"type": "realtime", "output_modalities": ["text"]}
    assert fake.close == (4000, "done here")
    handshake = fake.last
    assert handshake.path == "/openai/v1/realtime"
    assert list(handshake.query.items()) == [("model", "rt-dep")]
    assert handshake.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in handshake.headers
    assert "OpenAI-Beta" not in handshake.headers
    assert AZURE_KEY not in server.log()


async def test_beta_client_keeps_openai_beta(
    fake: FakeRealtime, server: Running
) -> None:
    fake.echo = False
    created = {"type": "response.created", "event_id": "e1", "response": {}}
    async with (
        client_for(server, TOKEN) as client,
        client.beta.realtime.connect(model="gpt-4o-realtime-preview") as connection,
    ):
        await connection.send({"type": "response.create"})
        await wait_received(fake, 1)
        assert fake.socket is not None
        await fake.socket.send_str(json.dumps(created))
        event = await connection.recv()
        assert event.type == "response.created"
    assert json.loads(fake.received[0][1]) == {"type": "response.create"}
    handshake = fake.last
    assert handshake.path == "/openai/realtime"
    assert list(handshake.query.items()) == [
        ("api-version", PREVIEW_API_VERSION),
        ("deployment", "rt-preview"),
    ]
    assert handshake.headers["OpenAI-Beta"] == "realtime=v1"
    assert handshake.headers["api-key"] == AZURE_KEY


async def test_refused_handshake_reaches_the_sdk(
    fake: FakeRealtime, server: Running
) -> None:
    fake.refuse(404)
    async with client_for(server, f"{TOKEN}:v1") as client:
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with client.realtime.connect(model="gpt-realtime"):
                pass
    response = caught.value.response
    assert response.status_code == 404
    error = json.loads(response.body or b"")["error"]
    assert error["code"] == "deployment_not_found"
    assert "rt-dep" in error["message"]


@pytest.mark.parametrize(
    ("version", "delta"),
    [("", "response.text.delta"), (":v1", "response.output_text.delta")],
)
async def test_demo_simulator_answers_realtime(
    tmp_path: Path, version: str, delta: str
) -> None:
    with running(["serve", "--demo", "--port", "0"], tmp_path / "demo.log") as demo:
        async with client_for(demo, DEMO_TOKEN + version) as client:
            connect: Any = (
                client.realtime.connect if version else client.beta.realtime.connect
            )
            async with connect(model="gpt-4o") as connection:
                first = await connection.recv()
                assert first.type == "session.created"
                await connection.send(
                    {"type": "response.create", "response": {"modalities": ["text"]}}
                )
                pieces = []
                async for event in connection:
                    if event.type == delta:
                        pieces.append(event.delta)
                    if event.type == "response.done":
                        break
    assert "".join(pieces).startswith("Hello! This is the azproxy simulator")


async def test_sigterm_closes_realtime_sessions_with_going_away(
    fake: FakeRealtime, tmp_path: Path
) -> None:
    env = {"AZPROXY_UPSTREAM": fake.url, "AZPROXY_SHUTDOWN_GRACE_S": "0.5"}
    with running(["serve", "--port", "0"], tmp_path / "log", env=env) as server:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                f"{server.url}/v1/realtime?model=gpt-realtime",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            server.process.send_signal(signal.SIGTERM)
            await ws.send_str("still here")  # the session works during the grace
            assert await ws.receive_str() == "still here"
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert (message.data, message.extra) == (1001, "azproxy is shutting down")
            await ws.close()
        await asyncio.wait_for(fake.closed.wait(), 5)
        assert fake.close == (1001, "azproxy is shutting down")
        deadline = time.monotonic() + 10
        while server.process.poll() is None:
            assert time.monotonic() < deadline, "azproxy did not exit"
            await asyncio.sleep(0.05)
        assert server.process.returncode == 0
        assert "closing 1 realtime session(s)" in server.log()


async def test_a_browser_key_never_reaches_the_log(
    fake: FakeRealtime, server: Running
) -> None:
    # Offered alone, the key protocol cannot be accepted (that would echo the
    # key), and aiohttp logs the offer: the log line must come out redacted.
    offered = key_protocol(TOKEN)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{server.url}/v1/realtime?model=gpt-realtime", protocols=(offered,)
        ) as ws,
    ):
        assert ws.protocol is None
        await ws.send_str("hi")
        assert await ws.receive_str() == "hi"
    assert fake.last.protocols == []
    log = server.log()
    assert "openai-insecure-api-key.[redacted]" in log
    for secret in (AZURE_KEY, offered[len("openai-insecure-api-key.") :]):
        assert secret not in log
