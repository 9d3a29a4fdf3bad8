"""One request to Azure.

`send_once` makes a single attempt and returns Azure's answer with its first
body chunk already read (so an "overloaded" first event can still be retried),
or raises Failure when there is no usable answer, saying whether another try
could help. What to do about it is policy: attempts.py. No redirect is ever
followed (refuse_redirect).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import hdrs

from azproxy.errors import (
    Failure,
    ProxyError,
    UpstreamTimeout,
    UpstreamUnreachable,
    forget_frames,
)
from azproxy.relay.uploads import StreamBody

if TYPE_CHECKING:  # types only: sending needs none of these modules' code
    from azproxy.keys import UpstreamSession
    from azproxy.observe.exchange import Exchange
    from azproxy.relay.backends import Backend
    from azproxy.relay.target import Target
    from azproxy.settings.config import Config

__all__ = [
    "Reply",
    "client_error",
    "connection_failure",
    "refuse_redirects",
    "send_once",
]

log = logging.getLogger("azproxy.relay")

# The original proxy retried when the first event said so (Azure's 200 + error).
OVERLOADED = b"That model is currently overloaded"
# An error answer that names it refuses the stream_options azproxy added.
USAGE_REFUSED = b"stream_options"


class Reply:
    """Azure's answer, with its first body chunk already read.

    What the relay asks of every answer (its status, whether it is a stream,
    an "overloaded" first event, a missing deployment) is decided once, here:
    read as plain attributes, not properties (each a call on Python 3.11).
    """

    __slots__ = (
        "asked_usage",
        "backend",
        "deployment_not_found",
        "first",
        "is_sse",
        "overloaded",
        "response",
        "status",
    )

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        first: bytes,
        backend: Backend,
        asked_usage: bool = False,
    ) -> None:
        self.response = response
        self.first = first
        self.backend = backend  # the deployment that answered
        # azproxy asked for the stream's usage (Target.unasked): the
        # usage-only chunk is azproxy's, not the client's.
        self.asked_usage = asked_usage
        status = self.status = response.status
        self.is_sse = is_event_stream(response.headers.get(hdrs.CONTENT_TYPE))
        # find(), not `in`: `bytes in bytes` first tries the needle as an int
        # and formats the TypeError it gets, which costs more than the search.
        self.overloaded = self.is_sse and first.find(OVERLOADED) >= 0
        self.deployment_not_found = (
            status == 404 and first.find(b"DeploymentNotFound") >= 0
        )

    def close(self) -> None:
        self.response.close()


def is_event_stream(content_type: str | None) -> bool:
    """Whether a Content-Type names an SSE stream (its media type only,
    parameters and case aside)."""
    if content_type is None:
        return False
    media_type = content_type.partition(";")[0]
    return media_type.strip().lower() == "text/event-stream"


async def send_once(
    session: UpstreamSession, config: Config, target: Target, exchange: Exchange
) -> Reply:
    host = target.url.host
    body = target.body
    stream = body if isinstance(body, StreamBody) else None
    backend = target.backend
    exchange.attempts += 1
    exchange.deployment = backend.deployment or None
    exchange.endpoint = backend.endpoint.name
    exchange.upstream_status = None
    try:
        response = await session.request(
            target.method,
            target.url,
            headers=target.headers,
            # No body at all (not an empty one) for a GET: RFC 9110 §8.6.
            data=stream.chunks() if stream is not None else body or None,
            allow_redirects=False,
            # The session's refuse_redirects is for ws_connect, which follows
            # redirects; here the check below costs less than its layer.
            middlewares=(),
        )
    except aiohttp.ClientError as exc:
        forget_frames(exc)  # also when the client's error is the one raised
        # Raised, not held in a local: this frame would hold the error whose
        # traceback holds this frame (a cycle keeping the body).
        raise client_error(body) or connection_failure(
            exc,
            host,
            f"Azure OpenAI at {host} sent no response headers within "
            f"{config.header_timeout_s:g} s (header_timeout_s).",
        ) from None
    refuse_redirect(response)
    if stream is not None:
        # The upload may still be going out: if it breaks now, this answer
        # is cut too (aiohttp would otherwise wait for it with no timeout).
        stream.when_cut(response.close)
    exchange.upstream_status = response.status
    # Headers are in: from now on the limit is the idle gap between chunks.
    # (Not when the whole body has arrived already: a timer restarted then
    # would outlive the response on the pooled connection.)
    connection = response.connection
    if (
        connection is not None
        and connection.protocol is not None
        and not response.content.is_eof()
    ):
        connection.protocol.read_timeout = config.read_timeout_s
        connection.protocol.start_timeout()
    try:
        first = await response.content.readany()
    except aiohttp.ServerTimeoutError as exc:
        response.close()
        # The answer's reader keeps the error it raised: its traceback would
        # hold this frame, and the frame the target, body and all (a cycle).
        forget_frames(exc)
        raise Failure(
            UpstreamTimeout(
                f"Azure OpenAI at {host} sent headers but no body within "
                f"{config.read_timeout_s:g} s (read_timeout_s)."
            ),
            retryable=False,
        ) from None
    except aiohttp.ClientError as exc:
        response.close()
        forget_frames(exc)
        raise client_error(body) or Failure(
            UpstreamUnreachable(
                f"The connection to Azure OpenAI at {host} broke before the "
                f"answer started ({type(exc).__name__})."
            ),
            retryable=True,
        ) from None
    if (
        target.unasked is not None
        and response.status == 400
        and first.find(USAGE_REFUSED) >= 0
    ):
        # Azure (or a gateway in front of it) refused the stream_options
        # azproxy added: the client's own request goes instead, and its
        # usage will be estimated. Never a request broken by the ask.
        response.close()
        log.warning("Azure refused stream_options at %s; sent without it", host)
        return await send_once(session, config, target.without_usage(), exchange)
    return Reply(response, first, backend, target.unasked is not None)


def connection_failure(
    exc: aiohttp.ClientError, host: str | None, no_answer: str
) -> Failure:
    """What an error aiohttp raised before Azure answered means, for an HTTP
    request (send_once) and a realtime handshake alike: whether another try
    could help, and what the client is told. `no_answer` says which wait ran
    out when Azure sent nothing in time (not retried: it would only double a
    long wait). Its frames are forgotten (forget_frames)."""
    forget_frames(exc)
    # aiohttp raises these two only while it opens the connection (connect,
    # TLS handshake), before it writes any of the request: always unsent.
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Failure(
            UpstreamTimeout(f"Timed out connecting to Azure OpenAI at {host}."),
            retryable=True,
            unsent=True,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure(
            UpstreamUnreachable(
                f"Could not reach Azure OpenAI at {host} ({type(exc).__name__})."
            ),
            retryable=True,
            unsent=True,
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return Failure(UpstreamTimeout(no_answer), retryable=False)
    return Failure(
        UpstreamUnreachable(
            f"Could not reach Azure OpenAI at {host} ({type(exc).__name__})."
        ),
        retryable=True,
    )


def client_error(body: bytes | StreamBody) -> ProxyError | None:
    """The client's error when its body broke off while it was sent (too
    large, too slow, a second model field): then that is why the request
    failed, not Azure, never retried, no deployment's fault. A new instance
    each time: the body keeps its error, which, raised itself, would hold
    the frames that hold the body (a cycle)."""
    if isinstance(body, StreamBody) and body.error is not None:
        return body.error.reworded(body.error.message)
    return None


def refuse_redirect(response: aiohttp.ClientResponse) -> None:
    """No 3xx from upstream is followed or relayed: 502 upstream_redirect.

    Azure OpenAI does not redirect; a 3xx comes from something in between.
    Following it would carry the api-key or token to wherever it points, and
    relaying it would let the client follow it with its own credentials (a
    pass-through token holds an Azure key). 304 Not Modified answers a
    conditional request: it points nowhere. The refusal is a ProxyError, not
    a ClientError, so that no retry or failover catches it: another attempt
    would meet the same redirect.
    """
    status = response.status
    if 300 <= status < 400 and status != 304:
        response.close()
        log.warning(
            "Azure OpenAI at %s answered %s %s with a redirect (HTTP %d); not followed",
            response.url.host,
            response.method,
            response.url.path,
            status,
        )
        # The Location is not echoed: it may carry a signed URL or a token.
        raise UpstreamUnreachable(
            f"Azure OpenAI answered with a redirect (HTTP {status}), which "
            "azproxy never follows: it would carry the Azure credentials "
            "elsewhere. Check the endpoint URL in azproxy's configuration.",
            code="upstream_redirect",
        )


async def refuse_redirects(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """The upstream session's middleware: refuse_redirect on every hop.

    For ws_connect (the realtime handshake), which follows up to 10
    redirects, keeping `api-key` across origins (it drops only
    Authorization), and takes no per-request middlewares or
    allow_redirects. aiohttp runs session middlewares on every hop of its
    redirect loop, ws_connect's included, so this stops the first one.
    send_once opts out (middlewares=()) and checks inline.
    """
    response = await handler(request)
    refuse_redirect(response)
    return response
