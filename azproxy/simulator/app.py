"""A built-in Azure OpenAI simulator: real HTTP, Azure's paths, shapes and errors.

Tests, the benchmark and `azproxy serve --demo` use it instead of Azure.

Faults are injected per request with `x-sim-*` headers (which pass through
azproxy) or per deployment with a plan (`SimState.plan`, `POST /_sim/faults`,
`azproxy simulate --fault DEPLOYMENT=KIND`):
  400 | 429 | 500 | 502 | 503  an error answer (429 with Retry-After headers;
                             429:MS sets its retry-after-ms)
  overloaded                 200 SSE whose first event is Azure's overload error
  abort                      stream a few events, then cut the connection
  hang                       stream a few events, then send nothing more
  hang-headers               never send response headers
  close                      close the connection without answering
Per-request knobs: x-sim-fault, x-sim-chunks, x-sim-chunk-delay-ms,
x-sim-first-byte-ms, x-sim-retry-after-ms, x-sim-abort-after, x-sim-async-filter.

Besides the JSON operations (operations.py) it serves multipart uploads
(forms.py) and the resource-scoped APIs: files and batches (files.py),
responses (responses.py), assistants, threads and vector stores (threads.py),
on classic paths (`/openai/...?api-version=V`) and v1 paths (`/openai/v1/...`),
each only with the api-versions Azure serves it with (served.py; 404 else).
"""

from __future__ import annotations

from aiohttp import web

from . import files, forms, resources, responses, threads
from .common import (
    FAULTS,
    SIM_STATE,
    SimSettings,
    SimState,
    apply_faults,
    azure_error,
    check_faults,
    parse_fault,
    read_json,
    refusal,
)
from .operations import OPERATIONS, Knobs, early_fault
from .realtime import add_realtime_routes
from .served import classic_serves, stream_options_served, v1_serves

__all__ = [
    "FAULTS",
    "SIM_STATE",
    "SimSettings",
    "SimState",
    "apply_faults",
    "create_simulator",
    "parse_fault",
]


def create_simulator(settings: SimSettings | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIM_STATE] = SimState(settings or SimSettings())
    # Resource paths first: the v1 route below would catch /openai/v1/files.
    resources.setup(app, [*files.ROUTES, *responses.ROUTES, *threads.ROUTES])
    app.router.add_post("/openai/deployments/{deployment}/{operation:.+}", classic)
    app.router.add_post("/openai/v1/{operation:.+}", v1)
    add_realtime_routes(app)
    app.router.add_get("/_sim/stats", stats)
    app.router.add_post("/_sim/faults", set_faults)
    app.router.add_route("*", "/{path:.*}", not_found)
    return app


async def not_found(request: web.Request) -> web.Response:
    return azure_error(404, "404", "Resource not found")


async def classic(request: web.Request) -> web.StreamResponse:
    operation = request.match_info["operation"]
    if not classic_serves(operation, request.query.get("api-version")):
        return azure_error(404, "404", "Resource not found")
    deployment = request.match_info["deployment"]
    return await answer(request, deployment, operation)


async def v1(request: web.Request) -> web.StreamResponse:
    if not resources.v1_version_ok(request):
        return resources.bad_v1_version()
    operation = request.match_info["operation"]
    if not v1_serves(operation, request.query.get("api-version")):
        return azure_error(404, "404", "Resource not found")
    if request.content_type == "multipart/form-data":
        deployment = (await request.post()).get("model")  # aiohttp caches it
    else:
        body = await read_json(request)
        deployment = body.get("model") if isinstance(body, dict) else None
    if not isinstance(deployment, str):
        return azure_error(400, "missing_model", "The 'model' field is required.")
    return await answer(request, deployment, operation)


async def answer(
    request: web.Request, deployment: str, operation: str
) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    settings = state.settings
    refused = refusal(request, deployment)
    if refused is not None:
        return refused
    state.requests[deployment] += 1
    knobs = Knobs(request, settings)
    fault = request.headers.get("x-sim-fault") or state.next_fault(deployment)
    if fault:
        # KIND:MS sets a 429's retry-after-ms for that deployment's plan.
        fault, _, retry_after_ms = fault.rstrip("*").partition(":")
        if retry_after_ms:
            knobs.retry_after_ms = int(retry_after_ms)
        early = await early_fault(request, fault, knobs)
        if early is not None:
            return early
    upload = forms.OPERATIONS.get(operation)
    if upload is not None:
        return await upload(request, deployment)
    body = await read_json(request)
    if not isinstance(body, dict):
        return azure_error(400, "BadRequest", "The request body must be JSON.")
    model = str(body.get("model") or deployment)
    if "stream_options" in body and not stream_options_served(
        request.path.startswith("/openai/v1/"), request.query.get("api-version")
    ):
        return azure_error(
            400, "unknown_parameter", "Unknown parameter: 'stream_options'."
        )
    builder = OPERATIONS.get(operation)
    if builder is None:
        return azure_error(404, "404", "Resource not found")
    return await builder(request, body, model, knobs, fault or "")


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"requests": dict(request.app[SIM_STATE].requests)})


async def set_faults(request: web.Request) -> web.Response:
    """`{"deployment": D, "faults": ["500", "429*"]}`; an empty list clears."""
    body = await read_json(request)
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
