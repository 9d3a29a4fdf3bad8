"""Request bodies while azproxy reads them: what they may hold, how long a
client may pause, and which encodings azproxy can read.

- Budgets: request bodies held whole (JSON, the head of an upload read until
  its model field) count against one process-wide memory budget
  (max_buffered_body_mb) while in memory, and against one disk budget
  (max_spool_mb) once spilled to a temporary file. Past both: 503 with
  Retry-After, naming the setting. Bytes are counted as they are read, not
  by the Content-Length a client announces: a client that announces a
  large body and sends nothing must not hold the budget. A spool file that
  cannot be made or written (a full disk, no descriptor left) is a 503 too,
  with its bytes given back and one warning logged.
- client_body_timeout_s bounds every pause while reading a body: then 408,
  and the connection is closed.
- Bodies azproxy reads must arrive as sent (Content-Encoding identity):
  the server does not decompress them (app.py), so a compressed body it
  would have to read is refused with 415.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from aiohttp import hdrs, web
from aiohttp.streams import StreamReader

from azproxy.errors import (
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from azproxy.settings.config import Config

__all__ = [
    "BUDGETS",
    "READ_BYTES",
    "BodyBuffer",
    "Budget",
    "Budgets",
    "next_chunk",
    "refuse_encoded",
    "setup",
    "too_large",
]

# One slice of a body, both ways: what azproxy reads of a request body or of
# Azure's answer at a time, and the most it writes past a client's high-water
# mark. Small enough that a stalled peer pins little memory (100 streams
# whose clients read nothing: +48 MiB at 32 KiB, +76 MiB at 64 KiB), large
# enough that big bodies move as fast (a 50 MB answer: the same time).
READ_BYTES = 32 * 1024

log = logging.getLogger("azproxy")


class Budget:
    """Bytes this process may hold at once for one purpose."""

    __slots__ = ("limit", "setting", "used")

    def __init__(self, limit: int, setting: str) -> None:
        self.limit = limit
        self.setting = setting  # named in the 503, to say what to raise
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size

    def busy(self, size: int) -> ServiceUnavailable:
        """The 503 for a body of `size` bytes that this budget cannot hold."""
        if size > self.limit:
            reason = f"a body this large never fits in {self.setting}; raise it"
        else:
            reason = f"it holds as many as {self.setting} allows; retry shortly"
        return ServiceUnavailable(
            f"azproxy cannot hold this request body now: {reason}.",
            code="server_busy",
            headers={"Retry-After": "1"},
        )


class Budgets:
    __slots__ = ("disk", "memory")

    def __init__(self, memory_bytes: int, disk_bytes: int) -> None:
        self.memory = Budget(memory_bytes, "max_buffered_body_mb")
        self.disk = Budget(disk_bytes, "max_spool_mb")


BUDGETS = web.AppKey("azproxy.budgets", Budgets)


def setup(app: web.Application, config: Config) -> None:
    app[BUDGETS] = Budgets(config.max_buffered_body_bytes, config.max_spool_bytes)


class BodyBuffer:
    """One request body as it is read: in memory while the memory budget
    allows (and up to `memory_cap` bytes), then, when `spill` allows it, in
    a temporary file within the disk budget. close() gives everything back
    and deletes the file."""

    def __init__(
        self, budgets: Budgets, *, spill: bool, memory_cap: int | None = None
    ) -> None:
        self._budgets = budgets
        self._spill = spill
        self._memory_cap = memory_cap
        self._file: BinaryIO = io.BytesIO()
        self.size = 0
        self.on_disk = False

    def write(self, data: bytes) -> None:
        """Hold `data` too; 503 (ServiceUnavailable) when no budget allows it."""
        size = len(data)
        if not self.on_disk:
            cap = self._memory_cap
            if (cap is None or self.size + size <= cap) and self._budgets.memory.take(
                size
            ):
                self._file.write(data)
                self.size += size
                return
            if not self._spill:
                raise self._budgets.memory.busy(self.size + size)
            self._move_to_disk(size)
        disk = self._budgets.disk
        if not disk.take(size):
            raise disk.busy(self.size + size)
        try:
            _write_through(self._file, data)
        except OSError as exc:
            disk.give(size)  # close() gives back what the file holds
            raise _spool_failed(exc) from None
        self.size += size

    def _move_to_disk(self, pending: int) -> None:
        disk = self._budgets.disk
        if not disk.take(self.size):
            raise disk.busy(self.size + pending)
        assert isinstance(self._file, io.BytesIO)
        try:
            # Closed by close(), not by a with block here.
            spool = tempfile.TemporaryFile()  # noqa: SIM115
            # Released on the way out: an export the failure's traceback
            # kept alive would stop close() from closing the memory buffer.
            try:
                with self._file.getbuffer() as held:
                    _write_through(spool, held)
            except OSError:
                spool.close()
                raise
        except OSError as exc:
            disk.give(self.size)  # the body is still in memory, as counted
            raise _spool_failed(exc) from None
        self._file = spool
        self._budgets.memory.give(self.size)
        self.on_disk = True

    def take_bytes(self) -> bytes:
        """The bytes held in memory, without a copy. The caller now holds
        them against the memory budget: it gives len() back when done."""
        assert isinstance(self._file, io.BytesIO)
        data = self._file.getvalue()
        self._file = io.BytesIO()
        self.size = 0
        return data

    def read_range(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes between two offsets, in blocks. A disk read comes from
        the page cache, fast enough not to need a thread."""
        position = start
        while position < end:
            self._file.seek(position)  # another send may have moved it
            piece = self._file.read(min(READ_BYTES, end - position))
            if not piece:
                return
            position += len(piece)
            yield piece

    def close(self) -> None:
        (self._budgets.disk if self.on_disk else self._budgets.memory).give(self.size)
        self.size = 0
        self._file.close()  # a temporary file is deleted


def _write_through(file: BinaryIO, data: bytes | memoryview) -> None:
    """Write and flush, so that a full disk fails here, where it can be
    answered, not later while the body is sent."""
    file.write(data)
    file.flush()


def _spool_failed(exc: OSError) -> ServiceUnavailable:
    """The 503 for a spool file that could not be made or written (a full
    disk, no file descriptor left): the operator is told once per failure,
    the client to retry."""
    log.warning("cannot spool a request body to disk: %s", exc.strerror or exc)
    return ServiceUnavailable(
        "azproxy cannot hold this request body now: its spool on disk failed; "
        "retry shortly.",
        code="server_busy",
        headers={"Retry-After": "1"},
    )


def too_large(what: str, limit: int, setting: str) -> PayloadTooLarge:
    """The 413 for a body past its limit, naming the setting that raises it."""
    return PayloadTooLarge(
        f"The {what} is larger than {limit / 1024 / 1024:g} MB "
        f"(raise {setting} to accept it)."
    )


async def next_chunk(content: StreamReader, timeout_s: float) -> bytes:
    """The next piece of a request body (b"" at its end); 408 when the
    client sends nothing for timeout_s."""
    try:
        async with asyncio.timeout(timeout_s):
            return await content.readany()
    except TimeoutError:
        raise RequestTimeout(
            f"The client sent no part of its request body for {timeout_s:g} s "
            "(client_body_timeout_s)."
        ) from None


def refuse_encoded(request: web.Request) -> None:
    """415 for a body azproxy must read that came compressed."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING)
    if (
        encoding is not None
        and encoding.strip().lower() != "identity"
        and request.body_exists
    ):
        raise UnsupportedMediaType(
            "azproxy reads this request's body and cannot read it compressed: "
            "send it without Content-Encoding."
        )
