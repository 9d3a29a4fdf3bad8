"""The servers the benchmark runs: started on free loopback ports, waited for
until ready, always stopped.

The simulator (the upstream everything is measured against), azproxy, the bare
aiohttp floor relay (scripts/floor_relay.py) and nginx as a plain reverse proxy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOOPBACK",
    "Service",
    "Services",
    "StartError",
    "azproxy_origin",
    "find_tool",
    "start_azproxy",
    "start_fake_azure",
    "start_floor",
    "start_nginx",
    "start_simulator",
]

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
FLOOR_RELAY = Path(__file__).resolve().parent.parent / "floor_relay.py"
FAKE_AZURE = Path(__file__).resolve().parent / "fake_azure.py"


class StartError(RuntimeError):
    """A server did not start or did not become ready in time."""


@dataclass
class Service:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Services:
    """Every process the benchmark started; stop_all() ends them all."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Service] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> Service:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            # A session of its own: Ctrl-C reaches only this script, which
            # then stops the servers in order (and can kill a whole group).
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        service = Service(name, popen, log, port)
        self.started.append(service)
        return service

    def stop(self, service: Service) -> None:
        """Stop one service early (a section that started its own)."""
        self.started.remove(service)
        _stop(service)

    def stop_all(self) -> None:
        while self.started:
            _stop(self.started.pop())


def _stop(service: Service) -> None:
    popen = service.popen
    if popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # The leader is still alive, so its process group id is still ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(STOP_TIMEOUT_S)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together while chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_ok(url: str) -> bool:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (OSError, ValueError):
        return False


def _wait_ready(
    service: Service, ready: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        code = service.popen.poll()
        if code is not None:
            raise StartError(
                f"{service.name} exited with code {code}:\n{service.log_tail()}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise StartError(
                f"{service.name} not ready after {timeout_s:g} s:\n{service.log_tail()}"
            )
        time.sleep(0.05)


def _child_env() -> dict[str, str]:
    """The current environment without AZPROXY_* settings: a default config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AZPROXY_")}


def find_tool(name: str) -> str | None:
    """A program on PATH, or in the sbin folders a non-root PATH may lack."""
    extra = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
    return shutil.which(name) or shutil.which(name, path=extra)


def start_simulator(services: Services) -> Service:
    (port,) = _free_ports(1)
    argv = [sys.executable, "-m", "azproxy", "simulate", "--host", LOOPBACK]
    service = services.start(
        "simulator", [*argv, "--port", str(port)], port, _child_env()
    )
    _wait_ready(service, lambda: _tcp_open(port))
    return service


def start_azproxy(
    services: Services,
    upstream_port: int,
    extra_args: Sequence[str] = (),
    name: str = "azproxy",
    env: dict[str, str] | None = None,
    src: Path | None = None,
    wrapper: Sequence[str] = (),
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Service:
    """azproxy from this checkout, or from the source tree `src` (another
    checkout: the folder holding its azproxy package). `wrapper` runs it
    under another program (valgrind: scripts/profile_hot_path.py)."""
    (port,) = _free_ports(1)
    argv = [
        *wrapper,
        sys.executable,
        "-m",
        "azproxy",
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--upstream",
        f"http://{LOOPBACK}:{upstream_port}",
        *extra_args,
    ]
    service = services.start(name, argv, port, _azproxy_env(src, env), cwd=src)

    def ready() -> bool:
        # With --workers, one worker may answer before the others serve:
        # "listening on" is logged once all of them do.
        return _http_ok(f"http://{LOOPBACK}:{port}/healthz") and (
            b"listening on" in service.log.read_bytes()
        )

    _wait_ready(service, ready, ready_timeout_s)
    return service


def _azproxy_env(src: Path | None, env: dict[str, str] | None) -> dict[str, str]:
    found = _child_env() | (env or {})
    if src is not None:
        # `-m` and `-c` put the working folder first on sys.path: run from
        # src (the cwd), so its azproxy is imported, not this checkout's or
        # the installed one; PYTHONPATH for any subprocess it starts.
        found["PYTHONPATH"] = str(src)
    return found


def azproxy_origin(src: Path | None = None) -> Path:
    """The azproxy package start_azproxy(src=src) would run."""
    argv = [sys.executable, "-c", "import azproxy; print(azproxy.__file__)"]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT_S,
        env=_azproxy_env(src, None),
        cwd=src,
        check=False,
    )
    if done.returncode != 0:
        raise StartError(f"azproxy does not import from {src}:\n{done.stderr}")
    return Path(done.stdout.strip()).parent


def start_floor(
    services: Services,
    upstream_url: str,
    wrapper: Sequence[str] = (),
    ready_timeout_s: float = READY_TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> Service:
    """scripts/floor_relay.py: every request relayed to one upstream URL
    (`wrapper`: as for start_azproxy; `env`: added to the environment)."""
    (port,) = _free_ports(1)
    argv = [*wrapper, sys.executable, str(FLOOR_RELAY), str(port), upstream_url]
    service = services.start("floor", argv, port, _child_env() | (env or {}))
    _wait_ready(service, lambda: _tcp_open(port), ready_timeout_s)
    return service


def start_fake_azure(services: Services) -> Service:
    """benchmark/fake_azure.py: answers at once, streams on request."""
    (port,) = _free_ports(1)
    argv = [sys.executable, str(FAKE_AZURE), str(port)]
    service = services.start("fake-azure", argv, port, _child_env())
    _wait_ready(service, lambda: _tcp_open(port))
    return service


def _nginx_conf(port: int, upstream_port: int) -> str:
    # As in notes/containers.md, with room for 200 streams (400 connections)
    # and keepalive limits raised so nginx does not recycle connections that
    # azproxy and the simulator would keep (a fair comparison, not a tuning).
    return f"""\
worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path tmp_body;
    proxy_temp_path       tmp_proxy;
    fastcgi_temp_path     tmp_fastcgi;
    uwsgi_temp_path       tmp_uwsgi;
    scgi_temp_path        tmp_scgi;
    keepalive_requests 1000000;
    upstream simulator {{
        server {LOOPBACK}:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {LOOPBACK}:{port};
        location / {{
            proxy_pass http://simulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
            client_max_body_size 32m;
        }}
    }}
}}
"""


def start_nginx(services: Services, nginx: str, upstream_port: int) -> Service:
    (port,) = _free_ports(1)
    prefix = services.tmp / "nginx"
    prefix.mkdir()
    # Workers run as an unprivileged user when started by root: let them in.
    prefix.chmod(0o755)
    services.tmp.chmod(0o755)
    (prefix / "nginx.conf").write_text(_nginx_conf(port, upstream_port))
    argv = [nginx, "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "stderr"]
    service = services.start(
        "nginx", [*argv, "-g", "daemon off;"], port, dict(os.environ)
    )
    _wait_ready(service, lambda: _tcp_open(port))
    return service
