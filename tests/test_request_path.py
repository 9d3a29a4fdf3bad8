"""scripts/request_path.py counts what its docstring says it counts.

Its run on the real app is a runnable block of CONTRIBUTING.md (test_docs.py);
here are the counting rules, on trees, code and packages made for them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from request_path import Call, Tracer, import_graph, longest_chain, returns, walk

__all__: list[str] = []


def module_path(call: Call) -> list[str]:
    path: list[str] = []
    for module in walk(call):
        if not path or path[-1] != module:
            path.append(module)
    return path


def test_a_return_is_a_module_met_again() -> None:
    # handler > mapping > handler > body > handler: 3 modules, 2 returns.
    tree = Call("handler", [Call("mapping"), Call("body", [Call("body")])])
    path = module_path(tree)
    assert path == ["handler", "mapping", "handler", "body", "handler"]
    assert (len(set(path)), returns(path)) == (3, 2)


def function(module: str, source: str, **names: Any) -> Callable[..., Any]:
    """A function whose module is `module`, as the tracer sees it."""
    namespace: dict[str, Any] = {"__name__": module, "asyncio": asyncio, **names}
    exec(source, namespace)
    return namespace["f"]  # type: ignore[no-any-return]


def test_a_coroutine_resumed_is_the_same_call() -> None:
    sim = function("azproxy.simulator.app", "def f():\n    return 1\n")
    inner = function(
        "azproxy.relay.send",
        "async def f():\n    await asyncio.sleep(0)\n    sim()\n"
        "    await asyncio.sleep(0)\n",
        sim=sim,
    )
    outer = function(
        "azproxy.relay.handler",
        "async def f():\n    await inner()\n    await inner()\n",
        inner=inner,
    )
    tracer = Tracer()

    async def traced(coroutine: Callable[[], Awaitable[None]]) -> None:
        sys.setprofile(tracer)
        try:
            await coroutine()
        finally:
            sys.setprofile(None)

    asyncio.run(traced(outer))
    tracer.release()
    # Each inner call suspends twice and is resumed twice: still one call each;
    # the simulator plays Azure and is no part of the path.
    [root] = tracer.roots
    assert module_path(root) == [
        "azproxy.relay.handler",
        "azproxy.relay.send",
        "azproxy.relay.handler",
        "azproxy.relay.send",
        "azproxy.relay.handler",
    ]


def test_the_import_depth_counts_imports_that_run(tmp_path: Path) -> None:
    package = tmp_path / "azproxy"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import azproxy.b\n",
        "b.py": "from . import c\n",
        # A module of a package, not the package; then typing-only and
        # function-level imports, which do not run on import.
        "c.py": "from azproxy.sub import e\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from azproxy import d\n"
        "def f() -> None:\n    import azproxy.d\n",
        "d.py": "from .sub import e\nfrom azproxy.a import x\n",
        "sub/__init__.py": "from azproxy import a\n",
        "sub/e.py": "from ..b import y\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert graph == {
        "azproxy": set(),
        "azproxy.a": {"azproxy.b"},
        "azproxy.b": {"azproxy.c"},
        "azproxy.c": {"azproxy.sub.e"},
        "azproxy.d": {"azproxy.sub.e", "azproxy.a"},
        "azproxy.sub": {"azproxy.a"},
        "azproxy.sub.e": {"azproxy.b"},
    }
    # d > a > b > c > sub.e, and sub.e's import of b closes a circle, not a step.
    assert longest_chain(graph) == [
        "azproxy.d",
        "azproxy.a",
        "azproxy.b",
        "azproxy.c",
        "azproxy.sub.e",
    ]
