"""Request bodies relayed as they arrive, never held whole in memory.

Two kinds, both limited by max_upload_mb:
- a multipart upload whose `model` field picks the deployment (audio
  transcriptions and translations, image edits): read until the field has
  gone past, holding what was read (in memory up to SPOOL_MEMORY_BYTES and
  within max_buffered_body_mb, then on disk within max_spool_mb), then sent
  upstream as that head followed by the rest as it arrives. A Python SDK
  puts fields before the file, so the head is small and sending starts at
  once; a client that puts the file first gets it spooled. The rest is
  scanned on its way: a second `model` field stops the upload (400);
- any other multipart body (files, upload parts, uploads whose model does
  not matter): streamed through chunk by chunk, nothing kept, with the
  client's own Content-Encoding and Content-Length.
Every pause of the client is bounded by client_body_timeout_s (408). The
client's bytes are forwarded unchanged (same boundary, same parts), except
on Azure's v1 API, where the `model` value is replaced by the deployment.
A JSON body spooled whole to disk is sent as a StreamBody too (from_spool).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from aiohttp import hdrs, web
from aiohttp.streams import StreamReader

from azproxy.errors import BadRequest, ProxyError, forget_frames
from azproxy.keys import CONFIG
from azproxy.relay.bodies import (
    BUDGETS,
    BodyBuffer,
    next_chunk,
    refuse_encoded,
    too_large,
)
from azproxy.relay.multipart import MultipartScanner, boundary_of, model_part
from azproxy.relay.splice import Splice, pieces

__all__ = [
    "SPOOL_MEMORY_BYTES",
    "StreamBody",
    "can_send_again",
    "read_upload",
    "stream_through",
]

SPOOL_MEMORY_BYTES = 1024 * 1024


def can_send_again(body: bytes | StreamBody) -> bool:
    """Whether a request body can be sent a second time: bytes can, a body
    streamed from the client only if all of it was spooled."""
    return not isinstance(body, StreamBody) or body.replayable


@dataclass(slots=True)
class _Source:
    """What one upload read: shared by every StreamBody made from it."""

    head: BodyBuffer | None  # the bytes read before relaying started
    rest: StreamReader | None  # the bytes still to come; None: all in head
    limit: int = 0  # the most head and rest may hold together (for `rest`)
    timeout_s: float = 0.0  # the longest pause while reading `rest`
    scanner: MultipartScanner | None = None  # reads `rest` for a second model
    error: ProxyError | None = None  # why the stream was cut, if it was
    sent: bool = False
    # Called when the stream is cut: Azure may have answered already, and
    # then nothing else would stop the wait for the rest of that answer.
    on_cut: Callable[[], None] | None = None

    @property
    def head_size(self) -> int:
        return 0 if self.head is None else self.head.size


@dataclass(slots=True)
class StreamBody:
    """A request body for aiohttp's `data=`: call chunks() once per send."""

    source: _Source
    length: int | None  # the Content-Length to send, None for chunked
    boundary: bytes = b""
    splices: tuple[Splice, ...] = ()  # edits within the head

    @classmethod
    def from_spool(cls, buffer: BodyBuffer) -> StreamBody:
        """A body read whole and spooled to disk (a JSON body past
        max_buffered_body_mb, bodies.py): sent from there, as often as needed."""
        return cls(_Source(buffer, None), buffer.size)

    @property
    def replayable(self) -> bool:
        """Whether it can be sent again (all of it is in the spool)."""
        return self.source.rest is None

    @property
    def error(self) -> ProxyError | None:
        return self.source.error

    def when_cut(self, callback: Callable[[], None]) -> None:
        """Call `callback` if the client's stream is cut (now, if it was)."""
        self.source.on_cut = callback
        if self.source.error is not None:
            callback()

    def with_model(self, deployment: str) -> StreamBody:
        """This body with its `model` field set to `deployment` (Azure's v1 API)."""
        scanner = self.source.scanner
        if scanner is None:
            return self
        if scanner.model_at is not None:
            if scanner.model == deployment:
                return self
            start, end = scanner.model_at
            splice = Splice(start, end, deployment.encode())
        elif self.replayable and scanner.first_part_at is not None:
            # No model field at all: v1 needs one, so add it as the first part.
            at = scanner.first_part_at
            splice = Splice.insert(at, model_part(self.boundary, deployment))
        else:
            return self
        length = None if self.length is None else self.length + splice.growth
        return replace(self, length=length, splices=(splice,))

    async def chunks(self) -> AsyncIterator[bytes]:
        source = self.source
        if source.sent and not self.replayable:
            raise RuntimeError("a streamed request body can be sent only once")
        source.sent = True
        head = source.head
        if head is not None:
            for piece in pieces(head.size, self.splices):
                if isinstance(piece, bytes):
                    yield piece
                else:
                    for block in head.read_range(*piece):
                        yield block
        if source.rest is not None:
            async for chunk in _rest(source):
                yield chunk

    def close(self) -> None:
        """Once the request is over: give back what the head holds, and
        drop the frames of the error the client's stream ended with."""
        source = self.source
        if source.head is not None:
            source.head.close()  # gives its budget back, deletes a file
        if source.rest is not None:
            # A client that left mid-upload: its reader keeps the error,
            # whose traceback holds the frames that read it, aiohttp's upload
            # writer's too, which holds its own error caused by that one: a
            # cycle keeping a piece of the body until the collector's pass.
            forget_frames(source.rest.exception())


async def _rest(source: _Source) -> AsyncIterator[bytes]:
    """What the client sends after the head, checked on its way: a failure
    is kept in source.error, since aiohttp reports it as a broken upstream
    connection (or, once Azure's answer has started, not at all: then
    source.on_cut ends that answer)."""
    assert source.rest is not None
    received = source.head_size
    scanner = source.scanner
    try:
        while chunk := await next_chunk(source.rest, source.timeout_s):
            received += len(chunk)
            if received > source.limit:
                raise too_large("upload", source.limit, "max_upload_mb")
            if scanner is not None:
                scanner.feed(chunk)  # before Azure sees a second model field
            yield chunk
    except ProxyError as exc:
        source.error = exc
        if source.on_cut is not None:
            source.on_cut()
        raise


def _check_length(request: web.Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        raise too_large("upload", limit, "max_upload_mb")


def stream_through(request: web.Request) -> StreamBody:
    """The request body as it arrives, with nothing read or kept: the
    client's bytes, compressed or not, with its own Content-Length."""
    config = request.app[CONFIG]
    limit = config.max_upload_bytes
    _check_length(request, limit)
    source = _Source(None, request.content, limit, config.client_body_timeout_s)
    return StreamBody(source, request.content_length)


async def read_upload(
    request: web.Request, *, need_model: bool
) -> tuple[StreamBody, str | None]:
    """Read a multipart upload until its `model` field has gone past.

    Returns the body to relay and the model (None when the body has none,
    or when need_model is False: then nothing is read before relaying).
    """
    boundary = boundary_of(request.headers.get(hdrs.CONTENT_TYPE, ""))
    if boundary is None:
        raise BadRequest(
            f"Send {request.path} as multipart/form-data (a file and form "
            "fields, with a boundary), as the OpenAI SDKs do."
        )
    if not need_model:
        return stream_through(request), None
    refuse_encoded(request)  # its model field must be read
    config = request.app[CONFIG]
    limit = config.max_upload_bytes
    timeout_s = config.client_body_timeout_s
    _check_length(request, limit)
    scanner = MultipartScanner(boundary)
    head = BodyBuffer(request.app[BUDGETS], spill=True, memory_cap=SPOOL_MEMORY_BYTES)
    try:
        while scanner.model is None:
            chunk = await next_chunk(request.content, timeout_s)
            if not chunk:
                break
            if head.size + len(chunk) > limit:
                raise too_large("upload", limit, "max_upload_mb")
            head.write(chunk)
            scanner.feed(chunk)
    except BaseException:
        head.close()
        raise
    rest = None if request.content.at_eof() else request.content
    source = _Source(head, rest, limit, timeout_s, scanner)
    body = StreamBody(source, request.content_length, boundary)
    return body, scanner.model
