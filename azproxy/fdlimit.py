"""The open-file limit: raised at start, and the share client connections get.

Every client connection is a file descriptor. Past the limit the kernel
refuses to accept() and new clients wait in the listen queue with nothing in
the log; below it azproxy can still accept and answer 503 (max_connections).
"""

from __future__ import annotations

import logging
import sys

__all__ = [
    "RESERVE_FDS",
    "auto_max_connections",
    "max_connections",
    "open_file_limit",
    "raise_open_file_limit",
    "start_with_open_file_limit",
]

log = logging.getLogger("azproxy")

# Descriptors kept out of the client share: the listening sockets, the event
# loop's own, log files, DNS lookups, spooled request bodies (few: only bodies
# past max_buffered_body_mb are spooled, within max_spool_mb) and refused
# connections while they get their 503.
RESERVE_FDS = 64


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
    """max_connections = auto: half of what the reserve leaves, since a
    client connection usually holds a connection to Azure too. None (no
    limit) where the process has no open-file limit."""
    if fd_limit is None:
        return None
    return max(1, (fd_limit - RESERVE_FDS) // 2)


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
    if resolved and fd_limit and 2 * resolved + RESERVE_FDS > fd_limit:
        log.warning(
            "max_connections %d may not fit the open-file limit of %d: "
            "a client connection can hold a connection to Azure too",
            resolved,
            fd_limit,
        )
