from __future__ import annotations

import dataclasses

import pytest

from azproxy.config import Config, ConfigError, env_name, flag_name, settings


def test_defaults() -> None:
    config = Config()
    assert config.host == "127.0.0.1"
    assert config.port == 3000
    assert config.upstream == "https://{resource}.openai.azure.com"
    assert config.api_version == "2024-10-21"
    assert config.cors_origins == ("*",)
    assert config.retries == 3
    assert config.retry_delay_s == 1.0


def test_one_name_per_setting() -> None:
    names = {s.name for s in settings()}
    assert names == {f.name for f in dataclasses.fields(Config)}
    for s in settings():
        assert s.flag == flag_name(s.name) == "--" + s.name.replace("_", "-")
        assert s.env == env_name(s.name) == "AZPROXY_" + s.name.upper()
    assert env_name("read_timeout_s") == "AZPROXY_READ_TIMEOUT_S"


def test_precedence_flag_over_env_over_file_over_default() -> None:
    file = {"port": 1111, "retries": 5, "read_timeout_s": 9}
    env = {"AZPROXY_PORT": "2222", "AZPROXY_RETRIES": "4"}
    flags = {"port": "3333", "retries": None}
    config = Config.load(flags, env, file)
    assert config.port == 3333  # flag
    assert config.retries == 4  # environment
    assert config.read_timeout_s == 9.0  # file
    assert config.connect_timeout_s == 10.0  # default


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ({"AZPROXY_CORS_ORIGINS": "https://a, https://b"}, ("https://a", "https://b")),
        ({"AZPROXY_CORS_ORIGINS": ""}, ()),
        ({"AZPROXY_CORS_ORIGINS": "*"}, ("*",)),
    ],
)
def test_cors_origins_from_env(env: dict[str, str], value: tuple[str, ...]) -> None:
    assert Config.load(environ=env).cors_origins == value


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AZPROXY_PORT": "abc"}, "AZPROXY_PORT: expected a whole number, got 'abc'"),
        (
            {"AZPROXY_READ_TIMEOUT_S": "soon"},
            "AZPROXY_READ_TIMEOUT_S: expected a number",
        ),
        ({"AZPROXY_PORT": "70000"}, "port: 70000 is not a TCP port"),
        ({"AZPROXY_API_VERSION": "2024"}, "api_version: '2024' is not an Azure"),
        ({"AZPROXY_UPSTREAM": "ftp://x"}, "must be an http:// or https:// URL"),
        ({"AZPROXY_UPSTREAM": "https://{resource}.x/{other}"}, "only placeholder"),
        ({"AZPROXY_UPSTREAM": "https://u:p@x"}, "no query, fragment or credentials"),
        ({"AZPROXY_RETRIES": "-1"}, "retries: must be 0 or more"),
        ({"AZPROXY_HEADER_TIMEOUT_S": "0"}, "header_timeout_s: must be greater"),
        ({"AZPROXY_LOG_LEVEL": "loud"}, "log_level: use one of"),
    ],
)
def test_bad_values_say_what_to_change(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(environ=env)
    assert message in str(caught.value)


def test_file_values_must_have_the_right_type() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(file_values={"api_version": 2024})
    assert "config key api_version: expected a string" in str(caught.value)
    with pytest.raises(ConfigError):
        Config.load(file_values={"port": 3.5})


def test_overrides_win() -> None:
    config = Config.load({"port": "1"}, {}, upstream="http://127.0.0.1:9")
    assert config.upstream == "http://127.0.0.1:9"
    assert config.port == 1
