"""Running the sections: a check that every target answers, then each chosen
section in turn, timed, with how busy the machine was while it ran."""

from __future__ import annotations

import time

import aiohttp

from .context import Bench, Skip
from .procfs import Busy, LoadSample, load_sample, proc_available
from .results import SectionRun
from .sections import SECTIONS
from .services import StartError
from .stream_client import client_session, stream_round
from .targets import DIRECT, SMALL_BODY, Target

__all__ = ["run_sections"]


async def run_sections(bench: Bench) -> tuple[list[SectionRun], bool]:
    """The sections' results, and whether any section failed."""
    await _preflight(bench)
    runs: list[SectionRun] = []
    failed = False
    for name, section in SECTIONS.items():
        if bench.options.only and name not in bench.options.only:
            continue
        before, started = _load(), time.monotonic()
        try:
            rows = await section(bench)
        except Skip as exc:
            bench.note(f"skipped: {name}: {exc}")
            continue
        except Exception as exc:  # one broken section must not hide the rest
            failed = True
            bench.note(f"FAILED: {name}: {type(exc).__name__}: {exc}")
            continue
        busy = None if before is None else Busy.between(before, load_sample())
        runs.append(SectionRun(name, rows, time.monotonic() - started, busy))
    return runs, failed


def _load() -> LoadSample | None:
    return load_sample() if proc_available() else None


async def _preflight(bench: Bench) -> None:
    """One JSON answer per target, and one short stream per target that
    streams, before measuring: a broken setup must not be benchmarked as a
    fast one."""
    async with client_session() as session:
        for target in list(bench.targets):
            problem = await _problem(session, target)
            if problem is None:
                continue
            if target.name == DIRECT:
                raise StartError(f"the simulator does not answer properly: {problem}")
            bench.targets.remove(target)
            bench.note(f"skipped: {target.name}: {problem}")


async def _problem(session: aiohttp.ClientSession, target: Target) -> str | None:
    headers = {"Content-Type": "application/json", **target.headers}
    try:
        async with session.post(target.url, data=SMALL_BODY, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200 or b'"choices"' not in body:
                return f"JSON request got HTTP {resp.status}: {body[:200]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"JSON request failed: {type(exc).__name__}: {exc}"
    if not target.streams:
        return None
    (sample,) = await stream_round(session, target, 1, chunks=3, delay_ms=1)
    if sample.error is not None or not sample.complete:
        return f"stream request failed: {sample.error or 'no data: [DONE] at the end'}"
    return None
