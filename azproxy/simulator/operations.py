"""The deployment-scoped operations with JSON bodies: chat, completions,
embeddings, image generations and speech, with per-request knobs and faults."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from . import answers
from .common import SimSettings, azure_error, common_headers, dumps, sse

__all__ = ["OPERATIONS", "Knobs", "early_fault", "json_answer", "stream"]

OVERLOADED_MESSAGE = (
    "That model is currently overloaded with other requests. You can retry your "
    "request, or contact us through an Azure support request if the error persists."
)


class Knobs:
    """Per-request stream shape, from x-sim-* headers or the settings."""

    def __init__(self, request: web.Request, settings: SimSettings) -> None:
        h = request.headers
        self.chunks = int(h.get("x-sim-chunks", settings.chunks))
        self.delay_s = (
            float(h.get("x-sim-chunk-delay-ms", settings.chunk_delay_ms)) / 1e3
        )
        first_ms = float(h.get("x-sim-first-byte-ms", settings.first_byte_ms))
        self.first_byte_s = first_ms / 1e3
        self.retry_after_ms = int(h.get("x-sim-retry-after-ms", "1000"))
        self.abort_after = int(h.get("x-sim-abort-after", "2"))
        self.async_filter = settings.async_filter or bool(h.get("x-sim-async-filter"))


async def early_fault(
    request: web.Request, fault: str, knobs: Knobs
) -> web.StreamResponse | None:
    """Faults that happen before any answer is built; None for the rest."""
    if fault == "429":
        seconds = max(1, -(-knobs.retry_after_ms // 1000))
        return azure_error(
            429,
            "429",
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
            "have exceeded call rate limit of your current pricing tier. Please "
            f"retry after {seconds} second(s).",
            **{
                "retry-after": str(seconds),
                "retry-after-ms": str(knobs.retry_after_ms),
                "x-ratelimit-remaining-requests": "0",
            },
        )
    if fault == "400":
        return azure_error(400, "BadRequest", "The simulator rejects this request.")
    if fault in ("500", "502", "503"):
        return azure_error(
            int(fault), "InternalServerError", "The server had an error."
        )
    if fault == "hang-headers":
        await asyncio.Event().wait()  # until the client gives up
    if fault == "close":
        if request.transport is not None:
            request.transport.abort()
        return web.Response()  # never reaches the client: the transport is gone
    return None


async def stream(
    request: web.Request, events: Iterable[Any], knobs: Knobs, fault: str
) -> web.StreamResponse:
    if knobs.first_byte_s:
        await asyncio.sleep(knobs.first_byte_s)
    response = web.StreamResponse(headers=common_headers())
    response.content_type = "text/event-stream"
    response.headers["Cache-Control"] = "no-cache"
    await response.prepare(request)
    if fault == "overloaded":
        error = {"message": OVERLOADED_MESSAGE, "type": "server_error"}
        await response.write(sse({"error": error}))
        return response
    for sent, event in enumerate([*events, "[DONE]"]):
        if sent and knobs.delay_s:
            await asyncio.sleep(knobs.delay_s)
        if fault in ("abort", "hang") and sent == knobs.abort_after:
            if fault == "hang":
                await asyncio.Event().wait()
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write(sse(event))
    return response


async def json_answer(
    request: web.Request, document: dict[str, Any], knobs: Knobs
) -> web.Response:
    if knobs.first_byte_s:
        await asyncio.sleep(knobs.first_byte_s)
    return web.json_response(document, headers=common_headers(), dumps=dumps)


async def chat(
    request: web.Request, body: dict[str, Any], model: str, knobs: Knobs, fault: str
) -> web.StreamResponse:
    if body.get("stream") or fault in ("overloaded", "abort", "hang"):
        events = answers.chat_chunks(
            body, model, knobs.chunks, async_filter=knobs.async_filter
        )
        return await stream(request, events, knobs, fault)
    return await json_answer(
        request, answers.chat_completion(body, model, knobs.chunks), knobs
    )


async def completions(
    request: web.Request, body: dict[str, Any], model: str, knobs: Knobs, fault: str
) -> web.StreamResponse:
    if body.get("stream") or fault in ("overloaded", "abort", "hang"):
        events = answers.completion_chunks(body, model, knobs.chunks)
        return await stream(request, events, knobs, fault)
    return await json_answer(
        request, answers.completion(body, model, knobs.chunks), knobs
    )


async def embeddings(
    request: web.Request, body: dict[str, Any], model: str, knobs: Knobs, fault: str
) -> web.StreamResponse:
    return await json_answer(request, answers.embeddings(body, model), knobs)


async def images(
    request: web.Request, body: dict[str, Any], model: str, knobs: Knobs, fault: str
) -> web.StreamResponse:
    return await json_answer(request, answers.images(body), knobs)


async def speech(
    request: web.Request, body: dict[str, Any], model: str, knobs: Knobs, fault: str
) -> web.StreamResponse:
    """Binary audio, sent in `chunks` pieces like Azure's chunked answer."""
    audio = answers.speech_bytes(str(body.get("input", "")), 4096 * knobs.chunks)
    kind = answers.SPEECH_TYPES.get(str(body.get("response_format", "mp3")))
    response = web.StreamResponse(headers=common_headers())
    response.content_type = kind or "audio/mpeg"
    await response.prepare(request)
    for start in range(0, len(audio), 4096):
        if start and knobs.delay_s:
            await asyncio.sleep(knobs.delay_s)
        await response.write(audio[start : start + 4096])
    return response


Operation = Callable[
    [web.Request, dict[str, Any], str, Knobs, str], Awaitable[web.StreamResponse]
]
OPERATIONS: dict[str, Operation] = {
    "chat/completions": chat,
    "completions": completions,
    "embeddings": embeddings,
    "images/generations": images,
    "audio/speech": speech,
}
