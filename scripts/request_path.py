#!/usr/bin/env python3
"""How far one streamed chat request travels through azproxy's modules.

    python scripts/request_path.py [--src PATH] [--show]

It starts the built-in simulator and an azproxy app (create_app) on loopback
ports in this process, sends a streamed chat request once untraced (imports
and first-use caches out of the way), then again under sys.setprofile, and
prints two figures for the second one:

- modules: how many distinct azproxy modules ran code for the request;
- returns: how many times the request came back to a module it had already
  left.

Precisely: the trace builds the call tree of azproxy functions (a function is
azproxy's when its module is `azproxy` or below it, the simulator excluded: it
plays Azure; properties and dataclass __init__s are functions too). A call's
parent is the nearest azproxy call on its stack when it starts, whatever
library code (aiohttp, asyncio) lies between. A coroutine resumed after an
await is the same call, not a new one, so waiting for the network adds
nothing. The request's path is the walk of that tree from its root (the
entry layer, front/entry.py): each call enters the callee's module, each return
comes back to the caller's. Written as the sequence of modules the walk is
in, consecutive repeats collapsed into one, `modules` counts the distinct
names and `returns` the places where a name appears that appeared before:
handler > mapping > handler > body > handler is 3 modules and 2 returns.
Calls that start outside the request's tree (a timer, such as the access
log's batched write) are not part of it. The simulator sends its whole
answer at once (3 pieces, no delay), so azproxy reads it in one go and its
loop over chunks runs once: the figures do not depend on how the network
split the stream.

Two requests are traced: with a pass-through token (RESOURCE:DEPLOYMENT:KEY,
the hot path), and with server-side failover (an access key whose model maps
to two deployments by priority; the first answers 500).

Then the import depth: the number of imports in the longest chain of azproxy
modules each importing the next when it is imported (imports under
`if TYPE_CHECKING:` or inside functions do not count, nor the implicit import
of a package's __init__ by its modules).

--src measures the azproxy package of another checkout (PATH/azproxy), for
instance an older commit's (`git archive COMMIT | tar -x -C PATH`): the
layout may differ, the counting is the same. --show prints each path.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

__all__ = [
    "SCENARIOS",
    "Call",
    "Tracer",
    "import_graph",
    "longest_chain",
    "main",
    "path_of",
    "returns",
    "walk",
]

ROOT = Path(__file__).resolve().parent.parent
CHAT = {
    "model": "gpt-4o",
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
ACCESS_KEY = "request-path-access-key-0123456789"
SIM_KEY = "sim-key"


@dataclass(slots=True)
class Call:
    """One call of an azproxy function, and the azproxy calls it made."""

    module: str
    children: list[Call] = field(default_factory=list)


def is_azproxy(module: str) -> bool:
    """azproxy's own code, the simulator (which plays Azure) excluded."""
    return (
        module == "azproxy" or module.startswith("azproxy.")
    ) and not module.startswith("azproxy.simulator")


class Tracer:
    """A sys.setprofile function that builds the call tree of azproxy
    functions while it is installed."""

    def __init__(self) -> None:
        self.roots: list[Call] = []
        # Every azproxy frame seen, held until the trace ends: held frames
        # stay alive, so no other frame can take their id meanwhile.
        self._calls: dict[int, tuple[FrameType, Call]] = {}

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or id(frame) in self._calls:  # a coroutine resumed
            return
        module = frame.f_globals.get("__name__", "")
        if not is_azproxy(module):
            return
        call = Call(module)
        self._calls[id(frame)] = (frame, call)
        parent = self._caller(frame.f_back)
        (self.roots if parent is None else parent.children).append(call)

    def _caller(self, frame: FrameType | None) -> Call | None:
        while frame is not None:
            seen = self._calls.get(id(frame))
            if seen is not None:
                return seen[1]
            frame = frame.f_back
        return None

    def release(self) -> None:
        self._calls.clear()


def walk(call: Call) -> Iterator[str]:
    """The modules the path is in, call by call and return by return."""
    yield call.module
    for child in call.children:
        yield from walk(child)
        yield call.module


def collapsed(modules: Iterable[str]) -> list[str]:
    path: list[str] = []
    for module in modules:
        if not path or path[-1] != module:
            path.append(module)
    return path


def returns(path: Iterable[str]) -> int:
    """How many times the path comes back to a module it was in before."""
    seen: set[str] = set()
    count = 0
    for module in path:
        count += module in seen
        seen.add(module)
    return count


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    headers: Mapping[str, str]
    deployment: str  # the one that must answer
    failover: bool


SCENARIOS = (
    Scenario(
        "streamed chat, pass-through token",
        {"Authorization": f"Bearer sim:gpt-4o:{SIM_KEY}"},
        "gpt-4o",
        failover=False,
    ),
    Scenario(
        "streamed chat, server-side failover",
        {"Authorization": f"Bearer {ACCESS_KEY}"},
        "dep-b",
        failover=True,
    ),
)


def settings_for(scenario: Scenario, sim_url: str) -> dict[str, Any]:
    """Config file values (the same in every layout so far)."""
    if not scenario.failover:
        return {"upstream": sim_url}
    return {
        "endpoints": {"sim": {"url": sim_url, "api_key": SIM_KEY}},
        "model_map": {
            "gpt-4o": [
                {"endpoint": "sim", "deployment": "dep-a", "priority": 1},
                {"endpoint": "sim", "deployment": "dep-b", "priority": 2},
            ]
        },
        "access_keys": [ACCESS_KEY],
    }


async def trace(scenario: Scenario) -> Call:
    """The call tree of the scenario's request, sent a second time."""
    from azproxy import Config, create_app
    from azproxy.simulator import SimSettings, create_simulator

    sim = TestServer(create_simulator(SimSettings(chunks=3, chunk_delay_ms=0)))
    await sim.start_server()
    sim_url = str(sim.make_url("")).rstrip("/")
    config = Config.load(file_values=settings_for(scenario, sim_url))
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    try:
        await send(client, sim, scenario)
        # The access log writes its lines 50 ms later: not in the trace.
        await asyncio.sleep(0.2)
        tracer = Tracer()
        sys.setprofile(tracer)
        try:
            await send(client, sim, scenario)
        finally:
            sys.setprofile(None)
    finally:
        await client.close()
        await sim.close()
    tracer.release()
    return tracer.roots[0]


async def send(
    client: TestClient[Any, Any], sim: TestServer, scenario: Scenario
) -> None:
    """One streamed chat request, checked: if it did not do what it is meant
    to, the figures would mean nothing."""
    from azproxy.simulator import SIM_STATE, apply_faults

    if scenario.failover:
        apply_faults(sim.app[SIM_STATE], "dep-a", ["500"])  # the next request
    async with client.post(
        "/v1/chat/completions", json=CHAT, headers=scenario.headers
    ) as response:
        body = await response.read()
    used = response.headers.get("x-azproxy-deployment")
    if response.status != 200 or b"data: [DONE]" not in body:
        raise SystemExit(f"{scenario.name}: HTTP {response.status}: {body[:300]!r}")
    if used != scenario.deployment:
        raise SystemExit(
            f"{scenario.name}: answered by {used}, not {scenario.deployment}"
        )


def path_of(scenario: Scenario) -> list[str]:
    """The modules the scenario's request goes through, repeats collapsed."""
    # The access log writes to stdout's file descriptor: not among the figures.
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        root = asyncio.run(trace(scenario))
    return collapsed(walk(root))


def modules_of(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def top_level_imports(
    body: Sequence[ast.stmt],
) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from top_level_imports(node.body)
            yield from top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from top_level_imports(block)
            for handler in node.handlers:
                yield from top_level_imports(handler.body)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the azproxy modules it imports at module level."""
    modules = modules_of(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        home = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in top_level_imports(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules)
                continue
            base = node.module or ""
            if node.level:  # relative: from the module's package up
                parts = home.split(".")[: len(home.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                target = child if child in modules else base
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def longest_chain(graph: Mapping[str, set[str]]) -> list[str]:
    """The longest chain of modules, each importing the next. A circle (none
    in azproxy: Python would meet a half-made module) is cut where it closes."""
    best: dict[str, list[str]] = {}

    def chain(module: str, stack: set[str]) -> list[str]:
        if module not in best:
            stack.add(module)
            deeper = [chain(d, stack) for d in sorted(graph[module]) if d not in stack]
            stack.discard(module)
            best[module] = [module, *max(deeper, key=len, default=[])]
        return best[module]

    return max((chain(m, set()) for m in sorted(graph)), key=len)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="How far one streamed chat request travels through azproxy."
    )
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT,
        help="the checkout whose azproxy to measure (default: this one)",
    )
    parser.add_argument("--show", action="store_true", help="print each path")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    src = args.src.resolve()
    sys.path.insert(0, str(src))  # before azproxy is first imported
    logging.getLogger("azproxy").addHandler(logging.NullHandler())  # no warnings
    print(f"azproxy in {src}")
    for scenario in SCENARIOS:
        path = path_of(scenario)
        print(f"{scenario.name}: {len(set(path))} modules, {returns(path)} returns")
        if args.show:
            print("  " + " > ".join(m.removeprefix("azproxy.") for m in path))
    chain = longest_chain(import_graph(src / "azproxy"))
    print(f"import depth: {len(chain) - 1} imports")
    if args.show:
        print("  " + " > ".join(m.removeprefix("azproxy.") for m in chain))
    return 0


if __name__ == "__main__":
    sys.exit(main())
