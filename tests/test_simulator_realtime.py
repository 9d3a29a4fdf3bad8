"""The simulator's realtime WebSocket: Azure's paths, key check, event shapes."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from azproxy.simulator import SIM_STATE, SimSettings, create_simulator

KEY = {"api-key": "sim-key"}
CLASSIC = "/openai/realtime?api-version=2025-04-01-preview&deployment=rt"
V1 = "/openai/v1/realtime?model=rt"
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.fixture
async def sim(aiohttp_client: AiohttpClient) -> Any:
    settings = SimSettings(
        api_key="sim-key", deployments=frozenset({"rt"}), chunks=3, chunk_delay_ms=0
    )
    return await aiohttp_client(create_simulator(settings))


async def events_until_done(ws: Any) -> list[dict[str, Any]]:
    events = []
    while True:
        event = await ws.receive_json()
        events.append(event)
        if event["type"] in ("response.done", "error"):
            return events


async def test_preview_protocol_text_response(sim: Any) -> None:
    async with sim.ws_connect(CLASSIC, headers=KEY, protocols=("realtime",)) as ws:
        assert ws.protocol == "realtime"
        created = await ws.receive_json()
        assert created["type"] == "session.created"
        assert created["session"]["model"] == "rt"
        await ws.send_json(
            {"type": "session.update", "session": {"modalities": ["text"]}}
        )
        updated = await ws.receive_json()
        assert updated["type"] == "session.updated"
        assert updated["session"]["modalities"] == ["text"]
        await ws.send_json({"type": "response.create"})
        events = await events_until_done(ws)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        *["response.text.delta"] * 3,
        "response.text.done",
        "response.done",
    ]
    assert "".join(e["delta"] for e in events[1:4]) == "Hello! This is"
    assert events[4]["text"] == "Hello! This is"
    assert events[-1]["response"]["status"] == "completed"
    assert sim.server.app[SIM_STATE].requests["rt"] == 1


async def test_ga_protocol_audio_response_and_binary_echo(sim: Any) -> None:
    async with sim.ws_connect(V1, headers=KEY) as ws:
        assert (await ws.receive_json())["session"]["type"] == "realtime"
        await ws.send_bytes(b"\x00\x01raw")
        assert await ws.receive_bytes() == b"\x00\x01raw"
        await ws.send_json({"type": "response.create"})
        events = await events_until_done(ws)
    kinds = [e["type"] for e in events]
    assert kinds.count("response.output_audio.delta") == 3
    assert kinds.count("response.output_audio_transcript.delta") == 3
    audio = base64.b64decode(events[2]["delta"])
    assert len(audio) == 2400
    assert kinds[-3:] == [
        "response.output_audio_transcript.done",
        "response.output_audio.done",
        "response.done",
    ]


async def test_unknown_event_and_bad_json_get_error_events(sim: Any) -> None:
    async with sim.ws_connect(V1, headers=KEY) as ws:
        await ws.receive_json()
        await ws.send_json({"type": "nonsense"})
        assert (await ws.receive_json())["error"]["code"] == "unknown_event"
        await ws.send_str("{not json")
        assert (await ws.receive_json())["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        (CLASSIC, {}, 401, "401"),
        (CLASSIC, {"api-key": "wrong"}, 401, "401"),
        ("/openai/realtime?api-version=2024-10-21&deployment=rt", KEY, 404, "404"),
        ("/openai/realtime?api-version=2025-04-01-preview", KEY, 404, "404"),
        ("/openai/v1/realtime?model=nope", KEY, 404, "DeploymentNotFound"),
        ("/openai/v1/realtime", KEY, 400, "BadRequest"),
    ],
)
async def test_refused_handshakes(
    sim: Any, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    response = await sim.get(path, headers=UPGRADE | headers)
    assert response.status == status
    assert (await response.json())["error"]["code"] == code
