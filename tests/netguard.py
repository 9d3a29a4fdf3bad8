"""A pytest plugin: the test process reaches loopback and nothing else.

tests/conftest.py loads it, so it guards every test. While pytest runs:

- `socket.socket.connect`, `connect_ex` and `sendto` to an IP address outside
  127.0.0.0/8 and ::1 (or to a name other than localhost) raise
  `OutsideLoopback`, a ConnectionRefusedError, before any packet leaves.
  `socket.create_connection` and asyncio's `sock_connect` and
  `create_connection` all end in `connect`, so this covers them, and with them
  aiohttp, httpx and azure-identity. Unix sockets pass.
- `socket.getaddrinfo` (which `loop.getaddrinfo` and aiohttp's default
  resolver call), `gethostbyname` and `gethostbyname_ex` refuse any name but
  localhost with `LookupOutsideLoopback`: a DNS query for a public name is
  traffic already. IP literals and None (a wildcard bind) need no lookup.
- uvloop may not run here: its connections and lookups happen in libuv, out
  of the guard's sight. The `azproxy serve` child processes use it.
- Proxy settings, cloud identities and the SDKs' defaults are removed from the
  environment (hermetic_environ), so neither this process nor any child it spawns
  sends a loopback request to a proxy elsewhere or probes a cloud identity
  endpoint (azure-identity asks 169.254.169.254 when nothing else is set).

Code that swallows the error does not hide it: every refusal is recorded, and
the test during which it happened fails at teardown, naming the destination
and the code that tried. Refusals outside any test fail the session.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = [
    "HERMETIC",
    "LookupOutsideLoopback",
    "OutsideLoopback",
    "hermetic_environ",
    "is_loopback_host",
    "refusals",
]

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})

# Environment variables that would send traffic elsewhere: proxies (which
# urllib, httpx, requests, curl and azure-core honour even for 127.0.0.1), the
# azure-identity chain's inputs, and the endpoints an SDK or azproxy itself
# would read when a test forgets to name one.
HERMETIC_PREFIXES = ("AZPROXY_", "AZURE_", "OPENAI_")
HERMETIC_NAMES = frozenset(
    {"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT"}
    | {"MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT"}
)
HERMETIC = {"NO_PROXY": "*", "no_proxy": "*"}


class OutsideLoopback(ConnectionRefusedError):
    """A connection beyond loopback, refused by the test guard."""


class LookupOutsideLoopback(socket.gaierror):
    """A name lookup (a DNS query) for a name other than localhost."""


def hermetic_environ(environ: dict[str, str]) -> dict[str, str]:
    """`environ` without proxies, cloud identities or endpoints; NO_PROXY=*."""
    kept = {
        name: value
        for name, value in environ.items()
        if not name.lower().endswith("_proxy")
        and not name.startswith(HERMETIC_PREFIXES)
        and name not in HERMETIC_NAMES
    }
    return kept | HERMETIC


def is_loopback_host(host: object) -> bool:
    """127.0.0.0/8, ::1 (or ::ffff:127.x.x.x), or a localhost name."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.lower().rstrip(".")
        return name in LOOPBACK_NAMES or name.endswith(".localhost")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_literal(host: object) -> bool:
    """An IP address written out: resolving it sends nothing."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        ipaddress.ip_address(str(host))
    except ValueError:
        return False
    return True


def culprit() -> str:
    """The innermost frames that tried, and the project's own frame among them."""
    stack = [f for f in traceback.extract_stack() if f.filename != __file__]
    shown = stack[-2:]
    ours = [f for f in stack if f.filename.startswith(PROJECT)]
    if ours and ours[-1] not in shown:
        shown.insert(0, ours[-1])
    return " -> ".join(f"{f.filename}:{f.lineno} {f.name}" for f in shown)


class Guard:
    """The patched functions, the originals to restore, and the refusals."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.outside_tests: list[str] = []  # by session fixtures, collection...
        self._lock = threading.Lock()
        self._restore: list[Callable[[], None]] = []

    def refuse(self, what: str) -> str:
        """Record an attempt with the code that made it; return the message."""
        with self._lock:
            self.refused.append(f"{what}\n    from {culprit()}")
        return f"netguard: tests may not reach beyond loopback: {what}"

    def take(self) -> list[str]:
        with self._lock:
            taken, self.refused[:] = self.refused[:], []
        return taken

    def patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        setattr(owner, name, make(original))
        self._restore.append(lambda: setattr(owner, name, original))

    def install(self) -> None:
        self.patch(socket.socket, "connect", self._connect)
        self.patch(socket.socket, "connect_ex", self._connect)
        self.patch(socket.socket, "sendto", self._sendto)
        for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex"):
            self.patch(socket, name, self._lookup)
        try:
            import uvloop
        except ImportError:  # pragma: no cover - no uvloop on Windows
            return
        self.patch(uvloop.Loop, "__init__", self._no_uvloop)

    def uninstall(self) -> None:
        while self._restore:
            self._restore.pop()()

    def check(self, sock: socket.socket, address: Any, verb: str) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # Unix sockets and the like stay on this machine
        host, port = address[0], address[1]
        if not is_loopback_host(host):
            message = self.refuse(f"{verb} {host}:{port}")
            raise OutsideLoopback(errno.ECONNREFUSED, message)

    def _connect(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def connect(sock: socket.socket, address: Any) -> Any:
            self.check(sock, address, "connect to")
            return original(sock, address)

        return connect

    def _sendto(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def sendto(sock: socket.socket, data: Any, *rest: Any) -> Any:
            self.check(sock, rest[-1], "sendto")  # (data, [flags,] address)
            return original(sock, data, *rest)

        return sendto

    def _lookup(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host is not None and not is_literal(host) and not is_loopback_host(host):
                message = self.refuse(f"lookup of {host!r}")
                raise LookupOutsideLoopback(socket.EAI_NONAME, message)
            return original(host, *args, **kwargs)

        return lookup

    def _no_uvloop(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def init(loop: Any, *args: Any, **kwargs: Any) -> None:
            what = "a uvloop event loop (libuv connects out of the guard's sight)"
            raise RuntimeError(self.refuse(what))

        return init


GUARD = Guard()


@contextmanager
def refusals() -> Iterator[list[str]]:
    """What the guard refused inside the block, taken off the test's record.

    For the guard's own tests, which try to reach beyond loopback on purpose.
    """
    before = GUARD.take()
    seen: list[str] = []
    try:
        yield seen
    finally:
        seen.extend(GUARD.take())
        GUARD.refused.extend(before)


def pytest_configure(config: pytest.Config) -> None:
    environ = hermetic_environ(dict(os.environ))
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    GUARD.install()

    def restore() -> None:
        GUARD.uninstall()
        os.environ.clear()
        os.environ.update(saved)

    config.add_cleanup(restore)


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """Fail the test that tried to reach beyond loopback, even if it hid it."""
    GUARD.outside_tests.extend(GUARD.take())
    yield
    refused = GUARD.take()
    if refused:
        pytest.fail(
            "netguard: this test tried to reach beyond loopback "
            "(tests/netguard.py):\n  " + "\n  ".join(refused),
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    GUARD.outside_tests.extend(GUARD.take())
    if GUARD.outside_tests:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if GUARD.outside_tests:
        terminalreporter.section("netguard", red=True)
        terminalreporter.line(
            "reached beyond loopback outside any test:\n  "
            + "\n  ".join(GUARD.outside_tests)
        )
