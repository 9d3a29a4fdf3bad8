"""Which process is which, from Linux's /proc: children of a process, and the
process that owns one end of a loopback TCP connection."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

PROC = Path("/proc")

needs_proc = pytest.mark.skipif(
    sys.platform != "linux" or not (PROC / "net" / "tcp").exists(),
    reason="needs Linux's /proc to tell processes apart",
)


def _stat(pid: int) -> list[str]:
    # The fields after "(comm)": state, then the parent's pid.
    return (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()


def alive(pid: int) -> bool:
    """Running or sleeping: not gone, not a zombie waiting to be reaped."""
    try:
        return _stat(pid)[0] not in ("Z", "X")
    except OSError:
        return False


def children(parent: int) -> set[int]:
    """Live child processes of `parent`."""
    found = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = _stat(int(entry.name))[:2]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(ppid) == parent and state not in ("Z", "X"):
            found.add(int(entry.name))
    return found


def _socket_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the IPv4 TCP socket local_port -> remote_port."""
    for line in (PROC / "net" / "tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if (
            int(local.rpartition(":")[2], 16) == local_port
            and int(remote.rpartition(":")[2], 16) == remote_port
            and inode
        ):
            return inode
    return None


def connection_owner(
    local_port: int, remote_port: int, pids: Iterable[int]
) -> int | None:
    """Which of `pids` holds the connection local_port -> remote_port."""
    inode = _socket_inode(local_port, remote_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = list((PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return pid
            except OSError:
                continue
    return None
