"""/metrics for the whole `--workers` group, whichever worker answers.

The kernel gives a scrape's connection to any one worker; that worker asks
each sibling for a snapshot of its figures, merges them with its own
(metrics_merge.py) and answers. So one scrape shows the group's totals, and
successive scrapes never see a counter go back because another worker took
the connection.

Why this way:
- The workers ask each other, on unix sockets in a directory the parent
  made for the group (mkdtemp: mode 0700, so only azproxy's user can
  connect), one socket per worker slot: no port opens, on loopback or
  elsewhere. A sibling answers by writing its snapshot and closing; it reads
  nothing, so nothing a peer sends can reach it.
- The workers and not the parent: the parent only supervises (no event loop,
  nothing to crash), and the answering worker already has an event loop
  to wait on several siblings at once.
- Bounded: all siblings are asked at once, and one that has not answered
  within GATHER_TIMEOUT_S (stopped, overloaded, being replaced), or whose
  snapshot is over MAX_SNAPSHOT_BYTES or not one, is counted in
  azproxy_workers_missing and named in a comment line. A scrape never waits
  longer than that for a sibling.
- The group's counters never go back while azproxy runs. A sum that dropped
  because one worker was left out, or restarted from zero, would read to
  Prometheus as a reset of the whole sum: rate() and increase() would count
  every other worker's total again. So each worker writes what it reports to
  its slot's file (worker-N.last) before reporting it: any figure a scrape
  showed is on disk. A sibling that cannot answer is stood in for by the
  counters and histograms of its file (its gauges are left out), and a
  worker that replaces a dead one carries its predecessor's file on, adding
  its own figures to it. What a dead worker counted after its last report
  is lost; a restart of azproxy starts every counter from zero, as for any
  process.

Single-process `azproxy serve` never builds any of this (create_app without
a group); requests pay nothing either way: only a scrape gathers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from azproxy.observe.metrics import METRICS, Metrics
from azproxy.observe.metrics_merge import decode, encode, lasting, merge

__all__ = [
    "GATHER_TIMEOUT_S",
    "MAX_SNAPSHOT_BYTES",
    "MEMBER",
    "Member",
    "WorkerGroup",
    "group_metrics_handler",
    "setup",
]

log = logging.getLogger("azproxy")

GATHER_TIMEOUT_S = 1.0
# A worker at MAX_SERIES label pairs renders a few MB; far past that is not
# a snapshot of ours.
MAX_SNAPSHOT_BYTES = 64 * 2**20
READ_BYTES = 2**16


@dataclass(frozen=True)
class WorkerGroup:
    """What one worker knows of its group: the group's private directory,
    how many slots it has, and its own slot."""

    directory: str
    size: int
    slot: int

    def socket_path(self, slot: int) -> str:
        return os.path.join(self.directory, f"worker-{slot}.sock")

    def last_path(self, slot: int) -> str:
        """Where the worker of `slot` keeps what it last reported."""
        return os.path.join(self.directory, f"worker-{slot}.last")


class Member:
    """One worker of the group: what it reports, and what stands in for a
    sibling that cannot answer."""

    def __init__(self, metrics: Metrics, group: WorkerGroup) -> None:
        self.metrics = metrics
        self.group = group
        # A dead predecessor's figures in this slot (none at start), carried on.
        self.carried = self.stand_in(group.slot)
        self.kept = b""  # the snapshot last written to disk

    def report(self) -> tuple[list[Metric], bytes]:
        """This worker's families and their snapshot, kept on disk first."""
        families = list(self.metrics.collect())
        if self.carried:
            families = merge([families, self.carried])
        snapshot = encode(families)
        if snapshot != self.kept:  # an idle worker's figures stay as they were
            self._keep(snapshot)
        return families, snapshot

    def _keep(self, snapshot: bytes) -> None:
        path = self.group.last_path(self.group.slot)
        try:
            with open(path + ".part", "wb") as file:
                file.write(snapshot)
            os.replace(path + ".part", path)  # never seen half written
        except OSError as exc:
            log.warning("cannot keep this worker's metrics in %s: %s", path, exc)
            return
        self.kept = snapshot

    def stand_in(self, slot: int) -> list[Metric]:
        """The counters and histograms the worker of `slot` last reported."""
        try:
            with open(self.group.last_path(slot), "rb") as file:
                snapshot = file.read(MAX_SNAPSHOT_BYTES + 1)
            if len(snapshot) > MAX_SNAPSHOT_BYTES:
                return []
            return lasting(decode(snapshot))
        except (OSError, ValueError):  # none yet, or not ours
            return []


MEMBER = web.AppKey("azproxy.metrics_member", Member)


def setup(app: web.Application, group: WorkerGroup) -> None:
    """app[MEMBER]; while the app runs, its snapshot is served on its slot's
    socket."""
    member = app[MEMBER] = Member(app[METRICS], group)
    parent = os.getppid()

    async def serving(app: web.Application) -> AsyncIterator[None]:
        server = await _serve_snapshots(member, group.socket_path(group.slot))
        yield
        if server is not None:
            server.close()
        if os.getppid() != parent:
            # The parent was killed and cannot remove the directory: the
            # workers, which drain and stop after it, do.
            shutil.rmtree(group.directory, ignore_errors=True)

    app.cleanup_ctx.append(serving)


async def _serve_snapshots(member: Member, path: str) -> asyncio.Server | None:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(GATHER_TIMEOUT_S):
                writer.write(member.report()[1])
                await writer.drain()
        writer.close()

    # A predecessor's socket (a replaced worker) is in the way of bind.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    try:
        return await asyncio.start_unix_server(answer, path)
    except OSError as exc:
        # The worker serves on; its siblings' scrapes count it as missing.
        log.warning("cannot serve this worker's metrics to the others: %s", exc)
        return None


async def _snapshot(path: str) -> list[Metric] | None:
    """A sibling's families, or None: gone, too slow, too big, or garbled."""
    try:
        async with asyncio.timeout(GATHER_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                chunks, size = [], 0
                while chunk := await reader.read(READ_BYTES):
                    size += len(chunk)
                    if size > MAX_SNAPSHOT_BYTES:
                        return None
                    chunks.append(chunk)
            finally:
                writer.close()
        return decode(b"".join(chunks))
    except (OSError, TimeoutError, ValueError) as exc:
        log.debug("no metrics from %s: %r", path, exc)
        return None


def group_metrics_handler(
    member: Member, authorize: Callable[[web.Request], None]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /metrics: this worker's figures and its siblings', merged."""
    group = member.group
    siblings = [s for s in range(group.size) if s != group.slot]

    async def handler(request: web.Request) -> web.Response:
        authorize(request)
        own, _ = member.report()
        gathered = await asyncio.gather(
            *(_snapshot(group.socket_path(s)) for s in siblings)
        )
        missing = [s for s, got in zip(siblings, gathered, strict=True) if got is None]
        found = [got for got in gathered if got is not None]
        families = merge([own, *found, *(member.stand_in(s) for s in missing)])
        families.extend(_group_gauges(group.size - len(missing), len(missing)))
        body = generate_latest(_Families(families))
        if missing:
            shown = ", ".join(map(str, missing))
            body += (
                f"# azproxy: worker slot(s) {shown} did not answer within "
                f"{GATHER_TIMEOUT_S:g} s: their last reported counters stand in, "
                "their gauges are left out\n"
            ).encode()
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handler


def _group_gauges(answered: int, missing: int) -> list[Metric]:
    included = GaugeMetricFamily(
        "azproxy_workers_included",
        "Workers that answered for this scrape, this one included (--workers).",
        value=answered,
    )
    left_out = GaugeMetricFamily(
        "azproxy_workers_missing",
        "Workers that did not answer in time: their last reported counters "
        "stand in, their gauges are left out (--workers).",
        value=missing,
    )
    return [included, left_out]


class _Families:
    """Merged families, in the shape generate_latest renders."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families
