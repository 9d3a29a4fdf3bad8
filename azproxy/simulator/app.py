"""A built-in Azure OpenAI simulator: real HTTP, Azure's paths, shapes and errors.

Tests, the benchmark and `azproxy serve --demo` use it instead of Azure.

Faults are injected per request with `x-sim-*` headers (which pass through
azproxy) or per deployment with a plan (`SimState.plan`, `POST /_sim/faults`,
`azproxy simulate --fault DEPLOYMENT=KIND`):
  429 | 500 | 502 | 503      an error answer (429 with Retry-After headers)
  overloaded                 200 SSE whose first event is Azure's overload error
  abort                      stream a few events, then cut the connection
  hang                       stream a few events, then send nothing more
  hang-headers               never send response headers
  close                      close the connection without answering
Per-request knobs: x-sim-fault, x-sim-chunks, x-sim-chunk-delay-ms,
x-sim-first-byte-ms, x-sim-retry-after-ms, x-sim-abort-after.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import answers

__all__ = [
    "FAULTS",
    "SIM_STATE",
    "SimSettings",
    "SimState",
    "apply_faults",
    "create_simulator",
    "parse_fault",
]

FAULTS = frozenset(
    {"429", "500", "502", "503", "overloaded", "abort", "hang", "hang-headers", "close"}
)
OVERLOADED_MESSAGE = (
    "That model is currently overloaded with other requests. You can retry your "
    "request, or contact us through an Azure support request if the error persists."
)


@dataclass(frozen=True, slots=True)
class SimSettings:
    api_key: str | None = None  # None: any non-empty api-key or bearer token
    deployments: frozenset[str] | None = None  # None: every name exists
    chunks: int = 8
    chunk_delay_ms: float = 20.0
    first_byte_ms: float = 0.0
    async_filter: bool = False  # emit Azure's asynchronous-filter chunks


@dataclass
class SimState:
    settings: SimSettings
    # deployment -> faults to inject, one per request, in order
    plan: dict[str, deque[str]] = field(default_factory=dict)
    # deployment -> fault injected on every request until changed
    sticky: dict[str, str] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)

    def next_fault(self, deployment: str) -> str | None:
        queue = self.plan.get(deployment)
        if queue:
            return queue.popleft()
        return self.sticky.get(deployment)


SIM_STATE = web.AppKey("azproxy.sim_state", SimState)


def check_faults(kinds: Iterable[str]) -> list[str]:
    """Validate fault kinds; `KIND*` marks the sticky one."""
    kinds = [k.strip() for k in kinds if k.strip()]
    for kind in kinds:
        if kind.rstrip("*") not in FAULTS:
            raise ValueError(f"fault kind {kind!r}: use one of {sorted(FAULTS)}")
    return kinds


def parse_fault(spec: str) -> tuple[str, list[str]]:
    """`DEPLOYMENT=KIND[,KIND...]` (the CLI form) -> (deployment, kinds)."""
    deployment, sep, kinds = spec.partition("=")
    if not sep or not deployment or not kinds:
        raise ValueError(f"fault {spec!r}: use DEPLOYMENT=KIND[,KIND...]")
    return deployment, check_faults(kinds.split(","))


def create_simulator(settings: SimSettings | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIM_STATE] = SimState(settings or SimSettings())
    app.router.add_post("/openai/deployments/{deployment}/{operation:.+}", classic)
    app.router.add_post("/openai/v1/{operation:.+}", v1)
    from .realtime import add_realtime_routes  # it builds on this module's helpers

    add_realtime_routes(app)
    app.router.add_get("/_sim/stats", stats)
    app.router.add_post("/_sim/faults", set_faults)
    app.router.add_route("*", "/{path:.*}", not_found)
    return app


def _dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"))  # compact, as Azure sends


def azure_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    return web.json_response(
        body, status=status, headers=_common_headers() | headers, dumps=_dumps
    )


def _common_headers() -> dict[str, str]:
    return {
        "apim-request-id": str(uuid.uuid4()),
        "x-ms-region": "Sweden Central",
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-remaining-tokens": "99000",
    }


async def not_found(request: web.Request) -> web.Response:
    return azure_error(404, "404", "Resource not found")


async def classic(request: web.Request) -> web.StreamResponse:
    if "api-version" not in request.query:
        return azure_error(404, "404", "Resource not found")
    deployment = request.match_info["deployment"]
    return await answer(request, deployment, request.match_info["operation"])


async def v1(request: web.Request) -> web.StreamResponse:
    body = await _json(request)
    deployment = body.get("model") if isinstance(body, dict) else None
    if not isinstance(deployment, str):
        return azure_error(400, "missing_model", "The 'model' field is required.")
    return await answer(request, deployment, request.match_info["operation"])


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


async def answer(
    request: web.Request, deployment: str, operation: str
) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    settings = state.settings
    if not _authorized(request, settings):
        return azure_error(
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. "
            "Make sure to provide a valid key for an active subscription and use a "
            "correct regional API endpoint for your resource.",
        )
    if settings.deployments is not None and deployment not in settings.deployments:
        return azure_error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created "
            "the deployment within the last 5 minutes, please wait a moment and "
            "try again.",
        )
    state.requests[deployment] += 1
    knobs = _Knobs(request, settings)
    fault = request.headers.get("x-sim-fault") or state.next_fault(deployment)
    if fault:
        early = await _early_fault(request, fault.rstrip("*"), knobs)
        if early is not None:
            return early
    body = await _json(request)
    if not isinstance(body, dict):
        return azure_error(400, "BadRequest", "The request body must be JSON.")
    model = str(body.get("model") or deployment)
    builder = OPERATIONS.get(operation)
    if builder is None:
        return azure_error(404, "404", "Resource not found")
    return await builder(request, body, model, knobs, (fault or "").rstrip("*"))


def _authorized(request: web.Request, settings: SimSettings) -> bool:
    key = request.headers.get("api-key")
    auth = request.headers.get("Authorization", "")
    bearer = auth[7:] if auth.lower().startswith("bearer ") else ""
    if settings.api_key is None:
        return bool(key or bearer)
    return key == settings.api_key


class _Knobs:
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
        self.async_filter = settings.async_filter


async def _early_fault(
    request: web.Request, fault: str, knobs: _Knobs
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


def _sse(event: Any) -> bytes:
    data = event if isinstance(event, str) else _dumps(event)
    return f"data: {data}\n\n".encode()


async def _stream(
    request: web.Request, events: Iterable[Any], knobs: _Knobs, fault: str
) -> web.StreamResponse:
    if knobs.first_byte_s:
        await asyncio.sleep(knobs.first_byte_s)
    response = web.StreamResponse(headers=_common_headers())
    response.content_type = "text/event-stream"
    response.headers["Cache-Control"] = "no-cache"
    await response.prepare(request)
    if fault == "overloaded":
        error = {"message": OVERLOADED_MESSAGE, "type": "server_error"}
        await response.write(_sse({"error": error}))
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
        await response.write(_sse(event))
    return response


async def _json_answer(
    request: web.Request, document: dict[str, Any], knobs: _Knobs
) -> web.Response:
    if knobs.first_byte_s:
        await asyncio.sleep(knobs.first_byte_s)
    return web.json_response(document, headers=_common_headers(), dumps=_dumps)


async def chat(
    request: web.Request, body: dict[str, Any], model: str, knobs: _Knobs, fault: str
) -> web.StreamResponse:
    if body.get("stream") or fault in ("overloaded", "abort", "hang"):
        events = answers.chat_chunks(
            body, model, knobs.chunks, async_filter=knobs.async_filter
        )
        return await _stream(request, events, knobs, fault)
    return await _json_answer(
        request, answers.chat_completion(body, model, knobs.chunks), knobs
    )


async def completions(
    request: web.Request, body: dict[str, Any], model: str, knobs: _Knobs, fault: str
) -> web.StreamResponse:
    if body.get("stream") or fault in ("overloaded", "abort", "hang"):
        events = answers.completion_chunks(body, model, knobs.chunks)
        return await _stream(request, events, knobs, fault)
    return await _json_answer(
        request, answers.completion(body, model, knobs.chunks), knobs
    )


async def embeddings(
    request: web.Request, body: dict[str, Any], model: str, knobs: _Knobs, fault: str
) -> web.StreamResponse:
    return await _json_answer(request, answers.embeddings(body, model), knobs)


async def images(
    request: web.Request, body: dict[str, Any], model: str, knobs: _Knobs, fault: str
) -> web.StreamResponse:
    return await _json_answer(request, answers.images(body), knobs)


async def speech(
    request: web.Request, body: dict[str, Any], model: str, knobs: _Knobs, fault: str
) -> web.StreamResponse:
    """Binary audio, sent in `chunks` pieces like Azure's chunked answer."""
    audio = answers.speech_bytes(str(body.get("input", "")), 4096 * knobs.chunks)
    kind = answers.SPEECH_TYPES.get(str(body.get("response_format", "mp3")))
    response = web.StreamResponse(headers=_common_headers())
    response.content_type = kind or "audio/mpeg"
    await response.prepare(request)
    for start in range(0, len(audio), 4096):
        if start and knobs.delay_s:
            await asyncio.sleep(knobs.delay_s)
        await response.write(audio[start : start + 4096])
    return response


Operation = Callable[
    [web.Request, dict[str, Any], str, _Knobs, str], Awaitable[web.StreamResponse]
]
OPERATIONS: dict[str, Operation] = {
    "chat/completions": chat,
    "completions": completions,
    "embeddings": embeddings,
    "images/generations": images,
    "audio/speech": speech,
}


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"requests": dict(request.app[SIM_STATE].requests)})


async def set_faults(request: web.Request) -> web.Response:
    """`{"deployment": D, "faults": ["500", "429*"]}`; an empty list clears."""
    body = await _json(request)
    if not isinstance(body, dict):
        body = {}
    deployment, faults = body.get("deployment"), body.get("faults", [])
    if not isinstance(deployment, str) or not isinstance(faults, list):
        return azure_error(400, "BadRequest", "Send {deployment, faults}.")
    try:
        kinds = check_faults(str(f) for f in faults)
    except ValueError as exc:
        return azure_error(400, "BadRequest", str(exc))
    apply_faults(request.app[SIM_STATE], deployment, kinds)
    return web.json_response({"ok": True})


def apply_faults(state: SimState, deployment: str, faults: list[str]) -> None:
    """Queue one-shot faults; a `KIND*` entry becomes the sticky fault."""
    state.plan[deployment] = deque(f for f in faults if not f.endswith("*"))
    sticky = [f.rstrip("*") for f in faults if f.endswith("*")]
    if sticky:
        state.sticky[deployment] = sticky[-1]
    else:
        state.sticky.pop(deployment, None)
