"""The answer: Azure's status, headers and body relayed to the client.

The body is relayed chunk by chunk as it arrives (DESIGN.md §4), or in one
write when it all came with the first read. Retries happen only before the
first byte reaches the client (attempts.py); after that, an upstream failure
ends an SSE stream with an explicit error event, and any other body with a
closed connection, so a client never mistakes a cut answer for a whole one
(stream.py).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from azproxy.front.cors import add_cors_headers
from azproxy.observe.observer import ensure_request_id
from azproxy.observe.usage import usage_of
from azproxy.relay.headers import response_headers
from azproxy.relay.refusal import REFUSALS, refused_credentials
from azproxy.relay.stream import relay_body
from azproxy.relay.terminal import asked_to_stream, terminal_for

if TYPE_CHECKING:
    from azproxy.observe.exchange import Exchange
    from azproxy.relay.backends import Backend
    from azproxy.relay.context import RelayContext
    from azproxy.relay.send import Reply
    from azproxy.relay.target import Outgoing

__all__ = ["answer", "with_deployment_hint"]

log = logging.getLogger("azproxy.relay")


def with_deployment_hint(body: bytes, backend: Backend) -> bytes:
    """Azure's DeploymentNotFound, plus which deployment and endpoint azproxy
    used: the most common misconfiguration, made easy to fix. The client
    learns the endpoint's name; its URL (server configuration) goes to the
    log, for the operator."""
    endpoint = backend.endpoint
    log.warning(
        "Azure has no deployment %r on endpoint %r at %s (DeploymentNotFound)",
        backend.deployment,
        endpoint.name,
        endpoint.base_url,
    )
    try:
        document = json.loads(body)
        error = document["error"]
        error["message"] = (
            f"{error.get('message', '')} (azproxy sent this request to deployment "
            f"{backend.deployment!r} on endpoint {endpoint.name!r}; check the "
            "deployment name in your model map or credentials.)"
        ).lstrip()
        return json.dumps(document).encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        return body


def body_size(outgoing: Outgoing) -> int:
    """The request body's bytes (the base of a prompt's token estimate)."""
    body = outgoing.body
    return len(body) if isinstance(body, bytes) else body.length or 0


async def answer(
    context: RelayContext,
    request: web.Request,
    exchange: Exchange,
    reply: Reply,
    outgoing: Outgoing,
) -> web.StreamResponse:
    """Relay status, headers and body; the body chunk by chunk as it arrives.

    A 2xx answer to a request that asked to stream is relayed as a stream
    even without Azure's `text/event-stream` (a gateway may relabel it).
    """
    upstream, first, backend = reply.response, reply.first, reply.backend
    if upstream.status in REFUSALS:
        refusal = refused_credentials(reply)
        if refusal is not None:
            raise refusal  # the caller releases the answer
    headers = response_headers(upstream.headers)
    if backend.deployment:  # resource calls (files, ...) use none
        headers["x-azproxy-deployment"] = backend.deployment
    sse = reply.is_sse or (
        upstream.status < 300
        # A body that was not parsed and does not name "stream" did not ask
        # (asked_to_stream says so too): most stop here, with no call.
        and (outgoing.fields is not None or outgoing.names_stream)
        and terminal_for(exchange.path) is not None  # a streaming family
        and asked_to_stream(outgoing, context.json_bounds)
    )
    if reply.deployment_not_found and upstream.content.at_eof():
        first = with_deployment_hint(first, backend)
    if not sse and upstream.content.at_eof():
        # The whole body came in one read: send headers and body in one write.
        exchange.sent(len(first))
        exchange.usage = usage_of(first)
        return web.Response(
            status=upstream.status, reason=upstream.reason, body=first, headers=headers
        )
    if exchange.ticket is not None:  # a limited key: its remaining budgets
        headers.update(exchange.ticket.headers)
    if sse:
        # Keep any proxy in front (nginx) from buffering the stream.
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    ensure_request_id(headers)  # sent now, before Observer.done runs
    add_cors_headers(request, headers)
    response = web.StreamResponse(
        status=upstream.status, reason=upstream.reason, headers=headers
    )
    if not sse and upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    exchange.stream = sse
    metrics, lifecycle = context.metrics, context.lifecycle
    metrics.streams_in_flight += 1
    try:
        lifecycle.relaying(upstream)  # a shutdown past its grace cuts it
        await relay_body(request, response, reply, sse, exchange, body_size(outgoing))
    finally:
        lifecycle.relayed(upstream)
        metrics.streams_in_flight -= 1
    return response
