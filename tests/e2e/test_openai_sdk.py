"""The official openai SDK drives the real `azproxy serve` process, whose
upstream is a recording FakeAzure on loopback: both ends are asserted."""

from __future__ import annotations

import base64
import json
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import AZURE_KEY
from tests.fakes import (
    CHAT_JSON,
    FakeAzure,
    json_answer,
    raw_answer,
    sse_answer,
    sse_event,
)
from tests.processes import Running, running

TOKEN = f"myresource:gpt-4o|dep-4o,gpt-4o-mini|dep-mini:{AZURE_KEY}:2024-10-21"


@pytest.fixture
def server(fake_azure: FakeAzure, tmp_path: Path) -> Iterator[Running]:
    env = {
        "AZPROXY_UPSTREAM": fake_azure.url,
        "AZPROXY_LOG_LEVEL": "debug",
        "AZPROXY_RETRY_DELAY_S": "0.05",
    }
    with running(["serve", "--port", "0"], tmp_path / "azproxy.log", env=env) as proc:
        yield proc


def client_for(server: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.url}/v1",
        api_key=TOKEN,
        organization="org-should-not-leak",
        max_retries=0,
    )


def assert_upstream_got(
    fake: FakeAzure, path: str, body: dict[str, object], version: str = "2024-10-21"
) -> None:
    sent = fake.last
    assert sent.path == path
    assert sent.query["api-version"] == version
    assert sent.headers["api-key"] == AZURE_KEY
    for name in ("Authorization", "OpenAI-Organization"):
        assert name not in sent.headers
    assert json.loads(sent.body) == body


async def test_chat_completion(fake_azure: FakeAzure, server: Running) -> None:
    async with client_for(server) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content == "Hi from FakeAzure"
    assert completion.usage is not None and completion.usage.total_tokens == 7
    assert_upstream_got(
        fake_azure,
        "/openai/deployments/dep-mini/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )


async def test_chat_stream(fake_azure: FakeAzure, server: Running) -> None:
    words = ["Hel", "lo", "!"]
    events = [sse_event({"choices": [], "prompt_filter_results": []})] + [
        sse_event(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": w}}],
            }
        )
        for w in words
    ]
    fake_azure.queue(sse_answer([*events, sse_event("[DONE]")], delay_s=0.01))
    async with client_for(server) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert pieces == words
    assert fake_azure.last.path == "/openai/deployments/dep-4o/chat/completions"
    assert json.loads(fake_azure.last.body)["stream"] is True


async def test_stream_cut_by_azure_raises_in_the_sdk(
    fake_azure: FakeAzure, server: Running
) -> None:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": "partial"}}],
    }
    fake_azure.queue(sse_answer([sse_event(chunk)], then="abort"))
    received = []
    async with client_for(server) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            async for c in stream:
                received.append(c.choices[0].delta.content)
    assert received == ["partial"]
    assert "incomplete" in caught.value.message


async def test_completions(fake_azure: FakeAzure, server: Running) -> None:
    fake_azure.queue(
        json_answer(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 1,
                "model": "gpt-35-turbo-instruct",
                "choices": [
                    {
                        "index": 0,
                        "text": "done",
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
            }
        )
    )
    async with client_for(server) as client:
        completion = await client.completions.create(model="gpt-4o", prompt="Say done")
    assert completion.choices[0].text == "done"
    assert_upstream_got(
        fake_azure,
        "/openai/deployments/dep-4o/completions",
        {"model": "gpt-4o", "prompt": "Say done"},
    )


async def test_embeddings_base64_default(
    fake_azure: FakeAzure, server: Running
) -> None:
    vector = [0.5, -0.25, 1.0]
    packed = base64.b64encode(struct.pack("<3f", *vector)).decode()
    fake_azure.queue(
        json_answer(
            {
                "object": "list",
                "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": packed}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )
    )
    async with client_for(server) as client:
        result = await client.embeddings.create(model="gpt-4o-mini", input="hello")
    assert result.data[0].embedding == vector
    assert fake_azure.last.path == "/openai/deployments/dep-mini/embeddings"
    assert json.loads(fake_azure.last.body)["input"] == "hello"


async def test_image_generation(fake_azure: FakeAzure, server: Running) -> None:
    fake_azure.queue(
        json_answer({"created": 1, "data": [{"url": "https://blob/x.png"}]})
    )
    async with client_for(server) as client:
        images = await client.images.generate(model="gpt-4o", prompt="a cat")
    assert images.data is not None and images.data[0].url == "https://blob/x.png"
    assert_upstream_got(
        fake_azure,
        "/openai/deployments/dep-4o/images/generations",
        {"model": "gpt-4o", "prompt": "a cat"},
    )


async def test_audio_speech_binary(fake_azure: FakeAzure, server: Running) -> None:
    audio = bytes(range(256)) * 100
    fake_azure.queue(raw_answer(audio, "audio/mpeg"))
    async with client_for(server) as client:
        speech = await client.audio.speech.create(
            model="gpt-4o-mini", voice="alloy", input="Hello"
        )
        content = await speech.aread()
    assert content == audio
    assert_upstream_got(
        fake_azure,
        "/openai/deployments/dep-mini/audio/speech",
        {"model": "gpt-4o-mini", "voice": "alloy", "input": "Hello"},
        # 2024-10-21 has no speech; the latest preview serves it.
        version="2025-04-01-preview",
    )


async def test_models_list(server: Running) -> None:
    async with client_for(server) as client:
        models = [m.id async for m in client.models.list()]
    assert models == ["gpt-4o", "gpt-4o-mini"]


async def test_the_access_log_has_a_json_line_per_request(
    fake_azure: FakeAzure, server: Running
) -> None:
    async with client_for(server) as client:
        await client.chat.completions.create(model="gpt-4o-mini", messages=[])
    server.process.send_signal(signal.SIGTERM)  # flushes the log
    server.process.wait(10)
    lines = [
        json.loads(line)
        for line in server.log().splitlines()
        if line.startswith("{") and '"request_id"' in line
    ]
    (line,) = [x for x in lines if x["path"] == "/v1/chat/completions"]
    assert line["status"] == 200 and line["model"] == "gpt-4o-mini"
    assert line["deployment"] == "dep-mini" and line["total_tokens"] == 7


async def test_rate_limit_reaches_the_sdk_with_retry_after(
    fake_azure: FakeAzure, server: Running
) -> None:
    fake_azure.queue(
        json_answer(
            {"error": {"code": "429", "message": "Rate limit is exceeded."}},
            status=429,
            headers={"retry-after": "3"},
        )
    )
    async with client_for(server) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4o", messages=[])
    assert caught.value.response.headers["retry-after"] == "3"
    assert len(fake_azure.requests) == 1


async def test_the_key_never_appears_in_the_servers_log(
    fake_azure: FakeAzure, server: Running
) -> None:
    # Exercise success, upstream errors, a cut stream and malformed tokens,
    # all at debug level, then grep everything the server wrote.
    fake_azure.queue(
        json_answer({"error": {"code": "401"}}, status=401),
        json_answer({"error": {}}, status=500),
        json_answer({"error": {}}, status=500),
        json_answer({"error": {}}, status=500),
        json_answer({"error": {}}, status=500),
        sse_answer([sse_event({"choices": []})], then="abort"),
    )
    async with client_for(server) as client:
        for _ in range(2):
            with pytest.raises(openai.APIError):
                await client.chat.completions.create(model="gpt-4o", messages=[])
        with pytest.raises(openai.APIError):
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=[], stream=True
            )
            async for _ in stream:
                pass
        await client.chat.completions.create(model="gpt-4o", messages=[])
    for bad in (f"bad.res:d:{AZURE_KEY}", f"{AZURE_KEY}:d", f"r:d:{AZURE_KEY}:x"):
        async with openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key=bad, max_retries=0
        ) as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await client.chat.completions.create(model="gpt-4o", messages=[])
            assert AZURE_KEY not in str(caught.value.body)
    log = server.log()
    assert "retry 3/3" in log  # the log did record the failures
    assert AZURE_KEY not in log
    assert str(CHAT_JSON["id"]) not in log  # no answer bodies either


async def test_environment_only_server_side_setup(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    # The container recipe: Azure credentials in the environment, clients
    # holding only an azproxy access key.
    access_key = "client-access-key-0123456789"
    env = {
        "AZURE_OPENAI_ENDPOINT": fake_azure.url,
        "AZURE_OPENAI_API_KEY": AZURE_KEY,
        "OPENAI_API_VERSION": "2024-06-01",
        "AZPROXY_MODEL_MAP": "gpt-4o=prod-4o,gpt-4o-mini=prod-mini",
        "AZPROXY_ACCESS_KEYS": access_key,
    }
    with running(["serve", "--port", "0"], tmp_path / "log", env=env) as server:
        async with openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key=access_key, max_retries=0
        ) as client:
            completion = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            assert completion.choices[0].message.content == "Hi from FakeAzure"
            assert [m.id async for m in client.models.list()] == [
                "gpt-4o",
                "gpt-4o-mini",
            ]
        sent = fake_azure.last
        assert sent.path == "/openai/deployments/prod-mini/chat/completions"
        assert sent.query["api-version"] == "2024-06-01"
        assert sent.headers["api-key"] == AZURE_KEY
        async with openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key="not-the-key", max_retries=0
        ) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="gpt-4o", messages=[])
        assert len(fake_azure.requests) == 1
        log = server.log()
    assert AZURE_KEY not in log and access_key not in log
