"""Assistants, threads, messages, runs (streamed or not) and vector stores:
the minimum an Assistants client needs, kept in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from . import answers
from .common import SIM_STATE, azure_error, common_headers, sse
from .operations import Knobs
from .resources import STORE, Route, json_body, listing, missing, new_id, now, ok

__all__ = ["ROUTES"]

Document = dict[str, Any]


def _text(value: str) -> list[Document]:
    return [{"type": "text", "text": {"value": value, "annotations": []}}]


async def _body(request: web.Request) -> Document | web.Response:
    return await json_body(request) if request.can_read_body else {}


def _create(kind: str, prefix: str, fields: Document) -> Route:
    """A POST that stores `fields` (plus the body's known keys) as a new object."""

    async def handler(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        if kind == "assistant" and not isinstance(body.get("model"), str):
            return azure_error(400, "invalid_request", "'model' is required.")
        document = {"id": new_id(prefix), "created_at": now(), **fields}
        document |= {k: body[k] for k in fields if k in body}
        if kind == "vector_store":
            total = len(body.get("file_ids") or [])
            document["file_counts"] = {"completed": total, "total": total}
        return ok(request.app[STORE].put(kind, document))

    root = {"assistant": "assistants", "thread": "threads"}
    return Route("POST", (root.get(kind, "vector_stores"),), handler)


def _read(kind: str, root: str) -> list[Route]:
    async def get(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
        found = request.app[STORE].get(kind, ids[0])
        return ok(found) if found else missing(kind, ids[0])

    async def delete(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
        if request.app[STORE].objects.get(kind, {}).pop(ids[0], None) is None:
            return missing(kind, ids[0])
        return ok({"id": ids[0], "object": f"{kind}.deleted", "deleted": True})

    async def all_(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
        return listing(request.app[STORE].all(kind))

    return [
        Route("GET", (root, "*"), get),
        Route("DELETE", (root, "*"), delete),
        Route("GET", (root,), all_),
    ]


def _message(thread_id: str, role: str, content: str, run: str | None) -> Document:
    return {
        "id": new_id("msg_"),
        "object": "thread.message",
        "created_at": now(),
        "thread_id": thread_id,
        "role": role,
        "content": _text(content),
        "assistant_id": None,
        "run_id": run,
        "attachments": [],
        "metadata": {},
        "status": "completed",
    }


async def add_message(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    store = request.app[STORE]
    if store.get("thread", ids[0]) is None:
        return missing("thread", ids[0])
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    content = body.get("content")
    if not isinstance(content, str) or body.get("role") not in ("user", "assistant"):
        return azure_error(400, "invalid_request", "Send a role and text content.")
    message = _message(ids[0], body["role"], content, None)
    return ok(store.put(f"messages:{ids[0]}", message))


async def messages(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    if request.app[STORE].get("thread", ids[0]) is None:
        return missing("thread", ids[0])
    # Newest first, as the API lists them by default.
    return listing(request.app[STORE].all(f"messages:{ids[0]}")[::-1])


async def create_run(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    store, thread_id = request.app[STORE], ids[0]
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    assistant = store.get("assistant", str(body.get("assistant_id")))
    if store.get("thread", thread_id) is None or assistant is None:
        return azure_error(404, "404", "No such thread or assistant.")
    knobs = Knobs(request, request.app[SIM_STATE].settings)
    pieces = answers.words(knobs.chunks)
    run: Document = {
        "id": new_id("run_"),
        "object": "thread.run",
        "created_at": now(),
        "thread_id": thread_id,
        "assistant_id": assistant["id"],
        "status": "completed",
        "model": body.get("model") or assistant["model"],
        "instructions": assistant.get("instructions"),
        "tools": [],
        "metadata": {},
    }
    reply = _message(thread_id, "assistant", "".join(pieces), run["id"])
    reply["assistant_id"] = assistant["id"]
    store.put(f"runs:{thread_id}", run)
    store.put(f"messages:{thread_id}", reply)
    if not body.get("stream"):
        return ok(run)
    started = run | {"status": "queued"}
    events: list[tuple[str, Any]] = [
        ("thread.run.created", started),
        ("thread.run.in_progress", run | {"status": "in_progress"}),
        ("thread.message.created", reply | {"status": "in_progress", "content": []}),
    ]
    for piece in pieces:
        delta = {"content": [{"index": 0, **_text(piece)[0]}]}
        events.append(
            (
                "thread.message.delta",
                {"id": reply["id"], "object": "thread.message.delta", "delta": delta},
            )
        )
    events += [
        ("thread.message.completed", reply),
        ("thread.run.completed", run),
        ("done", "[DONE]"),
    ]
    response = web.StreamResponse(headers=common_headers())
    response.content_type = "text/event-stream"
    await response.prepare(request)
    for index, (name, data) in enumerate(events):
        if index and knobs.delay_s:
            await asyncio.sleep(knobs.delay_s)
        await response.write(sse(data, name))
    return response


async def get_run(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    run = request.app[STORE].get(f"runs:{ids[0]}", ids[1])
    return ok(run) if run else missing("run", ids[1])


async def add_store_file(
    request: web.Request, ids: Sequence[str]
) -> web.StreamResponse:
    store = request.app[STORE]
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    file_id = str(body.get("file_id"))
    if store.get("vector_store", ids[0]) is None or file_id not in store.files:
        return azure_error(404, "404", "No such vector store or file.")
    document = {
        "id": file_id,
        "object": "vector_store.file",
        "created_at": now(),
        "vector_store_id": ids[0],
        "status": "completed",
        "usage_bytes": store.files[file_id].record["bytes"],
        "last_error": None,
    }
    return ok(store.put(f"vs_files:{ids[0]}", document))


async def store_files(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    if request.app[STORE].get("vector_store", ids[0]) is None:
        return missing("vector_store", ids[0])
    return listing(request.app[STORE].all(f"vs_files:{ids[0]}"))


ASSISTANT: Document = {"object": "assistant", "model": None, "name": None}
ASSISTANT |= {"description": None, "instructions": None, "tools": []}
ASSISTANT |= {"metadata": {}, "temperature": 1.0, "top_p": 1.0}
VECTOR_STORE: Document = {"object": "vector_store", "name": None, "usage_bytes": 0}
VECTOR_STORE |= {"status": "completed", "metadata": {}, "file_counts": {}}

ROUTES = [
    _create("assistant", "asst_", ASSISTANT),
    *_read("assistant", "assistants"),
    _create("thread", "thread_", {"object": "thread", "metadata": {}}),
    *_read("thread", "threads"),
    Route("POST", ("threads", "*", "messages"), add_message),
    Route("GET", ("threads", "*", "messages"), messages),
    Route("POST", ("threads", "*", "runs"), create_run),
    Route("GET", ("threads", "*", "runs", "*"), get_run),
    _create("vector_store", "vs_", VECTOR_STORE),
    *_read("vector_store", "vector_stores"),
    Route("POST", ("vector_stores", "*", "files"), add_store_file),
    Route("GET", ("vector_stores", "*", "files"), store_files),
]
