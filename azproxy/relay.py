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
from multidict import CIMultiDict
from yarl import URL

from .config import Config
from .errors import (
    BadRequest,
    PayloadTooLarge,
    UpstreamTimeout,
    UpstreamUnreachable,
    error_body,
)
from .headers import request_headers, response_headers
from .keys import CALLER, CONFIG, SESSION, UpstreamSession
from .mapping import Scope, classify, unknown_url, upstream_url
from .routing import Backend
from .sse import normaliser_for
from .uploads import StreamBody

__all__ = ["Outgoing", "Target", "build_target", "handle", "relay"]

log = logging.getLogger("azproxy.relay")

# The original proxy retried when the first event said so (Azure's 200 + error).
OVERLOADED = b"That model is currently overloaded"
EVENT_ENDINGS = (b"\n\n", b"\r\n\r\n", b"\r\r")


@dataclass(frozen=True, slots=True)
class Target:
    """One request to send to Azure, fully decided."""

    method: str
    url: URL
    headers: CIMultiDict[str]
    body: bytes | StreamBody
    backend: Backend


async def handle(request: web.Request) -> web.StreamResponse:
    path = request.path
    if not path.startswith("/v1/"):
        raise unknown_url(request.method, path)
    subpath = path[4:]
    classify(request.method, subpath)
    body = await read_body(request)
    caller = request[CALLER]
    document: dict[str, Any] | None = None
    model: str | None = None
    # Parse JSON only when the answer depends on it: a pass-through token
    # with one deployment skips it.
    if caller.needs_model:
        document = json_object(body)
        found = document.get("model")
        model = found if isinstance(found, str) else None
    outgoing = Outgoing(request.method, subpath, body, document)
    return await relay(request, caller.backends(model), outgoing)


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CONFIG].max_body_mb
        raise PayloadTooLarge(
            f"The request body is larger than {limit:g} MB "
            "(raise max_body_mb to accept it)."
        ) from None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What the client asked for, before a backend is chosen."""

    method: str
    subpath: str  # the OpenAI path after /v1/
    body: bytes | StreamBody
    document: dict[str, Any] | None  # the parsed body, when it was needed
    scope: Scope = Scope.DEPLOYMENT


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
    request: web.Request, backends: Sequence[Backend], outgoing: Outgoing
) -> web.StreamResponse:
    """Send to the first backend; move to the next only if Azure says the
    deployment does not exist (the model-name fallbacks)."""
    config = request.app[CONFIG]
    session = request.app[SESSION]
    for index, backend in enumerate(backends):
        target = build_target(backend, outgoing, request)
        upstream, first = await open_upstream(session, config, target)
        last = index == len(backends) - 1
        if not last and is_deployment_not_found(upstream, first):
            upstream.close()
            continue
        try:
            response = await answer(request, upstream, first, target.backend)
        except BaseException:
            # Client gone (cancelled) or writing failed: drop the upstream
            # connection at once rather than draining it.
            upstream.close()
            raise
        upstream.release()
        return response
    raise AssertionError("unreachable: a caller always yields a backend")


def is_deployment_not_found(upstream: aiohttp.ClientResponse, first: bytes) -> bool:
    return upstream.status == 404 and b"DeploymentNotFound" in first


async def open_upstream(
    session: UpstreamSession, config: Config, target: Target
) -> tuple[aiohttp.ClientResponse, bytes]:
    """Send the request, retrying as the original proxy did; return the
    response with its first body chunk already read.

    Retried (up to config.retries times, config.retry_delay_s apart):
    connection errors, 5xx, and a first SSE event saying the model is
    overloaded. Never retried: 4xx (429 included) and a timeout waiting for
    Azure to answer, which would only double the wait.
    """
    host = target.url.host
    body = target.body
    # A body streamed from the client (an upload) is consumed by the first
    # attempt: it cannot be sent again, so it is never retried.
    replayable = not isinstance(body, StreamBody) or body.replayable
    retries = config.retries if replayable else 0
    for attempt in range(retries + 1):
        retries_left = attempt < retries
        try:
            upstream = await session.request(
                target.method,
                target.url,
                headers=target.headers,
                # No body at all (not an empty one) for a GET: RFC 9110 §8.6.
                data=body.chunks() if isinstance(body, StreamBody) else body or None,
                allow_redirects=False,
            )
        except aiohttp.ConnectionTimeoutError:
            if retries_left:
                await _pause_before_retry(config, attempt, "connect timeout", host)
                continue
            raise UpstreamTimeout(
                f"Timed out connecting to Azure OpenAI at {host} "
                f"after {attempt + 1} attempt(s)."
            ) from None
        except aiohttp.ServerTimeoutError:
            raise UpstreamTimeout(
                f"Azure OpenAI at {host} sent no response headers within "
                f"{config.header_timeout_s:g} s (header_timeout_s)."
            ) from None
        except aiohttp.ClientError as exc:
            if retries_left:
                await _pause_before_retry(config, attempt, type(exc).__name__, host)
                continue
            raise UpstreamUnreachable(
                f"Could not reach Azure OpenAI at {host} after {attempt + 1} "
                f"attempt(s) ({type(exc).__name__})."
            ) from None

        if upstream.status >= 500 and retries_left:
            upstream.close()
            await _pause_before_retry(config, attempt, f"HTTP {upstream.status}", host)
            continue
        # Headers are in: from now on the limit is the idle gap between chunks.
        # (Not when the body is already complete: a timer restarted then
        # would outlive the response on the pooled connection.)
        connection = upstream.connection
        if (
            connection is not None
            and connection.protocol is not None
            and not upstream.content.at_eof()
        ):
            connection.protocol.read_timeout = config.read_timeout_s
            connection.protocol.start_timeout()
        try:
            first = await upstream.content.readany()
        except aiohttp.ServerTimeoutError:
            upstream.close()
            raise UpstreamTimeout(
                f"Azure OpenAI at {host} sent headers but no body within "
                f"{config.read_timeout_s:g} s (read_timeout_s)."
            ) from None
        except aiohttp.ClientError as exc:
            upstream.close()
            if retries_left:
                await _pause_before_retry(config, attempt, type(exc).__name__, host)
                continue
            raise UpstreamUnreachable(
                f"The connection to Azure OpenAI at {host} broke before the "
                f"answer started ({type(exc).__name__})."
            ) from None
        if retries_left and OVERLOADED in first and is_sse(upstream):
            upstream.close()
            await _pause_before_retry(config, attempt, "model overloaded", host)
            continue
        return upstream, first
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _pause_before_retry(
    config: Config, attempt: int, reason: str, host: str | None
) -> None:
    log.warning(
        "upstream %s failed (%s); retry %d/%d in %g s",
        host,
        reason,
        attempt + 1,
        config.retries,
        config.retry_delay_s,
    )
    await asyncio.sleep(config.retry_delay_s)


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


def is_sse(upstream: aiohttp.ClientResponse) -> bool:
    return upstream.content_type == "text/event-stream"


async def answer(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    first: bytes,
    backend: Backend,
) -> web.StreamResponse:
    """Relay status, headers and body; the body chunk by chunk as it arrives."""
    headers = response_headers(upstream.headers)
    if backend.deployment:  # resource calls (files, ...) use none
        headers["x-azproxy-deployment"] = backend.deployment
    sse = is_sse(upstream)
    if is_deployment_not_found(upstream, first) and upstream.content.at_eof():
        first = with_deployment_hint(first, backend)
    if not sse and upstream.content.at_eof():
        # The whole body came in one read: send headers and body in one write.
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
    # sse_compat=openai: whole events, minus Azure's extra chunks.
    tidy = normaliser_for(request, sse)
    chunk = first
    while chunk:
        out = chunk if tidy is None else tidy.feed(chunk)
        if out:
            await response.write(out)
        try:
            next_chunk = await upstream.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The normaliser writes whole events only (a partial one it holds
            # is dropped): the error event needs no separator then.
            last = chunk if tidy is None else b"\n\n"
            await end_broken_stream(request, response, sse, last, exc)
            return response
        chunk = next_chunk
    if tidy is not None and (rest := tidy.flush()):
        await response.write(rest)
    return response


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
        try:
            await response.write(separator + event)
        except ConnectionError:
            return
    if request.transport is not None:
        # close() flushes what is buffered, then closes; the write_eof that
        # aiohttp attempts afterwards finds the transport closing and stops.
        request.transport.close()
