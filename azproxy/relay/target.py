"""What is sent where: the client's request as the relay holds it
(Outgoing, before a backend is chosen) and, for each backend tried, the Azure
request it becomes (Target: URL, headers, body). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from azproxy.relay.families import route_for
from azproxy.relay.headers import request_headers
from azproxy.relay.mapping import Scope, upstream_url
from azproxy.relay.splice import spliced
from azproxy.relay.uploads import StreamBody, can_send_again

if TYPE_CHECKING:
    from azproxy.relay.backends import Backend
    from azproxy.relay.jsonbody import JsonObject

__all__ = ["Outgoing", "Target", "build_target"]


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


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x on every request
class Target:
    """One request to send to Azure, fully decided."""

    method: str
    url: URL
    headers: CIMultiDict[str]
    body: bytes | StreamBody
    backend: Backend
    # A call that creates or changes state on Azure (a resource-scoped POST or
    # DELETE: a batch, a run, a stored response): sending it twice could do it
    # twice, so it is sent again only if none of it went out.
    stateful: bool = False

    @property
    def replayable(self) -> bool:
        return can_send_again(self.body)


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
    endpoint.authorize(headers)
    if isinstance(body, StreamBody) and body.length is not None:
        headers[hdrs.CONTENT_LENGTH] = str(body.length)
    # Resource calls other than GET create or change state: sent once.
    stateful = resource and outgoing.method != "GET"
    return Target(outgoing.method, url, headers, body, backend, stateful)
