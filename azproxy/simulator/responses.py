"""The Responses API: create (JSON or stream), retrieve, delete, input items.

A stream is named events (`event: response.output_text.delta` ...), as the
Responses API sends them, ending with `response.completed` and no [DONE].
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator, Sequence
from typing import Any

from aiohttp import web

from . import answers
from .common import SIM_STATE, azure_error, common_headers, sse
from .operations import Knobs
from .resources import STORE, Route, json_body, listing, missing, new_id, now, ok

__all__ = ["ROUTES", "response_events"]


def _input_items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = [{"role": "user", "content": [{"type": "input_text", "text": value}]}]
    items = value if isinstance(value, list) else []
    return [
        {"type": "message", "status": "completed", **item, "id": new_id("msg_")}
        for item in items
        if isinstance(item, dict)
    ]


def _response(body: dict[str, Any], text: str, status: str) -> dict[str, Any]:
    tokens = max(1, len(json.dumps(body.get("input", ""))) // 4)
    message = {
        "type": "message",
        "id": new_id("msg_"),
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    done = len(text.split())
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": now(),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [message] if status == "completed" else [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools", []),
        "top_p": 1.0,
        "truncation": "disabled",
        "metadata": body.get("metadata") or {},
        "usage": {
            "input_tokens": tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": done,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens + done,
        },
    }


def response_events(
    final: dict[str, Any], pieces: list[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs of a streamed response, in the API's order."""
    started = copy.deepcopy(final) | {"status": "in_progress", "output": []}
    started["usage"] = None
    item = final["output"][0]
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    empty = {"type": "output_text", "text": "", "annotations": []}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
        (
            "response.output_item.added",
            {
                "output_index": 0,
                "item": item | {"status": "in_progress", "content": []},
            },
        ),
        ("response.content_part.added", where | {"part": empty}),
    ]
    for piece in pieces:
        events.append(("response.output_text.delta", where | {"delta": piece}))
    text = "".join(pieces)
    events += [
        ("response.output_text.done", where | {"text": text}),
        ("response.content_part.done", where | {"part": item["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": final}),
    ]
    for number, (name, data) in enumerate(events):
        yield name, {"type": name, "sequence_number": number, **data}


async def create(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    body = await json_body(request)
    if isinstance(body, web.Response):
        return body
    if not isinstance(body.get("model"), str):
        return azure_error(400, "invalid_request", "The 'model' field is required.")
    knobs = Knobs(request, request.app[SIM_STATE].settings)
    pieces = answers.words(knobs.chunks)
    final = _response(body, "".join(pieces), "completed")
    store = request.app[STORE]
    store.put("response", final)
    store.inputs[final["id"]] = _input_items(body.get("input"))
    if not body.get("stream"):
        return ok(final)
    response = web.StreamResponse(headers=common_headers())
    response.content_type = "text/event-stream"
    await response.prepare(request)
    for index, (name, data) in enumerate(response_events(final, pieces)):
        if index and knobs.delay_s:
            await asyncio.sleep(knobs.delay_s)
        await response.write(sse(data, name))
    return response


async def retrieve(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    found = request.app[STORE].get("response", ids[0])
    return ok(found) if found else missing("response", ids[0])


async def delete(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    store = request.app[STORE]
    if store.objects.get("response", {}).pop(ids[0], None) is None:
        return missing("response", ids[0])
    store.inputs.pop(ids[0], None)
    return ok({"id": ids[0], "object": "response", "deleted": True})


async def input_items(request: web.Request, ids: Sequence[str]) -> web.StreamResponse:
    items = request.app[STORE].inputs.get(ids[0])
    return missing("response", ids[0]) if items is None else listing(items)


ROUTES = [
    Route("POST", ("responses",), create),
    Route("GET", ("responses", "*"), retrieve),
    Route("DELETE", ("responses", "*"), delete),
    Route("GET", ("responses", "*", "input_items"), input_items),
]
