"""The built-in simulator answers in Azure's shapes and fails on purpose."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from azproxy.simulator import SIM_STATE, SimSettings, apply_faults, create_simulator

CHAT = "/openai/deployments/d1/chat/completions?api-version=2024-10-21"
KEY = {"api-key": "sim-key"}


@pytest.fixture
async def sim(aiohttp_client: AiohttpClient) -> Any:
    settings = SimSettings(api_key="sim-key", chunks=4, chunk_delay_ms=0)
    return await aiohttp_client(create_simulator(settings))


def events_of(body: bytes) -> list[Any]:
    raw = [e for e in body.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in raw)
    return [e[6:].decode() if e == b"data: [DONE]" else json.loads(e[6:]) for e in raw]


async def test_chat_json_has_azure_fields(sim: Any) -> None:
    response = await sim.post(
        CHAT, json={"model": "gpt-4o", "messages": []}, headers=KEY
    )
    body = await response.json()
    assert response.headers["apim-request-id"]
    assert body["object"] == "chat.completion"
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert body["choices"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert body["usage"]["completion_tokens"] == 4


async def test_chat_stream_has_azure_shape(sim: Any) -> None:
    response = await sim.post(
        CHAT,
        json={"stream": True, "stream_options": {"include_usage": True}},
        headers=KEY,
    )
    assert response.content_type == "text/event-stream"
    events = events_of(await response.read())
    assert events[0]["choices"] == [] and events[0]["id"] == ""
    assert events[1]["choices"][0]["delta"]["role"] == "assistant"
    contents = [e["choices"][0]["delta"]["content"] for e in events[2:6]]
    assert "".join(contents) == "Hello! This is the"
    assert events[6]["choices"][0]["finish_reason"] == "stop"
    assert events[7]["choices"] == [] and events[7]["usage"]["total_tokens"] > 0
    assert events[8] == "[DONE]"


async def test_async_filter_adds_delta_less_chunks(
    aiohttp_client: AiohttpClient,
) -> None:
    sim = await aiohttp_client(
        create_simulator(SimSettings(chunks=2, chunk_delay_ms=0, async_filter=True))
    )
    response = await sim.post(CHAT, json={"stream": True}, headers=KEY)
    events = events_of(await response.read())
    annotations = [e for e in events[1:-1] if "delta" not in e["choices"][0]]
    assert len(annotations) == 2
    assert all(e["id"] == "" for e in annotations)


async def test_wrong_key_missing_version_and_unknown_deployment(
    aiohttp_client: AiohttpClient,
) -> None:
    sim = await aiohttp_client(
        create_simulator(SimSettings(api_key="k", deployments=frozenset({"d1"})))
    )
    wrong = await sim.post(CHAT, json={}, headers={"api-key": "x"})
    assert wrong.status == 401
    no_version = await sim.post(
        "/openai/deployments/d1/chat/completions", json={}, headers={"api-key": "k"}
    )
    assert no_version.status == 404
    missing = await sim.post(
        CHAT.replace("d1", "nope"), json={}, headers={"api-key": "k"}
    )
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "DeploymentNotFound"


async def test_v1_paths_take_the_deployment_from_model(sim: Any) -> None:
    response = await sim.post(
        "/openai/v1/chat/completions", json={"model": "d1"}, headers=KEY
    )
    assert response.status == 200
    assert sim.app[SIM_STATE].requests["d1"] == 1


async def test_fault_plan_then_sticky(sim: Any) -> None:
    apply_faults(sim.app[SIM_STATE], "d1", ["500", "429*"])
    first = await sim.post(CHAT, json={}, headers=KEY)
    assert first.status == 500
    for _ in range(2):
        limited = await sim.post(
            CHAT, json={}, headers=KEY | {"x-sim-retry-after-ms": "2500"}
        )
        assert limited.status == 429
        assert limited.headers["retry-after-ms"] == "2500"
        assert limited.headers["retry-after"] == "3"
    cleared = await sim.post("/_sim/faults", json={"deployment": "d1", "faults": []})
    assert cleared.status == 200
    assert (await sim.post(CHAT, json={}, headers=KEY)).status == 200
    stats = await (await sim.get("/_sim/stats")).json()
    assert stats["requests"]["d1"] == 4


async def test_overloaded_fault_is_a_200_stream_with_an_error_event(sim: Any) -> None:
    response = await sim.post(
        CHAT, json={"stream": True}, headers=KEY | {"x-sim-fault": "overloaded"}
    )
    assert response.status == 200
    events = events_of(await response.read())
    assert events[0]["error"]["message"].startswith(
        "That model is currently overloaded"
    )


async def test_abort_fault_cuts_the_stream(sim: Any) -> None:
    import aiohttp

    response = await sim.post(
        CHAT,
        json={"stream": True},
        headers=KEY | {"x-sim-fault": "abort", "x-sim-abort-after": "3"},
    )
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_embeddings_base64_and_float(sim: Any) -> None:
    url = "/openai/deployments/e/embeddings?api-version=2024-10-21"
    floats = await (
        await sim.post(url, json={"input": ["a", "b"], "dimensions": 3}, headers=KEY)
    ).json()
    assert [len(d["embedding"]) for d in floats["data"]] == [3, 3]
    packed = await (
        await sim.post(
            url, json={"input": "a", "encoding_format": "base64"}, headers=KEY
        )
    ).json()
    assert isinstance(packed["data"][0]["embedding"], str)


async def test_speech_is_binary_and_deterministic(sim: Any) -> None:
    # Speech is preview-only: 2024-10-21 does not serve it (see test_served).
    url = "/openai/deployments/tts/audio/speech?api-version=2025-04-01-preview"
    one = await sim.post(url, json={"input": "hi"}, headers=KEY)
    two = await sim.post(url, json={"input": "hi"}, headers=KEY)
    assert one.content_type == "audio/mpeg"
    assert await one.read() == await two.read()


async def test_bad_fault_plan_is_rejected(sim: Any) -> None:
    response = await sim.post(
        "/_sim/faults", json={"deployment": "d1", "faults": ["x"]}
    )
    assert response.status == 400


@pytest.mark.parametrize(
    "path",
    [
        "/openai/deployments/d1/chat/completions?api-version=2024-10-21",
        "/openai/deployments/d1/completions?api-version=2024-10-21",
    ],
)
async def test_stream_usage_only_when_asked(sim: Any, path: str) -> None:
    plain = events_of(
        await (await sim.post(path, json={"stream": True}, headers=KEY)).read()
    )
    assert all("usage" not in e for e in plain[:-1]) and plain[-1] == "[DONE]"
    body = {"stream": True, "stream_options": {"include_usage": True}}
    asked = events_of(await (await sim.post(path, json=body, headers=KEY)).read())
    *chunks, last, done = asked
    assert done == "[DONE]"
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 4
    # As Azure does: every chunk but Azure's prompt-filter one says null.
    assert all(c["usage"] is None for c in chunks[1:])
    assert len(chunks) == len(plain) - 1


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("/openai/deployments/d1/chat/completions?api-version=2024-10-21", True),
        (
            "/openai/deployments/d1/chat/completions?api-version=2024-09-01-preview",
            True,
        ),
        (
            "/openai/deployments/d1/chat/completions?api-version=2025-04-01-preview",
            True,
        ),
        ("/openai/v1/chat/completions", True),
        ("/openai/deployments/d1/chat/completions?api-version=2024-02-01", False),
        ("/openai/deployments/d1/chat/completions?api-version=2024-06-01", False),
        ("/openai/deployments/d1/completions?api-version=2024-08-01-preview", False),
    ],
)
async def test_stream_options_only_where_azure_takes_them(
    sim: Any, path: str, served: bool
) -> None:
    body = {"model": "d1", "stream": True, "stream_options": {"include_usage": True}}
    response = await sim.post(path, json=body, headers=KEY)
    if served:
        assert response.status == 200
        assert events_of(await response.read())[-2]["usage"]["total_tokens"] > 0
    else:
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["code"] == "unknown_parameter"
        assert "stream_options" in error["message"]
