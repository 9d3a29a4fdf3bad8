"""Limits per access key on realtime sessions: a session is one request and
holds one concurrency slot while open; the usage each `response.done`
reports is counted toward tpm and the quota as it passes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import WSMsgType
from pytest_aiohttp import AiohttpClient, AiohttpServer

from azproxy import Config, create_app
from azproxy.realtime.frames import response_usage
from azproxy.settings.server_side import (
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)
from tests.clock import FakeClock
from tests.conftest import AZURE_KEY
from tests.realtime_fake import FakeRealtime, start_fake_realtime

KEY = "team-rt-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
PATH = "/v1/realtime?model=gpt-realtime"

# Azure's response.done, usage with nested details as the GA API sends it.
DONE = {
    "type": "response.done",
    "event_id": "event_1",
    "response": {
        "object": "realtime.response",
        "id": "resp_1",
        "status": "completed",
        "output": [{"type": "message", "content": [{"transcript": '"usage" 9'}]}],
        "usage": {
            "total_tokens": 300,
            "input_tokens": 120,
            "output_tokens": 180,
            "input_token_details": {
                "text_tokens": 20,
                "audio_tokens": 100,
                "cached_tokens": 64,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 64},
            },
            "output_token_details": {"text_tokens": 30, "audio_tokens": 150},
        },
    },
}


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeRealtime:
    return await start_fake_realtime(aiohttp_server)


@pytest.fixture
async def proxy(aiohttp_client: AiohttpClient, fake: FakeRealtime) -> Any:
    config = Config(
        endpoints=parse_endpoints(
            {"e": {"url": fake.url, "api_key": AZURE_KEY, "api_version": "v1"}}, {}
        ),
        model_map=parse_model_map({"gpt-realtime": "e/rt"}),
        access_keys=parse_access_keys(
            [{"key": KEY, "name": "voice", "tpm": 1000, "max_concurrent": 1}], {}
        ),
    )
    return await aiohttp_client(create_app(config, wall_clock=FakeClock()))


@pytest.mark.parametrize(
    ("frame", "usage"),
    [
        (json.dumps(DONE).encode(), (120, 180, 300)),
        (b'{"type":"response.done","response":{"usage":null}}', None),
        (b'{"type":"response.audio.delta","delta":"AAAA"}', None),
        # A transcript that quotes the markers is escaped JSON: not matched.
        (b'{"type":"x","text":"\\"response.done\\" \\"usage\\""}', None),
    ],
)
def test_response_usage(frame: bytes, usage: tuple[int, int, int] | None) -> None:
    assert response_usage(frame) == usage


async def test_response_done_usage_counts_and_a_session_holds_a_slot(
    proxy: Any, fake: FakeRealtime
) -> None:
    async with proxy.ws_connect(PATH, headers=AUTH) as ws:
        # 101: the budgets as admitted (a handshake reserves no tokens);
        # aiohttp keeps the handshake's response only as _response.
        assert ws._response.headers["x-azproxy-ratelimit-remaining-tokens"] == "1000"
        # A second session while this one is open: over max_concurrent.
        refused = await proxy.get(PATH, headers=AUTH | UPGRADE_HEADERS)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert len(fake.handshakes) == 1
        # The fake echoes: this arrives from "Azure" as its response.done.
        await ws.send_str(json.dumps(DONE))
        echoed = await ws.receive()
        assert echoed.type is WSMsgType.TEXT
        assert json.loads(echoed.data) == DONE
    # The session ended: its slot is back, and its 300 tokens counted.
    async with proxy.ws_connect(PATH, headers=AUTH) as ws:
        assert ws._response.headers["x-azproxy-ratelimit-remaining-tokens"] == "700"
    assert len(fake.handshakes) == 2
    metrics = await (await proxy.get("/metrics")).text()
    assert (
        'azproxy_tokens_total{deployment="rt",key="voice",kind="completion",'
        'model="gpt-realtime"} 180.0' in metrics
    )
    assert 'azproxy_limit_refusals_total{key="voice",kind="concurrency"} 1.0' in metrics


async def test_a_session_over_tpm_is_refused_at_the_handshake(
    proxy: Any, fake: FakeRealtime
) -> None:
    over = json.loads(json.dumps(DONE))
    over["response"]["usage"]["total_tokens"] = 1500
    async with proxy.ws_connect(PATH, headers=AUTH) as ws:
        await ws.send_str(json.dumps(over))
        await ws.receive()
    # 1500 tokens used of 1000 per minute: 500 must drain (30 s) before
    # the bucket has room again, even for a handshake that reserves none.
    refused = await proxy.get(PATH, headers=AUTH | UPGRADE_HEADERS)
    assert refused.status == 429
    assert refused.headers["x-azproxy-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["Retry-After"] == "30"
    assert refused.headers["retry-after-ms"] == "30000"
    assert len(fake.handshakes) == 1


UPGRADE_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}
