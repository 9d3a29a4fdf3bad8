"""The openai SDK reaches every endpoint family through the real `azproxy
serve` with default settings, against the built-in simulator (`azproxy
simulate`), which serves a path only with the api-versions Azure serves it
with: a wrong routing table in azproxy fails here."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import AZURE_KEY
from tests.forms import AUDIO
from tests.processes import SIMULATOR, Running, running

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    log = tmp_path_factory.mktemp("sim") / "simulator.log"
    args = ["simulate", "--port", "0", "--chunks", "3", "--chunk-delay-ms", "0"]
    env = {"AZPROXY_SIM_API_KEY": AZURE_KEY}
    with running(args, log, env=env, ready=SIMULATOR) as sim:
        yield sim


@pytest.fixture(scope="module")
def azproxy(
    simulator: Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    log = tmp_path_factory.mktemp("azproxy") / "azproxy.log"
    # Nothing but the upstream: the default api_version, no overrides.
    with running(
        ["serve", "--port", "0"], log, env={"AZPROXY_UPSTREAM": simulator.url}
    ) as server:
        yield server


def client_for(server: Running, version: str = "") -> openai.AsyncOpenAI:
    token = f"sim:gpt-4o|dep-4o,whisper|dep-w,gpt-image-1|dep-img:{AZURE_KEY}"
    return openai.AsyncOpenAI(
        base_url=f"{server.url}/v1", api_key=token + version, max_retries=0
    )


def answered(simulator: Running, deployment: str) -> int:
    with urllib.request.urlopen(f"{simulator.url}/_sim/stats", timeout=5) as got:
        count: int = json.load(got)["requests"].get(deployment, 0)
    return count


@pytest.mark.parametrize("version", ["", ":2024-10-21"])
async def test_responses_with_the_default_version(
    azproxy: Running, version: str
) -> None:
    async with client_for(azproxy, version) as client:
        created = await client.responses.create(model="gpt-4o", input="Hello")
        stream = await client.responses.create(
            model="gpt-4o", input="Hello", stream=True
        )
        events = [event.type async for event in stream]
        retrieved = await client.responses.retrieve(created.id)
        await client.responses.delete(created.id)
    assert created.status == "completed"
    assert created.output_text == "Hello! This is"  # --chunks 3 words
    # The simulator echoes the model it got: the deployment, as v1 wants.
    assert created.model == "dep-4o"
    assert events[0] == "response.created" and events[-1] == "response.completed"
    assert retrieved.id == created.id


# OpenAI deprecated the Assistants API (the SDK warns); Azure still serves it.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", ["", ":v1"])
async def test_assistants_and_vector_stores(azproxy: Running, version: str) -> None:
    async with client_for(azproxy, version) as client:
        assistant = await client.beta.assistants.create(model="gpt-4o", name="a")
        thread = await client.beta.threads.create()
        await client.beta.threads.messages.create(thread.id, role="user", content="Hi")
        run = await client.beta.threads.runs.create(
            thread.id, assistant_id=assistant.id
        )
        store = await client.vector_stores.create(name="kb")
    assert assistant.model == "dep-4o"
    assert run.thread_id == thread.id
    assert store.name == "kb"


@pytest.mark.parametrize("version", ["", ":v1"])
async def test_speech_image_edits_and_transcriptions(
    azproxy: Running, simulator: Running, version: str
) -> None:
    before = answered(simulator, "dep-img")
    async with client_for(azproxy, version) as client:
        speech = await client.audio.speech.create(
            model="gpt-4o", voice="alloy", input="hi"
        )
        edit = await client.images.edit(
            model="gpt-image-1", image=("cat.png", PNG, "image/png"), prompt="a hat"
        )
        transcript = await client.audio.transcriptions.create(
            model="whisper", file=("speech.wav", AUDIO, "audio/wav")
        )
    assert speech.content
    assert edit.data
    assert transcript.text.startswith("transcribed by dep-w")
    assert answered(simulator, "dep-img") == before + 1


@pytest.mark.parametrize("version", ["", ":v1"])
async def test_chat_embeddings_files_and_batches(
    azproxy: Running, version: str
) -> None:
    async with client_for(azproxy, version) as client:
        chat = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        embedding = await client.embeddings.create(model="gpt-4o", input="x")
        uploaded = await client.files.create(
            file=("in.jsonl", b'{"custom_id": "1"}\n'), purpose="batch"
        )
        batch = await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    assert chat.choices[0].message.content
    assert embedding.data
    assert batch.input_file_id == uploaded.id


async def test_the_simulator_refuses_what_azure_does_not_serve(
    simulator: Running,
) -> None:
    # What azproxy used to send for client.responses.create(...).
    request = urllib.request.Request(
        f"{simulator.url}/openai/responses?api-version=2024-10-21",
        data=b'{"model": "dep-4o", "input": "Hello"}',
        headers={"api-key": AZURE_KEY, "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 404
    assert json.load(caught.value) == {
        "error": {"code": "404", "message": "Resource not found"}
    }


def stream_lines(server: Running, path: str) -> list[dict[str, Any]]:
    """The access-log lines of the streams on `path` so far."""
    lines = [json.loads(x) for x in server.log().splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("path") == path and x.get("stream")]


def next_stream_line(server: Running, path: str, seen: int) -> dict[str, Any]:
    """The stream line after the first `seen`, once azproxy wrote it."""
    deadline = time.monotonic() + 5
    while len(lines := stream_lines(server, path)) <= seen:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.02)
    return lines[seen]


# The simulator refuses stream_options where Azure does (2024-02-01 here): a
# stream azproxy asked for usage there would fail. Elsewhere azproxy asks,
# the client sees no usage chunk, and the log has the simulator's tokens.
@pytest.mark.parametrize(
    ("version", "estimated"),
    [("", False), (":v1", False), (":2024-10-21", False), (":2024-02-01", True)],
)
async def test_a_stream_without_include_usage_is_counted(
    azproxy: Running, version: str, estimated: bool
) -> None:
    paths = ("/v1/chat/completions", "/v1/completions")
    seen = {path: len(stream_lines(azproxy, path)) for path in paths}
    async with client_for(azproxy, version) as client:
        chat = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in chat]
        completion = await client.completions.create(
            model="gpt-4o", prompt="Say hi", stream=True
        )
        texts = [chunk async for chunk in completion]
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "Hello! This is"  # the simulator's three pieces
    assert all(chunk.choices and chunk.usage is None for chunk in texts)
    for path in paths:
        line = next_stream_line(azproxy, path, seen[path])
        assert line["status"] == 200 and line["key"] == "passthrough"
        assert line["model"] == "gpt-4o"
        assert line["usage_estimated"] is estimated
        if not estimated:
            assert line["completion_tokens"] == 3  # the simulator's count
