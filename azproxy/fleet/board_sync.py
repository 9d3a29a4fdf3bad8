"""The health board shared by a fleet: each change one process makes reaches
the others through Redis, and a process that joins reads what they know.

A change (a 429's cooldown and its deadline, a breaker opening, a probe going
out, a success closing it all, an exhausted mark starting or ending) goes
with the next batch as one script call:
it writes the deployment's deadlines into the board's hash, in Redis' own
time (TIME), so that machines whose clocks differ agree, and publishes the
change on the events channel. Every process listens there and applies what
others changed to its own board, which stays the fast path: no request waits
for Redis to learn a deployment's health.

A probe another process sent keeps this one waiting for its verdict for at
most PROBE_LEASE_S: a process that dies mid-probe does not hold the
deployment back for longer. Two processes whose first request after a
cooldown comes within the same few milliseconds (the time a change takes to
reach the others) may each send a probe.

In a fleet that is being updated, processes of the version before exhausted
marks were shared keep working with this one: their events have no "x" and
leave this process's marks as they are; they ignore the "x" of ours; their
board entries have four deadlines, read here as no mark. (Their script
drops an entry whose first four deadlines passed, and may expire the board
before a mark's end: a process that joins meanwhile misses that mark.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
from typing import TYPE_CHECKING, Any

from azproxy.fleet.scripts import Batch, Script
from azproxy.relay.health_board import HealthBoard, Shared

if TYPE_CHECKING:
    from azproxy.fleet.connection import Client
    from azproxy.fleet.names import Names

__all__ = ["PROBE_LEASE_S", "BoardSync"]

PROBE_LEASE_S = 30.0
log = logging.getLogger("azproxy.fleet")

# KEYS[1]: the board. ARGV: channel, deployment, then the milliseconds left
# of its 429 cooldown, error cooldown, open breaker, probe lease and
# exhausted mark (-1: not part of this change, the stored one stays), then
# the sender. A field is the deployment's deadlines in Redis' time,
# [limited, cooling, open, probe, exhausted] (four in entries written by the
# version before: no mark); fields whose deadlines all passed are dropped,
# and the hash expires with its last deadline. The event carries "x" only
# when the mark is part of the change.
WRITE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
              tonumber(ARGV[6]), tonumber(ARGV[7])}
local at = {}
for i = 1, 5 do
  if left[i] > 0 then at[i] = now + left[i] else at[i] = 0 end
end
if left[5] < 0 then
  local old = redis.call('HGET', KEYS[1], ARGV[2])
  if old then at[5] = cjson.decode(old)[5] or 0 end
end
if math.max(at[1], at[2], at[3], at[4], at[5]) > now then
  redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(at))
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
local last = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local d = cjson.decode(all[i + 1])
  local until_ = math.max(d[1], d[2], d[3], d[4], d[5] or 0)
  if until_ <= now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif until_ > last then
    last = until_
  end
end
if last > 0 then redis.call('PEXPIREAT', KEYS[1], last) end
local x = nil
if left[5] >= 0 then x = left[5] end
redis.call('PUBLISH', ARGV[1], cjson.encode({d = ARGV[2], l = left[1],
  c = left[2], o = left[3], p = left[4], x = x, by = ARGV[8]}))
return 1
"""
)

# KEYS[1]: the board. Returns deployment, then the milliseconds left of each
# of its five deadlines, for every deployment with one still ahead.
READ = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local d = cjson.decode(all[i + 1])
  table.insert(out, all[i])
  for j = 1, 5 do table.insert(out, math.max((d[j] or 0) - now, 0)) end
end
return out
"""
)


# Bounds on what the events channel may bring (see BoardSync._acceptable).
MAX_WAIT_MS = 86_400_000
MAX_NAMES = 1000
NOT_SAID = -1  # an exhausted mark that is not part of a change
_NAME = re.compile(r"[^/\s]{1,128}/[A-Za-z0-9._-]{1,64}")


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


class BoardSync:
    """The board's listener, and the way in for what others changed."""

    def __init__(
        self, board: HealthBoard, names: Names, batch: Batch, *, origin: str
    ) -> None:
        self._board = board
        self._names = names
        self._batch = batch
        self.origin = origin  # this process, so that it skips its own changes
        self._changed_here: set[str] = set()
        self._versions: dict[str, int] = {}
        board.listener = self

    def changed(self, name: str, view: Shared) -> None:
        self._changed_here.add(name)
        probe_s = PROBE_LEASE_S if view.probing else 0.0
        waits = (view.limited_s, view.cooling_s, view.open_s, probe_s)
        # A wait the others would refuse (a setting may exceed a day) goes
        # as the longest they take.
        left = [min(_ms(s), MAX_WAIT_MS) for s in waits]
        mark = view.exhausted_s
        left.append(NOT_SAID if mark is None else min(_ms(mark), MAX_WAIT_MS))
        args: list[str | int] = [self._names.events, name, *left, self.origin]
        self._batch.add(WRITE, (self._names.board,), args)

    def received(self, data: Any) -> None:
        """A message from the events channel."""
        try:
            event = json.loads(data)
            if event["by"] == self.origin:
                return
            name = str(event["d"])
            left = [int(event[k]) for k in ("l", "c", "o", "p")]
            # No "x": a change that leaves the marks alone, or an event from
            # the version before marks were shared.
            left.append(int(event["x"]) if "x" in event else NOT_SAID)
        except (ValueError, TypeError, KeyError, OverflowError):  # 1e400: inf
            log.debug("shared state: an event azproxy did not send: %.80r", data)
            return
        if not self._acceptable(name, left):
            log.debug("shared state: an event out of bounds: %.80r", data)
            return
        self._take(name, *left)

    def _acceptable(self, name: str, left: list[int]) -> bool:
        """Whether an event from the channel is one azproxy could have sent:
        waits of a day at most, a deployment's name, and no more names than
        MAX_NAMES (anyone who can publish there must not grow this process)."""
        *waits, exhausted = left
        if not all(0 <= ms <= MAX_WAIT_MS for ms in waits):
            return False
        if exhausted != NOT_SAID and not 0 <= exhausted <= MAX_WAIT_MS:
            return False
        if name in self._versions:
            return True
        return len(self._versions) < MAX_NAMES and _NAME.fullmatch(name) is not None

    async def join(self, client: Client) -> None:
        """Read what the fleet knows now (at start, after an outage)."""
        found = await READ.run(client, (self._names.board,))
        for i in range(0, len(found), 6):
            name = found[i].decode() if isinstance(found[i], bytes) else found[i]
            limited, cooling, open_, probe, mark = (
                int(v) for v in found[i + 1 : i + 6]
            )
            # A mark that ran out on the board leaves this process's own.
            self._take(name, limited, cooling, open_, probe, mark or NOT_SAID)

    def republish(self) -> None:
        """After an outage: tell the fleet what this process learned alone."""
        for name in sorted(self._changed_here):
            view = self._board.view(name)
            if not view.quiet:
                self.changed(name, view)

    def _take(
        self,
        name: str,
        limited: int,
        cooling: int,
        open_: int,
        probe: int,
        exhausted: int,
    ) -> None:
        mark = None if exhausted == NOT_SAID else exhausted / 1e3
        view = Shared(limited / 1e3, cooling / 1e3, open_ / 1e3, probe > 0, mark)
        self._board.apply(name, view)
        version = self._versions[name] = self._versions.get(name, 0) + 1
        if probe > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(probe / 1e3, self._probe_over, name, version)

    def _probe_over(self, name: str, version: int) -> None:
        """No verdict from the probe another process sent: probe here."""
        if self._versions.get(name) == version:
            view = self._board.view(name)
            self._board.apply(name, dataclasses.replace(view, probing=False))
