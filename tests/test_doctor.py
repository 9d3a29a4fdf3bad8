"""`azproxy check-config`: one line per problem; --probe asks every deployment."""

from __future__ import annotations

from pathlib import Path

import pytest

from azproxy.cli import main
from tests.processes import SIMULATOR, running
from tests.redis_server import needs_redis, redis_server

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


def test_check_config_prints_the_limits_per_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limited = GOOD.format(url="http://127.0.0.1:9").replace(
        'access_keys = ["env:TEAM_KEY"]',
        "access_keys = [\n"
        '  { key = "env:TEAM_KEY", name = "team-a", rpm = 600, tpm = 200000 },\n'
        '  { key = "env:OTHER_KEY", name = "team-a", rpm = 600, tpm = 200000 },\n'
        '  { key = "env:QUOTA_KEY", name = "team-b", max_concurrent = 2,'
        ' token_quota = 5000000, token_quota_period = "week" },\n'
        '  "env:PLAIN_KEY",\n'
        "]",
    )
    path = write(tmp_path, limited)
    env = ENV | {
        "OTHER_KEY": "other-key-0123456789abc",
        "QUOTA_KEY": "quota-key-0123456789abc",
        "PLAIN_KEY": "plain-key-0123456789abc",
    }
    assert main(["check-config", "--config", path], env) == 0
    assert capsys.readouterr().out.splitlines() == [
        "config OK: endpoints: sim; models: 2; access keys: 4; "
        "pass-through tokens: off",
        "limits per key (counted in each process; --workers: each):",
        "  team-a: rpm 600, tpm 200000",
        "  team-b: max_concurrent 2, token_quota 5000000 per week (UTC)",
    ]


def test_a_bad_config_lists_every_problem_it_can_see(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BAD)
    assert main(["check-config", "--config", path], ENV) == 2  # as serve exits
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
    assert missing == 2
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
        # The settings are valid, the config is not: no "config OK" before FAIL.
        lines = out.splitlines()
        assert lines[0].startswith("settings valid: endpoints: sim; models: 2")
        assert "config OK" not in out
        assert lines[-1] == (
            "config FAILED the probe: 1 of 2 deployment(s) do not answer (FAIL above)"
        )

        wrong_key = main(
            ["check-config", "--config", path, "--probe"], ENV | {"SIM_KEY": "nope"}
        )
        assert wrong_key == 1
        assert "401: the key or token is not accepted" in capsys.readouterr().out


def test_probe_says_config_ok_last_when_every_deployment_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["simulate", "--port", "0"]
    with running(args, tmp_path / "sim.log", ready=SIMULATOR) as sim:
        path = write(tmp_path, GOOD.format(url=sim.url))
        assert main(["check-config", "--config", path, "--probe"], ENV) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("settings valid: ")
    assert lines[-1] == "config OK: 2 deployment(s) answer"


SERVER_SIDE = {
    "AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9",
    "AZURE_OPENAI_API_KEY": "azure-key",
    "AZPROXY_ACCESS_KEYS": "team-key-0123456789abc",
}


def test_an_endpoint_without_a_model_map_is_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config"], SERVER_SIDE) == 0
    captured = capsys.readouterr()
    assert "models: 0" in captured.out
    (warning,) = captured.err.splitlines()
    assert warning.startswith("azproxy: warning: model_map: ")
    assert "AZPROXY_MODEL_MAP" in warning and "model_fallback" in warning
    for fix in ({"AZPROXY_MODEL_MAP": "gpt-4o=dep"}, {"AZPROXY_MODEL_FALLBACK": "1"}):
        assert main(["check-config"], SERVER_SIDE | fix) == 0
        assert capsys.readouterr().err == ""


def test_allow_anonymous_is_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    env = SERVER_SIDE | {"AZPROXY_MODEL_MAP": "gpt-4o=dep"}
    del env["AZPROXY_ACCESS_KEYS"]
    assert main(["check-config", "--allow-anonymous"], env) == 0
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning == (
        "azproxy: warning: allow_anonymous = true: anyone who can reach this port "
        "can use the configured Azure credentials"
    )


def test_unknown_azproxy_variables_are_named_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A secret the file names by env: is no typo, whatever its name.
    good = GOOD.format(url="http://127.0.0.1:9")
    path = write(tmp_path, good.replace("env:TEAM_KEY", "env:AZPROXY_KEY_TEAM"))
    env = ENV | {
        "AZPROXY_PROT": "8080",
        "AZPROXY_KEY_TEAM": ENV["TEAM_KEY"],
        "AZPROXY_CONFIG": path,
        "AZPROXY_SIM_API_KEY": "sim-key",  # azproxy simulate's
        "AZPROXY_ZZZ": "1",
    }
    assert main(["check-config"], env) == 0
    assert capsys.readouterr().err.splitlines() == [
        "azproxy: warning: environment: unknown variable AZPROXY_PROT (did you "
        "mean AZPROXY_PORT?); it is ignored",
        "azproxy: warning: environment: unknown variable AZPROXY_ZZZ; it is ignored",
    ]


def test_an_empty_variable_is_called_empty_not_unset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.format(url="http://127.0.0.1:9"))
    assert main(["check-config", "--config", path], ENV | {"TEAM_KEY": ""}) == 2
    err = capsys.readouterr().err
    assert "access_keys #1: environment variable TEAM_KEY is empty" in err
    assert "not set" not in err
    empty_key = SERVER_SIDE | {"AZURE_OPENAI_API_KEY": ""}
    assert main(["check-config"], empty_key) == 2
    err = capsys.readouterr().err
    assert "AZURE_OPENAI_API_KEY is empty" in err


def test_serve_logs_the_same_warnings_at_start(tmp_path: Path) -> None:
    env = SERVER_SIDE | {"AZPROXY_PROT": "8080"}
    with running(["serve", "--port", "0"], tmp_path / "serve.log", env=env) as serve:
        log = serve.log()
    assert "unknown variable AZPROXY_PROT (did you mean AZPROXY_PORT?)" in log
    assert "model_map: endpoints are configured but no model is mapped" in log


@needs_redis
def test_check_config_shows_redis_without_its_password_and_probe_pings_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with redis_server(tmp_path / "redis") as redis:
        env = {"AZPROXY_REDIS_URL": redis.url}
        assert main(["check-config"], env) == 0
        out = capsys.readouterr().out
        shown = f"redis://127.0.0.1:{redis.port}/0"
        assert f"shared state: {shown} (prefix azproxy, timeout 100 ms" in out
        assert main(["check-config", "--probe"], env) == 0
        out = capsys.readouterr().out
        assert f"ok   redis {shown}: answers" in out
        assert out.splitlines()[-1] == "config OK: nothing to probe"
        wrong = {"AZPROXY_REDIS_URL": f"redis://:wrong-password@127.0.0.1:{redis.port}"}
        assert main(["check-config", "--probe"], wrong) == 1
        out = capsys.readouterr().out
        assert f"FAIL redis redis://127.0.0.1:{redis.port}: does not answer" in out
        assert "AuthenticationError" in out
        assert out.splitlines()[-1] == (
            "config FAILED the probe: Redis does not answer (FAIL above)"
        )
        assert redis.password not in out and "wrong-password" not in out
