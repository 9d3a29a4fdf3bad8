"""The simulator serves uploads and the resource-scoped APIs on classic and
v1 paths, checks what it receives, and echoes something a test can compare."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from azproxy.simulator import SimSettings, create_simulator
from azproxy.simulator.files import KEEP_BYTES
from tests.forms import AUDIO, BOUNDARY, CONTENT_TYPE, closing, field, file_part, form

KEY = {"api-key": "sim-key"}
Q = "?api-version=2024-10-21"
# For what only previews serve: image edits, responses, assistants, vector stores.
P = "?api-version=2025-04-01-preview"
FORM = KEY | {"Content-Type": CONTENT_TYPE}


@pytest.fixture
async def sim(aiohttp_client: AiohttpClient) -> Any:
    settings = SimSettings(api_key="sim-key", chunks=3, chunk_delay_ms=0)
    return await aiohttp_client(create_simulator(settings))


def events_of(body: bytes) -> list[tuple[str | None, Any]]:
    found = []
    for raw in body.decode().split("\n\n"):
        if not raw:
            continue
        name, data = None, ""
        for line in raw.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        found.append((name, data if data == "[DONE]" else json.loads(data)))
    return found


@pytest.mark.parametrize(
    "path",
    [
        f"/openai/deployments/whisper/audio/transcriptions{Q}",
        # v1 serves audio only in preview.
        "/openai/v1/audio/transcriptions?api-version=preview",
    ],
)
async def test_transcription_echoes_the_file_and_fields(sim: Any, path: str) -> None:
    body = form(field("model", "whisper"), field("language", "en"), file_part())
    response = await sim.post(path, data=body, headers=FORM)
    assert response.status == 200
    digest = hashlib.sha256(AUDIO).hexdigest()
    text = (await response.json())["text"]
    assert text == f"transcribed by whisper: speech.wav ({len(AUDIO)} bytes, " + (
        f"sha256 {digest})"
    )
    assert json.loads(response.headers["x-sim-form"]) == {
        "model": "whisper",
        "language": "en",
    }


async def test_translation_as_text(sim: Any) -> None:
    body = form(file_part(), field("response_format", "text"))
    response = await sim.post(
        f"/openai/deployments/w/audio/translations{Q}", data=body, headers=FORM
    )
    assert response.content_type == "text/plain"
    assert (await response.text()).startswith("translated by w: speech.wav")


async def test_image_edit_needs_image_and_prompt(sim: Any) -> None:
    path = f"/openai/deployments/img/images/edits{P}"
    png = file_part(
        b"\x89PNG", name="image", filename="i.png", content_type="image/png"
    )
    response = await sim.post(
        path, data=form(png, field("prompt", "hat")), headers=FORM
    )
    assert response.status == 200
    data = (await response.json())["data"]
    assert "i.png (4 bytes" in data[0]["revised_prompt"] and data[0]["b64_json"]
    response = await sim.post(path, data=form(png), headers=FORM)
    assert response.status == 400
    response = await sim.post(path, data=form(field("prompt", "x")), headers=FORM)
    assert response.status == 400


async def test_transcription_without_file_is_400(sim: Any) -> None:
    response = await sim.post(
        f"/openai/deployments/w/audio/transcriptions{Q}",
        data=form(field("model", "w")),
        headers=FORM,
    )
    assert response.status == 400


async def test_v1_refuses_a_dated_api_version(sim: Any) -> None:
    response = await sim.get("/openai/v1/files?api-version=2024-10-21", headers=KEY)
    assert response.status == 400
    response = await sim.get("/openai/v1/files?api-version=preview", headers=KEY)
    assert response.status == 200
    response = await sim.post(
        "/openai/v1/chat/completions?api-version=2024-10-21",
        json={"model": "d", "messages": []},
        headers=KEY,
    )
    assert response.status == 400


async def test_classic_resource_paths_need_an_api_version_and_a_key(sim: Any) -> None:
    assert (await sim.get("/openai/files", headers=KEY)).status == 404
    assert (await sim.get(f"/openai/files{Q}")).status == 401
    assert (await sim.get(f"/openai/files{Q}", headers=KEY)).status == 200


@pytest.mark.parametrize("prefix", ["/openai", "/openai/v1"])
async def test_files_round_trip(sim: Any, prefix: str) -> None:
    query = Q if prefix == "/openai" else ""
    content = b'{"custom_id": "1"}\n' * 10
    body = form(field("purpose", "batch"), file_part(content, filename="in.jsonl"))
    response = await sim.post(f"{prefix}/files{query}", data=body, headers=FORM)
    assert response.status == 200
    assert response.headers["x-sim-sha256"] == hashlib.sha256(content).hexdigest()
    record = await response.json()
    assert record["bytes"] == len(content) and record["filename"] == "in.jsonl"
    file_id = record["id"]
    listed = await (await sim.get(f"{prefix}/files{query}", headers=KEY)).json()
    assert [f["id"] for f in listed["data"]] == [file_id]
    got = await sim.get(f"{prefix}/files/{file_id}{query}", headers=KEY)
    assert (await got.json()) == record
    got = await sim.get(f"{prefix}/files/{file_id}/content{query}", headers=KEY)
    assert await got.read() == content
    # v1 serves batches only in preview.
    batches = Q if prefix == "/openai" else "?api-version=preview"
    batch = await sim.post(
        f"{prefix}/batches{batches}",
        json={"input_file_id": file_id, "endpoint": "/chat/completions"},
        headers=KEY,
    )
    batch_id = (await batch.json())["id"]
    got = await sim.get(f"{prefix}/batches/{batch_id}{batches}", headers=KEY)
    assert (await got.json())["input_file_id"] == file_id
    gone = await sim.delete(f"{prefix}/files/{file_id}{query}", headers=KEY)
    assert (await gone.json())["deleted"] is True
    missing = await sim.get(f"{prefix}/files/{file_id}{query}", headers=KEY)
    assert missing.status == 404


async def test_a_large_upload_is_hashed_not_kept(sim: Any) -> None:
    block = bytes(range(256)) * 1024  # 256 KiB
    count = 2 * KEEP_BYTES // len(block)
    head = (
        field("purpose", "batch")
        + (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.bin"\r\n\r\n'
        ).encode()
    )

    async def stream() -> AsyncIterator[bytes]:
        yield head
        for _ in range(count):
            yield block
        yield b"\r\n" + closing()

    response = await sim.post(f"/openai/files{Q}", data=stream(), headers=FORM)
    record = await response.json()
    assert record["bytes"] == count * len(block)
    expected = hashlib.sha256(block * count).hexdigest()
    assert response.headers["x-sim-sha256"] == expected
    content = await sim.get(f"/openai/files/{record['id']}/content{Q}", headers=KEY)
    assert content.status == 400


async def test_batch_needs_an_existing_file(sim: Any) -> None:
    response = await sim.post(
        f"/openai/batches{Q}", json={"input_file_id": "file-nope"}, headers=KEY
    )
    assert response.status == 400


async def test_responses_create_retrieve_items_delete(sim: Any) -> None:
    created = await sim.post(
        "/openai/v1/responses", json={"model": "dep", "input": "Hi"}, headers=KEY
    )
    document = await created.json()
    assert document["object"] == "response" and document["model"] == "dep"
    assert document["output"][0]["content"][0]["text"] == "Hello! This is"
    rid = document["id"]
    got = await sim.get(f"/openai/v1/responses/{rid}", headers=KEY)
    assert (await got.json()) == document
    items = await (
        await sim.get(f"/openai/v1/responses/{rid}/input_items", headers=KEY)
    ).json()
    assert items["data"][0]["content"] == [{"type": "input_text", "text": "Hi"}]
    gone = await sim.delete(f"/openai/v1/responses/{rid}", headers=KEY)
    assert (await gone.json())["deleted"] is True
    assert (await sim.get(f"/openai/v1/responses/{rid}", headers=KEY)).status == 404


async def test_responses_stream_is_named_events(sim: Any) -> None:
    response = await sim.post(
        f"/openai/responses{P}",
        json={"model": "dep", "input": "Hi", "stream": True},
        headers=KEY,
    )
    assert response.content_type == "text/event-stream"
    events = events_of(await response.read())
    names = [name for name, _ in events]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert all(data["type"] == name for name, data in events)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    deltas = [d["delta"] for n, d in events if n == "response.output_text.delta"]
    assert (
        "".join(deltas) == events[-1][1]["response"]["output"][0]["content"][0]["text"]
    )


async def test_assistant_thread_run_stream(sim: Any) -> None:
    assistant = await (
        await sim.post(f"/openai/assistants{P}", json={"model": "dep"}, headers=KEY)
    ).json()
    thread = await (await sim.post(f"/openai/threads{P}", headers=KEY)).json()
    tid = thread["id"]
    message = await sim.post(
        f"/openai/threads/{tid}/messages{P}",
        json={"role": "user", "content": "hi"},
        headers=KEY,
    )
    assert (await message.json())["content"][0]["text"]["value"] == "hi"
    run = await sim.post(
        f"/openai/threads/{tid}/runs{P}",
        json={"assistant_id": assistant["id"], "stream": True},
        headers=KEY,
    )
    events = events_of(await run.read())
    assert events[0][0] == "thread.run.created"
    assert events[-1] == ("done", "[DONE]")
    listed = await (
        await sim.get(f"/openai/threads/{tid}/messages{P}", headers=KEY)
    ).json()
    assert [m["role"] for m in listed["data"]] == ["assistant", "user"]
    run_id = events[0][1]["id"]
    got = await sim.get(f"/openai/threads/{tid}/runs/{run_id}{P}", headers=KEY)
    assert (await got.json())["status"] == "completed"


async def test_vector_store_with_a_file(sim: Any) -> None:
    upload = await sim.post(
        f"/openai/files{P}",
        data=form(field("purpose", "assistants"), file_part(b"doc")),
        headers=FORM,
    )
    file_id = (await upload.json())["id"]
    store = await (
        await sim.post(f"/openai/vector_stores{P}", json={"name": "kb"}, headers=KEY)
    ).json()
    assert store["name"] == "kb"
    added = await sim.post(
        f"/openai/vector_stores/{store['id']}/files{P}",
        json={"file_id": file_id},
        headers=KEY,
    )
    assert (await added.json())["vector_store_id"] == store["id"]
    listed = await (
        await sim.get(f"/openai/vector_stores/{store['id']}/files{P}", headers=KEY)
    ).json()
    assert [f["id"] for f in listed["data"]] == [file_id]


async def test_async_filter_per_request_header(sim: Any) -> None:
    response = await sim.post(
        f"/openai/deployments/d/chat/completions{Q}",
        json={"stream": True},
        headers=KEY | {"x-sim-async-filter": "1"},
    )
    body = await response.read()
    assert b"content_filter_offsets" in body


async def test_unknown_resource_path_is_404(sim: Any) -> None:
    assert (await sim.get(f"/openai/files/a/b/c{Q}", headers=KEY)).status == 404
