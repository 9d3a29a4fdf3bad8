"""Writing an answer to the client, slice by slice, and ending it explicitly
when it breaks: Azure fails midway, a stream stops before its last event, or
the shutdown grace runs out. A client that stops reading cannot pin the proxy."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDictProxy

from azproxy.errors import (
    ShuttingDown,
    StreamIncomplete,
    error_body,
    forget_frames,
)
from azproxy.keys import CONFIG, EXCHANGE
from azproxy.observe.usage import UsageTail
from azproxy.relay.bodies import READ_BYTES
from azproxy.relay.sse import EVENT_ENDINGS, NORMALISED_PATHS, normaliser_for
from azproxy.relay.terminal import StreamEnd, terminal_for

if TYPE_CHECKING:
    from azproxy.observe.exchange import Exchange
    from azproxy.relay.send import Reply

__all__ = ["deliver", "end_broken_stream", "final_usage", "relay_body"]

log = logging.getLogger("azproxy.relay")


async def relay_body(
    request: web.Request,
    response: web.StreamResponse,
    reply: Reply,
    sse: bool,
    exchange: Exchange,
    prompt_bytes: int = 0,
) -> None:
    """Relay the body as it arrives; end it explicitly if it breaks. Sets
    exchange.usage however it ends (the client leaving included)."""
    upstream = reply.response
    # A compressed answer (the client's Accept-Encoding goes to Azure) is
    # relayed untouched: its events cannot be read, nor one added, without
    # decompressing it. A break still ends it without the chunked terminator.
    readable = not compressed(upstream.headers)
    events = sse and readable
    # sse_compat=openai: whole events, minus Azure's extra chunks (and the
    # usage chunk, when azproxy asked for it).
    tidy = normaliser_for(request, events, drop_usage=reply.asked_usage)
    # A 2xx stream of a known family must end with that family's last event.
    end = stream_end(request.path) if events and upstream.status < 300 else None
    # Usage (stream_options.include_usage, or a JSON body's) is at the end.
    tail = UsageTail() if readable else None
    # A chat or completions stream without it gets an estimate.
    estimable = sse and upstream.status < 300 and request.path in NORMALISED_PATHS
    chunk, sent = reply.first, b""
    try:
        while chunk:
            if end is not None:
                end.feed(chunk)
            if tail is not None:
                tail.add(chunk)
            out = chunk if tidy is None else tidy.feed(chunk)
            if out:
                if not await deliver(request, response, out, exchange):
                    upstream.close()  # the client is gone: so is the Azure request
                    return
                sent = out
            try:
                # A bounded slice (as the session's read_bufsize): a stream
                # whose client stops reading holds about two slices from Azure
                # and the client transport's high-water mark plus one, even
                # for 1 MB events.
                chunk = await upstream.content.read(READ_BYTES)
            except (aiohttp.ClientError, TimeoutError, ShuttingDown) as exc:
                # Azure's reader keeps the error it raised, and its traceback
                # this frame: a cycle holding the request and the answer
                # until the collector's next pass.
                forget_frames(exc)
                # A partial event the normaliser holds is dropped.
                await end_broken_stream(request, response, events, sent, exc)
                return
        if end is not None and not end.complete:
            incomplete = StreamIncomplete(end.missing)
            await end_broken_stream(request, response, events, sent, incomplete)
            return
        if tidy is not None and (rest := tidy.flush()):
            await deliver(request, response, rest, exchange)
    except Exception as exc:  # a bug, or an upstream azproxy cannot read
        # The answer has started: a 500 can no longer be sent. End it
        # explicitly, as for a broken connection, with the traceback logged.
        log.exception("relaying the answer to %s failed", request.path)
        await end_broken_stream(request, response, events, sent, exc)
    finally:
        final_usage(exchange, tail, prompt_bytes if estimable else None)


def final_usage(
    exchange: Exchange, tail: UsageTail | None, prompt_bytes: int | None
) -> None:
    """Azure's usage from the tail; else, with `prompt_bytes` (a stream that
    reports usage when asked), an estimate. A compressed stream (no tail)
    cannot be read: its estimate is the prompt's."""
    usage = None if tail is None else tail.usage()
    if usage is None and prompt_bytes is not None:
        usage = (tail or UsageTail()).estimate(prompt_bytes)
        exchange.usage_estimated = True
    exchange.usage = usage


def compressed(headers: CIMultiDictProxy[str]) -> bool:
    """Whether the body is encoded (gzip, br...): azproxy never decodes it."""
    encoding = headers.get(hdrs.CONTENT_ENCODING)
    return encoding is not None and encoding.strip().lower() not in ("", "identity")


def stream_end(path: str) -> StreamEnd | None:
    terminal = terminal_for(path)
    return None if terminal is None else StreamEnd(terminal)


async def deliver(
    request: web.Request,
    response: web.StreamResponse,
    chunk: bytes,
    exchange: Exchange,
) -> bool:
    """Write a chunk to the client; False when the client is gone or stalled.

    Nothing is written past the transport's high-water mark before the
    client has read the buffer down: a client that stops reading holds at
    most the mark plus one slice here, and since the relay waits, it stops
    reading from Azure too (backpressure). Such a client gets
    client_write_timeout_s to read again; then both connections are dropped.
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
        return await deliver_when_read(request, response, chunk, exchange)
    except ConnectionError:
        exchange.client_left = True
        return False


async def deliver_when_read(
    request: web.Request,
    response: web.StreamResponse,
    chunk: bytes,
    exchange: Exchange,
) -> bool:
    """Write slice by slice, each once the client has read the buffer below
    the high-water mark, waiting at most client_write_timeout_s each time."""
    timeout = request.app[CONFIG].client_write_timeout_s
    view = memoryview(chunk)
    for start in range(0, len(chunk), READ_BYTES):
        piece = view[start : start + READ_BYTES]
        try:
            async with asyncio.timeout(timeout):
                await request.writer.drain()  # waits while over the mark
                await response.write(piece)
        except TimeoutError:
            log.warning("client read nothing for %g s; dropping the stream", timeout)
            if request.transport is not None:
                request.transport.abort()
            return False
        exchange.sent(len(piece))
    return True


async def end_broken_stream(
    request: web.Request,
    response: web.StreamResponse,
    sse: bool,
    last_sent: bytes,
    exc: BaseException,
) -> None:
    """The answer started but cannot end well: make the failure explicit.

    SSE gets a final `data: {"error": ...}` event, which the openai SDKs raise
    as an APIError. Then the connection closes without the chunked
    terminator, so even a client that ignores the event sees a broken
    transfer, never a clean-looking truncated answer.
    """
    message, code = broken_stream_error(request, exc)
    log.warning("stream to client cut: %s", message)
    if sse:
        # A partial event would swallow the error event's first line.
        whole = not last_sent or last_sent.endswith(EVENT_ENDINGS)
        separator = b"" if whole else b"\n\n"
        event = b"data: " + error_body(message, "api_error", code) + b"\n\n"
        # Through deliver(): a client that stopped reading gets no more
        # time here than anywhere else.
        if not await deliver(request, response, separator + event, request[EXCHANGE]):
            return
    if request.transport is not None:
        # close() flushes what is buffered, then closes; the write_eof that
        # aiohttp attempts afterwards finds the transport closing and stops.
        request.transport.close()


def broken_stream_error(request: web.Request, exc: BaseException) -> tuple[str, str]:
    """What the client is told (message, code) for a stream cut by `exc`."""
    if isinstance(exc, TimeoutError):
        timeout = request.app[CONFIG].read_timeout_s
        return (
            f"Azure OpenAI sent nothing for {timeout:g} s (read_timeout_s); "
            "the answer is incomplete.",
            "upstream_timeout",
        )
    if isinstance(exc, ShuttingDown):
        return (
            "azproxy is shutting down and its shutdown_grace_s is over; "
            "the answer is incomplete. Retry on another instance.",
            "service_unavailable",
        )
    if isinstance(exc, StreamIncomplete):
        return (
            "Azure OpenAI ended the stream before its last event "
            f"({exc.missing}); the answer is incomplete.",
            "upstream_stream_error",
        )
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return (
            "The connection to Azure OpenAI broke mid-answer "
            f"({type(exc).__name__}); the answer is incomplete.",
            "upstream_stream_error",
        )
    return (
        "azproxy failed while relaying Azure OpenAI's answer; the answer is "
        "incomplete and azproxy's log has the details.",
        "internal_error",
    )
