from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from azproxy import __version__
from azproxy.cli import build_parser, config_from, demo_curl, main
from azproxy.settings.config import settings
from tests.processes import SIMULATOR, running


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"azproxy {__version__}"


def test_flags_and_environment_reach_the_config() -> None:
    args = build_parser().parse_args(
        ["serve", "--port", "8080", "--read-timeout-s", "30", "--cors-origins", ""]
    )
    env = {"AZPROXY_PORT": "9999", "AZPROXY_RETRIES": "1", "AZPROXY_HOST": "0.0.0.0"}
    config = config_from(args, env)
    assert config.port == 8080  # the flag beats the environment
    assert config.read_timeout_s == 30.0
    assert config.cors_origins == ()
    assert config.retries == 1
    assert config.host == "0.0.0.0"


def test_every_setting_has_a_flag_and_an_env_var(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    # argparse wraps lines at spaces and after hyphens: compare without them.
    help_text = "".join(capsys.readouterr().out.split())
    secrets = [s.name for s in settings() if not s.has_flag]
    assert secrets == ["endpoints", "access_keys", "metrics_key"]
    for s in settings():
        if s.has_flag:
            # The same text as docs/settings.md, then where else it comes from.
            entry = f"{s.flag}{s.name.upper().split('_')[-1]}{s.help}[env{s.env},"
            assert "".join(entry.split()) in help_text, s.name
    options, _, epilog = help_text.partition("settingswithoutaflag")
    for flag in ("--endpoints", "--access-keys", "--metrics-key"):
        assert flag not in help_text
    # Secrets are listed after the flags, with where they come from instead.
    for name in ("AZPROXY_ACCESS_KEYS", "AZPROXY_METRICS_KEY"):
        assert name in epilog and name not in options
    assert "AZURE_OPENAI_ENDPOINT" in epilog
    assert "--demo" in options


def test_bad_settings_exit_with_one_clear_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve"], {"AZPROXY_API_VERSION": "2024-13"}) == 2
    err = capsys.readouterr().err
    assert err.startswith("azproxy: configuration error: AZPROXY_API_VERSION:")
    assert err.count("\n") == 1


def test_workers_come_from_flag_or_environment() -> None:
    args = build_parser().parse_args(["serve"])
    assert config_from(args, {"AZPROXY_WORKERS": "4"}).workers == 4
    args = build_parser().parse_args(["serve", "--workers", "2"])
    assert config_from(args, {"AZPROXY_WORKERS": "4"}).workers == 2


def test_demo_with_workers_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--demo", "--workers", "2"], {}) == 2
    err = capsys.readouterr().err
    assert "--demo runs in one process: leave out --workers" in err


def test_demo_curl_is_one_runnable_line() -> None:
    line = demo_curl("0.0.0.0", 3000)
    assert "\n" not in line and "\\" not in line
    words = shlex.split(line)
    assert words[0] == "curl"
    assert "http://127.0.0.1:3000/v1/chat/completions" in words
    assert json.loads(words[words.index("-d") + 1])["stream"] is True
    assert "[::1]:3000" in demo_curl("::1", 3000)


def test_demo_serves_a_streamed_answer_to_its_own_curl_line(tmp_path: Path) -> None:
    with running(["serve", "--demo", "--port", "0"], tmp_path / "demo.log") as demo:
        lines = demo.log().splitlines()
        curl = next(line for line in lines if line.startswith("curl "))
        result = subprocess.run(
            shlex.split(curl), capture_output=True, timeout=20, check=True
        )
    events = [e for e in result.stdout.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    contents = [
        json.loads(e[6:])["choices"][0]["delta"].get("content", "")
        for e in events[:-1]
        if json.loads(e[6:])["choices"]
    ]
    assert "".join(contents).startswith("Hello! This is the azproxy simulator")


def test_simulate_command_answers_like_azure(tmp_path: Path) -> None:
    args = ["simulate", "--port", "0", "--chunks", "3", "--chunk-delay-ms", "0"]
    with running(args, tmp_path / "sim.log", ready=SIMULATOR) as sim:
        url = f"{sim.url}/openai/deployments/d/chat/completions?api-version=2024-10-21"
        result = subprocess.run(
            ["curl", "-sS", url, "-H", "api-key: k", "-d", '{"stream": true}'],
            capture_output=True,
            timeout=20,
            check=True,
        )
    events = [e for e in result.stdout.split(b"\n\n") if e]
    first = json.loads(events[0][6:])
    assert first["choices"] == [] and "prompt_filter_results" in first
    assert events[-1] == b"data: [DONE]"
    assert len(events) == 1 + 1 + 3 + 1 + 1  # filter, role, content x3, stop, DONE


def test_simulate_rejects_bad_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--fault", "d=explode"]) == 2
    assert "fault kind 'explode'" in capsys.readouterr().err
