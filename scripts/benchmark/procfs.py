"""What the benchmark reads from /proc: CPU time, memory, how busy the machine is.

All of it is Linux's /proc; sections that need it call `Bench.require_proc()`
and are skipped elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "busy_pct",
    "child_pids",
    "cpu_seconds",
    "machine_jiffies",
    "proc_available",
    "reset_peak_rss",
    "status_kib",
]

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_available() -> bool:
    return Path("/proc/self/stat").exists()


def _stat_fields(pid: int | str) -> list[str]:
    # Fields after "(comm)": state is field 3, so field N is index N - 3.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _parent(fields: list[str]) -> int:
    return int(fields[1])  # field 4


def _own_ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime + stime: fields 14 and 15


def _all_processes() -> dict[int, list[str]]:
    """Every process's stat fields, by PID (those gone meanwhile left out)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = _stat_fields(entry.name)
            except (OSError, IndexError):
                continue
    return found


def child_pids(parent: int) -> list[int]:
    return [pid for pid, f in _all_processes().items() if _parent(f) == parent]


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    return sum(_own_ticks(_stat_fields(pid)) for pid in pids) / CLK_TCK


def status_kib(pids: Iterable[int], key: str) -> int:
    """Sum of a /proc/PID/status memory line (VmRSS, VmHWM), in KiB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                total += int(line.split()[1])
    return total


def reset_peak_rss(pids: Iterable[int]) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if refused."""
    try:
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0]  # "cpu  user nice ..."
    fields = [int(v) for v in first.split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # without guest time, already counted in user
    return total - idle, total


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100 * busy / total if total else 0.0
