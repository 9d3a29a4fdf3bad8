from __future__ import annotations

import http.client
import json
import os
import pty
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azproxy import __version__
from azproxy.cli import build_parser, config_from, main
from azproxy.demo import DEMO_TOKEN, demo_curl
from azproxy.settings.config import settings
from azproxy.settings.flags import modern_switches
from azproxy.simulator.answers import ANSWER_WORDS
from tests.netguard import hermetic_environ
from tests.processes import LISTENING, SIMULATOR, running

AZPROXY = (sys.executable, "-m", "azproxy")
# Every log line's time: UTC, milliseconds, Z.
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


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
        if s.is_switch:
            # --name, --no-name: a switch takes no value; where it does (the
            # environment, the file), the value is true or false.
            entry = f"{s.flag},--no-{s.flag[2:]}{s.help}[env{s.env}:true"
            assert "".join(entry.split()) in help_text, s.name
        elif s.has_flag:
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


def test_true_false_settings_are_switches() -> None:
    words = ["--allow-anonymous", "--no-access-log", "--passthrough"]
    config = config_from(build_parser().parse_args(["serve", *words]), {})
    assert config.allow_anonymous is True
    assert config.access_log is False
    assert config.passthrough is True
    # Absent, a switch leaves the setting to the environment; given, it wins.
    env = {"AZPROXY_ACCESS_LOG": "false", "AZPROXY_PASSTHROUGH": "true"}
    assert config_from(build_parser().parse_args(["serve"]), env).access_log is False
    args = build_parser().parse_args(["serve", "--access-log", "--no-passthrough"])
    # (--no-passthrough needs a server-side endpoint to serve.)
    server_side = {
        "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "k",
        "AZPROXY_ALLOW_ANONYMOUS": "true",
    }
    config = config_from(args, env | server_side)
    assert config.access_log is True and config.passthrough is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--no-access-log", "false"])


def test_the_old_value_form_of_a_switch_works_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = ["--access-log", "false", "--passthrough=true", "--allow-anonymous", "YES"]
    argv, said = modern_switches(["serve", *old, "--port", "3001"])
    assert len(said) == 3
    assert argv == [
        "serve",
        "--no-access-log",
        "--passthrough",
        "--allow-anonymous",
        "--port",
        "3001",
    ]
    assert main(["check-config", *old], {}) == 0
    err = capsys.readouterr().err
    assert (
        "azproxy: warning: `--access-log false` is deprecated and goes in the next "
        "release; write --no-access-log"
    ) in err
    assert "`--passthrough true` is deprecated" in err
    assert "`--allow-anonymous YES` is deprecated" in err
    # auto, where a setting has it, is the default: the flag goes.
    assert modern_switches(["--passthrough", "auto"])[0] == []
    # Anything else is for argparse to refuse.
    assert modern_switches(["--access-log", "maybe"])[0] == ["--access-log", "maybe"]


def test_help_shows_switches_without_a_placeholder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for misleading in (
        "--access-log LOG",
        "--metrics-require-key KEY",
        "--allow-anonymous ANONYMOUS",
    ):
        assert misleading not in help_text
    assert "--metrics-require-key, --no-metrics-require-key" in help_text


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


def streamed_answer(log: str) -> str:
    """Run the curl line the demo printed; the text of the answer it streams."""
    curl = next(line for line in log.splitlines() if line.startswith("curl "))
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
    return "".join(contents)


def test_demo_serves_a_whole_answer_to_its_own_curl_line(tmp_path: Path) -> None:
    with running(["serve", "--demo", "--port", "0"], tmp_path / "demo.log") as demo:
        answer = streamed_answer(demo.log())
    # The simulator's whole sentence, not its default 8 words ("...answering like").
    assert answer == " ".join(ANSWER_WORDS)
    assert answer.startswith("Hello! This is the azproxy simulator")
    assert answer.endswith("arrive.")


# What a shell of someone who uses Azure OpenAI may well hold.
SERVER_SIDE_ENV = {
    # Nothing listens there: a demo that went there would fail, not leave loopback.
    "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
    "AZURE_OPENAI_API_KEY": "azure-key-4f6a8c0e2b4d6f8a",
    "AZPROXY_MODEL_MAP": "gpt-4o=prod-gpt-4o",
    "AZPROXY_ACCESS_KEYS": "team-key-0123456789abcdef",
    "AZPROXY_PASSTHROUGH": "false",
}


def test_the_demo_ignores_server_side_settings_and_says_so(tmp_path: Path) -> None:
    args = ["serve", "--demo", "--port", "0"]
    with running(args, tmp_path / "demo.log", env=SERVER_SIDE_ENV) as demo:
        answer = streamed_answer(demo.log())
        log = demo.log()
    assert answer == " ".join(ANSWER_WORDS)  # from the simulator, no 401
    (said,) = [line for line in log.splitlines() if "ignoring" in line]
    for name in SERVER_SIDE_ENV:
        assert name in said
    assert "built-in simulator" in said
    assert "azure-key" not in log and "team-key" not in log


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        (["serve"], "azproxy"),
        (["serve", "--demo"], "azproxy"),
        (["simulate"], "azproxy simulate"),
    ],
)
def test_a_port_in_use_is_one_line_naming_the_flag(
    command: list[str], prefix: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*AZPROXY, *command, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=hermetic_environ(dict(os.environ)),
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    said = [line for line in done.stderr.splitlines() if "cannot listen" in line]
    assert said == [
        f"{prefix}: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "choose another port with --port"
    ]


def read_until(fd: int, needle: bytes, timeout_s: float = 15.0) -> bytes:
    """What a terminal shows, until `needle` appears."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"never shown: {needle!r} in {seen!r}"
        if select.select([fd], [], [], left)[0]:
            seen += os.read(fd, 4096)
    return seen


def test_the_demo_logs_text_on_a_terminal() -> None:
    """log_format auto: the first screen a newcomer sees is text, for the
    application log (stderr) and the access log (stdout) alike."""
    terminal, child_side = pty.openpty()
    process = subprocess.Popen(
        [*AZPROXY, "serve", "--demo", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=child_side,
        stderr=child_side,
        env=hermetic_environ(dict(os.environ)),
    )
    os.close(child_side)
    try:
        screen = read_until(terminal, b"curl ")
        found = LISTENING.search(screen)
        assert found is not None
        connection = http.client.HTTPConnection("127.0.0.1", int(found["port"]))
        connection.request(
            "GET", "/v1/models", headers={"Authorization": f"Bearer {DEMO_TOKEN}"}
        )
        assert connection.getresponse().status == 200
        connection.close()
        screen += read_until(terminal, b"GET /v1/models")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        os.close(terminal)
    text = screen.decode()
    assert re.search(
        rf"^{TIMESTAMP} INFO azproxy: azproxy \S+ listening on", text, re.M
    )
    assert re.search(rf"^{TIMESTAMP} 200 GET /v1/models ", text, re.M)
    assert not re.search(r'^\{"', text, re.M)  # no JSON line


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
