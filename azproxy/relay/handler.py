"""The catch-all handler: which kind of OpenAI call is this, and how to relay
it (relay: take an upstream slot, make the attempts, relay the answer).

- deployment-scoped JSON (chat, embeddings, ...): tried as the caller's
  attempts policy says (retries for a pass-through token, failover for
  server-side routing);
- multipart uploads (audio transcriptions and translations, image edits):
  the deployment comes from the `model` form field, the body streams through;
- resource-scoped calls (files, batches, fine_tuning, assistants, threads,
  vector_stores, responses, uploads): /openai/{path} on the caller's
  resource endpoint, with the client's method and query, and the original
  proxy's retries: their objects live on that one resource.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from azproxy.errors import BadRequest
from azproxy.keys import CALLER, EXCHANGE
from azproxy.limits.admission import admit, prompt_estimate
from azproxy.relay.attempts import RETRY, Attempts
from azproxy.relay.backends import Backend, Endpoint
from azproxy.relay.jsonbody import JsonObject, glance_model
from azproxy.relay.mapping import Scope, classify, model_names_deployment, unknown_url
from azproxy.relay.request_body import parse_json, read_body, release_body
from azproxy.relay.response import answer
from azproxy.relay.stream_usage import USAGE_PATHS, usage_splice
from azproxy.relay.target import Outgoing, outgoing_of
from azproxy.relay.uploads import StreamBody, read_upload, stream_through
from azproxy.settings.patterns import MAX_SHOWN_CHARS

if TYPE_CHECKING:
    from azproxy.auth.callers import Caller
    from azproxy.observe.exchange import Exchange
    from azproxy.relay.context import RelayContext
    from azproxy.relay.jsonbody import JsonObject

__all__ = ["handle"]


async def handle(context: RelayContext, request: web.Request) -> web.StreamResponse:
    """The catch-all route's handler (app.py binds it to the app's context)."""
    path = request.path
    # Ids and path words never need percent-encoding: an encoded '/' or '.'
    # can only be an attempt to reach another upstream path.
    if not path.startswith("/v1/") or "%" in request.raw_path.partition("?")[0]:
        raise unknown_url(request.method, path)
    subpath = path[4:]
    scope = classify(request.method, subpath)
    caller, exchange = request[CALLER], request[EXCHANGE]
    if scope is Scope.DEPLOYMENT:
        # Inline rather than a handler of its own: one coroutine less on the
        # path most requests take. A body that is not parsed may be spooled.
        body = await read_body(context, request, spill=not caller.needs_model)
        try:
            outgoing, model = json_call(
                context, request, exchange, subpath, body, caller
            )
            return await relay(
                context, request, exchange, caller, outgoing, caller.attempts, model
            )
        finally:
            release_body(context, body)
    if scope is Scope.UPLOAD:
        return await handle_upload(context, request, exchange, subpath, caller)
    return await handle_resource(context, request, exchange, subpath, caller)


async def relay(
    context: RelayContext,
    request: web.Request,
    exchange: Exchange,
    caller: Caller,
    outgoing: Outgoing,
    attempts: Attempts,
    model: str | None = None,
    backends: Sequence[Backend] | None = None,
) -> web.StreamResponse:
    """Admit the request under its caller's limits, take an upstream slot,
    get Azure's answer as `attempts` tries the backends (the caller's for
    `model`, unless given), and relay it."""
    if model is not None:  # else json_call noted the model named, if any
        exchange.model = model
    if backends is None:
        backends = caller.backends(model)
    limits = caller.limits
    if limits is not None:  # before anything is sent; refused: nothing is
        await admit(request, limits, prompt_estimate(outgoing))
    limiter = context.limiter
    if not limiter.try_acquire():
        await limiter.acquire()
    try:
        reply = await attempts.send(context, exchange, backends, outgoing, model)
        try:
            response = await answer(context, request, exchange, reply, outgoing)
        except BaseException:
            # Client gone (cancelled): drop the upstream connection at once
            # rather than draining it.
            reply.close()
            raise
        reply.response.release()
        return response
    finally:
        limiter.release()


def json_call(
    context: RelayContext,
    request: web.Request,
    exchange: Exchange,
    subpath: str,
    body: bytes | StreamBody,
    caller: Caller,
) -> tuple[Outgoing, str | None]:
    """A deployment-scoped JSON call (chat, completions, embeddings, ...):
    what to send, and the model it asks for."""
    fields: JsonObject | None = None
    model: str | None = None
    # Usage can be asked for only where sse_compat=openai takes the usage
    # chunk out again, and only in a body held in memory.
    usage = (
        subpath in USAGE_PATHS
        and isinstance(body, bytes)
        and context.config.sse_compat == "openai"
    )
    # Parse JSON only when the answer depends on it: a pass-through token
    # with one deployment skips it, unless the body may ask for a stream.
    names_stream = True
    if caller.needs_model:
        fields = parse_json(context, body)
        found = fields.model
        model = found if isinstance(found, str) else None
    elif usage and isinstance(body, bytes):
        names_stream = body.find(b'"stream"') >= 0  # not `in`: see Reply
        if names_stream:
            fields = parsed_if_json(context, body)
    outgoing = outgoing_of(request, subpath, body, fields)
    outgoing.names_stream = names_stream
    if usage and fields is not None:
        outgoing.usage_splice = usage_splice(fields)
    if model is None:
        # Not routed by: the model the client named, for the log only.
        exchange.model = shown_model(body, fields)
    return outgoing, model


def shown_model(body: bytes | StreamBody, fields: JsonObject | None) -> str | None:
    """The model a request names, from its parse or, unparsed, at a glance."""
    if fields is not None:
        found = fields.model
        return found[:MAX_SHOWN_CHARS] if isinstance(found, str) else None
    return glance_model(body, MAX_SHOWN_CHARS) if isinstance(body, bytes) else None


def parsed_if_json(
    context: RelayContext, body: bytes | StreamBody
) -> JsonObject | None:
    """The body parsed, or None where azproxy would refuse it: a body that
    nothing routes by goes to Azure as it is, which judges it."""
    try:
        return parse_json(context, body)
    except BadRequest:
        return None


async def handle_upload(
    context: RelayContext,
    request: web.Request,
    exchange: Exchange,
    subpath: str,
    caller: Caller,
) -> web.StreamResponse:
    body, model = await read_upload(request, need_model=caller.needs_model)
    try:
        outgoing = outgoing_of(request, subpath, body, None, Scope.UPLOAD)
        # relay sends a body that cannot be replayed to one backend only.
        return await relay(
            context, request, exchange, caller, outgoing, caller.attempts, model
        )
    finally:
        body.close()  # the head's spool and its budget, also when refused


async def handle_resource(
    context: RelayContext,
    request: web.Request,
    exchange: Exchange,
    subpath: str,
    caller: Caller,
) -> web.StreamResponse:
    endpoint = caller.resource_endpoint()
    method = request.method
    content_type = request.headers.get(hdrs.CONTENT_TYPE, "")
    if method == "POST" and content_type.lower().startswith("multipart/"):
        # File uploads: streamed through, up to max_upload_mb.
        body = stream_through(request)
        try:
            outgoing = outgoing_of(request, subpath, body, None, Scope.RESOURCE)
            return await on_resource(
                context, request, exchange, caller, outgoing, Backend(endpoint, "")
            )
        finally:
            body.close()  # holds nothing, but a broken stream's error
    names_deployment = model_names_deployment(method, subpath)
    raw = await read_body(context, request, spill=not names_deployment)
    try:
        deployment, fields = "", None
        if raw and names_deployment:
            found = parse_json(context, raw)
            model = found.model
            if isinstance(model, str):
                deployment = deployment_on(endpoint, caller.backends(model), model)
                fields = found
        outgoing = outgoing_of(request, subpath, raw, fields, Scope.RESOURCE)
        return await on_resource(
            context, request, exchange, caller, outgoing, Backend(endpoint, deployment)
        )
    finally:
        release_body(context, raw)


def on_resource(
    context: RelayContext,
    request: web.Request,
    exchange: Exchange,
    caller: Caller,
    outgoing: Outgoing,
    backend: Backend,
) -> Awaitable[web.StreamResponse]:
    """relay() for a resource call: to `backend` alone, on the caller's
    resource endpoint, by the original proxy's retries (its objects live on
    that one resource)."""
    return relay(
        context, request, exchange, caller, outgoing, RETRY, backends=[backend]
    )


def deployment_on(endpoint: Endpoint, backends: Sequence[Backend], model: str) -> str:
    """The model's deployment on the endpoint that serves resource calls."""
    for backend in backends:
        if backend.endpoint.name == endpoint.name:
            return backend.deployment
    raise BadRequest(
        f"The model {model!r} has no deployment on endpoint {endpoint.name!r}, "
        "which serves the resource APIs (files, responses, assistants...); "
        "map it to a deployment there.",
        param="model",
        code="model_not_on_resource_endpoint",
    )
