"""`azproxy serve --workers 2`: real processes sharing one port.

Which worker answered is read from /proc: FakeAzure records the proxy's end of
each upstream connection, and /proc tells which worker process holds it (each
worker has its own connection pool). The kernel spreads new connections over
the workers by a hash, so a test sends requests on fresh connections until
both workers have answered; with one worker serving, it fails after
MAX_CONNECTIONS tries (a chance of 2**-19 that two working ones look like one).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from azproxy.server.workers import listen_sockets
from tests.conftest import AZURE_KEY, BEARER
from tests.fakes import FakeAzure, Recorded, sse_answer, sse_event
from tests.processes import Running, running
from tests.procfs import alive, children, connection_owner, needs_proc

pytestmark = needs_proc

MAX_CONNECTIONS = 20
AZPROXY = (sys.executable, "-m", "azproxy")
PYTHON = (sys.executable, "-c")
SERVE = ["serve", "--port", "0", "--workers", "2"]
STREAM_BODY = b'{"model": "gpt-4o", "stream": true, "messages": []}'
DONE = sse_event("[DONE]")


def owner(fake: FakeAzure, sent: Recorded, workers: set[int]) -> int | None:
    """The worker that sent `sent` to FakeAzure."""
    port = URL(fake.url).port
    assert port is not None
    return connection_owner(sent.peer_port, port, workers)


async def eventually(
    condition_met: Callable[[], bool], what: str, timeout_s: float = 10
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition_met():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.05)


async def wait_exit(server: Running, timeout_s: float = 10) -> int:
    await eventually(
        lambda: server.process.poll() is not None, "azproxy to exit", timeout_s
    )
    return server.process.returncode


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def chat_on_new_connection(server: Running, fake: FakeAzure, n: int) -> None:
    """One JSON chat request on a connection of its own, checked at both ends."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"n{n}"}]}
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"{server.url}/v1/chat/completions", json=body, headers=BEARER
        ) as response,
    ):
        assert response.status == 200
        answer = await response.json()
    assert answer["choices"][0]["message"]["content"] == "Hi from FakeAzure"
    sent = fake.last
    assert sent.path == "/openai/deployments/dep1/chat/completions"
    assert sent.headers["api-key"] == AZURE_KEY
    assert json.loads(sent.body) == body


async def test_two_workers_share_the_port_and_both_answer(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    env = {"AZPROXY_UPSTREAM": fake_azure.url}
    with running(SERVE, tmp_path / "log", env=env) as server:
        assert server.log().count("listening on http://") == 1
        assert "(2 workers)" in server.log()
        workers = children(server.process.pid)
        assert len(workers) == 2
        answered: set[int | None] = set()
        for n in range(MAX_CONNECTIONS):
            await chat_on_new_connection(server, fake_azure, n)
            answered.add(owner(fake_azure, fake_azure.last, workers))
            if answered == workers:
                break
        assert answered == workers
        assert {r.peer_port for r in fake_azure.requests} != {0}


async def test_sigterm_lets_streams_on_both_workers_finish(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    events = [sse_event({"n": i}) for i in range(30)] + [DONE]
    fake_azure.queue(*(sse_answer(events, delay_s=0.1) for _ in range(MAX_CONNECTIONS)))
    env = {"AZPROXY_UPSTREAM": fake_azure.url, "AZPROXY_SHUTDOWN_GRACE_S": "10"}
    with running(SERVE, tmp_path / "log", env=env) as server:
        workers = children(server.process.pid)
        streams: list[tuple[aiohttp.ClientResponse, bytes]] = []
        owners: set[int | None] = set()
        async with aiohttp.ClientSession() as session:
            # Each open stream holds its connection: the next one is new.
            while owners != workers or len(streams) < 4:
                assert len(streams) < MAX_CONNECTIONS, f"streams only on {owners}"
                response = await session.post(
                    f"{server.url}/v1/chat/completions",
                    data=STREAM_BODY,
                    headers=BEARER,
                )
                assert response.status == 200
                streams.append((response, await response.content.readany()))
                owners.add(owner(fake_azure, fake_azure.last, workers))

            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while not await refused(server.port):
                assert time.monotonic() < deadline, "still accepting after SIGTERM"
                await asyncio.sleep(0.05)
            for response, first in streams:
                assert first + await response.read() == b"".join(events)
        assert await wait_exit(server) == 0
    log = server.log()
    assert "stopping 2 worker(s)" in log
    assert log.count("draining: waiting up to 10 s") == 2  # each worker drained
    assert not any(alive(pid) for pid in workers)


async def test_ctrl_c_in_a_terminal_is_one_graceful_stop(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    # A terminal's Ctrl-C sends SIGINT to the whole process group: the main
    # process and every worker. Only the main process may act on it.
    events = [sse_event({"n": i}) for i in range(10)] + [DONE]
    fake_azure.queue(sse_answer(events, delay_s=0.1))
    env = {"AZPROXY_UPSTREAM": fake_azure.url}
    with running(SERVE, tmp_path / "log", env=env) as server:
        workers = children(server.process.pid)
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"{server.url}/v1/chat/completions", data=STREAM_BODY, headers=BEARER
            )
            first = await response.content.readany()
            for pid in (server.process.pid, *workers):
                os.kill(pid, signal.SIGINT)
            assert first + await response.read() == b"".join(events)
        assert await wait_exit(server) == 0
    assert "stopping 2 worker(s)" in server.log()
    assert "Traceback" not in server.log()


async def test_a_killed_worker_is_replaced(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    env = {"AZPROXY_UPSTREAM": fake_azure.url}
    with running(SERVE, tmp_path / "log", env=env) as server:
        parent = server.process.pid
        workers = children(parent)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = children(parent)
            return (
                len(now) == 2 and victim not in now and "serves again" in server.log()
            )

        await eventually(replaced, "a new worker")
        (replacement,) = children(parent) - workers
        assert f"(pid {victim}) was killed by SIGKILL; starting a new one" in (
            server.log()
        )
        # The replacement took over the victim's socket: it gets connections.
        answered = set()
        for n in range(MAX_CONNECTIONS):
            await chat_on_new_connection(server, fake_azure, n)
            answered.add(owner(fake_azure, fake_azure.last, children(parent)))
            if replacement in answered:
                break
        assert replacement in answered
        server.process.send_signal(signal.SIGTERM)
        assert await wait_exit(server) == 0


async def test_workers_of_a_killed_parent_drain_and_exit(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    events = [sse_event({"n": i}) for i in range(10)] + [DONE]
    fake_azure.queue(sse_answer(events, delay_s=0.1))
    env = {"AZPROXY_UPSTREAM": fake_azure.url}
    with running(SERVE, tmp_path / "log", env=env) as server:
        workers = children(server.process.pid)
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"{server.url}/v1/chat/completions", data=STREAM_BODY, headers=BEARER
            )
            first = await response.content.readany()
            server.process.kill()  # no chance to stop its workers itself
            server.process.wait()
            assert first + await response.read() == b"".join(events)
        await eventually(
            lambda: not any(alive(pid) for pid in workers), "orphaned workers to exit"
        )
        assert await refused(server.port)


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_port_in_use_stops_the_start(reuse_port: bool) -> None:
    # Taken by a plain server, or by another program's SO_REUSEPORT group,
    # which the workers' sockets would otherwise silently join.
    with socket.socket() as taken:
        if reuse_port:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*AZPROXY, "serve", "--workers", "2", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr


# The supervisor on its own, with stand-in workers, in a child Python: the
# failures that a real azproxy worker cannot be made to have on purpose.
HARNESS = """
import logging, os, signal, sys, time
from pathlib import Path
from azproxy.server.supervisor import Supervisor
from azproxy.server.workers import listen_sockets

logging.basicConfig(level=logging.INFO, format="%(message)s")
MODE, MARK = sys.argv[1], Path(sys.argv[2]) / "mark"

def work(slot, sockets, ready):
    if slot == 1 and MODE == "dies-at-start":
        sys.exit(3)
    if slot == 1 and MODE == "replacement-dies-at-start":
        if MARK.exists():
            sys.exit(4)
        MARK.touch()
        ready()
        sys.exit(0)
    ready()
    if MODE == "ignores-sigterm":
        time.sleep(60)
    signal.sigwait({signal.SIGTERM})  # blocked until a real worker can drain
    print(f"worker {slot} stopped cleanly", flush=True)

slots, port = listen_sockets("127.0.0.1", 0, 2, reuse_port=True)
supervisor = Supervisor(slots, work, stop_timeout_s=float(sys.argv[3]))
sys.exit(supervisor.run(lambda: print("all ready", flush=True)))
"""


def supervise(
    mode: str, tmp_path: Path, harness: str = HARNESS, stop_timeout_s: float = 10
) -> tuple[int, str]:
    """Exit code and output of the harness in `mode`."""
    done = subprocess.run(
        [*PYTHON, textwrap.dedent(harness), mode, str(tmp_path), str(stop_timeout_s)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_a_worker_that_dies_at_start_stops_the_others(tmp_path: Path) -> None:
    code, out = supervise("dies-at-start", tmp_path)
    assert code == 1, out
    assert "exited with code 3 before it was ready: stopping azproxy" in out
    assert "worker 0 stopped cleanly" in out
    assert "all ready" not in out


def test_a_replacement_that_dies_at_start_stops_the_others(tmp_path: Path) -> None:
    code, out = supervise("replacement-dies-at-start", tmp_path)
    assert code == 1, out
    assert "exited with code 0; starting a new one" in out
    assert "exited with code 4 before it was ready: stopping azproxy" in out
    assert "worker 0 stopped cleanly" in out


def test_workers_that_outlive_the_stop_timeout_are_killed(tmp_path: Path) -> None:
    # Once both are ready, the supervisor is sent SIGTERM, as by `docker stop`.
    harness = HARNESS.replace(
        'print("all ready", flush=True)', "os.kill(os.getpid(), signal.SIGTERM)"
    )
    started = time.monotonic()
    code, out = supervise("ignores-sigterm", tmp_path, harness, stop_timeout_s=0.5)
    assert code == 1, out
    assert "stopping 2 worker(s)" in out
    assert "2 worker(s) still running 0.5 s after SIGTERM: killing them" in out
    assert time.monotonic() - started < 20  # not the stand-ins' 60 s sleep


def test_listen_sockets_share_one_port() -> None:
    slots, port = listen_sockets("127.0.0.1", 0, 3, reuse_port=True)
    try:
        assert len({id(s[0]) for s in slots}) == 3  # a socket per worker
        assert {s[0].getsockname() for s in slots} == {("127.0.0.1", port)}
    finally:
        for (sock,) in slots:
            sock.close()
    slots, port = listen_sockets("127.0.0.1", 0, 3, reuse_port=False)
    try:
        assert len({id(s[0]) for s in slots}) == 1  # one socket for all
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        slots[0][0].close()
