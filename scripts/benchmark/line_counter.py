"""Python lines executed, by function: a deterministic profile of a server.

scripts/profile_hot_path.py loads this into a relay process (through a
sitecustomize.py it writes) and signals it: SIGUSR1 starts counting, SIGUSR2
stops and writes the counts to the file install() was given, one JSON object
per function: {"function", "file", "line", "calls", "lines"}. Counting has
begun once the file named like `out` plus ".started" exists. "calls" counts
each start or resumption of a frame (a coroutine resumed counts again).

Lines are not instructions (one line may call C code that works for long),
but the same code and requests give the same counts on any machine, and the
interpreter's cost follows them closely: where azproxy's extra lines are is
where its extra Python time is. Counting slows the process ten times or more.

Only the standard library: it runs inside the profiled process.
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

__all__ = ["install"]

_calls: Counter[CodeType] = Counter()
_lines: Counter[CodeType] = Counter()


def _local(frame: FrameType, event: str, arg: Any) -> Any:
    if event == "line":
        _lines[frame.f_code] += 1
    return _local


def _global(frame: FrameType, event: str, arg: Any) -> Any:
    # "call" is the only event a global trace function gets.
    _calls[frame.f_code] += 1
    return _local


def install(out: Path) -> None:
    """Count between SIGUSR1 and SIGUSR2; write the counts to `out` then."""

    def start(signum: int, frame: FrameType | None) -> None:
        _calls.clear()
        _lines.clear()
        sys.settrace(_global)
        started.write_text("")  # the profiler waits for it

    started = out.with_name(out.name + ".started")

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.settrace(None)
        with out.open("w") as file:
            for code, calls in _calls.items():
                record = {
                    "function": code.co_qualname,
                    "file": code.co_filename,
                    "line": code.co_firstlineno,
                    "calls": calls,
                    "lines": _lines.get(code, 0),
                }
                file.write(json.dumps(record) + "\n")

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
