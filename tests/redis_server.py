"""A real redis-server on a free loopback port, in a temporary directory.

CI installs redis-server from Debian's packages (.ci/run); where it is
missing, the tests that need it skip and say so. A test may kill it and
start it again on the same port, or freeze it (SIGSTOP: its connections stay
open and nothing answers, as with a host that vanished) and thaw it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["REDIS_SERVER", "RedisServer", "needs_redis", "redis_server"]

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
)
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server is not installed (apt-get install redis-server; CI does)",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    def __init__(
        self, directory: Path, port: int, password: str, *, cluster: bool = False
    ) -> None:
        self.directory = directory
        self.port = port
        self.bus_port = free_port()  # the cluster's own port (default: port + 10000)
        self.password = password  # required by the server: AUTH is exercised
        # A cluster of one node that holds every slot: Redis Cluster's protocol
        # (hash slots, CLUSTER SLOTS, cluster pub/sub) on one process.
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        assert REDIS_SERVER is not None
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.directory),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--requirepass",
                    self.password,
                    *self._cluster_args(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        if self.cluster:
            self.command("CLUSTER ADDSLOTSRANGE 0 16383")  # kept in nodes.conf
            while b"cluster_state:ok" not in self.command("CLUSTER INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the one-node cluster did not come up")
                time.sleep(0.05)

    def _cluster_args(self) -> list[str]:
        if not self.cluster:
            return []
        nodes = str(self.directory / "nodes.conf")
        return [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            nodes,
            "--cluster-port",
            str(self.bus_port),
        ]

    def command(self, line: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), 2) as conn:
            conn.sendall(f"AUTH {self.password}\r\n{line}\r\n".encode())
            time.sleep(0.05)
            return conn.recv(65536)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as conn:
                conn.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                return conn.recv(64) == b"+OK\r\n+PONG\r\n"
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen one cannot die
            self.process.kill()
            self.process.wait()

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@contextmanager
def redis_server(directory: Path, *, cluster: bool = False) -> Iterator[RedisServer]:
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(directory, free_port(), secrets.token_hex(16), cluster=cluster)
    server.start()
    try:
        yield server
    finally:
        server.kill()
