"""The official openai SDK drives the real `azproxy serve` process through the
wider API surface (uploads, files, batches, responses, assistants, vector
stores, Azure's v1 API, sse_compat), its upstream a recording FakeAzure:
what the SDK gets and what Azure got are both asserted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import AZURE_KEY
from tests.fakes import (
    CHAT_JSON,
    FakeAzure,
    Recorded,
    json_answer,
    raw_answer,
    sse_answer,
    sse_event,
)
from tests.forms import (
    AUDIO,
    CONTENT_TYPE,
    field,
    file_part,
    form,
    parse_form,
)
from tests.processes import Running, running
from tests.unit.test_sse import AZURE_CHAT, kept, whole

VERSION = "2024-10-21"
# What the default version does not serve goes to the latest preview (or v1).
PREVIEW = "2025-04-01-preview"
TOKEN = (
    "myresource:gpt-4o|dep-4o,whisper|dep-whisper,gpt-image-1|dep-img:"
    f"{AZURE_KEY}:{VERSION}"
)
V1_TOKEN = f"myresource:gpt-4o|dep-4o,whisper|dep-whisper:{AZURE_KEY}:v1"


def start(fake: FakeAzure, log: Path, **env: str) -> Any:
    base = {"AZPROXY_UPSTREAM": fake.url, "AZPROXY_RETRY_DELAY_S": "0.05"}
    return running(["serve", "--port", "0"], log, env=base | env)


@pytest.fixture
def server(fake_azure: FakeAzure, tmp_path: Path) -> Iterator[Running]:
    with start(fake_azure, tmp_path / "azproxy.log") as proc:
        yield proc


def client_for(
    server: Running, token: str = TOKEN, **options: Any
) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.url}/v1",
        api_key=token,
        organization="org-should-not-leak",
        max_retries=0,
        **options,
    )


def check_sent(
    sent: Recorded, method: str, path: str, version: str | None = VERSION
) -> None:
    """The request reached Azure's path with Azure's key and nothing of ours."""
    assert (sent.method, sent.path) == (method, path)
    query = [("api-version", version)] if version else []
    assert list(sent.query.items()) == query
    assert sent.headers["api-key"] == AZURE_KEY
    for name in ("Authorization", "OpenAI-Organization"):
        assert name not in sent.headers


# --- uploads ------------------------------------------------------------------


async def test_audio_transcription_with_a_file(
    fake_azure: FakeAzure, server: Running
) -> None:
    fake_azure.queue(json_answer({"text": "hello world"}))
    async with client_for(server) as client:
        result = await client.audio.transcriptions.create(
            model="whisper", file=("speech.wav", AUDIO, "audio/wav"), language="en"
        )
    assert result.text == "hello world"
    sent = fake_azure.last
    check_sent(sent, "POST", "/openai/deployments/dep-whisper/audio/transcriptions")
    content_type = sent.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    assert sent.headers["Content-Length"] == str(len(sent.body))
    parts = parse_form(content_type, sent.body)
    # The Python SDK sends the fields first: they arrive unchanged, file intact.
    assert parts == [
        ("model", None, b"whisper"),
        ("language", None, b"en"),
        ("file", "speech.wav", AUDIO),
    ]


async def test_audio_translation_with_the_file_before_the_model(
    fake_azure: FakeAzure, server: Running
) -> None:
    # The order some clients (Node) use, built by hand and sent raw.
    body = form(file_part(), field("model", "whisper"))
    fake_azure.queue(json_answer({"text": "bonjour"}))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/v1/audio/translations",
            data=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": CONTENT_TYPE},
        ) as response,
    ):
        assert response.status == 200
        assert await response.json() == {"text": "bonjour"}
        assert response.headers["x-azproxy-deployment"] == "dep-whisper"
    sent = fake_azure.last
    check_sent(sent, "POST", "/openai/deployments/dep-whisper/audio/translations")
    assert sent.headers["Content-Type"] == CONTENT_TYPE
    assert sent.body == body


async def test_image_edit(fake_azure: FakeAzure, server: Running) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    fake_azure.queue(json_answer({"created": 1, "data": [{"b64_json": "aGk="}]}))
    async with client_for(server) as client:
        result = await client.images.edit(
            model="gpt-image-1", image=("cat.png", png, "image/png"), prompt="a hat"
        )
    assert result.data is not None and result.data[0].b64_json == "aGk="
    sent = fake_azure.last
    check_sent(sent, "POST", "/openai/deployments/dep-img/images/edits", PREVIEW)
    parts = parse_form(sent.headers["Content-Type"], sent.body)
    assert ("image", "cat.png", png) in parts
    assert ("model", None, b"gpt-image-1") in parts
    assert ("prompt", None, b"a hat") in parts


# --- files and batches ----------------------------------------------------------

FILE = {
    "id": "file-abc",
    "object": "file",
    "bytes": 40,
    "created_at": 1,
    "filename": "in.jsonl",
    "purpose": "batch",
    "status": "processed",
}


async def test_files_upload_list_retrieve_content_delete(
    fake_azure: FakeAzure, server: Running
) -> None:
    content = b'{"custom_id": "1", "method": "POST"}\n' * 3
    fake_azure.queue(
        json_answer(FILE),
        json_answer({"object": "list", "data": [FILE], "has_more": False}),
        json_answer(FILE),
        raw_answer(content, "application/octet-stream"),
        json_answer({"id": "file-abc", "object": "file", "deleted": True}),
    )
    async with client_for(server) as client:
        created = await client.files.create(
            file=("in.jsonl", content, "application/jsonl"), purpose="batch"
        )
        listed = [f.id async for f in client.files.list(purpose="batch")]
        retrieved = await client.files.retrieve("file-abc")
        downloaded = await (await client.files.content("file-abc")).aread()
        deleted = await client.files.delete("file-abc")
    assert created.id == retrieved.id == "file-abc"
    assert listed == ["file-abc"]
    assert downloaded == content
    assert deleted.deleted is True
    upload, listing, retrieve, download, delete = fake_azure.requests
    check_sent(upload, "POST", "/openai/files")
    assert parse_form(upload.headers["Content-Type"], upload.body) == [
        ("purpose", None, b"batch"),
        ("file", "in.jsonl", content),
    ]
    assert upload.headers["Content-Length"] == str(len(upload.body))
    assert listing.path == "/openai/files"
    assert list(listing.query.items()) == [
        ("purpose", "batch"),
        ("api-version", VERSION),
    ]
    check_sent(retrieve, "GET", "/openai/files/file-abc")
    check_sent(download, "GET", "/openai/files/file-abc/content")
    check_sent(delete, "DELETE", "/openai/files/file-abc")


BATCH = {
    "id": "batch_1",
    "object": "batch",
    "endpoint": "/chat/completions",
    "input_file_id": "file-abc",
    "completion_window": "24h",
    "status": "validating",
    "created_at": 1,
}


async def test_batches_create_and_retrieve(
    fake_azure: FakeAzure, server: Running
) -> None:
    fake_azure.queue(json_answer(BATCH), json_answer(BATCH | {"status": "completed"}))
    async with client_for(server) as client:
        batch = await client.batches.create(
            input_file_id="file-abc",
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        again = await client.batches.retrieve(batch.id)
    assert again.status == "completed"
    create, retrieve = fake_azure.requests
    check_sent(create, "POST", "/openai/batches")
    assert json.loads(create.body) == {
        "input_file_id": "file-abc",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    check_sent(retrieve, "GET", "/openai/batches/batch_1")


# --- responses ------------------------------------------------------------------

RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "completed",
    "model": "dep-4o",
    "output": [
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi!", "annotations": []}],
        }
    ],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
}


async def test_responses_create_stream_retrieve_items_delete(
    fake_azure: FakeAzure, server: Running
) -> None:
    stream_events = [
        b"event: response.created\ndata: "
        + json.dumps(
            {"type": "response.created", "sequence_number": 0, "response": RESPONSE}
        ).encode()
        + b"\n\n",
        b"event: response.output_text.delta\ndata: "
        + json.dumps(
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "delta": "Hi!",
                "logprobs": [],
            }
        ).encode()
        + b"\n\n",
        b"event: response.completed\ndata: "
        + json.dumps(
            {"type": "response.completed", "sequence_number": 2, "response": RESPONSE}
        ).encode()
        + b"\n\n",
    ]
    items = {
        "object": "list",
        "data": [
            {
                "type": "message",
                "id": "msg_0",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": "Hello"}],
            }
        ],
        "first_id": "msg_0",
        "last_id": "msg_0",
        "has_more": False,
    }
    fake_azure.queue(
        json_answer(RESPONSE),
        sse_answer(stream_events),
        json_answer(RESPONSE),
        json_answer(items),
        json_answer({"id": "resp_1", "object": "response", "deleted": True}),
    )
    async with client_for(server) as client:
        created = await client.responses.create(model="gpt-4o", input="Hello")
        stream = await client.responses.create(
            model="gpt-4o", input="Hello", stream=True
        )
        seen = [event.type async for event in stream]
        retrieved = await client.responses.retrieve("resp_1")
        listed = [i.id async for i in client.responses.input_items.list("resp_1")]
        await client.responses.delete("resp_1")
    assert created.output_text == retrieved.output_text == "Hi!"
    assert seen == [
        "response.created",
        "response.output_text.delta",
        "response.completed",
    ]
    assert listed == ["msg_0"]
    create, streamed, retrieve, input_items, delete = fake_azure.requests
    # Responses are GA on Azure's v1 API only: no api-version there.
    check_sent(create, "POST", "/openai/v1/responses", version=None)
    # Azure reads the model as a deployment: mapped, the rest untouched.
    assert json.loads(create.body) == {"model": "dep-4o", "input": "Hello"}
    assert json.loads(streamed.body) == {
        "model": "dep-4o",
        "input": "Hello",
        "stream": True,
    }
    check_sent(retrieve, "GET", "/openai/v1/responses/resp_1", version=None)
    items_path = "/openai/v1/responses/resp_1/input_items"
    check_sent(input_items, "GET", items_path, version=None)
    check_sent(delete, "DELETE", "/openai/v1/responses/resp_1", version=None)


# --- assistants, threads, runs, vector stores -------------------------------------

ASSISTANT = {
    "id": "asst_1",
    "object": "assistant",
    "created_at": 1,
    "model": "dep-4o",
    "tools": [],
}
THREAD = {"id": "thread_1", "object": "thread", "created_at": 1, "metadata": {}}
RUN = {
    "id": "run_1",
    "object": "thread.run",
    "created_at": 1,
    "thread_id": "thread_1",
    "assistant_id": "asst_1",
    "status": "queued",
    "model": "dep-4o",
    "instructions": "",
    "tools": [],
}
MESSAGE_DELTA = {
    "id": "msg_1",
    "object": "thread.message.delta",
    "delta": {
        "content": [
            {"index": 0, "type": "text", "text": {"value": "Hi", "annotations": []}}
        ]
    },
}


# OpenAI deprecated the Assistants API (the SDK warns); Azure still serves it.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_assistant_thread_and_a_streaming_run(
    fake_azure: FakeAzure, server: Running
) -> None:
    run_events = [
        sse_named("thread.run.created", RUN),
        sse_named("thread.message.delta", MESSAGE_DELTA),
        sse_named("thread.run.completed", RUN | {"status": "completed"}),
        b"event: done\ndata: [DONE]\n\n",
    ]
    fake_azure.queue(
        json_answer(ASSISTANT),
        json_answer(THREAD),
        sse_answer(run_events),
    )
    async with client_for(server) as client:
        assistant = await client.beta.assistants.create(model="gpt-4o", name="a")
        thread = await client.beta.threads.create()
        stream = await client.beta.threads.runs.create(
            thread.id, assistant_id=assistant.id, stream=True
        )
        events = [event async for event in stream]
    assert [e.event for e in events] == [
        "thread.run.created",
        "thread.message.delta",
        "thread.run.completed",
    ]
    create_assistant, create_thread, run = fake_azure.requests
    check_sent(create_assistant, "POST", "/openai/assistants", PREVIEW)
    assert json.loads(create_assistant.body) == {"model": "dep-4o", "name": "a"}
    assert create_assistant.headers["OpenAI-Beta"] == "assistants=v2"
    check_sent(create_thread, "POST", "/openai/threads", PREVIEW)
    check_sent(run, "POST", "/openai/threads/thread_1/runs", PREVIEW)
    assert json.loads(run.body) == {"assistant_id": "asst_1", "stream": True}


def sse_named(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def test_vector_store_with_a_file(fake_azure: FakeAzure, server: Running) -> None:
    store = {
        "id": "vs_1",
        "object": "vector_store",
        "created_at": 1,
        "name": "kb",
        "usage_bytes": 0,
        "file_counts": {
            "in_progress": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "total": 0,
        },
        "status": "completed",
    }
    store_file = {
        "id": "file-abc",
        "object": "vector_store.file",
        "created_at": 1,
        "vector_store_id": "vs_1",
        "status": "completed",
        "usage_bytes": 3,
    }
    fake_azure.queue(
        json_answer(store),
        json_answer(store_file),
        json_answer({"object": "list", "data": [store_file], "has_more": False}),
    )
    async with client_for(server) as client:
        created = await client.vector_stores.create(name="kb")
        await client.vector_stores.files.create(created.id, file_id="file-abc")
        files = [f.id async for f in client.vector_stores.files.list(created.id)]
    assert files == ["file-abc"]
    create, add, listing = fake_azure.requests
    check_sent(create, "POST", "/openai/v1/vector_stores", version=None)
    assert json.loads(create.body) == {"name": "kb"}
    check_sent(add, "POST", "/openai/v1/vector_stores/vs_1/files", version=None)
    assert json.loads(add.body) == {"file_id": "file-abc"}
    check_sent(listing, "GET", "/openai/v1/vector_stores/vs_1/files", version=None)


# --- Azure's v1 API ---------------------------------------------------------------


async def test_v1_api_chat_responses_and_a_transcription(
    fake_azure: FakeAzure, server: Running
) -> None:
    fake_azure.queue(
        json_answer(CHAT_JSON), json_answer({"text": "v1 text"}), json_answer(RESPONSE)
    )
    async with client_for(server, V1_TOKEN) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        transcript = await client.audio.transcriptions.create(
            model="whisper", file=("speech.wav", AUDIO, "audio/wav")
        )
    async with client_for(
        server, V1_TOKEN, default_query={"api-version": "preview"}
    ) as client:
        response = await client.responses.create(model="gpt-4o", input="x")
    assert completion.choices[0].message.content == "Hi from FakeAzure"
    assert transcript.text == "v1 text"
    assert response.output_text == "Hi!"
    chat, transcription, preview = fake_azure.requests
    check_sent(chat, "POST", "/openai/v1/chat/completions", version=None)
    assert json.loads(chat.body)["model"] == "dep-4o"
    # Azure's v1 API serves audio only in preview.
    path = "/openai/v1/audio/transcriptions"
    check_sent(transcription, "POST", path, version="preview")
    parts = parse_form(transcription.headers["Content-Type"], transcription.body)
    assert parts == [("model", None, b"dep-whisper"), ("file", "speech.wav", AUDIO)]
    assert transcription.headers["Content-Length"] == str(len(transcription.body))
    check_sent(preview, "POST", "/openai/v1/responses", version="preview")
    assert json.loads(preview.body) == {"model": "dep-4o", "input": "x"}


# --- sse_compat ---------------------------------------------------------------------


async def stream_chat(server: Running) -> list[Any]:
    async with client_for(server) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        return [chunk async for chunk in stream]


async def test_sse_compat_openai_gives_only_openai_shaped_chunks(
    fake_azure: FakeAzure, server: Running
) -> None:
    fake_azure.queue(sse_answer([whole(AZURE_CHAT)]))
    chunks = await stream_chat(server)
    # No prompt-filter chunk, no annotation chunk: every chunk has an id, and
    # every chunk but the usage one has a choice.
    assert all(chunk.id == "chatcmpl-1" for chunk in chunks)
    assert [bool(chunk.choices) for chunk in chunks] == [True] * 4 + [False]
    assert chunks[3].choices[0].finish_reason == "content_filter"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5
    assert json.loads(fake_azure.last.body)["stream_options"] == {"include_usage": True}


async def test_sse_compat_raw_relays_azures_stream_untouched(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    fake_azure.queue(sse_answer([whole(AZURE_CHAT)]), sse_answer([whole(AZURE_CHAT)]))
    with start(fake_azure, tmp_path / "raw.log", AZPROXY_SSE_COMPAT="raw") as server:
        chunks = await stream_chat(server)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "gpt-4o", "stream": True, "messages": []},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as response,
        ):
            raw = await response.read()
    assert raw == whole(AZURE_CHAT) != kept(AZURE_CHAT)
    assert [chunk.id for chunk in chunks[:2]] == ["", "chatcmpl-1"]
    assert chunks[0].choices == []  # Azure's prompt-filter chunk reached the SDK


async def test_a_stream_without_usage_asked_gets_none_but_azure_is_asked(
    fake_azure: FakeAzure, server: Running
) -> None:
    usage = AZURE_CHAT[-2][0]  # Azure's usage chunk, sent because azproxy asked
    assert b'"usage":{' in usage
    events = [AZURE_CHAT[1][0], AZURE_CHAT[2][0], usage, sse_event("[DONE]")]
    fake_azure.queue(sse_answer(events))
    async with client_for(server) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert [c.choices[0].delta.content for c in chunks] == [
        "",
        'The "prompt_filter_results" word',
    ]
    asked = b'{"stream_options":{"include_usage":true},'
    sent = fake_azure.last.body
    assert sent.startswith(asked)
    assert json.loads(b"{" + sent[len(asked) :]) == {
        "messages": [{"role": "user", "content": "hi"}],
        "model": "gpt-4o",
        "stream": True,
    }
