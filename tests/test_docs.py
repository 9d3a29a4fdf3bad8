"""The docs keep their promises: the commands CI runs and every setting."""

from __future__ import annotations

import re
from pathlib import Path

from azproxy.settings.config import settings
from azproxy.settings.table import COMMAND, render

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


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
    assert README.count("deploy/azproxy.example.toml") >= 1
