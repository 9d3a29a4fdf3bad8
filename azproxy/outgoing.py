"""What a client's request becomes before it goes to Azure: the body read,
the model found (only when it matters), and one Target per backend. No I/O
beyond reading the body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from .errors import BadRequest, PayloadTooLarge
from .families import route_for
from .headers import request_headers
from .keys import CALLER, CONFIG
from .mapping import Scope, upstream_url
from .routing import Backend
from .uploads import StreamBody, can_send_again
from .upstream import Target

__all__ = ["Outgoing", "build_target", "json_call", "json_object", "read_body"]


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CONFIG].max_body_mb
        raise PayloadTooLarge(
            f"The request body is larger than {limit:g} MB "
            "(raise max_body_mb to accept it)."
        ) from None


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x on every request
class Outgoing:
    """What the client asked for, before a backend is chosen."""

    method: str
    subpath: str  # the OpenAI path after /v1/
    body: bytes | StreamBody
    document: dict[str, Any] | None  # the parsed body, when it was needed
    scope: Scope = Scope.DEPLOYMENT

    @property
    def replayable(self) -> bool:
        return can_send_again(self.body)


def json_call(
    request: web.Request, subpath: str, body: bytes
) -> tuple[Outgoing, str | None]:
    """A deployment-scoped JSON call (chat, completions, embeddings, ...):
    what to send, and the model it asks for."""
    document: dict[str, Any] | None = None
    model: str | None = None
    # Parse JSON only when the answer depends on it: a pass-through token
    # with one deployment skips it.
    if request[CALLER].needs_model:
        document = json_object(body)
        found = document.get("model")
        model = found if isinstance(found, str) else None
    return Outgoing(request.method, subpath, body, document), model


def build_target(
    backend: Backend, outgoing: Outgoing, request: web.BaseRequest
) -> Target:
    """Decide the Azure URL, headers and body for one backend. No I/O."""
    endpoint = backend.endpoint
    body, document = outgoing.body, outgoing.document
    resource = outgoing.scope is Scope.RESOURCE
    route = route_for(outgoing.subpath, endpoint)
    if (
        (route.v1 or resource)
        and document is not None
        and document.get("model") != backend.deployment
    ):
        # Azure's v1 API takes the deployment name in the body's `model`;
        # so do the resource calls that carry a document (responses, ...).
        body = json.dumps(
            document | {"model": backend.deployment}, ensure_ascii=False
        ).encode()
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


def json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise BadRequest(
            "The request body must be a JSON object with a 'model' field; "
            "azproxy picks the Azure deployment from it.",
            param="model",
        )
    return document
