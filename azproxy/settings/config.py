"""Server settings.

Every setting has one name across the Config field, the config file key, the
`--flag` and the `AZPROXY_*` environment variable (`read_timeout_s`,
`--read-timeout-s`, `AZPROXY_READ_TIMEOUT_S`); units are part of the name.
Precedence: flag > environment > config file > default. Values from every
source go through the same parser, so a setting means the same wherever it is
set. Secrets (access keys, endpoint keys) have no flag: they come from the
environment or the file, where `env:NAME` references keep them out of it.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yarl import URL

from azproxy.relay.families import family_version_problems, parse_family_versions
from azproxy.settings.patterns import API_VERSION_RE
from azproxy.settings.secrets import Secret, resolve_secret
from azproxy.settings.server_side import (
    AccessKey,
    ConfigProblems,
    EndpointConfig,
    RouteConfig,
    check_api_version,
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
    unknown_keys,
)

__all__ = [
    "Config",
    "ConfigError",
    "Setting",
    "env_name",
    "flag_name",
    "load_file",
    "settings",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
SSE_COMPAT = ("openai", "raw")
DEFAULT_ENDPOINT = "default"
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
# Well below Python's recursion limit, which json.loads counts levels against.
MAX_JSON_DEPTH = 500

ConfigError = ConfigProblems
Parser = Callable[[Any, str, Mapping[str, str]], Any]


def setting(
    default: Any,
    help: str,
    *,
    flag: bool = True,
    env: bool = True,
    parser: Parser | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    metadata = {"help": help, "flag": flag, "env": env, "parser": parser}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _endpoints(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return parse_endpoints(raw, environ)


def _model_map(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return parse_model_map(raw)


def _access_keys(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return parse_access_keys(raw, environ)


def _api_version(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return check_api_version(raw, source)


def _family_versions(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return parse_family_versions(raw)


def _secret(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return resolve_secret(raw, source, environ)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    host: str = setting(
        "127.0.0.1", "Address to listen on (the container uses 0.0.0.0)."
    )
    port: int = setting(3000, "TCP port to listen on.")
    workers: int = setting(
        1,
        "Processes serving the port (Linux: each with its own SO_REUSEPORT "
        "socket); each has its own connection pool, cooldowns and breakers.",
    )
    upstream: str = setting(
        "https://{resource}.openai.azure.com",
        "Azure OpenAI base URL template; `{resource}` becomes the resource name.",
    )
    api_version: str = setting(
        "2024-10-21",
        "api-version when credentials or endpoint name none (also read from "
        "OPENAI_API_VERSION); `v1` selects Azure's v1 API.",
        parser=_api_version,
    )
    family_api_versions: Mapping[str, str] = setting(
        None,
        "Where one endpoint family goes, overriding the built-in table: "
        "family=v1 or family=VERSION, comma-separated (a table in the file), "
        "e.g. responses=v1,assistants=2025-04-01-preview.",
        parser=_family_versions,
        factory=dict,
    )
    endpoints: tuple[EndpointConfig, ...] = setting(
        (),
        "Server-side Azure endpoints ([endpoints.NAME] in the file; "
        "AZURE_OPENAI_ENDPOINT with AZURE_OPENAI_API_KEY in the environment).",
        flag=False,
        env=False,
        parser=_endpoints,
    )
    model_map: Mapping[str, tuple[RouteConfig, ...]] = setting(
        None,
        "Model name -> [endpoint/]deployment, e.g. gpt-4o=dep1,gpt-4o-mini=dep2.",
        parser=_model_map,
        factory=dict,
    )
    model_fallback: bool = setting(
        False,
        "For models not in model_map, try a deployment named like the model, "
        "then the name without dots (gpt-3.5-turbo -> gpt-35-turbo).",
    )
    access_keys: tuple[AccessKey, ...] = setting(
        (),
        "azproxy access keys clients must present when server-side credentials "
        "exist (comma list; never a flag).",
        flag=False,
        parser=_access_keys,
    )
    allow_anonymous: bool = setting(
        False, "Serve server-side credentials without access keys (an open relay!)."
    )
    passthrough: bool | None = setting(
        None,
        "Accept RESOURCE:DEPLOYMENT:KEY tokens; default: only when no server-side "
        "credentials exist.",
    )
    entra: bool = setting(
        False,
        "Authenticate the AZURE_OPENAI_ENDPOINT endpoint with Entra ID "
        "(azure-identity's DefaultAzureCredential) instead of a key.",
    )
    entra_scope: str = setting(ENTRA_SCOPE, "OAuth scope of Entra ID tokens.")
    cors_origins: tuple[str, ...] = setting(
        ("*",), "CORS origins: `*`, a comma list, or empty to disable CORS."
    )
    connect_timeout_s: float = setting(10.0, "Timeout for connecting to Azure.")
    header_timeout_s: float = setting(
        600.0,
        "Timeout until Azure sends response headers (a non-streamed answer "
        "arrives only when complete, so keep it long).",
    )
    read_timeout_s: float = setting(
        600.0, "Longest idle gap between two body chunks from Azure."
    )
    retries: int = setting(
        3, "Retries after a connection error, a 5xx or an 'overloaded' first event."
    )
    retry_delay_s: float = setting(1.0, "Pause between two retries.")
    rate_limit_cooldown_s: float = setting(
        10.0,
        "How long a deployment that answered 429 is skipped when Azure did not "
        "say (retry-after-ms, retry-after).",
    )
    error_cooldown_s: float = setting(
        2.0,
        "How long a deployment whose connection failed (refused, reset, no "
        "headers in time) is skipped.",
    )
    breaker_failures: int = setting(
        5,
        "Failures in a row (5xx answers and connection failures) that open a "
        "deployment's circuit breaker.",
    )
    breaker_open_s: float = setting(
        30.0, "How long an open breaker skips its deployment before one probe."
    )
    max_attempts: int = setting(
        3, "Deployments one request may try (server-side routing)."
    )
    max_upstream_requests: int = setting(
        1000, "Concurrent requests to Azure per process; more wait in line."
    )
    queue_timeout_s: float = setting(
        10.0, "How long a request waits for a free upstream slot (503 after)."
    )
    client_write_timeout_s: float = setting(
        60.0, "How long a client may stop reading a streamed answer."
    )
    max_header_kb: int = setting(
        16, "Largest request line or header field accepted, in KiB."
    )
    max_body_mb: float = setting(32.0, "Largest request body accepted (413 above).")
    max_upload_mb: float = setting(
        512.0,
        "Largest multipart upload accepted (audio, image edits, files; 413 above). "
        "Uploads stream through: at most the part read to find their model field "
        "(1 MiB in memory, the rest spooled to disk) is held.",
    )
    max_json_depth: int = setting(
        64,
        "Deepest nesting of arrays and objects accepted in a JSON body azproxy "
        "reads to find its model (400 body_too_complex above).",
    )
    max_json_containers: int = setting(
        100_000,
        "Most arrays and objects accepted in a JSON body azproxy reads to find "
        "its model (400 body_too_complex above).",
    )
    max_json_values: int = setting(
        1_000_000,
        "Most values (strings, numbers, members) accepted in a JSON body azproxy "
        "reads to find its model (400 body_too_complex above).",
    )
    max_buffered_body_mb: float = setting(
        256.0,
        "Request bodies this process holds in memory at once; past it a body is "
        "spooled to disk (within max_spool_mb) or refused with 503 and Retry-After. "
        "At least max_body_mb. Per process: --workers N holds up to N times this.",
    )
    max_spool_mb: float = setting(
        768.0,
        "Disk this process may use for spooled request bodies, uploads included "
        "(503 past it); sized for the 1 GiB /tmp of the shipped deployments. Per "
        "process: --workers N may use up to N times this.",
    )
    client_header_timeout_s: float = setting(
        60.0,
        "How long a client may take to send a request's headers; then the "
        "connection is closed.",
    )
    client_body_timeout_s: float = setting(
        60.0,
        "Longest pause while a client sends a request body, uploads included; "
        "then 408 and the connection is closed.",
    )
    keepalive_timeout_s: float = setting(
        75.0, "How long an idle keep-alive connection from a client stays open."
    )
    max_connections: int | None = setting(
        None,
        "Client connections per process, realtime sessions included (503 and "
        "closed above); auto: a third of the open-file limit (a client, Azure and "
        "a spool file each), raised to its hard limit at start, at most 10,000 "
        "(memory, not descriptors, bounds more).",
    )
    realtime_idle_timeout_s: float = setting(
        300.0,
        "A realtime session with no message in either direction for this long "
        "is closed.",
    )
    realtime_max_message_mb: float = setting(
        16.0,
        "Largest realtime WebSocket message relayed, in either direction (the "
        "session is closed with 1009 above).",
    )
    sse_compat: str = setting(
        "openai",
        "Chat and completion streams: `openai` drops Azure's prompt-filter and "
        "delta-less annotation chunks that strict OpenAI clients choke on; "
        "`raw` relays Azure's bytes untouched.",
    )
    shutdown_grace_s: float = setting(
        30.0, "On SIGTERM, how long requests in flight may take to finish."
    )
    log_level: str = setting("info", "Log level: debug, info, warning or error.")
    log_format: str = setting(
        "json", "Log lines as `json` (one object per line) or `text` (for humans)."
    )
    access_log: bool = setting(
        True, "One line per request on stdout (never a secret or a prompt)."
    )
    metrics_require_key: bool = setting(
        False, "GET /metrics needs an azproxy access key."
    )
    metrics_key: Secret | None = setting(
        None,
        "A secret that GET /metrics requires (Authorization: Bearer or api-key), "
        "in every mode, pass-through included (env or file only).",
        flag=False,
        parser=_secret,
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_buffered_body_bytes(self) -> int:
        return int(self.max_buffered_body_mb * 1024 * 1024)

    @property
    def max_spool_bytes(self) -> int:
        return int(self.max_spool_mb * 1024 * 1024)

    @property
    def realtime_max_message_bytes(self) -> int:
        return int(self.realtime_max_message_mb * 1024 * 1024)

    @property
    def server_side(self) -> bool:
        """Whether azproxy holds Azure credentials itself."""
        return bool(self.endpoints)

    @property
    def passthrough_allowed(self) -> bool:
        if self.passthrough is None:
            return not self.server_side
        return self.passthrough

    def endpoint(self, name: str) -> EndpointConfig | None:
        """An endpoint by name; "" names the only one, when there is one."""
        if not name and len(self.endpoints) == 1:
            return self.endpoints[0]
        return next((e for e in self.endpoints if e.name == name), None)

    def secrets(self) -> list[str]:
        """Every secret value, for redaction from logs."""
        found = [k.key for k in self.access_keys]
        if self.metrics_key is not None:
            found.append(self.metrics_key)
        for e in self.endpoints:
            found.extend(s for s in (e.api_key, e.ad_token) if s is not None)
        return [s.reveal() for s in found]

    def problems(self) -> list[str]:
        """Every problem with these values, each saying what to change."""
        found: list[str] = []
        if not 0 <= self.port <= 65535:
            found.append(f"port: {self.port} is not a TCP port (0-65535)")
        found.extend(_upstream_problems(self.upstream))
        if not API_VERSION_RE.fullmatch(self.api_version):
            found.append(
                f"api_version: {self.api_version!r} is not an Azure OpenAI "
                "api-version (use a date like 2024-10-21, optionally with "
                "-preview, or v1)"
            )
        found.extend(family_version_problems(self.family_api_versions))
        for name in ("connect_timeout_s", "header_timeout_s", "read_timeout_s"):
            if getattr(self, name) <= 0:
                found.append(f"{name}: must be greater than 0")
        if self.retries < 0:
            found.append("retries: must be 0 or more")
        for name in (
            "retry_delay_s",
            "shutdown_grace_s",
            "rate_limit_cooldown_s",
            "error_cooldown_s",
            "breaker_open_s",
            "queue_timeout_s",
        ):
            if getattr(self, name) < 0:
                found.append(f"{name}: must be 0 or more")
        for name in (
            "workers",
            "breaker_failures",
            "max_attempts",
            "max_upstream_requests",
            "max_header_kb",
        ):
            if getattr(self, name) < 1:
                found.append(f"{name}: must be 1 or more")
        for name in (
            "client_write_timeout_s",
            "client_header_timeout_s",
            "client_body_timeout_s",
            "keepalive_timeout_s",
            "realtime_idle_timeout_s",
        ):
            if getattr(self, name) <= 0:
                found.append(f"{name}: must be greater than 0")
        if not 1 <= self.max_json_depth <= MAX_JSON_DEPTH:
            found.append(
                f"max_json_depth: use 1 to {MAX_JSON_DEPTH} (Python's parser "
                "recurses once per level)"
            )
        for name in ("max_json_containers", "max_json_values"):
            if getattr(self, name) < 1:
                found.append(f"{name}: must be 1 or more")
        if self.max_connections is not None and self.max_connections < 1:
            found.append("max_connections: must be 1 or more (or auto)")
        for name in (
            "max_body_mb",
            "max_upload_mb",
            "max_buffered_body_mb",
            "max_spool_mb",
            "realtime_max_message_mb",
        ):
            if getattr(self, name) <= 0:
                found.append(f"{name}: must be greater than 0")
        if self.max_body_mb > self.max_buffered_body_mb > 0:
            # A body azproxy parses is held in memory whole: one larger than
            # the budget would get 503 and Retry-After forever.
            found.append(
                f"max_buffered_body_mb: {self.max_buffered_body_mb:g} is less than "
                f"max_body_mb ({self.max_body_mb:g}), so a JSON body azproxy must "
                "read could never be held; raise it or lower max_body_mb"
            )
        if self.sse_compat not in SSE_COMPAT:
            found.append(f"sse_compat: use one of {', '.join(SSE_COMPAT)}")
        if self.log_level not in LOG_LEVELS:
            found.append(f"log_level: use one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in ("json", "text"):
            found.append("log_format: use json or text")
        if self.metrics_key is not None and len(self.metrics_key.reveal()) < 16:
            found.append(
                "metrics_key: shorter than 16 characters; use a long random key "
                "(e.g. `openssl rand -hex 24`)"
            )
        if self.metrics_require_key and not self.access_keys:
            found.append(
                "metrics_require_key: no access keys are configured to require"
            )
        found.extend(self._routing_problems())
        return found

    def _routing_problems(self) -> list[str]:
        found: list[str] = []
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            found.append("endpoints: two endpoints have the same name")
        for model, routes in self.model_map.items():
            for route in routes:
                endpoint = self.endpoint(route.endpoint)
                if endpoint is None:
                    found.append(_missing_endpoint(model, route, names))
                elif (
                    endpoint.deployments is not None
                    and route.deployment not in endpoint.deployments
                ):
                    found.append(
                        f"model_map.{model}: deployment {route.deployment!r} is not "
                        f"in endpoints.{endpoint.name}.deployments "
                        f"({', '.join(sorted(endpoint.deployments))}); fix the name "
                        "or add it to the list"
                    )
        if (self.model_map or self.model_fallback) and not self.endpoints:
            found.append(
                "model_map: models are mapped but no endpoint is configured "
                "(set AZURE_OPENAI_ENDPOINT or add [endpoints.NAME])"
            )
        if self.model_fallback and not self.model_map and len(self.endpoints) > 1:
            found.append("model_fallback: needs a single endpoint to fall back on")
        if self.server_side and not self.access_keys and not self.allow_anonymous:
            found.append(
                "access_keys: server-side Azure credentials are configured but no "
                "access key, so anyone could spend them; set AZPROXY_ACCESS_KEYS "
                "(or access_keys in the file), or allow_anonymous = true if this "
                "is really wanted"
            )
        for key in self.access_keys:
            for model in sorted(key.models or ()):
                if model not in self.model_map and not self.model_fallback:
                    found.append(
                        f"access key {key.name!r}: model {model!r} is not in model_map"
                    )
        if self.passthrough is False and not self.server_side:
            found.append(
                "passthrough: disabled, but no server-side endpoint exists, so "
                "nothing could be served"
            )
        return found

    @classmethod
    def load(
        cls,
        flags: Mapping[str, str | None] | None = None,
        environ: Mapping[str, str] | None = None,
        file_values: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Config:
        """Build a Config from flag values, environment and config file.

        Flag values are strings keyed by setting name (None means not given);
        file values may already be typed (TOML). Overrides are typed values
        set by code (the demo mode, tests) and win over everything. Raises
        ConfigError listing every problem found, not just the first.
        """
        environ = environ or {}
        file_values = file_values or {}
        problems = unknown_keys(
            file_values, [s.name for s in settings()], "config file"
        )
        values: dict[str, Any] = {}
        for s in settings():
            raw, source = _raw_value(s, flags or {}, environ, file_values)
            if not source:
                continue
            try:
                values[s.name] = s.parse(raw, source, environ)
            except ConfigProblems as exc:
                problems.extend(exc.problems)
        try:
            endpoint = _environment_endpoint(environ, values.get("entra", False))
        except ConfigProblems as exc:
            problems.extend(exc.problems)
            endpoint = None
        if endpoint is not None and "endpoints" not in overrides:
            others = [e for e in values.get("endpoints", ()) if e.name != endpoint.name]
            values["endpoints"] = (endpoint, *others)
        if problems:
            raise ConfigError(problems)
        values.update(overrides)
        return cls(**values)


def _raw_value(
    s: Setting,
    flags: Mapping[str, str | None],
    environ: Mapping[str, str],
    file_values: Mapping[str, Any],
) -> tuple[Any, str]:
    if s.flag and flags.get(s.name) is not None:
        return flags[s.name], s.flag
    if s.env and s.env in environ:
        return environ[s.env], s.env
    # Standard Azure variable names, honoured below azproxy's own.
    if s.name == "api_version" and "OPENAI_API_VERSION" in environ:
        return environ["OPENAI_API_VERSION"], "OPENAI_API_VERSION"
    if s.name in file_values:
        return file_values[s.name], f"config key {s.name}"
    return None, ""


def _environment_endpoint(
    environ: Mapping[str, str], entra: bool
) -> EndpointConfig | None:
    """The container-friendly endpoint from AZURE_OPENAI_* variables."""
    url = environ.get("AZURE_OPENAI_ENDPOINT", "").strip()
    if not url:
        return None
    table: dict[str, Any] = {"url": url}
    if entra:
        table["entra"] = True
    elif environ.get("AZURE_OPENAI_API_KEY"):
        table["api_key"] = "env:AZURE_OPENAI_API_KEY"
    elif environ.get("AZURE_OPENAI_AD_TOKEN"):
        table["ad_token"] = "env:AZURE_OPENAI_AD_TOKEN"
    else:
        raise ConfigProblems(
            [
                "AZURE_OPENAI_ENDPOINT is set but neither AZURE_OPENAI_API_KEY, "
                "AZURE_OPENAI_AD_TOKEN nor AZPROXY_ENTRA=true says how to "
                "authenticate to it"
            ]
        )
    return parse_endpoints({DEFAULT_ENDPOINT: table}, environ)[0]


def _missing_endpoint(model: str, route: RouteConfig, names: list[str]) -> str:
    if not route.endpoint:
        return (
            f"model_map.{model}: say which endpoint serves {route.deployment!r} "
            f"as endpoint/deployment (endpoints: {', '.join(names) or 'none'})"
        )
    return (
        f"model_map.{model}: endpoint {route.endpoint!r} is not defined "
        f"(defined: {', '.join(names) or 'none'})"
    )


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; a missing or malformed file is a ConfigError."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError([f"config file {path}: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {path}: not valid TOML ({exc})"]) from None


@dataclass(frozen=True, slots=True)
class Setting:
    """One Config field with the names it has in every source."""

    name: str
    type: Any
    default: Any
    help: str
    has_flag: bool
    has_env: bool
    parser: Parser | None

    @property
    def flag(self) -> str:
        return flag_name(self.name) if self.has_flag else ""

    @property
    def env(self) -> str:
        return env_name(self.name) if self.has_env else ""

    def parse(self, raw: Any, source: str, environ: Mapping[str, str]) -> Any:
        """A raw value (a string or a typed TOML value) as this setting's type."""
        try:
            if self.parser is not None:
                return self.parser(raw, source, environ)
            return _parse_as(self.type, raw)
        except ConfigProblems:
            raise
        except (TypeError, ValueError) as exc:
            if self.parser is not None:
                raise ConfigError([str(exc)]) from None
            expected = _TYPE_WORDS.get(self.type, "a value")
            raise ConfigError([f"{source}: expected {expected}, got {raw!r}"]) from None


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return "AZPROXY_" + name.upper()


def settings() -> tuple[Setting, ...]:
    return _SETTINGS


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TYPE_WORDS = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    bool | None: "true, false or auto",
    int | None: "a whole number or auto",
    str: "a string",
    tuple[str, ...]: "a comma-separated list",
}


def _parse_as(type_: Any, raw: Any) -> Any:
    if type_ == bool | None or type_ == int | None:
        if raw is None or str(raw).strip().lower() in ("auto", ""):
            return None
        return _parse_as(bool if type_ == bool | None else int, raw)
    if type_ is bool:
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(raw)
    if type_ is int:
        if isinstance(raw, (bool, float)):
            raise TypeError(raw)
        return int(raw)
    if type_ is float:
        if isinstance(raw, bool):
            raise TypeError(raw)
        return float(raw)
    if type_ is str:
        if not isinstance(raw, str):
            raise TypeError(raw)
        return raw
    if type_ == tuple[str, ...]:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        if not all(isinstance(item, str) for item in items):
            raise TypeError(raw)
        return tuple(item.strip() for item in items if item.strip())
    raise TypeError(type_)  # pragma: no cover - every field type is listed above


def _upstream_problems(template: str) -> list[str]:
    if template.count("{resource}") > 1 or re.search(r"\{(?!resource\})", template):
        return ["upstream: the only placeholder allowed is one {resource}"]
    try:
        url = URL(template.replace("{resource}", "resource"))
    except ValueError:
        return [f"upstream: {template!r} is not a URL"]
    if url.scheme not in ("http", "https") or not url.host:
        return [
            f"upstream: {template!r} must be an http:// or https:// URL with a host"
        ]
    if url.query_string or url.fragment or url.user or url.password:
        return ["upstream: no query, fragment or credentials allowed in the URL"]
    return []


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _collect_settings() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Config)
    return tuple(
        Setting(
            f.name,
            hints[f.name],
            _default(f),
            f.metadata["help"],
            f.metadata["flag"],
            f.metadata["env"],
            f.metadata["parser"],
        )
        for f in dataclasses.fields(Config)
    )


_SETTINGS = _collect_settings()
