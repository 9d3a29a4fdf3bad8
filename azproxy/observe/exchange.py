"""What each request did: the record the relay fills in as it goes.

The outermost middleware opens an Exchange for every request; the relay fills
in what it learns (model, deployment, endpoint, Azure's status, attempts, the
first byte, bytes sent, token usage, a limited key's ticket) and the
observer closes it: one
access-log line and the metrics, at the cost of a few attribute writes.

`usage` is final when the outermost middleware's `finally` runs, for every
answer whatever ended it (the client leaving included): Azure's usage, or
for a chat or completions stream that ended without it, an estimate
(`usage_estimated`; observe/usage.py says how).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azproxy.limits.store import Ticket

__all__ = ["Exchange"]


@dataclass(slots=True)
class Exchange:
    method: str
    path: str
    started: float  # time.perf_counter()
    caller: str | None = None
    # The access key's configured name, `passthrough` or `anonymous`.
    key: str | None = None
    model: str | None = None
    deployment: str | None = None
    endpoint: str | None = None
    upstream_status: int | None = None
    attempts: int = 0
    failover: bool = False
    stream: bool = False
    first_byte: float | None = None  # perf_counter when the client got a byte
    bytes_out: int = 0
    usage: tuple[int, int, int] | None = None  # prompt, completion, total tokens
    ticket: Ticket | None = None  # a limited key's reservation, settled at the end
    usage_estimated: bool = False  # usage is azproxy's estimate, not Azure's
    client_left: bool = False  # a write found the client gone: logged as 499

    def sent(self, size: int) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
        self.bytes_out += size
