"""The catch-all handler: map an OpenAI request to Azure and relay the answer.

The answer is relayed chunk by chunk as it arrives (DESIGN.md §4). Retries
happen only before the first byte reaches the client; after that, an upstream
failure ends an SSE stream with an explicit error event, and any other body
with a closed connection, so a client never mistakes a cut answer for a whole one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import hdrs, web

from .errors import BadRequest, PayloadTooLarge, ProxyError, RateLimited, error_body
from .headers import request_headers, response_headers
from .health import AllCoolingDown, retry_after_headers, retry_after_s
from .keys import CALLER, CONFIG, EXCHANGE, HEALTH, LIMITER, METRICS, SESSION
from .mapping import Scope, upstream_url
from .observe import Exchange, usage_of
from .routing import Backend
from .sse import normaliser_for
from .uploads import StreamBody
from .upstream import Failure, Reply, Target, send_once, send_with_retries

__all__ = ["Outgoing", "build_target", "fail_over", "json_call", "relay"]

log = logging.getLogger("azproxy.relay")

EVENT_ENDINGS = (b"\n\n", b"\r\n\r\n", b"\r\r")


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
        """Whether the body can be sent again (a streamed upload cannot)."""
        return not isinstance(self.body, StreamBody) or self.body.replayable


def build_target(
    backend: Backend, outgoing: Outgoing, request: web.BaseRequest
) -> Target:
    """Decide the Azure URL, headers and body for one backend. No I/O."""
    endpoint = backend.endpoint
    body, document = outgoing.body, outgoing.document
    resource = outgoing.scope is Scope.RESOURCE
    if (
        (endpoint.api_version == "v1" or resource)
        and document is not None
        and document.get("model") != backend.deployment
    ):
        # Azure's v1 API takes the deployment name in the body's `model`;
        # so do the resource calls that carry a document (responses, ...).
        body = json.dumps(
            document | {"model": backend.deployment}, ensure_ascii=False
        ).encode()
    if isinstance(body, StreamBody) and endpoint.api_version == "v1":
        body = body.with_model(backend.deployment)  # the form's model field
    url = upstream_url(
        endpoint.base_url,
        outgoing.subpath,
        deployment=None if resource else backend.deployment,
        api_version=endpoint.api_version,
        client_query=request.query,
    )
    headers = request_headers(request.headers)
    name, value = endpoint.auth.header()
    headers[name] = value
    if isinstance(body, StreamBody) and body.length is not None:
        headers[hdrs.CONTENT_LENGTH] = str(body.length)
    return Target(outgoing.method, url, headers, body, backend)


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
            response = await answer(request, reply, backend)
        except BaseException:
            # Client gone (cancelled): drop the upstream connection at once
            # rather than draining it.
            reply.close()
            raise
        reply.response.release()
        return response
    finally:
        limiter.release()


async def fail_over(
    request: web.Request,
    backends: Sequence[Backend],
    outgoing: Outgoing,
    model: str | None,
) -> tuple[Reply, Backend]:
    """Try the model's deployments, best first, until one answers well.

    A 429 or 408, a 5xx, an "overloaded" first event, a connection error or
    no headers in time move on to the next deployment at once (no sleeping)
    and put the failed one in cooldown. Any other answer, 4xx included, is the
    answer. All this happens before the first byte reaches the client.
    """
    app = request.app
    config, board = app[CONFIG], app[HEALTH]
    try:
        plan = board.plan(backends)[: config.max_attempts]
    except AllCoolingDown as cooling:
        raise all_cooling_down(model, cooling.wait_s) from None
    if not outgoing.replayable:
        plan = plan[:1]  # a body streamed once cannot go to another
    last: tuple[Reply, Backend] | None = None
    error: ProxyError | None = None
    try:
        for index, backend in enumerate(plan):
            try:
                reply = await attempt(request, backend, outgoing)
            except Failure as failure:
                error = failure.error
                log.warning("deployment %s failed: %s", backend.name, error.message)
                continue
            if backend.guess and reply.deployment_not_found and index < len(plan) - 1:
                board.abandoned(backend)
                reply.close()  # a guessed name that does not exist: try the next
                continue
            if reply.status in (408, 429):
                board.rate_limited(backend, retry_after_s(reply.response.headers))
            elif reply.status >= 500 or reply.overloaded:
                board.failed(backend)
            else:
                board.succeeded(backend)
                if last is not None:
                    last[0].close()
                return reply, backend
            log.warning(
                "deployment %s answered %d; failing over", backend.name, reply.status
            )
            if last is not None:
                last[0].close()
            last = (reply, backend)
    except BaseException:
        if last is not None:
            last[0].close()  # cancelled meanwhile: release the kept answer
        raise
    if last is not None:
        if last[0].status == 429:
            try:
                board.plan(backends)
            except AllCoolingDown as cooling:
                last[0].close()
                raise all_cooling_down(model, cooling.wait_s) from None
        return last
    assert error is not None
    raise error


async def attempt(request: web.Request, backend: Backend, outgoing: Outgoing) -> Reply:
    """One try at one deployment, as the health board sees it: a connection
    error or a timeout is a failure; a try that ends with no verdict at all
    (the client cancelled, no credentials to send) lets a half-open breaker
    be probed again instead of waiting for a verdict that never comes."""
    app = request.app
    board = app[HEALTH]
    board.started(backend)
    try:
        target = build_target(backend, outgoing, request)
        return await send_once(app[SESSION], app[CONFIG], target, request[EXCHANGE])
    except Failure:
        board.failed(backend)
        raise
    except BaseException:
        board.abandoned(backend)
        raise


def all_cooling_down(model: str | None, wait_s: float) -> ProxyError:
    return RateLimited(
        f"Every Azure deployment of model {model!r} is rate-limited or failing "
        f"right now; retry after {wait_s:.1f} s.",
        headers=retry_after_headers(wait_s),
    )


def with_deployment_hint(body: bytes, backend: Backend) -> bytes:
    """Azure's DeploymentNotFound, plus which deployment and endpoint azproxy
    used: the most common misconfiguration, made easy to fix."""
    try:
        document = json.loads(body)
        error = document["error"]
        error["message"] = (
            f"{error.get('message', '')} (azproxy sent this request to deployment "
            f"{backend.deployment!r} on endpoint {backend.endpoint.name!r} at "
            f"{backend.endpoint.base_url}; check the deployment name in your "
            "model map or credentials.)"
        ).lstrip()
        return json.dumps(document).encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        return body


async def answer(
    request: web.Request, reply: Reply, backend: Backend
) -> web.StreamResponse:
    """Relay status, headers and body; the body chunk by chunk as it arrives."""
    upstream, first = reply.response, reply.first
    exchange = request[EXCHANGE]
    headers = response_headers(upstream.headers)
    if backend.deployment:  # resource calls (files, ...) use none
        headers["x-azproxy-deployment"] = backend.deployment
    sse = reply.is_sse
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


async def pump(
    request: web.Request,
    response: web.StreamResponse,
    reply: Reply,
    sse: bool,
    exchange: Exchange,
) -> None:
    """Relay the body chunk by chunk; end it explicitly if Azure fails."""
    upstream = reply.response
    # sse_compat=openai: whole events, minus Azure's extra chunks.
    tidy = normaliser_for(request, sse)
    chunk, previous = reply.first, b""
    while chunk:
        out = chunk if tidy is None else tidy.feed(chunk)
        if out and not await deliver(request, response, out, exchange):
            upstream.close()  # the client is gone: so is the Azure request
            return
        try:
            next_chunk = await upstream.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The normaliser writes whole events only (a partial one it holds
            # is dropped): the error event needs no separator then.
            last = chunk if tidy is None else b"\n\n"
            await end_broken_stream(request, response, sse, last, exc)
            return
        if next_chunk:
            previous = chunk
        chunk = next_chunk
    if tidy is not None and (rest := tidy.flush()):
        await deliver(request, response, rest, exchange)
    # A stream's usage (stream_options.include_usage) is in its last events.
    exchange.usage = usage_of(previous + chunk) if sse else None


async def deliver(
    request: web.Request,
    response: web.StreamResponse,
    chunk: bytes,
    exchange: Exchange,
) -> bool:
    """Write a chunk to the client; False when the client is gone or stalled.

    A client that stops reading makes writes block once the transport's
    buffer is full, which also stops reading from Azure (backpressure, so
    memory stays bounded). Such a client gets client_write_timeout_s to read
    again; then both connections are dropped.
    """
    transport = request.transport
    try:
        if transport is None or (
            transport.get_write_buffer_size() + len(chunk)
            <= transport.get_write_buffer_limits()[1]
        ):
            # Stays under the high-water mark: the write cannot block.
            await response.write(chunk)
            exchange.sent(len(chunk))
            return True
        timeout = request.app[CONFIG].client_write_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await response.write(chunk)
            exchange.sent(len(chunk))
        except TimeoutError:
            log.warning("client read nothing for %g s; dropping the stream", timeout)
            transport.abort()
            return False
    except ConnectionError:
        return False
    return True


async def end_broken_stream(
    request: web.Request,
    response: web.StreamResponse,
    sse: bool,
    last_chunk: bytes,
    exc: BaseException,
) -> None:
    """Azure failed after the answer started: make the failure explicit.

    SSE gets a final `data: {"error": ...}` event, which the openai SDKs raise
    as an APIError. Then the connection closes without the chunked
    terminator, so even a client that ignores the event sees a broken
    transfer, never a clean-looking truncated answer.
    """
    if isinstance(exc, TimeoutError):
        timeout = request.app[CONFIG].read_timeout_s
        message = (
            f"Azure OpenAI sent nothing for {timeout:g} s (read_timeout_s); "
            "the answer is incomplete."
        )
        code = "upstream_timeout"
    else:
        message = (
            "The connection to Azure OpenAI broke mid-answer "
            f"({type(exc).__name__}); the answer is incomplete."
        )
        code = "upstream_stream_error"
    log.warning("stream to client cut: %s", message)
    if sse:
        # A partial event would swallow the error event's first line.
        separator = b"" if last_chunk.endswith(EVENT_ENDINGS) else b"\n\n"
        event = b"data: " + error_body(message, "api_error", code) + b"\n\n"
        # Through deliver(): a client that stopped reading gets no more
        # time here than anywhere else.
        if not await deliver(request, response, separator + event, request[EXCHANGE]):
            return
    if request.transport is not None:
        # close() flushes what is buffered, then closes; the write_eof that
        # aiohttp attempts afterwards finds the transport closing and stops.
        request.transport.close()
