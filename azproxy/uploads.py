"""Request bodies relayed as they arrive, never held whole in memory.

Two kinds, both limited by max_upload_mb:
- a multipart upload whose `model` field picks the deployment (audio
  transcriptions and translations, image edits): read until the field has
  gone past, spooling what was read (to disk beyond SPOOL_MEMORY_BYTES), then
  sent upstream as the spooled head followed by the rest as it arrives. A
  Python SDK puts fields before the file, so the head is small and sending
  starts at once; a client that puts the file first gets it spooled;
- any other multipart body (files, upload parts): streamed through chunk by
  chunk, nothing kept.
The client's bytes are forwarded unchanged (same boundary, same parts), except
on Azure's v1 API, where the `model` value is replaced by the deployment.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace

from aiohttp import hdrs, web
from aiohttp.streams import StreamReader

from .errors import BadRequest, PayloadTooLarge, ProxyError
from .multipart import MultipartScanner, Splice, boundary_of, model_part

__all__ = [
    "SPOOL_MEMORY_BYTES",
    "StreamBody",
    "can_send_again",
    "read_upload",
    "stream_through",
]

SPOOL_MEMORY_BYTES = 1024 * 1024
READ_BYTES = 64 * 1024

Spool = tempfile.SpooledTemporaryFile[bytes]


def can_send_again(body: bytes | StreamBody) -> bool:
    """Whether a request body can be sent a second time: bytes can, a body
    streamed from the client only if all of it was spooled."""
    return not isinstance(body, StreamBody) or body.replayable


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The upload is larger than {limit / 1024 / 1024:g} MB "
        "(raise max_upload_mb to accept it)."
    )


@dataclass(slots=True)
class _Source:
    """What one upload read: shared by every StreamBody made from it."""

    head: Spool | None  # the bytes read before relaying started
    head_size: int
    rest: StreamReader | None  # the bytes still to come; None: all in head
    limit: int
    error: ProxyError | None = None  # why the stream was cut, if it was
    sent: bool = False


@dataclass(slots=True)
class StreamBody:
    """A request body for aiohttp's `data=`: call chunks() once per send."""

    source: _Source
    length: int | None  # the Content-Length to send, None for chunked
    scanner: MultipartScanner | None = None
    boundary: bytes = b""
    splice: Splice | None = field(default=None)

    @property
    def replayable(self) -> bool:
        """Whether it can be sent again (all of it is in the spool)."""
        return self.source.rest is None

    @property
    def error(self) -> ProxyError | None:
        return self.source.error

    def with_model(self, deployment: str) -> StreamBody:
        """This body with its `model` field set to `deployment` (Azure's v1 API)."""
        scanner = self.scanner
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
            splice = Splice(at, at, model_part(self.boundary, deployment))
        else:
            return self
        length = None if self.length is None else self.length + splice.growth
        return replace(self, length=length, splice=splice)

    async def chunks(self) -> AsyncIterator[bytes]:
        source = self.source
        if source.sent and not self.replayable:
            raise RuntimeError("a streamed request body can be sent only once")
        source.sent = True
        if source.head is not None:
            splice = self.splice
            if splice is None:
                for piece in _read_range(source.head, 0, source.head_size):
                    yield piece
            else:
                for piece in _read_range(source.head, 0, splice.start):
                    yield piece
                yield splice.data
                for piece in _read_range(source.head, splice.end, source.head_size):
                    yield piece
        if source.rest is not None:
            received = source.head_size
            while chunk := await source.rest.readany():
                received += len(chunk)
                if received > source.limit:
                    source.error = _too_large(source.limit)
                    raise source.error
                yield chunk

    def close(self) -> None:
        if self.source.head is not None:
            self.source.head.close()  # a spooled temporary file is deleted


def _read_range(spool: Spool, start: int, end: int) -> Iterator[bytes]:
    """Blocks of the spool between two offsets; a disk read here comes from
    the page cache, fast enough not to need a thread."""
    position = start
    while position < end:
        spool.seek(position)  # another send of a replayable body may interleave
        piece = spool.read(min(READ_BYTES, end - position))
        if not piece:
            return
        position += len(piece)
        yield piece


def _check_length(request: web.Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)


def stream_through(request: web.Request, limit: int) -> StreamBody:
    """The request body as it arrives, with nothing read or kept."""
    _check_length(request, limit)
    source = _Source(None, 0, request.content, limit)
    return StreamBody(source, request.content_length)


async def read_upload(
    request: web.Request, limit: int, *, need_model: bool
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
        return stream_through(request, limit), None
    _check_length(request, limit)
    scanner = MultipartScanner(boundary)
    # Closed by StreamBody.close() once relayed, not by a with block here.
    head: Spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
    size = 0
    try:
        while scanner.model is None:
            chunk = await request.content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            head.write(chunk)
            scanner.feed(chunk)
    except BaseException:
        head.close()
        raise
    rest = None if request.content.at_eof() else request.content
    source = _Source(head, size, rest, limit)
    body = StreamBody(source, request.content_length, scanner, boundary)
    return body, scanner.model
