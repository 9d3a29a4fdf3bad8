"""CONTRIBUTING.md's module map names every module of azproxy/, and only those.

The map is the "## Module map" section: each entry is a link whose text is the
module's path inside azproxy/ and whose target is that file, such as
[`relay/handler.py`](azproxy/relay/handler.py); a package is its folder
([`relay/`](azproxy/relay/)), which stands for its __init__.py. The simulator
is mapped module by module too.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__: list[str] = []

ROOT = Path(__file__).resolve().parent.parent
MAP_HEADING = "## Module map"
# [`relay/handler.py`](azproxy/relay/handler.py)
ENTRY = re.compile(r"\[`([^`]+)`\]\((azproxy/[^)]*)\)")


def module_names(package: Path) -> set[str]:
    """Every module's entry name: its path in the package; a subpackage's
    __init__.py is the folder (`relay/`), the package's own stays `__init__.py`."""
    names = set()
    for path in package.rglob("*.py"):
        name = path.relative_to(package).as_posix()
        if name.endswith("/__init__.py"):
            name = name.removesuffix("__init__.py")
        names.add(name)
    return names


def map_entries(page: str) -> list[tuple[str, str]]:
    """(text, target) of each link into azproxy/ in the module map section."""
    _, found, rest = page.partition(f"\n{MAP_HEADING}\n")
    assert found, f"CONTRIBUTING.md has no '{MAP_HEADING}' section"
    section = rest.split("\n## ", 1)[0]
    return ENTRY.findall(section)


def map_problems(page: str, package: Path) -> list[str]:
    entries = map_entries(page)
    named = [text for text, _ in entries]
    modules = module_names(package)
    problems = [f"no line in the module map: {m}" for m in sorted(modules - set(named))]
    problems += [f"the map names no module: {n}" for n in sorted(set(named) - modules)]
    problems += [
        f"named twice: {n}" for n in sorted({n for n in named if named.count(n) > 1})
    ]
    problems += [
        f"{text} links to {target}"
        for text, target in entries
        if target != f"azproxy/{text}"
    ]
    return problems


def test_the_module_map_names_every_module_and_only_those() -> None:
    page = (ROOT / "CONTRIBUTING.md").read_text()
    problems = map_problems(page, ROOT / "azproxy")
    assert not problems, "CONTRIBUTING.md:\n" + "\n".join(problems)


def test_the_map_check_finds_what_is_wrong(tmp_path: Path) -> None:
    # The checker itself, on a package and a map made to disagree.
    package = tmp_path / "azproxy"
    (package / "relay").mkdir(parents=True)
    for name in ("__init__.py", "app.py", "relay/__init__.py", "relay/handler.py"):
        (package / name).touch()
    (package / "relay" / "new.py").touch()  # added without a line
    page = "\n".join(
        [
            "# Contributing",
            MAP_HEADING,
            "- [`__init__.py`](azproxy/__init__.py): names.",
            "- [`app.py`](azproxy/app.py): the app.",
            "### [`relay/`](azproxy/relay/): the way",
            "- [`relay/handler.py`](azproxy/relay/handler.py): handles.",
            "- [`relay/handler.py`](azproxy/relay/handler.py): twice.",
            "- [`relay/gone.py`](azproxy/relay/gone.py): a module that is gone.",
            "- [`app.py`](azproxy/relay/handler.py): text and target disagree.",
            "## Tests",
            "- [`relay/later.py`](azproxy/relay/later.py): not in the map section.",
        ]
    )
    assert map_problems(page, package) == [
        "no line in the module map: relay/new.py",
        "the map names no module: relay/gone.py",
        "named twice: app.py",
        "named twice: relay/handler.py",
        "app.py links to azproxy/relay/handler.py",
    ]
