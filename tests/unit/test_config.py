from __future__ import annotations

import pytest

from azproxy.cli import build_parser, config_from
from azproxy.errors import ConfigError
from azproxy.settings.config import Config, settings
from azproxy.settings.fields import Setting, env_name, flag_name
from azproxy.settings.server_side import parse_access_keys, parse_endpoints


def test_defaults() -> None:
    config = Config()
    assert config.host == "127.0.0.1"
    assert config.port == 3000
    assert config.workers == 1
    assert config.upstream == "https://{resource}.openai.azure.com"
    assert config.api_version == "2024-10-21"
    assert config.cors_origins == ("*",)
    assert config.retries == 3
    assert config.retry_delay_s == 1.0


# DESIGN.md (section 6, and "Names that later work relies on") fixes these
# names for tests and deployments outside this repository. They are written
# out, not derived from the code, so renaming one fails here.
CONTRACT = {
    "host": ("--host", "AZPROXY_HOST"),
    "port": ("--port", "AZPROXY_PORT"),
    "upstream": ("--upstream", "AZPROXY_UPSTREAM"),
    "api_version": ("--api-version", "AZPROXY_API_VERSION"),
    "cors_origins": ("--cors-origins", "AZPROXY_CORS_ORIGINS"),
    "log_level": ("--log-level", "AZPROXY_LOG_LEVEL"),
    "log_format": ("--log-format", "AZPROXY_LOG_FORMAT"),
    "read_timeout_s": ("--read-timeout-s", "AZPROXY_READ_TIMEOUT_S"),
    "client_write_timeout_s": (
        "--client-write-timeout-s",
        "AZPROXY_CLIENT_WRITE_TIMEOUT_S",
    ),
    "client_header_timeout_s": (
        "--client-header-timeout-s",
        "AZPROXY_CLIENT_HEADER_TIMEOUT_S",
    ),
    "client_body_timeout_s": (
        "--client-body-timeout-s",
        "AZPROXY_CLIENT_BODY_TIMEOUT_S",
    ),
    "keepalive_timeout_s": ("--keepalive-timeout-s", "AZPROXY_KEEPALIVE_TIMEOUT_S"),
    "max_connections": ("--max-connections", "AZPROXY_MAX_CONNECTIONS"),
    "max_spool_mb": ("--max-spool-mb", "AZPROXY_MAX_SPOOL_MB"),
    "max_buffered_body_mb": (
        "--max-buffered-body-mb",
        "AZPROXY_MAX_BUFFERED_BODY_MB",
    ),
    "max_json_depth": ("--max-json-depth", "AZPROXY_MAX_JSON_DEPTH"),
    "max_json_containers": ("--max-json-containers", "AZPROXY_MAX_JSON_CONTAINERS"),
    "max_json_values": ("--max-json-values", "AZPROXY_MAX_JSON_VALUES"),
    "realtime_idle_timeout_s": (
        "--realtime-idle-timeout-s",
        "AZPROXY_REALTIME_IDLE_TIMEOUT_S",
    ),
    "realtime_max_message_mb": (
        "--realtime-max-message-mb",
        "AZPROXY_REALTIME_MAX_MESSAGE_MB",
    ),
    "family_api_versions": ("--family-api-versions", "AZPROXY_FAMILY_API_VERSIONS"),
    "breaker_failures": ("--breaker-failures", "AZPROXY_BREAKER_FAILURES"),
    "shutdown_grace_s": ("--shutdown-grace-s", "AZPROXY_SHUTDOWN_GRACE_S"),
    "sse_compat": ("--sse-compat", "AZPROXY_SSE_COMPAT"),
    "allow_anonymous": ("--allow-anonymous", "AZPROXY_ALLOW_ANONYMOUS"),
    "redis_url": ("--redis-url", "AZPROXY_REDIS_URL"),
    "redis_prefix": ("--redis-prefix", "AZPROXY_REDIS_PREFIX"),
    "redis_timeout_ms": ("--redis-timeout-ms", "AZPROXY_REDIS_TIMEOUT_MS"),
    "redis_failure": ("--redis-failure", "AZPROXY_REDIS_FAILURE"),
    # Secrets: never a flag value.
    "metrics_key": ("", "AZPROXY_METRICS_KEY"),
    "access_keys": ("", "AZPROXY_ACCESS_KEYS"),
    # Set as [endpoints.NAME] or through AZURE_OPENAI_ENDPOINT.
    "endpoints": ("", ""),
}
CONTRACT_DEFAULTS = {
    "client_header_timeout_s": 60.0,
    "client_body_timeout_s": 60.0,
    "keepalive_timeout_s": 75.0,
    "host": "127.0.0.1",
    "port": 3000,
    "api_version": "2024-10-21",
    "upstream": "https://{resource}.openai.azure.com",
    "cors_origins": ("*",),
    "log_format": "auto",
    "redis_url": None,
    "redis_prefix": "azproxy",
    "redis_timeout_ms": 100,
    "redis_failure": "open",
}


def test_the_names_in_the_contract_are_kept() -> None:
    found = {s.name: s for s in settings()}
    for name, names in CONTRACT.items():
        assert name in found, f"{name} is in DESIGN.md's contract"
        assert (found[name].flag, found[name].env) == names
    for name, default in CONTRACT_DEFAULTS.items():
        assert found[name].default == default
        assert getattr(Config(), name) == default
    assert flag_name("read_timeout_s") == "--read-timeout-s"
    assert env_name("read_timeout_s") == "AZPROXY_READ_TIMEOUT_S"


SECRETS = {"endpoints", "access_keys", "metrics_key"}
SERVER_SIDE_ENV = {
    "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
    "AZURE_OPENAI_API_KEY": "azure-key",
    "AZPROXY_ACCESS_KEYS": "key-0123456789abcdef",
}
# A value for every setting, other than its default and valid alone, read
# from a flag, the environment or the file alike.
SAMPLES: dict[str, object] = {
    "host": "0.0.0.0",
    "port": "3001",
    "workers": "2",
    "upstream": "http://{resource}.example",
    "api_version": "2025-01-01-preview",
    "family_api_versions": "responses=v1",
    "endpoints": {"e": {"resource": "r", "api_key": "azure-key"}},  # file only
    "model_map": "gpt-4o=dep1",
    "model_fallback": "true",
    "access_keys": "key-0123456789abcdef",
    "allow_anonymous": "true",
    "passthrough": "true",
    "entra": "true",
    "entra_scope": "api://azproxy/.default",
    "cors_origins": "https://a.example",
    "connect_timeout_s": "0.3",
    "header_timeout_s": "0.3",
    "read_timeout_s": "0.3",
    "retries": "0",
    "retry_delay_s": "0",
    "rate_limit_cooldown_s": "1",
    "error_cooldown_s": "1",
    "breaker_failures": "2",
    "breaker_open_s": "1",
    "exhausted_cooldown_s": "7.5",
    "max_attempts": "1",
    "max_upstream_requests": "10",
    "queue_timeout_s": "1",
    "client_write_timeout_s": "1",
    "max_header_kb": "8",
    "max_body_mb": "1",
    "max_upload_mb": "1",
    "max_json_depth": "8",
    "max_json_containers": "10",
    "max_json_values": "10",
    "max_buffered_body_mb": "64",
    "max_spool_mb": "64",
    "client_header_timeout_s": "1",
    "client_body_timeout_s": "1",
    "keepalive_timeout_s": "1",
    "max_connections": "5",
    "realtime_idle_timeout_s": "1",
    "realtime_max_message_mb": "1",
    "sse_compat": "raw",
    "shutdown_grace_s": "1",
    "log_level": "debug",
    "log_format": "text",
    "access_log": "false",
    "metrics_require_key": "true",
    "metrics_key": "metrics-0123456789abcdef",
    "redis_url": "redis://127.0.0.1:6390/2",
    "redis_prefix": "team-a",
    "redis_timeout_ms": "50",
    "redis_failure": "closed",
    "redis_lease_s": "5",
}


@pytest.mark.parametrize("s", settings(), ids=lambda s: s.name)
def test_each_setting_is_read_by_its_one_name(s: Setting) -> None:
    """DESIGN.md's rule, through the real sources: the config file key is the
    name, the flag is --name-with-dashes (none for a secret), the variable is
    AZPROXY_NAME (none for endpoints, which have AZURE_OPENAI_ENDPOINT)."""
    assert s.name in SAMPLES, f"add a sample value for {s.name} to SAMPLES"
    raw = SAMPLES[s.name]
    # The rest of a valid server-side setup, so that each value is valid.
    others: dict[str, object] = {
        "endpoints": parse_endpoints({"e": {"resource": "r", "api_key": "k"}}, {}),
        "access_keys": parse_access_keys("key-0123456789abcdef", {}),
        "allow_anonymous": True,
    }
    others.pop(s.name, None)
    by_source = {"file": Config.load(None, {}, {s.name: raw}, **others)}
    if s.name != "endpoints":
        env = {"AZPROXY_" + s.name.upper(): str(raw)}
        by_source["env"] = Config.load(None, env, None, **others)
    else:
        assert s.env == ""
    flag = "--" + s.name.replace("_", "-")
    if s.is_switch:
        # A switch: --name for true, --no-name for false.
        words = [flag] if raw == "true" else ["--no-" + flag[2:]]
        args = build_parser().parse_args(["serve", *words])
        by_source["flag"] = config_from(args, SERVER_SIDE_ENV)
    elif s.name not in SECRETS:
        args = build_parser().parse_args(["serve", flag, str(raw)])
        by_source["flag"] = config_from(args, SERVER_SIDE_ENV)
    else:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", flag, str(raw)])
    values = {source: getattr(c, s.name) for source, c in by_source.items()}
    assert values["file"] != s.default
    assert all(value == values["file"] for value in values.values()), values


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
        ({"AZPROXY_API_VERSION": "2024"}, "AZPROXY_API_VERSION: '2024' is not an"),
        ({"AZPROXY_UPSTREAM": "ftp://x"}, "must be an http:// or https:// URL"),
        ({"AZPROXY_UPSTREAM": "https://{resource}.x/{other}"}, "only placeholder"),
        ({"AZPROXY_UPSTREAM": "https://u:p@x"}, "no query, fragment or credentials"),
        ({"AZPROXY_RETRIES": "-1"}, "retries: must be 0 or more"),
        ({"AZPROXY_WORKERS": "0"}, "workers: must be 1 or more"),
        ({"AZPROXY_HEADER_TIMEOUT_S": "0"}, "header_timeout_s: must be greater"),
        ({"AZPROXY_LOG_LEVEL": "loud"}, "log_level: use one of"),
    ],
)
def test_bad_values_say_what_to_change(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(environ=env)
    assert message in str(caught.value)


def test_a_body_limit_past_the_memory_budget_is_refused_at_start() -> None:
    # A JSON body azproxy parses is held whole in memory: past the budget it
    # would get 503 and Retry-After forever, and SDKs would retry it for nothing.
    env = {"AZPROXY_MAX_BODY_MB": "64", "AZPROXY_MAX_BUFFERED_BODY_MB": "32"}
    with pytest.raises(ConfigError) as caught:
        Config.load(environ=env)
    assert str(caught.value).count("max_buffered_body_mb") == 1
    assert (
        "max_buffered_body_mb: 32 is less than max_body_mb (64), so a JSON body "
        "azproxy must read could never be held; raise it or lower max_body_mb"
    ) in str(caught.value)
    config = Config.load(environ=env | {"AZPROXY_MAX_BUFFERED_BODY_MB": "64"})
    assert config.max_body_bytes == config.max_buffered_body_bytes


def test_file_values_must_have_the_right_type() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(file_values={"api_version": 2024})
    assert 'quote it: api_version = "2024"' in str(caught.value)
    with pytest.raises(ConfigError):
        Config.load(file_values={"port": 3.5})


def test_overrides_win() -> None:
    config = Config.load({"port": "1"}, {}, upstream="http://127.0.0.1:9")
    assert config.upstream == "http://127.0.0.1:9"
    assert config.port == 1


FILE_ENV = {"SWEDEN_KEY": "sweden-secret-key", "TEAM_KEY": "team-key-0123456789"}


def full_file() -> dict[str, object]:
    return {
        "port": 4000,
        "access_keys": ["env:TEAM_KEY"],
        "endpoints": {
            "sweden": {"resource": "my-sweden", "api_key": "env:SWEDEN_KEY"},
        },
        "model_map": {"gpt-4o": "sweden/gpt-4o"},
    }


def test_a_full_file_loads_and_hides_its_secrets() -> None:
    config = Config.load(None, FILE_ENV, full_file())
    assert config.port == 4000
    assert config.server_side
    assert not config.passthrough_allowed  # default with server-side credentials
    assert "sweden-secret-key" not in repr(config)
    assert "team-key-0123456789" not in repr(config)
    assert sorted(config.secrets()) == ["sweden-secret-key", "team-key-0123456789"]


def test_unknown_file_keys_are_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(None, FILE_ENV, full_file() | {"acess_keys": []})
    assert "config file: unknown key 'acess_keys' (did you mean 'access_keys'?)" in (
        caught.value.problems
    )


def test_server_side_credentials_without_access_keys_are_refused() -> None:
    values = full_file()
    del values["access_keys"]
    with pytest.raises(ConfigError) as caught:
        Config.load(None, FILE_ENV, values)
    assert "anyone could spend them" in str(caught.value)
    allowed = Config.load(None, FILE_ENV, values | {"allow_anonymous": True})
    assert allowed.allow_anonymous


def test_models_mapped_to_missing_endpoints_or_deployments() -> None:
    values = full_file() | {
        "model_map": {"a": "nowhere/x", "b": "gpt-4o", "c": "sweden/nope"},
        "endpoints": {
            "sweden": {
                "resource": "s",
                "api_key": "k",
                "deployments": ["gpt-4o"],
            },
            "east": {"resource": "e", "api_key": "k"},
        },
    }
    with pytest.raises(ConfigError) as caught:
        Config.load(None, FILE_ENV, values)
    problems = caught.value.problems
    assert any("model_map.a: endpoint 'nowhere' is not defined" in p for p in problems)
    assert any("model_map.b: say which endpoint" in p for p in problems)
    assert any("'nope' is not in endpoints.sweden.deployments" in p for p in problems)


def test_environment_only_setup() -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://my-res.openai.azure.com/",
        "AZURE_OPENAI_API_KEY": "azure-key",
        "OPENAI_API_VERSION": "2024-06-01",
        "AZPROXY_MODEL_MAP": "gpt-4o=dep1,gpt-4o-mini=dep2",
        "AZPROXY_ACCESS_KEYS": "key-one-0123456789,key-two-0123456789",
    }
    config = Config.load(None, env)
    (endpoint,) = config.endpoints
    assert endpoint.name == "default"
    assert endpoint.base_url(config.upstream) == "https://my-res.openai.azure.com"
    assert endpoint.api_key is not None and endpoint.api_key.reveal() == "azure-key"
    assert config.api_version == "2024-06-01"
    assert set(config.model_map) == {"gpt-4o", "gpt-4o-mini"}
    assert len(config.access_keys) == 2
    # AZPROXY_API_VERSION wins over the standard variable.
    assert Config.load(None, env | {"AZPROXY_API_VERSION": "v1"}).api_version == "v1"


def test_environment_endpoint_needs_a_way_to_authenticate() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(None, {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"})
    assert "says how to authenticate" in str(caught.value)
    entra = Config.load(
        None,
        {
            "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
            "AZPROXY_ENTRA": "true",
            "AZPROXY_ALLOW_ANONYMOUS": "true",
        },
    )
    assert entra.endpoints[0].entra


def test_disabling_passthrough_without_endpoints_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load(None, {"AZPROXY_PASSTHROUGH": "false"})
    assert "nothing could be served" in str(caught.value)


def test_passthrough_is_tri_state() -> None:
    assert Config.load(None, {"AZPROXY_PASSTHROUGH": "auto"}).passthrough is None
    assert Config.load(None, {"AZPROXY_PASSTHROUGH": "on"}).passthrough is True


def test_the_redis_password_is_never_shown() -> None:
    """In the URL, or as an env: reference in the file; repr and the URL shown
    (logs, check-config) leave it out, redaction knows it."""
    password = "s3cret-redis-password"
    from_env = Config.load(
        environ={"AZPROXY_REDIS_URL": f"rediss://:{password}@cache.example:6380/1"}
    )
    from_file = Config.load(
        environ={"REDIS_PW": password},
        file_values={"redis_url": "rediss://:env:REDIS_PW@cache.example:6380/1"},
    )
    for config in (from_env, from_file):
        url = config.redis_url
        assert url is not None
        assert url.shown == "rediss://cache.example:6380/1"
        assert url.tls
        assert url.reveal() == f"rediss://:{password}@cache.example:6380/1"
        assert password not in repr(config) and password not in str(url)
        assert password in config.secrets()


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"flags": {"redis_url": "redis://:pw@h:6379"}}, "--redis-url: a password"),
        ({"environ": {"AZPROXY_REDIS_URL": "http://h:6379"}}, "use redis://HOST"),
        ({"environ": {"AZPROXY_REDIS_URL": "redis://h/x"}}, "database number"),
        ({"environ": {"AZPROXY_REDIS_URL": "redis://:env:NOPE@h"}}, "NOPE is not"),
        ({"environ": {"AZPROXY_REDIS_PREFIX": "a{b}"}}, "no braces"),
        ({"environ": {"AZPROXY_REDIS_TIMEOUT_MS": "0"}}, "redis_timeout_ms: must"),
        ({"environ": {"AZPROXY_REDIS_FAILURE": "shut"}}, "use one of open, closed"),
    ],
)
def test_bad_redis_settings_say_what_to_change(
    sources: dict[str, dict[str, str]], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Config.load(**sources)
    assert message in str(raised.value)
    assert "pw@" not in str(raised.value)
