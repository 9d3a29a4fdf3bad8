"""What every section receives: the options, the running targets and a place
for notes and raw numbers; and how a section says it cannot run here."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procfs import proc_available
from .results import Row
from .services import Services
from .targets import Target

__all__ = ["Bench", "Options", "Section", "Skip", "progress"]


class Skip(Exception):
    """A section cannot run here (a tool is missing); the run goes on."""


@dataclass(frozen=True)
class Options:
    quick: bool
    duration_s: int
    warmup_s: int
    stream_rounds: int
    json_out: Path | None
    only: tuple[str, ...] = ()  # section names to run; empty: all
    baseline_src: Path | None = None  # another checkout, for the hostile section


@dataclass
class Bench:
    options: Options
    services: Services
    targets: list[Target]  # in TARGET_ORDER
    wrk: str | None
    tmp: Path
    raw: dict[str, Any] = field(default_factory=dict)  # details for --json
    notes: list[str] = field(default_factory=list)

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    @property
    def stream_targets(self) -> list[Target]:
        """The targets that relay a stream as it comes (all but the floor)."""
        return [t for t in self.targets if t.streams]

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(text, flush=True)

    def require_wrk(self) -> str:
        if self.wrk is None:
            raise Skip("wrk not found (apt-get install wrk)")
        return self.wrk

    def require_proc(self) -> None:
        if not proc_available():
            raise Skip("no /proc on this system")


# A section: measures, and returns its rows of the table.
Section = Callable[[Bench], Coroutine[Any, Any, list[Row]]]


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)
