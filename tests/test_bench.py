"""scripts/benchmark: the command line, the section registry, wrk's report.

Nothing here measures performance.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmark import cli
from benchmark.sections import SECTIONS
from benchmark.wrk import parse_wrk

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:1234/v1/chat/completions
  1 threads and 50 connections
  Latency Distribution
     50%    5.20ms
     75%    7.10ms
     90%  850.00us
     99%    1.20s
  8000 requests in 2.00s, 3.10MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   4000.00
"""


def test_the_entry_point_lists_every_section_and_refuses_unknown_ones() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in SECTIONS)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "nonstream_c1,nosuch"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "no section named nosuch" in done.stderr


def test_only_selects_sections_by_their_registered_names() -> None:
    options = cli.parse_args(["--quick", "--only", "workers_c50, nonstream_c1"])
    assert options.only == ("workers_c50", "nonstream_c1")
    assert list(SECTIONS)[:2] == ["nonstream_c1", "nonstream_c50"]


def test_parse_wrk_reads_every_figure_in_milliseconds() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert (result.requests, result.requests_per_s, result.duration_s) == (
        8000,
        4000.0,
        2.0,
    )
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (5.2, 0.85, 1200.0)
    assert (result.non_2xx, result.socket_errors, result.errors) == (3, 0, 3)
