"""The open-file limit: raised at start, and the share client connections get.

Every client connection is a file descriptor. Past the limit the kernel
refuses to accept() and new clients wait in the listen queue with nothing in
the log; below it azproxy can still accept and answer 503 (max_connections).
"""

from __future__ import annotations

import logging
import sys

__all__ = [
    "FDS_PER_CONNECTION",
    "MAX_AUTO_CONNECTIONS",
    "RESERVE_FDS",
    "auto_max_connections",
    "max_connections",
    "open_file_limit",
    "raise_open_file_limit",
    "start_with_open_file_limit",
]

log = logging.getLogger("azproxy")

# Descriptors kept out of the client share: the listening sockets, the event
# loop's own, log files, DNS lookups and refused connections while they get
# their 503.
RESERVE_FDS = 64
# A client connection can hold three: its own socket, one to Azure, and a
# spool file (an upload whose file part comes before its model field, any
# body past max_buffered_body_mb), and many can at once.
FDS_PER_CONNECTION = 3
# Past a few thousand connections memory, not descriptors, is the bound: an
# idle half-sent connection costs about 6 KB of RSS (10,000 of them about
# 60 MB) and an active stream far more, so the 1,048,576 hard limit of many
# containers would otherwise allow some 350,000 connections that one process
# could not hold.
MAX_AUTO_CONNECTIONS = 10_000


def open_file_limit() -> int | None:
    """This process's soft limit on open files; None where there is none."""
    if sys.platform == "win32":  # pragma: no cover - no RLIMIT_NOFILE
        return None
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft open-file limit to the hard one; (before, after) when it
    changed. Children (--workers) inherit the raised limit."""
    if sys.platform == "win32":  # pragma: no cover - no RLIMIT_NOFILE
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        # macOS reports an unlimited hard limit that setrlimit refuses.
        log.debug("cannot raise the open-file limit to %s: %s", hard, exc)
        return None
    return soft, hard


def auto_max_connections(fd_limit: int | None) -> int | None:
    """max_connections = auto: a third of what the reserve leaves (a client,
    Azure and a spool file per connection), at most MAX_AUTO_CONNECTIONS.
    None (no limit) where the process has no open-file limit."""
    if fd_limit is None:
        return None
    share = (fd_limit - RESERVE_FDS) // FDS_PER_CONNECTION
    return max(1, min(share, MAX_AUTO_CONNECTIONS))


def max_connections(setting: int | None) -> int | None:
    """The max_connections setting resolved against this process's limit."""
    return setting if setting is not None else auto_max_connections(open_file_limit())


def start_with_open_file_limit(setting: int | None) -> None:
    """At process start (before --workers fork, which inherit it): raise the
    open-file limit and say what max_connections comes to."""
    raised = raise_open_file_limit()
    fd_limit = open_file_limit()
    resolved = max_connections(setting)
    log.info(
        "max_connections %s per process (open-file limit %s%s)",
        "unlimited" if resolved is None else resolved,
        "none" if fd_limit is None else fd_limit,
        f", raised from {raised[0]}" if raised else "",
    )
    if resolved and fd_limit and FDS_PER_CONNECTION * resolved + RESERVE_FDS > fd_limit:
        log.warning(
            "max_connections %d may not fit the open-file limit of %d: "
            "a client connection can hold a connection to Azure and a spool file too",
            resolved,
            fd_limit,
        )
