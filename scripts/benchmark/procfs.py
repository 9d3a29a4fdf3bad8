"""What the benchmark reads from /proc: CPU time, memory, how busy the machine is.

All of it is Linux's /proc; sections that need it call `Bench.require_proc()`
and are skipped elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CLK_TCK",
    "Busy",
    "LoadSample",
    "child_pids",
    "cpu_seconds",
    "load_sample",
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


def _reaped_ticks(fields: list[str]) -> int:
    return int(fields[13]) + int(fields[14])  # cutime + cstime: fields 16 and 17


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


# ---------------------------------------------------------------------------
# How busy the machine is, and how much of that is someone else


@dataclass(frozen=True)
class LoadSample:
    """CPU time spent so far, in clock ticks summed over all CPUs."""

    machine_busy: int
    machine_total: int
    bench: int  # this process and every process it started, alive or reaped


def load_sample() -> LoadSample:
    busy, total = _machine_ticks()
    return LoadSample(busy, total, _bench_ticks())


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0]  # "cpu  user nice ..."
    fields = [int(v) for v in first.split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # without guest time, already counted in user
    return total - idle, total


def _bench_ticks() -> int:
    """CPU time of this process and its descendants. A descendant that ended
    is in its parent's cutime/cstime once reaped, so a server stopped in the
    middle of a measurement still counts. The descendants are read before
    this process, so one reaped in between counts twice, never not at all."""
    processes = _all_processes()
    children: dict[int, list[int]] = {}
    for pid, fields in processes.items():
        children.setdefault(_parent(fields), []).append(pid)
    ticks, pending = 0, list(children.get(os.getpid(), []))
    while pending:
        pid = pending.pop()
        fields = processes[pid]
        ticks += _own_ticks(fields) + _reaped_ticks(fields)
        pending += children.get(pid, [])
    own = _stat_fields("self")
    return ticks + _own_ticks(own) + _reaped_ticks(own)


@dataclass(frozen=True)
class Busy:
    """How busy all CPUs were between two samples, in % of their time: in
    all (`machine_pct`) and by processes other than the bench's own servers,
    load generators and itself (`outside_pct`: others sharing the machine,
    the noise in the numbers)."""

    machine_pct: float
    outside_pct: float

    @classmethod
    def between(cls, before: LoadSample, after: LoadSample) -> Busy:
        total = after.machine_total - before.machine_total
        if total <= 0:
            return cls(0.0, 0.0)
        busy = after.machine_busy - before.machine_busy
        outside = busy - (after.bench - before.bench)
        # Clamped: the two clocks are read a moment apart.
        return cls(100 * busy / total, max(0.0, 100 * outside / total))
