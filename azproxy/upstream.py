"""One request to Azure, and the original proxy's retry rules.

`send_once` makes a single attempt and returns Azure's answer with its first
body chunk already read (so an "overloaded" first event can still be retried),
or raises Failure when there is no usable answer. What to do about a bad
answer is policy: `send_with_retries` keeps the original proxy's rules for
pass-through tokens; relay.failover moves to another deployment.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .config import Config
from .errors import ProxyError, UpstreamTimeout, UpstreamUnreachable
from .keys import UpstreamSession
from .observe import Exchange
from .routing import Backend
from .uploads import StreamBody, can_send_again

__all__ = [
    "Failure",
    "Reply",
    "Target",
    "pause_before_retry",
    "send_once",
    "send_with_retries",
]

log = logging.getLogger("azproxy.relay")

# The original proxy retried when the first event said so (Azure's 200 + error).
OVERLOADED = b"That model is currently overloaded"


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 3x on every request
class Target:
    """One request to send to Azure, fully decided."""

    method: str
    url: URL
    headers: CIMultiDict[str]
    body: bytes | StreamBody
    backend: Backend

    @property
    def replayable(self) -> bool:
        return can_send_again(self.body)


@dataclass(slots=True)
class Reply:
    """Azure's answer, with its first body chunk already read."""

    response: aiohttp.ClientResponse
    first: bytes

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def is_sse(self) -> bool:
        return self.response.content_type == "text/event-stream"

    @property
    def overloaded(self) -> bool:
        return OVERLOADED in self.first and self.is_sse

    @property
    def deployment_not_found(self) -> bool:
        return self.status == 404 and b"DeploymentNotFound" in self.first

    def close(self) -> None:
        self.response.close()


class Failure(Exception):
    """No usable answer. `error` is what the client gets if nothing else works;
    `retryable` says whether the original proxy would have tried again."""

    def __init__(self, error: ProxyError, *, retryable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable


async def send_once(
    session: UpstreamSession, config: Config, target: Target, exchange: Exchange
) -> Reply:
    host = target.url.host
    body = target.body
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
            data=body.chunks() if isinstance(body, StreamBody) else body or None,
            allow_redirects=False,
        )
    except aiohttp.ConnectionTimeoutError:
        raise Failure(
            UpstreamTimeout(f"Timed out connecting to Azure OpenAI at {host}."),
            retryable=True,
        ) from None
    except aiohttp.ServerTimeoutError:
        # Not retried: it would only double a long wait.
        raise Failure(
            UpstreamTimeout(
                f"Azure OpenAI at {host} sent no response headers within "
                f"{config.header_timeout_s:g} s (header_timeout_s)."
            ),
            retryable=False,
        ) from None
    except aiohttp.ClientError as exc:
        if isinstance(exc.__cause__, ProxyError):
            # The client's body broke off (too large, too slow, a second
            # model field): the client's error, not Azure's, never retried.
            raise exc.__cause__ from None
        raise Failure(
            UpstreamUnreachable(
                f"Could not reach Azure OpenAI at {host} ({type(exc).__name__})."
            ),
            retryable=True,
        ) from None
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
    except aiohttp.ServerTimeoutError:
        response.close()
        raise Failure(
            UpstreamTimeout(
                f"Azure OpenAI at {host} sent headers but no body within "
                f"{config.read_timeout_s:g} s (read_timeout_s)."
            ),
            retryable=False,
        ) from None
    except aiohttp.ClientError as exc:
        response.close()
        raise Failure(
            UpstreamUnreachable(
                f"The connection to Azure OpenAI at {host} broke before the "
                f"answer started ({type(exc).__name__})."
            ),
            retryable=True,
        ) from None
    return Reply(response, first)


async def send_with_retries(
    session: UpstreamSession, config: Config, target: Target, exchange: Exchange
) -> Reply:
    """The original proxy's rules, kept for pass-through tokens.

    Retried (up to config.retries times, config.retry_delay_s apart):
    connection errors, 5xx, and a first SSE event saying the model is
    overloaded. Never retried: 4xx (429 included) and timeouts waiting for
    Azure to answer.
    """
    host = target.url.host
    # A body streamed from the client (an upload) is consumed by the first
    # attempt: it cannot be sent again, so it is never retried.
    retries = config.retries if target.replayable else 0
    for attempt in range(retries + 1):
        retries_left = attempt < retries
        try:
            reply = await send_once(session, config, target, exchange)
        except Failure as failure:
            if not (retries_left and failure.retryable):
                if attempt:
                    error = failure.error
                    error.message = (
                        f"{error.message.rstrip('.')}, after {attempt + 1} attempts."
                    )
                raise failure.error from None
            reason = failure.error.message
        else:
            if not (retries_left and (reply.status >= 500 or reply.overloaded)):
                return reply
            reply.close()
            reason = "model overloaded" if reply.overloaded else f"HTTP {reply.status}"
        await pause_before_retry(config, attempt, f"upstream {host}", reason)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def pause_before_retry(
    config: Config, attempt: int, what: str, reason: str
) -> None:
    """Log a failed attempt and wait retry_delay_s: the original proxy's pace."""
    log.warning(
        "%s failed (%s); retry %d/%d in %g s",
        what,
        reason,
        attempt + 1,
        config.retries,
        config.retry_delay_s,
    )
    await asyncio.sleep(config.retry_delay_s)
