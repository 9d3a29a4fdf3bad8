"""What is sent where: the client's request as the relay holds it
(Outgoing, before a backend is chosen) and, for each backend tried, the Azure
request it becomes (Target: URL, headers, body). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping
from yarl import URL

from azproxy.observe.usage import estimate_tokens
from azproxy.relay.families import route_for
from azproxy.relay.headers import request_headers
from azproxy.relay.mapping import Scope, upstream_url
from azproxy.relay.splice import Splice, spliced
from azproxy.relay.stream_usage import accepts_stream_options
from azproxy.relay.uploads import StreamBody, can_send_again

if TYPE_CHECKING:
    from azproxy.relay.backends import Backend
    from azproxy.relay.jsonbody import JsonObject

__all__ = ["Outgoing", "Target", "build_target", "outgoing_of"]


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x on every request
class Outgoing:
    """What the client asked for, before a backend is chosen."""

    method: str
    subpath: str  # the OpenAI path after /v1/
    headers: CIMultiDictProxy[str]  # the client's
    query: MultiMapping[str] | None  # the client's, None when it sent none
    body: bytes | StreamBody
    fields: JsonObject | None  # the parsed body, when it was needed
    scope: Scope = Scope.DEPLOYMENT
    # For a stream whose usage the client did not ask for: the splice that
    # asks Azure for it, sent where the api-version accepts it.
    usage_splice: Splice | None = None
    # False when the body is known not to contain `"stream"` (json_call
    # looked): asked_to_stream need not search it again.
    names_stream: bool = True

    @property
    def replayable(self) -> bool:
        return can_send_again(self.body)

    @property
    def prompt_tokens(self) -> int:
        """The prompt's tokens, estimated without parsing from a buffered
        body's size (JSON syntax makes it an over-estimate, which the real
        usage corrects); 0 for a body streamed from the client (uploads)."""
        body = self.body
        return estimate_tokens(len(body)) if isinstance(body, bytes) else 0


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x on every request
class Target:
    """One request to send to Azure, fully decided."""

    method: str
    url: URL
    # Never in its repr: the headers hold the Azure key, the body the prompt.
    headers: CIMultiDict[str] = field(repr=False)
    body: bytes | StreamBody = field(repr=False)
    backend: Backend
    # A call that creates or changes state on Azure (a resource-scoped POST or
    # DELETE: a batch, a run, a stored response): sending it twice could do it
    # twice, so it is sent again only if none of it went out.
    stateful: bool = False
    # When azproxy asked for the stream's usage (its usage chunk is then
    # azproxy's, not the client's), the body without that ask.
    unasked: bytes | None = None

    def __str__(self) -> str:
        """As the log names an attempt."""
        return f"upstream {self.url.host}"

    def without_usage(self) -> Target:
        """The same request with the body the client's own ask would have."""
        assert self.unasked is not None
        return Target(self.method, self.url, self.headers, self.unasked, self.backend)


def outgoing_of(
    request: web.BaseRequest,
    subpath: str,
    body: bytes | StreamBody,
    fields: JsonObject | None,
    scope: Scope = Scope.DEPLOYMENT,
) -> Outgoing:
    """What `request` asks for. Its query is parsed only when there is one
    (most requests have none)."""
    query = request.query if "?" in request.raw_path else None
    return Outgoing(
        request.method, subpath, request.headers, query, body, fields, scope
    )


def build_target(backend: Backend, outgoing: Outgoing) -> Target:
    """Decide the Azure URL, headers and body for one backend. No I/O."""
    endpoint = backend.endpoint
    body, fields = outgoing.body, outgoing.fields
    resource = outgoing.scope is Scope.RESOURCE
    route = route_for(outgoing.subpath, endpoint)
    splices: list[Splice] = []
    unasked: bytes | None = None
    if isinstance(body, bytes) and fields is not None:
        if (route.v1 or resource) and fields.model != backend.deployment:
            # Azure's v1 API takes the deployment name in the body's `model`;
            # so do the resource calls that carry a document (responses, ...).
            splices.append(fields.set_model(backend.deployment))
        usage = outgoing.usage_splice
        if usage is not None and accepts_stream_options(route):
            # Kept in case Azure refuses the ask (send.py): mostly the body
            # itself, no copy.
            unasked = spliced(body, splices)
            splices.append(usage)
            splices.sort(key=_start)
        if splices:
            body = spliced(body, splices)
    if isinstance(body, StreamBody) and route.v1:
        body = body.with_model(backend.deployment)  # the form's model field
    url = upstream_url(
        endpoint.base_url,
        outgoing.subpath,
        deployment=None if resource else backend.deployment,
        route=route,
        client_query=outgoing.query,
    )
    headers = request_headers(outgoing.headers)
    endpoint.authorize(headers)
    if unasked is not None:
        # Its usage chunk must come out of the stream: a compressed stream
        # could not be read, so this one is asked for uncompressed.
        headers[hdrs.ACCEPT_ENCODING] = "identity"
    if isinstance(body, StreamBody) and body.length is not None:
        headers[hdrs.CONTENT_LENGTH] = str(body.length)
    # Resource calls other than GET create or change state: sent once.
    stateful = resource and outgoing.method != "GET"
    return Target(outgoing.method, url, headers, body, backend, stateful, unasked)


def _start(splice: Splice) -> int:
    return splice.start
