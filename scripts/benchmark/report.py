"""The report: the table on stdout, the --json document, and what it records
about the machine and the tools."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .context import Bench, Options
from .results import Row, SectionRun
from .sections.memory import RSS_STREAMS
from .sections.streams import STREAM_CONCURRENCY
from .stream_client import BUNCHED_MS, STREAM_CHUNKS, STREAM_DELAY_MS
from .targets import COLUMN_ORDER

__all__ = ["LEGEND", "column_names", "metadata", "render_table", "write_json"]

LEGEND = """\
(x) = ratio to direct. floor is scripts/floor_relay.py, the bare aiohttp relay
(it reads whole answers, so the stream sections leave it out). In CPU and memory
rows, direct is the simulator process itself and nginx is master + worker.
baseline (hostile section, with --baseline-src): the same measurement on the
azproxy of another checkout, beside this one's.
Machine CPU busy: all cores, during a target's measured run or [a whole section];
outside the bench: the part not spent by the bench's own processes, the noise.
Targets are azproxy's; PASS/MISS is informative, never asserted. Absolute numbers
depend on the machine's other load."""


def column_names(runs: Sequence[SectionRun]) -> list[str]:
    """The columns that have a value in any row, in the table's order."""
    rows = [row for run in runs for row in run.rows]
    return [n for n in COLUMN_ORDER if any(n in row.values for row in rows)]


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if value == int(value) or magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _summary(run: SectionRun) -> str:
    text = f"  [{run.name}: {run.seconds:.0f} s"
    if run.busy is not None:
        text += (
            f"; machine CPU {run.busy.machine_pct:.0f}% busy, "
            f"{run.busy.outside_pct:.0f}% outside the bench"
        )
    return text + "]"


def _cells(row: Row, names: Sequence[str]) -> list[str]:
    cells = [f"  {row.metric}", row.unit]
    for name in names:
        cell = _fmt(row.values.get(name))
        r = row.ratio_to_direct(name)
        if r is not None:
            cell += f" ({r:.2f}x)"
        cells.append(cell)
    verdict = "" if row.verdict is None else ("PASS" if row.verdict else "MISS")
    return [*cells, verdict, row.target]


def render_table(runs: Sequence[SectionRun], names: Sequence[str]) -> str:
    """One line per row under its section's title, each section closed by
    its time and how busy the machine was."""
    header = ["metric", "unit", *names, "", "azproxy target"]
    lines: list[list[str] | str] = []  # a str line stands alone: title, summary
    for run in runs:
        title = None
        for row in run.rows:
            if row.section != title:
                title = row.section
                lines.append(title)
            lines.append(_cells(row, names))
        lines.append(_summary(run))
    table = [header] + [line for line in lines if isinstance(line, list)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]

    def join(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        parts += [c.rjust(w) for c, w in zip(cells[2:-2], widths[2:-2], strict=True)]
        parts += [cells[-2].ljust(widths[-2]), cells[-1]]  # verdict, target
        return "  ".join(parts).rstrip()

    out = [join(header), "-" * len(join(header))]
    out += [line if isinstance(line, str) else join(line) for line in lines]
    return "\n".join(out)


def _tool_version(argv: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else None


def metadata(options: Options, wrk: str | None, nginx: str | None) -> dict[str, Any]:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "azproxy": version("azproxy"),
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
        "wrk": _tool_version([wrk, "--version"]) if wrk else None,
        "nginx": _tool_version([nginx, "-v"]) if nginx else None,
        "options": {
            k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
        },
        "stream": {
            "chunks": STREAM_CHUNKS,
            "chunk_delay_ms": STREAM_DELAY_MS,
            "concurrency": STREAM_CONCURRENCY,
            "rss_streams": RSS_STREAMS,
            "bunched_ms": BUNCHED_MS,
        },
    }


def write_json(
    out: Path, meta: dict[str, Any], runs: Sequence[SectionRun], bench: Bench
) -> None:
    document = {
        "meta": meta,
        "sections": [run.as_json() for run in runs],
        "rows": [row.as_json() for run in runs for row in run.rows],
        "raw": bench.raw,
        "notes": bench.notes,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
