"""`azproxy serve --workers 2`: one scrape of /metrics shows the whole group,
and the group's counters do not go back when a worker is stopped or replaced.

Which worker served a request is read from /proc as in test_workers.py (the
proxy's end of its upstream connection); which worker answered a scrape, from
the scrape's own connection, held open until /proc has been read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BEARER
from tests.e2e.test_workers import (
    MAX_CONNECTIONS,
    SERVE,
    chat_on_new_connection,
    eventually,
)
from tests.e2e.test_workers import owner as request_owner
from tests.fakes import FakeAzure
from tests.processes import Running, running
from tests.procfs import alive, children, connection_owner, needs_proc
from tests.rawhttp import Answer, Conn

pytestmark = needs_proc

SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: azproxy\r\n\r\n"
CHAT = b'{"model": "gpt-4o", "messages": []}'
MIN_REQUESTS = 6
GROUP_LABELS = {"status": "200", "key": "passthrough", "model": "gpt-4o"}


async def connect(server: Running, workers: set[int]) -> tuple[Conn, int]:
    """A new connection to azproxy, and the worker the kernel gave it to."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    conn = Conn(reader, writer)
    await conn.ask()  # /healthz: the worker has accepted the connection
    client_port = writer.get_extra_info("sockname")[1]
    worker = connection_owner(server.port, client_port, workers)
    assert worker is not None
    return conn, worker


def unix_listeners() -> dict[str, Path]:
    """Inode to path of the listening unix sockets, from /proc/net/unix."""
    found = {}
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[5] == "01":  # SS_UNCONNECTED: listening
            found[fields[6]] = Path(fields[7])
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def group_directory(workers: set[int]) -> Path:
    """The directory where the workers serve each other their metrics."""
    listeners = unix_listeners()
    paths = {
        listeners[inode]
        for pid in workers
        for inode in socket_inodes(pid)
        if inode in listeners
    }
    (directory,) = {path.parent for path in paths}
    return directory


def listening_tcp(workers: set[int]) -> set[int]:
    """The ports the workers listen on (IPv4 and IPv6)."""
    inodes = set().union(*(socket_inodes(pid) for pid in workers))
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # TCP_LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def figures(answer: Answer) -> dict[str, float]:
    """The samples a test looks at, from a /metrics answer."""
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "azproxy_requests_total":
                if GROUP_LABELS.items() <= labels.items():
                    found["requests"] = sample.value
            elif name.startswith("azproxy_workers_") or (
                name.startswith("azproxy_request_duration_seconds")
                and labels.get("model") == "gpt-4o"
                and labels.get("le") in (None, "+Inf")
            ):
                found[name] = sample.value
    return found


async def serve_both(server: Running, fake: FakeAzure) -> Counter[int]:
    """Chat requests on new connections until both workers have served and
    at least MIN_REQUESTS were sent: how many each worker served."""
    workers = children(server.process.pid)
    served: Counter[int] = Counter()
    for n in range(MAX_CONNECTIONS):
        if len(served) == 2 and n >= MIN_REQUESTS:
            break
        await chat_on_new_connection(server, fake, n)
        worker = request_owner(fake, fake.last, workers)
        assert worker is not None
        served[worker] += 1
    assert set(served) == workers, f"only {set(served)} served"
    return served


async def test_each_scrape_shows_the_whole_group_whichever_worker_answers(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    env = {"AZPROXY_UPSTREAM": fake_azure.url}
    with running(SERVE, tmp_path / "log", env=env) as server:
        workers = children(server.process.pid)
        served = await serve_both(server, fake_azure)
        total = sum(served.values())
        assert len(fake_azure.requests) == total
        answered: set[int] = set()
        for _ in range(MAX_CONNECTIONS):
            conn, worker = await connect(server, workers)
            shown = figures(await conn.ask(SCRAPE))
            conn.writer.close()
            assert shown == {
                "requests": total,
                "azproxy_request_duration_seconds_count": total,
                "azproxy_request_duration_seconds_bucket": total,
                "azproxy_request_duration_seconds_sum": shown[
                    "azproxy_request_duration_seconds_sum"
                ],
                "azproxy_workers_included": 2,
                "azproxy_workers_missing": 0,
            }, f"scrape answered by worker {worker}"
            answered.add(worker)
            if answered == workers:
                break
        assert answered == workers
        directory = group_directory(workers)
        assert directory.stat().st_mode & 0o777 == 0o700
        assert sorted(p.name for p in directory.glob("*.sock")) == [
            "worker-0.sock",
            "worker-1.sock",
        ]
        assert not listening_tcp(workers) - {server.port}  # no port of its own
    assert not directory.exists()  # removed when azproxy stopped


async def test_a_stopped_worker_is_not_waited_for_and_its_counts_stand(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    env = {"AZPROXY_UPSTREAM": fake_azure.url}
    with running(SERVE, tmp_path / "log", env=env) as server:
        workers = children(server.process.pid)
        served = await serve_both(server, fake_azure)
        total = sum(served.values())
        conn, answering = await connect(server, workers)
        assert figures(await conn.ask(SCRAPE))["requests"] == total
        (stopped,) = workers - {answering}
        os.kill(stopped, signal.SIGSTOP)
        try:
            # One more request, to the worker that still runs.
            headers = BEARER | {"Content-Type": "application/json"}
            await conn.send_head("POST", "/v1/chat/completions", headers, len(CHAT))
            await conn.send(CHAT)
            assert (await conn.answer()).status == 200
            assert fake_azure.last.body == CHAT
            started = time.monotonic()
            answer = await conn.ask(SCRAPE)  # rawhttp's margin: 5 s
            took_s = time.monotonic() - started
        finally:
            os.kill(stopped, signal.SIGCONT)
        shown = figures(answer)
        # The stopped worker's last report stands in for it: no count goes back.
        assert shown["requests"] == total + 1
        assert shown["azproxy_request_duration_seconds_count"] == total + 1
        assert shown["azproxy_workers_included"] == 1
        assert shown["azproxy_workers_missing"] == 1
        assert b"did not answer within 1 s" in answer.body
        assert took_s < 4.5  # the gather gives up after 1 s
        # Running again, it answers again, on the same connection.
        shown = figures(await conn.ask(SCRAPE))
        assert shown["requests"] == total + 1
        assert shown["azproxy_workers_missing"] == 0
        conn.writer.close()


async def test_a_replaced_worker_carries_on_from_its_predecessors_counts(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    env = {"AZPROXY_UPSTREAM": fake_azure.url}
    with running(SERVE, tmp_path / "log", env=env) as server:
        parent = server.process.pid
        workers = children(parent)
        before = sum((await serve_both(server, fake_azure)).values())
        conn, answering = await connect(server, workers)
        assert figures(await conn.ask(SCRAPE))["requests"] == before
        conn.writer.close()
        (victim,) = workers - {answering}
        os.kill(victim, signal.SIGKILL)
        await eventually(
            lambda: (
                len(children(parent) - workers) == 1 and "serves again" in server.log()
            ),
            "a new worker",
        )
        after = sum((await serve_both(server, fake_azure)).values())
        assert len(fake_azure.requests) == before + after
        answered: set[int] = set()
        now = children(parent)
        for _ in range(MAX_CONNECTIONS):
            conn, worker = await connect(server, now)
            shown = figures(await conn.ask(SCRAPE))
            conn.writer.close()
            assert shown["requests"] == before + after, f"answered by {worker}"
            assert shown["azproxy_workers_missing"] == 0
            answered.add(worker)
            if answered == now:
                break
        assert answered == now


async def test_workers_of_a_killed_parent_remove_the_group_directory(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    env = {"AZPROXY_UPSTREAM": fake_azure.url}
    with running(SERVE, tmp_path / "log", env=env) as server:
        workers = children(server.process.pid)
        directory = group_directory(workers)
        server.process.kill()  # no chance to remove it itself
        server.process.wait()
        await eventually(
            lambda: not any(alive(pid) for pid in workers), "orphaned workers to exit"
        )
    assert not directory.exists()
