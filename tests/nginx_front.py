"""nginx in the foreground on loopback, in front of a local server, for tests.

The site is deploy/nginx/azproxy.conf as shipped, with its two address lines
(`listen 80;` and the upstream's `server 127.0.0.1:3000;`) pointed at the
test's ports; everything else is what users install. Every site a test runs
must listen and proxy on loopback only (`beyond_loopback`). nginx runs as in
/work/shared/notes/containers.md: `-p PREFIX -g 'daemon off;'`, all state in a
temp dir, stopped when the test is done.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netguard import is_loopback_host

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx" / "azproxy.conf"
# The lines of SITE that say where things are; each must appear exactly once.
LISTEN_LINE = "listen 80;"
UPSTREAM_LINE = "server 127.0.0.1:3000;"

MAIN_CONF = """\
worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path tmp_body;
    proxy_temp_path       tmp_proxy;
    fastcgi_temp_path     tmp_fastcgi;
    uwsgi_temp_path       tmp_uwsgi;
    scgi_temp_path        tmp_scgi;
    include site.conf;
}
"""

# A site that relies on nginx's defaults (HTTP/1.0 upstream, buffering on): the
# kind of nginx azproxy may sit behind without its operator's knowledge.
STOCK_SITE = """\
server {{
    listen 127.0.0.1:{listen};
    location / {{ proxy_pass http://127.0.0.1:{upstream}; }}
}}
"""

Site = Callable[[int, int], str]

# The directives by which nginx listens or connects: (name, address).
ADDRESS = re.compile(r"(?:^|[{;}])\s*(listen|server|proxy_pass|resolver)\s+([^\s;{]+)")
UPSTREAM_NAME = re.compile(r"\bupstream\s+(\S+)\s*\{")
COMMENT = re.compile(r"#.*")


def find_nginx() -> str | None:
    """nginx on PATH, or in the sbin folders a non-root PATH may lack."""
    sbin = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
    return shutil.which("nginx") or shutil.which("nginx", path=sbin)


def shipped_site(listen: int, upstream: int) -> str:
    """deploy/nginx/azproxy.conf on 127.0.0.1:listen, in front of :upstream."""
    lines = SITE.read_text().splitlines(keepends=True)
    for old, new in (
        (LISTEN_LINE, f"listen 127.0.0.1:{listen};"),
        (UPSTREAM_LINE, f"server 127.0.0.1:{upstream};"),
    ):
        found = [i for i, line in enumerate(lines) if line.strip() == old]
        assert len(found) == 1, f"{SITE.name}: {old!r} must be one line, found {found}"
        lines[found[0]] = lines[found[0]].replace(old, new)
    return "".join(lines)


def stock_site(listen: int, upstream: int) -> str:
    return STOCK_SITE.format(listen=listen, upstream=upstream)


def beyond_loopback(site: str) -> list[str]:
    """The directives of `site` that listen or connect beyond loopback.

    `listen` and an upstream's `server` take HOST:PORT (a bare port listens on
    every interface), `proxy_pass` a URL to HOST:PORT or to one of the site's
    upstream blocks; a `resolver` would send DNS queries, so none may appear.
    """
    site = COMMENT.sub("", site)
    upstreams = set(UPSTREAM_NAME.findall(site))
    wrong = []
    for directive, value in ADDRESS.findall(site):
        address = re.sub(r"^\w+://", "", value).split("/")[0]
        if directive == "proxy_pass" and address in upstreams:
            continue
        host = address.rpartition(":")[0].strip("[]")
        if directive == "resolver" or not is_loopback_host(host):
            wrong.append(f"{directive} {value}")
    return wrong


@dataclass
class Front:
    process: subprocess.Popen[bytes]
    port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.prefix / "stderr.log").read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # fast shutdown of master + worker
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start(nginx: str, prefix: Path, port: int) -> subprocess.Popen[bytes] | None:
    """nginx on `port`; None when another program took the port meanwhile."""
    argv = [nginx, "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "stderr"]
    with (prefix / "stderr.log").open("wb") as log:
        process = subprocess.Popen(
            [*argv, "-g", "daemon off;"], stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 10
    while not accepting(port):
        if process.poll() is not None:
            log_text = (prefix / "stderr.log").read_text(errors="replace")
            if "Address already in use" in log_text:
                return None
            raise RuntimeError(f"nginx did not start:\n{log_text}")
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError("nginx did not listen within 10 s")
        time.sleep(0.02)
    return process


@contextmanager
def fronting(upstream_port: int, site: Site = shipped_site) -> Iterator[Front]:
    """nginx on a free loopback port in front of 127.0.0.1:upstream_port.

    Skips the test, with the reason, when there is no nginx to run.
    """
    nginx = find_nginx()
    if nginx is None:
        pytest.skip("nginx not found (apt-get install nginx): no test through nginx")
    with tempfile.TemporaryDirectory(prefix="azproxy-nginx-") as tmp:
        prefix = Path(tmp)
        # Started by root, the worker runs as an unprivileged user: let it in.
        prefix.chmod(0o755)
        (prefix / "nginx.conf").write_text(MAIN_CONF)
        process = None
        for _ in range(5):  # a free port can be taken before nginx binds it
            port = free_port()
            text = site(port, upstream_port)
            assert not beyond_loopback(text), beyond_loopback(text)
            (prefix / "site.conf").write_text(text)
            process = start(nginx, prefix, port)
            if process is not None:
                break
        assert process is not None, "no free port for nginx in 5 tries"
        try:
            yield Front(process, port, prefix)
        finally:
            stop(process)
