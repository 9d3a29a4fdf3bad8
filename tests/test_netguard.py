"""The loopback guard (tests/netguard.py) refuses what it must, lets loopback
through, and fails a test that swallowed the refusal.

192.0.2.1 is TEST-NET-1 (RFC 5737): never routed, so even a guard that let it
through would send nothing anywhere; the short timeouts keep such a failure
quick.
"""

from __future__ import annotations

import asyncio
import os
import socket
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.netguard import (
    LookupOutsideLoopback,
    OutsideLoopback,
    hermetic_environ,
    refusals,
)

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = ("192.0.2.1", 80)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP server socket on 127.0.0.1 (connects complete in the backlog)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server


def connect_to(address: Any) -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        sock.connect(address)


def connect_ex_to(address: Any) -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        sock.connect_ex(address)


def create_connection_to(address: Any) -> None:
    socket.create_connection(address, timeout=1).close()


def send_datagram_to(address: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"x", address)


@pytest.mark.parametrize(
    "reach",
    [connect_to, connect_ex_to, create_connection_to, send_datagram_to],
    ids=lambda f: f.__name__,
)
def test_a_non_loopback_address_is_refused_at_the_call(
    reach: Callable[[Any], None],
) -> None:
    with refusals() as refused, pytest.raises(OutsideLoopback) as raised:
        reach(OUTSIDE)
    assert "netguard: tests may not reach beyond loopback" in str(raised.value)
    assert "192.0.2.1:80" in str(raised.value)
    assert len(refused) == 1 and "192.0.2.1:80" in refused[0]
    assert "test_netguard.py" in refused[0]  # says who tried


@pytest.mark.parametrize(
    "lookup",
    [
        lambda: socket.getaddrinfo("example.com", 443),
        lambda: socket.gethostbyname("example.com"),
        lambda: socket.gethostbyname_ex("example.com"),
        lambda: socket.create_connection(("example.com", 443), timeout=1),
    ],
    ids=["getaddrinfo", "gethostbyname", "gethostbyname_ex", "create_connection"],
)
def test_a_lookup_of_a_public_name_is_refused(lookup: Callable[[], object]) -> None:
    with refusals() as refused, pytest.raises(LookupOutsideLoopback):
        lookup()
    assert len(refused) == 1 and "'example.com'" in refused[0]


def test_connecting_to_a_name_directly_is_refused() -> None:
    # socket.connect resolves a name itself, in C, past getaddrinfo.
    with refusals() as refused, pytest.raises(OutsideLoopback):
        connect_to(("example.com", 80))
    assert len(refused) == 1


def test_an_ipv4_mapped_address_is_judged_by_its_ipv4_part() -> None:
    with (
        refusals(),
        pytest.raises(OutsideLoopback),
        socket.socket(socket.AF_INET6) as sock,
    ):
        sock.connect(("::ffff:192.0.2.1", 80))


async def test_asyncio_and_aiohttp_are_refused() -> None:
    loop = asyncio.get_running_loop()
    with refusals() as refused:
        with pytest.raises(LookupOutsideLoopback):
            await loop.getaddrinfo("example.com", 443)
        with pytest.raises(OSError, match="netguard"):
            await asyncio.open_connection(*OUTSIDE)
        async with aiohttp.ClientSession() as session:
            for url in ("http://192.0.2.1/", "https://example.com/"):
                with pytest.raises(aiohttp.ClientConnectorError, match="netguard"):
                    await session.get(url)
    assert len(refused) == 4


async def test_azure_identity_probing_instance_metadata_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With no identity configured, a managed identity asks the instance
    # metadata service, 169.254.169.254: the way a test would reach out
    # (tests/integration/test_entra.py never lets it). No retries: one try.
    from azure.identity.aio import DefaultAzureCredential

    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    credential = DefaultAzureCredential(retry_total=0)
    with refusals() as refused:
        async with credential:
            with pytest.raises(Exception, match="no response from the IMDS endpoint"):
                await credential.get_token_info("https://cognitiveservices.azure.com")
    assert len(refused) == 1
    assert "connect to 169.254.169.254:80" in refused[0]


def test_uvloop_is_refused_in_the_test_process() -> None:
    # libuv connects and resolves out of the guard's sight.
    uvloop = pytest.importorskip("uvloop")
    with refusals() as refused, pytest.raises(RuntimeError, match="uvloop"):
        uvloop.new_event_loop()
    assert len(refused) == 1


def test_loopback_and_unix_sockets_pass(
    listener: socket.socket, tmp_path: Path
) -> None:
    port = listener.getsockname()[1]
    with refusals() as refused:
        connect_to(("127.0.0.1", port))
        connect_ex_to(("127.0.0.1", port))
        create_connection_to(("localhost", port))
        send_datagram_to(("127.0.0.1", 9))
        with socket.socket(socket.AF_INET6) as sock:
            sock.settimeout(1)
            sock.connect_ex(("::ffff:127.0.0.1", port))
        assert socket.getaddrinfo("localhost", port)
        assert socket.getaddrinfo("192.0.2.1", 80)  # a literal: nothing is sent
        assert socket.getaddrinfo(None, 0, flags=socket.AI_PASSIVE)  # a bind
        with (
            socket.socket(socket.AF_UNIX) as server,
            socket.socket(socket.AF_UNIX) as client,
        ):
            server.bind(str(tmp_path / "s"))
            server.listen()
            client.connect(str(tmp_path / "s"))
    assert refused == []


def test_ipv6_loopback_passes() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with socket.socket(socket.AF_INET6) as server:
        try:
            server.bind(("::1", 0))
        except OSError:
            pytest.skip("::1 is not configured here")
        server.listen()
        with refusals() as refused, socket.socket(socket.AF_INET6) as client:
            client.settimeout(1)
            client.connect(("::1", server.getsockname()[1]))
    assert refused == []


def test_the_environment_has_no_proxy_or_cloud_identity() -> None:
    given = {
        "HTTPS_PROXY": "http://proxy.example:3128",
        "http_proxy": "http://proxy.example:3128",
        "AZURE_CLIENT_ID": "id",
        "IDENTITY_ENDPOINT": "http://169.254.169.254/x",
        "AZPROXY_UPSTREAM": "https://x.openai.azure.com",
        "OPENAI_BASE_URL": "https://api.openai.com/v1",
        "PATH": "/usr/bin",
    }
    assert hermetic_environ(given) == {
        "PATH": "/usr/bin",
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    assert os.environ["NO_PROXY"] == "*"  # this process, and so its children
    assert not {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"} & set(os.environ)


SWALLOWED = """
import socket

try:  # at collection, outside any test
    socket.getaddrinfo("example.org", 80)
except OSError:
    pass

def test_reaches_out_and_hides_it():
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    except OSError:
        pass

def test_looks_up_a_name_and_hides_it():
    try:
        socket.getaddrinfo("example.com", 443)
    except OSError:
        pass

def test_stays_on_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=1).close()
"""


def test_a_test_that_swallows_the_refusal_still_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A child pytest with only the guard as a plugin.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_inner=textwrap.dedent(SWALLOWED))
    result = pytester.runpytest_subprocess(
        "-p", "tests.netguard", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_reaches_out_and_hides_it*",
            "*this test tried to reach beyond loopback*",
            "*connect to 192.0.2.1:80*",
            "*ERROR at teardown of test_looks_up_a_name_and_hides_it*",
            "*lookup of 'example.com'*",
            "*= netguard =*",
            "reached beyond loopback outside any test:",
            "*lookup of 'example.org'*",
        ]
    )


def test_a_refusal_outside_any_test_fails_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(
        test_inner="""
        import socket
        try:
            socket.create_connection(("192.0.2.1", 443), timeout=1)
        except OSError:
            pass

        def test_passes():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "tests.netguard", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*= netguard =*", "*connect to 192.0.2.1:443*"])
