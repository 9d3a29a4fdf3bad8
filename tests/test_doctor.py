"""`azproxy check-config`: one line per problem; --probe asks every deployment."""

from __future__ import annotations

from pathlib import Path

import pytest

from azproxy.cli import main
from tests.processes import SIMULATOR, running

GOOD = """
access_keys = ["env:TEAM_KEY"]

[endpoints.sim]
url = "{url}"
api_key = "env:SIM_KEY"

[model_map]
"gpt-4o" = "sim/gpt-4o"
"gpt-4o-mini" = "sim/gpt-4o-minii"
"""

BAD = """
acess_keys = ["x"]
api_version = 2024-10-21

[endpoints.sweden]
resource = "my.sweden"
api_key = "env:NOT_SET"

[model_map]
"gpt-4o" = "west/gpt-4o"
"""

ENV = {"TEAM_KEY": "team-key-0123456789abc", "SIM_KEY": "sim-key"}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "azproxy.toml"
    path.write_text(text)
    return str(path)


def test_a_good_config_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.format(url="http://127.0.0.1:9"))
    assert main(["check-config", "--config", path], ENV) == 0
    out = capsys.readouterr().out
    assert out.startswith("config OK: endpoints: sim; models: 2; access keys: 1")
    assert "sim-key" not in out and ENV["TEAM_KEY"] not in out


def test_a_bad_config_lists_every_problem_it_can_see(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BAD)
    assert main(["check-config", "--config", path], ENV) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("azproxy: configuration error: ") for line in lines)
    text = "\n".join(lines)
    assert "unknown key 'acess_keys' (did you mean 'access_keys'?)" in text
    assert 'quote it: api_version = "2024-10-21"' in text
    assert "endpoints.sweden.resource: 'my.sweden' is not a resource name" in text
    assert "environment variable NOT_SET is not set" in text


def test_the_config_file_can_come_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.format(url="http://127.0.0.1:9"))
    assert main(["check-config"], ENV | {"AZPROXY_CONFIG": path}) == 0
    missing = main(["check-config"], {"AZPROXY_CONFIG": str(tmp_path / "none")})
    assert missing == 1
    assert "No such file or directory" in capsys.readouterr().err


def test_serve_refuses_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--config", write(tmp_path, BAD)], ENV) == 2
    assert "did you mean 'access_keys'" in capsys.readouterr().err


def test_serve_refuses_to_be_an_open_relay(capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
        "AZURE_OPENAI_API_KEY": "k",
    }
    assert main(["serve"], env) == 2
    assert "anyone could spend them" in capsys.readouterr().err


def test_probe_reports_which_deployments_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim_env = {"AZPROXY_SIM_API_KEY": "sim-key"}
    args = ["simulate", "--port", "0", "--deployments", "gpt-4o,gpt-4o-mini"]
    with running(args, tmp_path / "sim.log", env=sim_env, ready=SIMULATOR) as sim:
        path = write(tmp_path, GOOD.format(url=sim.url))
        code = main(["check-config", "--config", path, "--probe"], ENV)
        out = capsys.readouterr().out
        assert code == 1
        assert "ok   gpt-4o -> sim/gpt-4o: answers" in out
        assert "FAIL gpt-4o-mini -> sim/gpt-4o-minii: 404 DeploymentNotFound" in out
        assert "it is not the model name" in out

        wrong_key = main(
            ["check-config", "--config", path, "--probe"], ENV | {"SIM_KEY": "nope"}
        )
        assert wrong_key == 1
        assert "401: the key or token is not accepted" in capsys.readouterr().out
