"""The simulator's realtime WebSocket, at Azure's two paths:
  classic (preview protocol)  GET /openai/realtime?api-version=V-preview&deployment=D
  v1 (GA protocol)            GET /openai/v1/realtime?model=D
The handshake is refused as Azure refuses it (401 without a valid key, 404 for
an unknown deployment or an api-version without realtime on the classic path). Then
it answers events in the Realtime API's shape, with the event names of the
protocol the path speaks: `session.update` -> `session.updated`;
`response.create` -> `response.created`, text and/or audio deltas (x-sim-chunks
pieces, x-sim-chunk-delay-ms apart), their `.done` events, `response.done`.
Binary frames are echoed; an unknown event gets an `error` event.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import WSMsgType, hdrs, web

from . import answers
from .common import SIM_STATE, azure_error, refusal
from .served import classic_serves

__all__ = ["add_realtime_routes", "response_events"]

# Event names that differ between the preview (beta) and GA protocols.
NAMES = {
    "preview": {
        "text": "response.text",
        "audio": "response.audio",
        "transcript": "response.audio_transcript",
        "item": "conversation.item.created",
    },
    "ga": {
        "text": "response.output_text",
        "audio": "response.output_audio",
        "transcript": "response.output_audio_transcript",
        "item": "conversation.item.added",
    },
}
AUDIO_BYTES_PER_PIECE = 2400  # 50 ms of 24 kHz 16-bit mono PCM


def add_realtime_routes(app: web.Application) -> None:
    app.router.add_get("/openai/realtime", classic)
    app.router.add_get("/openai/v1/realtime", v1)


async def classic(request: web.Request) -> web.StreamResponse:
    version = request.query.get("api-version")
    deployment = request.query.get("deployment")
    if not classic_serves("realtime", version) or not deployment:
        return azure_error(404, "404", "Resource not found")
    return await serve(request, deployment, "preview")


async def v1(request: web.Request) -> web.StreamResponse:
    deployment = request.query.get("model")
    if not deployment:
        return azure_error(
            400, "BadRequest", "The 'model' query parameter is required."
        )
    return await serve(request, deployment, "ga")


async def serve(
    request: web.Request, deployment: str, protocol: str
) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    settings = state.settings
    refused = refusal(request, deployment)
    if refused is not None:
        return refused
    if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
        return azure_error(400, "BadRequest", "Expected a WebSocket upgrade.")
    state.requests[deployment] += 1
    pieces = int(request.headers.get("x-sim-chunks", settings.chunks))
    delay_ms = float(
        request.headers.get("x-sim-chunk-delay-ms", settings.chunk_delay_ms)
    )
    ws = web.WebSocketResponse(protocols=("realtime",), max_msg_size=64 * 1024 * 1024)
    await ws.prepare(request)
    ids = itertools.count(1)
    session = new_session(deployment, protocol)
    await send(ws, ids, {"type": "session.created", "session": session})
    async for message in ws:
        if message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data)
            continue
        if message.type is not WSMsgType.TEXT:
            continue
        try:
            event = json.loads(message.data)
            kind = event["type"]
        except (ValueError, TypeError, KeyError):
            await send(
                ws, ids, error_event("invalid_json", "Send JSON events with a 'type'.")
            )
            continue
        if kind == "session.update":
            session.update(event.get("session") or {})
            await send(ws, ids, {"type": "session.updated", "session": session})
        elif kind == "response.create":
            modalities = output_modalities(session, event.get("response") or {})
            for index, answer in enumerate(
                response_events(protocol, modalities, pieces, f"resp_{next(ids)}")
            ):
                if index and delay_ms:
                    await asyncio.sleep(delay_ms / 1e3)
                await send(ws, ids, answer)
        elif kind == "conversation.item.create":
            item = {"id": f"item_{next(ids)}", **(event.get("item") or {})}
            await send(ws, ids, {"type": NAMES[protocol]["item"], "item": item})
        elif kind == "input_audio_buffer.commit":
            await send(ws, ids, {"type": "input_audio_buffer.committed"})
        elif kind not in ("input_audio_buffer.append", "input_audio_buffer.clear"):
            await send(
                ws, ids, error_event("unknown_event", f"Unknown event {kind!r}.")
            )
    return ws


async def send(
    ws: web.WebSocketResponse, ids: Iterator[int], event: dict[str, Any]
) -> None:
    await ws.send_str(json.dumps({"event_id": f"event_{next(ids)}", **event}))


def new_session(deployment: str, protocol: str) -> dict[str, Any]:
    session: dict[str, Any] = {
        "id": "sess_azproxy_sim",
        "object": "realtime.session",
        "model": deployment,
        "voice": "alloy",
    }
    if protocol == "ga":
        return session | {"type": "realtime", "output_modalities": ["audio"]}
    return session | {"modalities": ["text", "audio"]}


def output_modalities(session: dict[str, Any], response: dict[str, Any]) -> list[str]:
    for source in (response, session):
        for key in ("output_modalities", "modalities"):
            if isinstance(source.get(key), list):
                return [str(m) for m in source[key]]
    return ["audio"]


def error_event(code: str, message: str) -> dict[str, Any]:
    error = {"type": "invalid_request_error", "code": code, "message": message}
    return {"type": "error", "error": error}


def response_events(
    protocol: str, modalities: list[str], pieces: int, response_id: str
) -> Iterator[dict[str, Any]]:
    """One response's events: deltas piece by piece, then the `.done` events."""
    names = NAMES[protocol]
    where: dict[str, Any] = {"response_id": response_id, "output_index": 0}
    where |= {"item_id": f"item_{response_id}", "content_index": 0}
    yield {"type": "response.created", "response": response(response_id, "in_progress")}
    text = answers.words(pieces)
    audio = "audio" in modalities
    stream = names["transcript"] if audio else names["text"]
    for piece in text:
        yield {"type": f"{stream}.delta", **where, "delta": piece}
        if audio:
            pcm = answers.speech_bytes(piece, AUDIO_BYTES_PER_PIECE)
            delta = base64.b64encode(pcm).decode()
            yield {"type": f"{names['audio']}.delta", **where, "delta": delta}
    done = "transcript" if audio else "text"
    yield {"type": f"{stream}.done", **where, done: "".join(text)}
    if audio:
        yield {"type": f"{names['audio']}.done", **where}
    yield {"type": "response.done", "response": response(response_id, "completed")}


def response(response_id: str, status: str) -> dict[str, Any]:
    usage = {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30}
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "output": [],
        "usage": usage if status == "completed" else None,
    }
