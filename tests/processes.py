"""Run the real `azproxy` command as a child process on a free loopback port.

The child gets tests/netguard.py's hermetic environment (no AZPROXY_*
settings, proxies or cloud identities) plus the test's own `env`, and must
announce a loopback address, or the test stops.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.netguard import hermetic_environ, is_loopback_host

LISTENING = re.compile(rb"listening on http://(?P<host>[^\s/]+):(?P<port>\d+)")
SIMULATOR = re.compile(rb"simulator on http://(?P<host>[^\s/]+):(?P<port>\d+)")


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running(
    args: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    ready: re.Pattern[bytes] = LISTENING,
    timeout_s: float = 15.0,
) -> Iterator[Running]:
    """Start `python -m azproxy ARGS`, wait until it logs its port, stop it after."""
    full_env = hermetic_environ(dict(os.environ)) | dict(env or {})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "azproxy", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            found = ready.search(log_path.read_bytes())
            if found:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"azproxy did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        host = found["host"].decode().strip("[]")
        if not is_loopback_host(host):
            raise RuntimeError(f"azproxy listens beyond loopback, on {host}")
        yield Running(process, int(found["port"]), log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
