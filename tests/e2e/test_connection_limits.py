"""The connection settings reach every way azproxy serves: `azproxy serve`,
`--workers` (each worker counts its own connections) and `--demo`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import running
from tests.rawhttp import Clients

SETTINGS = [
    "--client-header-timeout-s",
    "0.3",
    "--keepalive-timeout-s",
    "0.3",
    "--max-connections",
    "1",
]


@pytest.mark.parametrize(
    ("mode", "processes"),
    [([], 1), (["--workers", "2"], 2), (["--demo"], 1)],
    ids=["serve", "workers", "demo"],
)
async def test_every_way_of_serving_bounds_its_connections(
    tmp_path: Path, mode: list[str], processes: int
) -> None:
    args = ["serve", "--port", "0", *SETTINGS, *mode]
    with running(args, tmp_path / "log") as server:
        clients = Clients(server.port)
        try:
            # Half a request line: 408 after the header timeout.
            half = await clients.connect()
            await half.send(b"GET /healthz HTTP/1.1\r\n")
            assert (await half.answer()).status == 408
            assert await half.closed_by_server() == b""
            half.close()

            # An idle kept-alive connection: closed after the keep-alive timeout.
            idle = await clients.admitted()
            assert await idle.closed_by_server() == b""
            idle.close()
            await clients.admitted()  # and its place is free again

            # One connection per process: held ones fill every process, the
            # next is refused (the kernel picks the worker, so at most
            # `processes` are admitted before one is refused). The one above
            # is held too.
            statuses: list[int] = [200]
            while 503 not in statuses:
                assert len(statuses) <= processes, statuses
                statuses.append((await clients.ask()).status)
            assert statuses.count(200) <= processes
        finally:
            await clients.close()
    log = server.log()
    assert log.count("max_connections 1 per process") == 1
    assert "refused 1 connection(s) with 503" in log
