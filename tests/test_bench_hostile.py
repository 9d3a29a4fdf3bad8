"""scripts/benchmark's hostile section: the bodies and requests it builds, the
fake Azure it runs, which azproxy a baseline runs, and its table's columns.

Nothing here measures: the section itself starts servers and takes a minute.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpClient, AiohttpServer
from benchmark import cli
from benchmark.fake_azure import EVENT_HEADER, chunk_event, make_app
from benchmark.hostile_load import (
    IDLE_SAMPLE_S,
    IDLE_SAMPLES,
    Memory,
    hold_until_idle,
    image_chat,
    json_bomb,
    request_head,
    status_of,
    with_healthz_poll,
)
from benchmark.procfs import proc_available
from benchmark.report import column_names
from benchmark.results import Row, SectionRun
from benchmark.sections import SECTIONS
from benchmark.sections.hostile import Variant, no_worse, tally
from benchmark.services import azproxy_origin
from benchmark.targets import AZPROXY, BASELINE, DIRECT

ROOT = Path(__file__).resolve().parents[1]


def test_the_hostile_section_is_registered() -> None:
    assert "hostile" in SECTIONS
    assert cli.parse_args(["--only", "hostile"]).only == ("hostile",)


@pytest.mark.parametrize("size", [*range(27, 34), 3000])
def test_a_json_bomb_has_the_size_asked_for_and_nothing_but_empty_arrays(
    size: int,
) -> None:
    bomb = json_bomb(size)
    assert len(bomb) == size
    document = json.loads(bomb)
    assert document["model"] == "gpt-4o"
    assert document["x"] and all(item == [] for item in document["x"])
    assert len(document["x"]) >= (size - 30) // 3  # one container per 3 bytes


def test_a_json_bomb_too_small_to_hold_one_array_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 27 B"):
        json_bomb(26)
    assert json.loads(json_bomb(27))["x"] == [[]]


@pytest.mark.parametrize("size", [250, 251, 252, 253, 100_000])
def test_a_polite_body_is_a_chat_with_a_valid_base64_image_of_the_size_asked(
    size: int,
) -> None:
    body = image_chat(size)
    assert len(body) == size
    document = json.loads(body)
    assert document["model"] == "gpt-4o"
    url = document["messages"][0]["content"][1]["image_url"]["url"]
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    base64.b64decode(url[len(prefix) :], validate=True)


def test_raw_requests_and_answers_are_read_as_http() -> None:
    head = request_head(8080, {"Authorization": "Bearer t"}, 12)
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert head.endswith(b"\r\nContent-Length: 12\r\n\r\n")
    assert b"\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer t\r\n" in head
    assert status_of(b"HTTP/1.1 408 Request Timeout\r\n") == 408
    assert status_of(b"HTTP/1.0 503 \r\n") == 503
    assert status_of(b"HTTP/1.1 4") is None  # cut short
    assert status_of(b"") is None  # closed without an answer
    assert status_of(b"garbage") is None


@pytest.mark.parametrize("size", [1, 300, 1_000_000])
def test_the_fake_azures_events_are_chat_chunks_of_the_size_asked(size: int) -> None:
    event = chunk_event(size)
    assert len(event) == max(size, len(chunk_event(1)))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:])["object"] == "chat.completion.chunk"


async def test_the_fake_azure_answers_at_once_or_streams_while_read(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await aiohttp_client(make_app())
    # What it is sent is never parsed: a JSON bomb is just bytes to it.
    async with client.post("/any/path", data=json_bomb(10_000)) as response:
        assert response.status == 200
        assert (await response.json())["object"] == "chat.completion"
    headers = {EVENT_HEADER: "300"}
    async with client.post("/stream", data=b"{}", headers=headers) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        data = await response.content.readexactly(300 * 400)
    events = data.split(b"\n\n")[:-1]
    assert len(events) == 400
    assert all(len(event) + 2 == 300 for event in events)


async def test_the_healthz_poll_gives_the_works_result_and_the_slowest_answer(
    aiohttp_server: AiohttpServer,
) -> None:
    polled = 0

    async def healthz(request: web.Request) -> web.Response:
        nonlocal polled
        polled += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = await aiohttp_server(app)

    async def work() -> str:
        await asyncio.sleep(0.3)
        return "done"

    assert server.port is not None
    result, slowest = await with_healthz_poll(server.port, work())
    assert result == "done"
    assert polled >= 2  # again and again, not once
    assert slowest is not None and slowest > 0


@pytest.mark.skipif(not proc_available(), reason="needs Linux /proc")
def test_memory_counts_growth_from_its_start() -> None:
    memory = Memory([os.getpid()])
    held = b"x" * (64 * 1024 * 1024)  # touched: resident
    assert memory.growth_mib() >= 48
    assert memory.peak_growth_mib() >= memory.growth_mib() - 1
    del held


@pytest.mark.skipif(not proc_available(), reason="needs Linux /proc")
async def test_a_hold_until_idle_ends_once_the_server_is_idle() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        await asyncio.sleep(0.5)  # past its start
        started = time.monotonic()
        await hold_until_idle([sleeper.pid], max_s=30)
        held = time.monotonic() - started
    finally:
        sleeper.kill()
        sleeper.wait()
    assert IDLE_SAMPLES * IDLE_SAMPLE_S <= held < 30


def test_only_this_checkout_gets_the_flags_only_it_knows() -> None:
    flags = ["--client-body-timeout-s", "2"]
    assert Variant(AZPROXY, None).args(flags) == flags
    assert Variant(BASELINE, Path("/elsewhere")).args(flags) == []


def test_a_baseline_is_a_folder_holding_an_azproxy_package(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["--baseline-src", str(tmp_path)])
    assert exc.value.code == 2
    (tmp_path / "azproxy").mkdir()
    (tmp_path / "azproxy" / "__init__.py").write_text("")
    options = cli.parse_args(["--baseline-src", str(tmp_path / "azproxy" / "..")])
    assert options.baseline_src == tmp_path.resolve()
    assert cli.parse_args([]).baseline_src is None


def test_a_baseline_runs_the_azproxy_of_its_own_tree(tmp_path: Path) -> None:
    # Another tree's package, not the installed one or the working folder's.
    package = tmp_path / "azproxy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    assert azproxy_origin(tmp_path) == package
    assert azproxy_origin(ROOT) == ROOT / "azproxy"


def test_the_baseline_column_stands_before_azproxy() -> None:
    rows = [
        Row("hostile", "RSS growth", "MiB", {AZPROXY: 80.0, BASELINE: 750.0}),
        Row("c1", "latency", "ms", {DIRECT: 1.0, AZPROXY: 1.2}),
    ]
    runs = [SectionRun("hostile", rows, 60.0, None)]
    assert column_names(runs) == [DIRECT, BASELINE, AZPROXY]


def test_verdicts_against_the_baseline_allow_a_shared_machines_noise() -> None:
    assert no_worse(110.0, 100.0, 5) is True
    assert no_worse(126.0, 100.0, 5) is False
    assert no_worse(4.0, 0.0, 5) is True
    assert no_worse(1.0, None, 5) is None
    assert no_worse(None, 1.0, 5) is None


def test_answers_are_tallied_most_frequent_first() -> None:
    statuses: list[Any] = [408, 503, 503, None]
    assert tally(statuses) == "2 x 503, 1 x 408, 1 x none"
