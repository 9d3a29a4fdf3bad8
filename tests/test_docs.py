"""The docs keep their promises: the commands CI runs, every setting (the
settings page is generated from the declarations), every relative link, and
every block marked runnable.

Links. Every relative link in README.md, CONTRIBUTING.md (when present) and
docs/*.md must name a file or folder of the repository, and a `#anchor` into a
Markdown file must name one of its headings (GitHub's anchors). Links inside code
are not links.

Runnable blocks. An HTML comment on the line just before a fenced `bash`, `sh`
or `python` block marks it (GitHub does not render the comment):

    <!-- runnable -->             run it as it is
    <!-- runnable: demo -->       run it while `azproxy serve --demo` listens; its
                                  `127.0.0.1:3000` becomes that server's address
    <!-- runnable: simulator -->  the same with `azproxy simulate` and `127.0.0.1:9000`
    <!-- runnable: exit=1 -->     it must exit 1, not 0 (`demo exit=1` combines)

Shell blocks run with `bash -euo pipefail` from the repository's root, Python
blocks with this interpreter; both in tests/netguard.py's hermetic environment
with this interpreter's scripts (`azproxy`) first on PATH, so mark only blocks
that stay on loopback and need nothing but this checkout. A block must exit 0
(or the code its marker names) within BLOCK_TIMEOUT_S. A fenced block marked
`<!-- output -->` right after a runnable one holds lines its output (stdout and
stderr) must show, in order, each within one line of the output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from azproxy.settings.config import settings
from azproxy.settings.table import COMMAND, render
from tests.netguard import hermetic_environ
from tests.processes import SIMULATOR, Running, running

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS] + (
    [ROOT / "CONTRIBUTING.md"] if (ROOT / "CONTRIBUTING.md").exists() else []
)
BLOCK_TIMEOUT_S = 30.0

# The address a runnable block names, by the server it runs against.
SERVERS = {"demo": "127.0.0.1:3000", "simulator": "127.0.0.1:9000"}
LANGUAGES = {"bash", "sh", "python"}


def fenced_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(r"```bash\n(.+?)\n```", section, re.S)
    assert match, heading
    return match.group(1)


def test_ci_runs_the_readme_test_command_exactly() -> None:
    command = fenced_after("## Run the tests")
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()


def test_readme_install_command_starts_the_demo() -> None:
    assert fenced_after("## Install and run") == "pip install . && azproxy serve --demo"


def test_the_settings_page_is_generated_from_the_declarations() -> None:
    committed = (ROOT / "docs" / "settings.md").read_text()
    assert committed == render(), f"docs/settings.md is out of date: run {COMMAND}"


def test_every_setting_is_in_the_settings_table() -> None:
    table = (ROOT / "docs" / "settings.md").read_text()
    for s in settings():
        flag = f"`{s.flag}`" if s.flag else "-"
        env = f"`{s.env}`" if s.env else "-"
        assert f"| `{s.name}` | {flag} | {env} |" in table, s.name
    settings_section = README.split("## Settings", 1)[1].split("\n## ", 1)[0]
    assert "(docs/settings.md)" in settings_section


def test_the_example_config_is_valid() -> None:
    from azproxy.settings.config import Config
    from azproxy.settings.load import load_file

    env = {
        "AZPROXY_KEY_WEB": "web-key-0123456789abcdef",
        "AZPROXY_KEY_BATCH": "batch-key-0123456789abcdef",
        "AZURE_OPENAI_KEY_SWEDEN": "sweden-key",
    }
    config = Config.load(None, env, load_file(ROOT / "deploy" / "azproxy.example.toml"))
    assert [e.name for e in config.endpoints] == ["sweden", "eastus"]
    assert len(config.model_map["gpt-4o"]) == 2
    limits = config.access_keys[0].limits
    assert limits is not None and limits.token_quota_period == "day"
    assert README.count("deploy/azproxy.example.toml") >= 1


# Reading Markdown ----------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced code block and the marker comment on the line before it."""

    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str  # the marker's words ("runnable: demo", "output"), or ""

    @property
    def where(self) -> str:
        return f"{shown(self.page)}:{self.line}"


@dataclass(frozen=True)
class Page:
    blocks: list[Block]
    prose: list[tuple[int, str]]  # (line number, text) outside code blocks
    problems: list[str]  # markers or fences that would keep a block from running


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^`\s]*)")
MARKER = re.compile(r"^\s*<!--\s*(runnable\b[^>]*?|output)\s*-->\s*$")


def read_page(page: Path) -> Page:
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    lines = page.read_text().splitlines()
    fence, language, start = "", "", 0
    body: list[str] = []
    for number, line in enumerate(lines, 1):
        opened = FENCE.match(line)
        if not fence and opened:
            fence, language, start, body = opened.group(1), opened.group(2), number, []
        elif fence and line.strip() == fence:
            marked = MARKER.match(lines[start - 2]) if start > 1 else None
            marker = marked[1] if marked else ""
            blocks.append(Block(page, start, language, "\n".join(body) + "\n", marker))
            fence = ""
        elif fence:
            body.append(line)
        else:
            prose.append((number, line))
    # A marker a blank line (or prose) away from its fence would not run.
    starts = {block.line for block in blocks}
    problems = [
        f"{shown(page)}:{number}: a marker must be just before a fence"
        for number, line in prose
        if MARKER.match(line) and number + 1 not in starts
    ]
    if fence:
        problems.append(f"{shown(page)}:{start}: fence never closed")
    return Page(blocks, prose, problems)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, - for spaces."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in read_page(page).prose:
        heading = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


# Links ---------------------------------------------------------------------------

LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+).+?\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def relative_links(page: Path) -> Iterator[tuple[int, str]]:
    for number, line in read_page(page).prose:
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if not SCHEME.match(target):
                yield number, target


def broken(page: Path, target: str, root: Path = ROOT) -> str | None:
    """Why `target`, linked from `page`, leads nowhere (None when it is fine)."""
    path, _, anchor = target.partition("#")
    file = (page.parent / unquote(path)).resolve() if path else page
    if not file.is_relative_to(root) or not file.exists():
        return f"no file {path}"
    if anchor and file.suffix != ".md":
        return f"an anchor into {file.name}, which has no headings"
    if anchor and anchor not in anchors(file):
        return f"no heading #{anchor} in {file.relative_to(root)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    problems = [
        f"{page.relative_to(ROOT)}:{number}: ({target}): {why}"
        for number, target in relative_links(page)
        if (why := broken(page, target))
    ]
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (ROOT / unquote(target.partition("#")[0])).resolve()
        for _, target in relative_links(ROOT / "README.md")
    }
    assert [p.name for p in DOCS if p not in linked] == []


def test_the_link_check_finds_what_is_broken(tmp_path: Path) -> None:
    # The checker itself, on pages made to fail (and one made to pass).
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "outside.md").touch()
    (root / "other.md").write_text("# A title\n\n## Café `au` lait!\n")
    page = root / "page.md"
    page.write_text(
        "# Here\n\n```md\n[in code](missing.md)\n```\n`[span](missing.md)`\n"
        "[a](other.md#a-title) [b](other.md#café-au-lait) [c](#here)\n"
        "[d](other.md#nowhere) [e](nofile.md) [f](#gone) [g](https://x.invalid/y)\n"
        "[h](../outside.md) [i](other.md#a-title-1)\n"
    )
    found = {target: broken(page, target, root) for _, target in relative_links(page)}
    assert found == {
        "other.md#a-title": None,
        "other.md#café-au-lait": None,
        "#here": None,
        "other.md#nowhere": "no heading #nowhere in other.md",
        "nofile.md": "no file nofile.md",
        "#gone": "no heading #gone in page.md",
        "../outside.md": "no file ../outside.md",
        "other.md#a-title-1": "no heading #a-title-1 in other.md",
    }


# Runnable blocks -----------------------------------------------------------------


@dataclass(frozen=True)
class Runnable:
    block: Block
    server: str  # "" or a key of SERVERS
    exit_code: int
    expected: tuple[str, ...]  # lines the output must show, in order


def parse_marker(block: Block) -> tuple[str, int] | str:
    """(server, exit code) from the marker's options, or what is wrong with them."""
    words = block.marker.removeprefix("runnable").strip().removeprefix(":").split()
    server, exit_code = "", 0
    for word in words:
        if word in SERVERS:
            server = word
        elif re.fullmatch(r"exit=\d+", word):
            exit_code = int(word.removeprefix("exit="))
        else:
            return f"{block.where}: unknown runnable option {word!r}"
    return server, exit_code


def runnable_blocks(page: Path) -> tuple[list[Runnable], list[str]]:
    """The page's runnable blocks, and the problems that keep others from running."""
    read = read_page(page)
    found: list[Runnable] = []
    problems = list(read.problems)
    before: list[Block | None] = [None, *read.blocks]
    after: list[Block | None] = [*read.blocks[1:], None]
    for block, previous, following in zip(read.blocks, before, after, strict=False):
        runs_before = previous is not None and previous.marker.startswith("runnable")
        if block.marker == "output" and not runs_before:
            problems.append(f"{block.where}: output must follow a runnable block")
        if not block.marker.startswith("runnable"):
            continue
        options = parse_marker(block)
        if block.language not in LANGUAGES or not block.text.strip():
            problems.append(f"{block.where}: cannot run this {block.language!r} block")
        elif isinstance(options, str):
            problems.append(options)
        else:
            shows = following.text if following and following.marker == "output" else ""
            expected = tuple(line for line in shows.splitlines() if line.strip())
            found.append(Runnable(block, *options, expected))
    return found, problems


RUNNABLE = [r for page in PAGES for r in runnable_blocks(page)[0]]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_marked_block_can_run(page: Path) -> None:
    assert runnable_blocks(page)[1] == []


def test_the_marker_check_finds_what_would_not_run(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- runnable -->\n\n```bash\ntrue\n```\n"  # a blank line away
        "<!-- output -->\n```text\nx\n```\n"  # after no runnable block
        "<!-- runnable: dmeo -->\n```bash\ntrue\n```\n"  # a typo
        "<!--runnable-->\n```text\nx\n```\n"  # not a language that runs
        "<!-- runnable: demo exit=1 -->\n```python\nprint(1)\n```\n"  # fine
        "```bash\nnever closed\n"
    )
    found, problems = runnable_blocks(page)
    assert [(r.block.line, r.server, r.exit_code) for r in found] == [(19, "demo", 1)]
    assert [p.split(": ", 1)[1] for p in problems] == [
        "a marker must be just before a fence",
        "fence never closed",
        "output must follow a runnable block",
        "unknown runnable option 'dmeo'",
        "cannot run this 'text' block",
    ]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    log = tmp_path_factory.mktemp("demo") / "azproxy.log"
    with running(["serve", "--demo", "--port", "0"], log) as server:
        yield server


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    with running(["simulate", "--port", "0"], log, ready=SIMULATOR) as server:
        yield server


def run_block(block: Block, text: str) -> tuple[int, str]:
    """Run the block's text in its own process group, killed whole on timeout."""
    env = hermetic_environ(dict(os.environ))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = (
        [sys.executable, "-c", text]
        if block.language == "python"
        else ["bash", "-euo", "pipefail", "-c", text]
    )
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        late = f"{block.where}: still running after {BLOCK_TIMEOUT_S} s"
        raise AssertionError(f"{late}:\n{output.decode()}") from None
    return process.returncode, output.decode(errors="replace")


def shows_in_order(output: str, expected: tuple[str, ...]) -> bool:
    lines = iter(output.splitlines())
    return all(any(want in line for line in lines) for want in expected)


@pytest.mark.parametrize("runnable", RUNNABLE, ids=lambda r: r.block.where)
def test_runnable_block(runnable: Runnable, request: pytest.FixtureRequest) -> None:
    block = runnable.block
    text = block.text
    if runnable.server:
        server: Running = request.getfixturevalue(runnable.server)
        assert SERVERS[runnable.server] in text, f"{block.where}: names no server"
        text = text.replace(SERVERS[runnable.server], f"127.0.0.1:{server.port}")
    code, output = run_block(block, text)
    assert code == runnable.exit_code, f"{block.where}: exit {code}:\n{output}"
    assert shows_in_order(output, runnable.expected), (
        f"{block.where}: expected {runnable.expected}, got:\n{output}"
    )


def test_the_docs_have_runnable_blocks_of_each_kind() -> None:
    # Markers lost in an edit would leave nothing to run, and nothing to fail.
    kinds = {(r.block.language, r.server) for r in RUNNABLE}
    wanted = {("python", "demo"), ("bash", "demo"), ("bash", "simulator"), ("bash", "")}
    assert wanted <= kinds
    readme = [r for r in RUNNABLE if r.block.page.name == "README.md"]
    assert any(r.block.language == "python" and r.expected for r in readme)


def test_a_runnable_block_fails_when_its_output_differs() -> None:
    # The runner itself: a wrong line, a wrong order, a wrong exit code.
    block = Block(ROOT / "README.md", 1, "bash", "echo one; echo two\n", "")
    code, output = run_block(block, block.text)
    assert code == 0
    assert shows_in_order(output, ("one", "two"))
    assert not shows_in_order(output, ("two", "one"))
    assert not shows_in_order(output, ("three",))
    failing = Block(ROOT / "README.md", 1, "bash", "false; echo never\n", "")
    assert run_block(failing, failing.text) == (1, "")
