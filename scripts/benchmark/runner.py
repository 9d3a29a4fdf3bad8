"""Running the sections: a check that every target answers, then each chosen
section in turn."""

from __future__ import annotations

import aiohttp

from .context import Bench, Skip
from .results import Row
from .sections import SECTIONS
from .services import StartError
from .stream_client import client_session, stream_round
from .targets import DIRECT, SMALL_BODY, Target

__all__ = ["run_sections"]


async def run_sections(bench: Bench) -> tuple[list[Row], bool]:
    """The sections' rows, and whether any section failed."""
    await _preflight(bench)
    rows: list[Row] = []
    failed = False
    for name, section in SECTIONS.items():
        if bench.options.only and name not in bench.options.only:
            continue
        try:
            rows += await section(bench)
        except Skip as exc:
            bench.note(f"skipped: {name}: {exc}")
        except Exception as exc:  # one broken section must not hide the rest
            failed = True
            bench.note(f"FAILED: {name}: {type(exc).__name__}: {exc}")
    return rows, failed


async def _preflight(bench: Bench) -> None:
    """One JSON answer and one short stream per target, before measuring:
    a broken setup must not be benchmarked as a fast one."""
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
    (sample,) = await stream_round(session, target, 1, chunks=3, delay_ms=1)
    if sample.error is not None or not sample.complete:
        return f"stream request failed: {sample.error or 'no data: [DONE] at the end'}"
    return None
