"""What a client's request becomes before it goes to Azure: the body read,
the model found (only when it matters), and one Target per backend. No I/O
beyond reading the body.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web

from azproxy.auth.callers import Backend
from azproxy.keys import CALLER, CONFIG
from azproxy.relay.bodies import (
    BUDGETS,
    BodyBuffer,
    next_chunk,
    refuse_encoded,
    too_large,
)
from azproxy.relay.families import route_for
from azproxy.relay.headers import request_headers
from azproxy.relay.jsonbody import JsonObject, read_object
from azproxy.relay.jsonshape import JsonBounds
from azproxy.relay.mapping import Scope, upstream_url
from azproxy.relay.send import Target
from azproxy.relay.splice import spliced
from azproxy.relay.uploads import StreamBody, can_send_again
from azproxy.settings.config import Config

__all__ = [
    "JSON_BOUNDS",
    "Outgoing",
    "build_target",
    "json_bounds",
    "json_call",
    "parse_json",
    "read_body",
    "release_body",
    "setup",
]


async def read_body(request: web.Request, *, spill: bool) -> bytes | StreamBody:
    """The whole request body, held within the process's budgets: bytes in
    memory, or, when the memory budget is spent and `spill` allows it (the
    body will not be parsed), a StreamBody spooled to disk. Give it back
    with release_body() once the request ends."""
    refuse_encoded(request)
    app = request.app
    config, budgets = app[CONFIG], app[BUDGETS]
    limit = config.max_body_bytes
    content = request.content
    if content.is_eof():
        # The whole body came with the headers, as most do: take it as it is.
        chunk = content.read_nowait()
        if len(chunk) <= limit and budgets.memory.take(len(chunk)):
            return chunk
    else:
        length = request.content_length
        if length is not None and length > limit:
            raise too_large("request body", limit, "max_body_mb")
        chunk = b""
    buffer = BodyBuffer(budgets, spill=spill)
    try:
        while True:
            if buffer.size + len(chunk) > limit:
                raise too_large("request body", limit, "max_body_mb")
            buffer.write(chunk)
            chunk = await next_chunk(content, config.client_body_timeout_s)
            if not chunk:
                break
    except BaseException:
        buffer.close()
        raise
    if buffer.on_disk:
        return StreamBody.from_spool(buffer)
    return buffer.take_bytes()


def release_body(request: web.Request, body: bytes | StreamBody) -> None:
    """Give back what read_body() held."""
    if isinstance(body, StreamBody):
        body.close()
    else:
        request.app[BUDGETS].memory.give(len(body))


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x on every request
class Outgoing:
    """What the client asked for, before a backend is chosen."""

    method: str
    subpath: str  # the OpenAI path after /v1/
    body: bytes | StreamBody
    fields: JsonObject | None  # the parsed body, when it was needed
    scope: Scope = Scope.DEPLOYMENT

    @property
    def replayable(self) -> bool:
        return can_send_again(self.body)


def parse_json(request: web.Request, body: bytes | StreamBody) -> JsonObject:
    """The body as a JSON object, within the structure bounds (400 else)."""
    assert isinstance(body, bytes)  # read_body(spill=False) for bodies to parse
    return read_object(body, request.app[JSON_BOUNDS])


def json_bounds(config: Config) -> JsonBounds:
    """The bounds every JSON body azproxy parses must keep (built once per
    app: app[JSON_BOUNDS])."""
    return JsonBounds(
        config.max_json_depth, config.max_json_containers, config.max_json_values
    )


# The config's max_json_* settings, built once: every parse is held to them.
JSON_BOUNDS = web.AppKey("azproxy.json_bounds", JsonBounds)


def setup(app: web.Application, config: Config) -> None:
    app[JSON_BOUNDS] = json_bounds(config)


def json_call(
    request: web.Request, subpath: str, body: bytes | StreamBody
) -> tuple[Outgoing, str | None]:
    """A deployment-scoped JSON call (chat, completions, embeddings, ...):
    what to send, and the model it asks for."""
    fields: JsonObject | None = None
    model: str | None = None
    # Parse JSON only when the answer depends on it: a pass-through token
    # with one deployment skips it.
    if request[CALLER].needs_model:
        fields = parse_json(request, body)
        found = fields.model
        model = found if isinstance(found, str) else None
    return Outgoing(request.method, subpath, body, fields), model


def build_target(
    backend: Backend, outgoing: Outgoing, request: web.BaseRequest
) -> Target:
    """Decide the Azure URL, headers and body for one backend. No I/O."""
    endpoint = backend.endpoint
    body, fields = outgoing.body, outgoing.fields
    resource = outgoing.scope is Scope.RESOURCE
    route = route_for(outgoing.subpath, endpoint)
    if (
        (route.v1 or resource)
        and fields is not None
        and isinstance(body, bytes)
        and fields.model != backend.deployment
    ):
        # Azure's v1 API takes the deployment name in the body's `model`;
        # so do the resource calls that carry a document (responses, ...).
        body = spliced(body, [fields.set_model(backend.deployment)])
    if isinstance(body, StreamBody) and route.v1:
        body = body.with_model(backend.deployment)  # the form's model field
    url = upstream_url(
        endpoint.base_url,
        outgoing.subpath,
        deployment=None if resource else backend.deployment,
        route=route,
        client_query=request.query,
    )
    headers = request_headers(request.headers)
    name, value = endpoint.auth.header()
    headers[name] = value
    if isinstance(body, StreamBody) and body.length is not None:
        headers[hdrs.CONTENT_LENGTH] = str(body.length)
    # Resource calls other than GET create or change state: sent once.
    stateful = resource and outgoing.method != "GET"
    return Target(outgoing.method, url, headers, body, backend, stateful)
