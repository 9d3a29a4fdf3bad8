"""The one way azproxy edits a request body: byte splices at known offsets.

The client's bytes are never re-encoded. An edit names a byte range of the
body and what replaces it (an empty range inserts); everything else reaches
Azure exactly as the client sent it. The same splices apply to a body held
in memory (JSON) and to one read back from a spool while the rest streams
(multipart uploads). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Splice", "pieces", "spliced"]


@dataclass(frozen=True, slots=True)
class Splice:
    """Replace body bytes [start, end) with `data` (start == end: insert)."""

    start: int
    end: int
    data: bytes

    @classmethod
    def insert(cls, at: int, data: bytes) -> Splice:
        return cls(at, at, data)

    @property
    def growth(self) -> int:
        return len(self.data) - (self.end - self.start)


def pieces(size: int, splices: Sequence[Splice]) -> Iterator[bytes | tuple[int, int]]:
    """The edited body, in order: ranges (start, end) of the original body
    and the new bytes between them. `splices` are sorted by start and do not
    overlap; each lies within the first `size` bytes."""
    position = 0
    for splice in splices:
        if splice.start > position:
            yield (position, splice.start)
        if splice.data:
            yield splice.data
        position = splice.end
    if size > position:
        yield (position, size)


def spliced(body: bytes, splices: Sequence[Splice]) -> bytes:
    """`body` with `splices` applied, copied once."""
    if not splices:
        return body
    view = memoryview(body)  # slices of a view copy nothing until the join
    return b"".join(
        view[piece[0] : piece[1]] if isinstance(piece, tuple) else piece
        for piece in pieces(len(body), splices)
    )
