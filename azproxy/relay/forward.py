"""Relay one request: send it to Azure (with the original retry rules, or
failing over between deployments) and relay the answer as it arrives.

The answer is relayed chunk by chunk as it arrives (DESIGN.md §4). Retries
happen only before the first byte reaches the client; after that, an upstream
failure ends an SSE stream with an explicit error event, and any other body
with a closed connection, so a client never mistakes a cut answer for a whole one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from aiohttp import web

from azproxy.auth.callers import Backend
from azproxy.keys import CONFIG, EXCHANGE, SESSION
from azproxy.observe.metrics import METRICS
from azproxy.observe.usage import usage_of
from azproxy.relay.failover import fail_over
from azproxy.relay.headers import response_headers
from azproxy.relay.send import Reply, send_with_retries
from azproxy.relay.stream import pump
from azproxy.relay.target import JSON_BOUNDS, Outgoing, build_target
from azproxy.relay.terminal import asked_to_stream, terminal_for
from azproxy.relay.upstream_slots import LIMITER

__all__ = ["answer", "relay", "with_deployment_hint"]

log = logging.getLogger("azproxy.relay")


async def relay(
    request: web.Request,
    backends: Sequence[Backend],
    outgoing: Outgoing,
    *,
    failover: bool = False,
    model: str | None = None,
) -> web.StreamResponse:
    """Send the request to Azure (failing over between backends for
    server-side routing, else with the original retry rules) and relay the
    answer."""
    app = request.app
    exchange = request[EXCHANGE]
    exchange.model = model
    exchange.failover = failover
    limiter = app[LIMITER]
    if not limiter.try_acquire():
        await limiter.acquire()
    try:
        if failover:
            reply, backend = await fail_over(request, backends, outgoing, model)
        else:
            backend = backends[0]
            target = build_target(backend, outgoing, request)
            reply = await send_with_retries(app[SESSION], app[CONFIG], target, exchange)
        try:
            response = await answer(request, reply, backend, outgoing)
        except BaseException:
            # Client gone (cancelled): drop the upstream connection at once
            # rather than draining it.
            reply.close()
            raise
        reply.response.release()
        return response
    finally:
        limiter.release()


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


async def answer(
    request: web.Request, reply: Reply, backend: Backend, outgoing: Outgoing
) -> web.StreamResponse:
    """Relay status, headers and body; the body chunk by chunk as it arrives.

    A 2xx answer to a request that asked to stream is relayed as a stream
    even without Azure's `text/event-stream` (a gateway may relabel it).
    """
    upstream, first = reply.response, reply.first
    exchange = request[EXCHANGE]
    headers = response_headers(upstream.headers)
    if backend.deployment:  # resource calls (files, ...) use none
        headers["x-azproxy-deployment"] = backend.deployment
    sse = reply.is_sse or (
        upstream.status < 300
        and terminal_for(request.path) is not None  # a streaming family
        and asked_to_stream(outgoing, request.app[JSON_BOUNDS])
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
    if sse:
        # Keep any proxy in front (nginx) from buffering the stream.
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    response = web.StreamResponse(
        status=upstream.status, reason=upstream.reason, headers=headers
    )
    if not sse and upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    exchange.stream = sse
    metrics = request.app[METRICS]
    metrics.streams_in_flight += 1
    try:
        await pump(request, response, reply, sse, exchange)
    finally:
        metrics.streams_in_flight -= 1
    return response
