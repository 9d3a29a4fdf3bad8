"""Spool files that fail as a full disk or a process out of descriptors
would: stand-ins for tempfile.TemporaryFile, patched in by a test."""

from __future__ import annotations

import errno
import io
import tempfile
from typing import TYPE_CHECKING, ClassVar

import pytest

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["FullDisk", "fill_disk_after", "no_descriptor_left"]


class FullDisk(io.BytesIO):
    """A spool file on a disk that fills after `room` bytes."""

    made: ClassVar[list[FullDisk]] = []  # every one made, to check it was closed

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        FullDisk.made.append(self)

    def write(self, data: ReadableBuffer) -> int:
        if self.tell() + len(memoryview(data)) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Spool files made from now on fill after `room` bytes."""
    FullDisk.made = []
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda: FullDisk(room))


def no_descriptor_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """No spool file can be made from now on (EMFILE)."""

    def refuse() -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
