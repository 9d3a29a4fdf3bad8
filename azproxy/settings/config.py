"""The frozen Config: every setting declared once, with its default, its
help text and the check of its value; the checks between settings; and the
values derived from them.

Every setting has one name across the Config field, the config file key, the
`--flag` and the `AZPROXY_*` environment variable (`read_timeout_s`,
`--read-timeout-s`, `AZPROXY_READ_TIMEOUT_S`); units are part of the name.
Config.load reads them: flag > environment > config file > default (load.py).
Secrets (access keys, endpoint keys, the metrics key) have no flag: they come
from the environment or the file, where `env:NAME` references keep them out
of it. docs/settings.md is generated from these declarations (table.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azproxy.errors import ConfigError
from azproxy.settings.fields import Setting, collect_settings, setting
from azproxy.settings.load import read_values
from azproxy.settings.redis_url import RedisURL, read_redis_url

# Imported to run, not only for mypy: collect_settings() reads Config's field
# types with typing.get_type_hints, which evaluates them.
from azproxy.settings.secrets import Secret  # noqa: TC001
from azproxy.settings.server_side import (  # noqa: TC001
    AccessKey,
    EndpointConfig,
    RouteConfig,
)
from azproxy.settings.values import (
    above_zero,
    api_version_form,
    auto_or_one_or_more,
    json_depth,
    long_secret,
    one_of,
    one_or_more,
    read_access_keys,
    read_api_version,
    read_endpoints,
    read_family_versions,
    read_model_map,
    read_port,
    read_secret,
    redis_prefix,
    served_families,
    tcp_port,
    upstream_template,
    zero_or_more,
)

__all__ = ["ENTRA_SCOPE", "Config", "settings"]

ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    # Listening and processes.
    host: str = setting(
        "127.0.0.1", "Address to listen on (the container uses `0.0.0.0`)."
    )
    port: int = setting(
        3000, "TCP port to listen on.", parser=read_port, check=tcp_port
    )
    workers: int = setting(
        1,
        "Processes serving the port, for several cores (Linux: each with its own "
        "`SO_REUSEPORT` socket); each has its own connection pool, and its own "
        "cooldowns, breakers and limits unless redis_url shares them.",
        check=one_or_more,
    )

    # Where requests go.
    upstream: str = setting(
        "https://{resource}.openai.azure.com",
        "Azure OpenAI base URL template: `{resource}` becomes the resource name "
        "(of a pass-through token, or an endpoint's `resource`). An http:// or "
        "https:// URL with a host and no query or credentials.",
        check=upstream_template,
    )
    api_version: str = setting(
        "2024-10-21",
        "api-version sent when neither the client's token nor the endpoint names "
        "one (`OPENAI_API_VERSION` is read too, below `AZPROXY_API_VERSION`); `v1` "
        "selects Azure's v1 API (`/openai/v1/...`, no api-version).",
        parser=read_api_version,
        check=api_version_form,
    )
    family_api_versions: Mapping[str, str] = setting(
        {},
        "Where one endpoint family goes, overriding the built-in table: "
        "`family=v1` or `family=VERSION`, comma-separated (a "
        "`[family_api_versions]` table in the file), e.g. "
        "`responses=v1,assistants=2025-04-01-preview`. A version that does not "
        "serve its family stops the start.",
        parser=read_family_versions,
        check=served_families,
    )

    # Server-side credentials and routing.
    endpoints: tuple[EndpointConfig, ...] = setting(
        (),
        "Server-side Azure endpoints: `[endpoints.NAME]` tables in the config "
        "file, or `AZURE_OPENAI_ENDPOINT` in the environment with "
        "`AZURE_OPENAI_API_KEY`, `AZURE_OPENAI_AD_TOKEN` or `AZPROXY_ENTRA=true`.",
        secret=True,
        env=False,
        parser=read_endpoints,
    )
    model_map: Mapping[str, tuple[RouteConfig, ...]] = setting(
        {},
        "Model name -> `[endpoint/]deployment`, comma-separated, e.g. "
        "`gpt-4o=dep1,gpt-4o-mini=dep2`; in the file a `[model_map]` table, "
        "where a model may list several deployments for failover.",
        parser=read_model_map,
    )
    model_fallback: bool = setting(
        False,
        "For models not in model_map, try a deployment named like the model, "
        "then the name without dots (`gpt-3.5-turbo` -> `gpt-35-turbo`); needs "
        "a single endpoint.",
    )
    access_keys: tuple[AccessKey, ...] = setting(
        (),
        "azproxy access keys clients present (`Authorization: Bearer` or "
        "`api-key`; 401 without a valid one), comma-separated, each at least 16 "
        "characters; in the file a list of keys or `{key, name, models}` tables. "
        "Required when server-side endpoints exist, unless allow_anonymous.",
        secret=True,
        parser=read_access_keys,
    )
    allow_anonymous: bool = setting(
        False,
        "Serve server-side endpoints to clients without an access key: an open "
        "relay, only safe behind your own authentication.",
    )
    passthrough: bool | None = setting(
        None,
        "Accept pass-through tokens (`RESOURCE:DEPLOYMENT:KEY`); `auto`: only "
        "when no server-side endpoint is configured.",
    )
    entra: bool = setting(
        False,
        "Authenticate to the `AZURE_OPENAI_ENDPOINT` endpoint with Entra ID "
        "(azure-identity's `DefaultAzureCredential`: managed identity, workload "
        "identity, `az login`) instead of a key.",
    )
    entra_scope: str = setting(
        ENTRA_SCOPE, "OAuth scope of the Entra ID tokens azproxy requests."
    )
    cors_origins: tuple[str, ...] = setting(
        ("*",),
        "Origins browsers may call from (CORS): `*`, a comma list, or empty to "
        "disable CORS.",
    )

    # Azure's side: timeouts, retries, failover.
    connect_timeout_s: float = setting(
        10.0,
        "Seconds to open a connection to Azure before the attempt fails "
        "(retried; 504 when no attempt connects).",
        check=above_zero,
    )
    header_timeout_s: float = setting(
        600.0,
        "Seconds until Azure sends response headers (504 after, not retried). A "
        "non-streamed answer arrives only when complete, so keep it long.",
        check=above_zero,
    )
    read_timeout_s: float = setting(
        600.0,
        "Longest pause, in seconds, between two chunks of Azure's answer: 504 "
        "before the first, an explicit error event ending a stream after it.",
        check=above_zero,
    )
    retries: int = setting(
        3,
        "Retries, retry_delay_s apart, after a connection error, a 5xx or an "
        '"overloaded" first stream event, before the answer starts; a call that '
        "creates or changes state is resent only if none of it went out. 0: "
        "never retry.",
        check=zero_or_more,
    )
    retry_delay_s: float = setting(
        1.0, "Seconds between two retries (0: at once).", check=zero_or_more
    )
    rate_limit_cooldown_s: float = setting(
        10.0,
        "Seconds a deployment that answered 429 or 408 is skipped when Azure did "
        "not say how long (`retry-after-ms`, `retry-after`).",
        check=zero_or_more,
    )
    error_cooldown_s: float = setting(
        2.0,
        "Seconds a deployment whose connection failed (refused, reset, connect "
        "timeout, no headers in time) is skipped.",
        check=zero_or_more,
    )
    breaker_failures: int = setting(
        5,
        "Failures in a row (5xx answers and connection failures) that open a "
        "deployment's circuit breaker; a success resets the count.",
        check=one_or_more,
    )
    breaker_open_s: float = setting(
        30.0,
        "Seconds an open breaker skips its deployment before a single request "
        "probes it.",
        check=zero_or_more,
    )
    exhausted_cooldown_s: float = setting(
        10.0,
        "Seconds a deployment goes after its siblings once Azure answered it "
        "with `x-ratelimit-remaining-requests: 0` (or fewer "
        "`x-ratelimit-remaining-tokens` than a request like that one needs: "
        "its body's bytes / 4), instead of finding its empty quota with a 429. "
        "Ends early when one of its answers shows some left; it is still used "
        "when no sibling can take the request. Server-side routing only. "
        "0: off.",
        check=zero_or_more,
    )
    max_attempts: int = setting(
        3,
        "Deployments one request may try with server-side routing (failover), "
        "the first included.",
        check=one_or_more,
    )
    max_upstream_requests: int = setting(
        1000,
        "Concurrent requests to Azure per process; more wait in line (see "
        "queue_timeout_s).",
        check=one_or_more,
    )
    queue_timeout_s: float = setting(
        10.0,
        "Seconds a request waits for a free upstream slot; then 503 "
        "`too_many_requests_in_flight` with `Retry-After`.",
        check=zero_or_more,
    )

    # The client's side: what a client may send, and how slowly.
    client_write_timeout_s: float = setting(
        60.0,
        "Seconds a client may stop reading a streamed answer; then its "
        "connection and Azure's are dropped.",
        check=above_zero,
    )
    max_header_kb: int = setting(
        16,
        "Largest request line or header field accepted, in KiB (400 above).",
        check=one_or_more,
    )
    max_body_mb: float = setting(
        32.0,
        "Largest request body other than a multipart upload, in MiB (413 above).",
        check=above_zero,
    )
    max_upload_mb: float = setting(
        512.0,
        "Largest multipart upload (audio, image edits, files), in MiB (413 "
        "above). Uploads stream through: at most the part read to find their "
        "`model` field is held (1 MiB in memory, the rest spooled to disk).",
        check=above_zero,
    )
    max_json_depth: int = setting(
        64,
        "Deepest nesting of arrays and objects in a JSON body azproxy reads to "
        "find its model, 1 to 500 (400 `body_too_complex` above).",
        check=json_depth,
    )
    max_json_containers: int = setting(
        100_000,
        "Most arrays and objects in a JSON body azproxy reads to find its model "
        "(400 `body_too_complex` above).",
        check=one_or_more,
    )
    max_json_values: int = setting(
        1_000_000,
        "Most values (strings, numbers, members) in a JSON body azproxy reads to "
        "find its model (400 `body_too_complex` above).",
        check=one_or_more,
    )
    max_buffered_body_mb: float = setting(
        256.0,
        "MiB of request bodies one process holds in memory at once; past it a "
        "body is spooled to disk (within max_spool_mb) or refused with 503 "
        "`server_busy` and `Retry-After`. At least max_body_mb. Per process: "
        "`--workers N` holds up to N times this.",
        check=above_zero,
    )
    max_spool_mb: float = setting(
        768.0,
        "MiB of disk one process may use for spooled request bodies, uploads "
        "included (503 `server_busy` past it); sized for the 1 GiB `/tmp` of the "
        "shipped deployments. Per process: `--workers N` may use up to N times "
        "this.",
        check=above_zero,
    )
    client_header_timeout_s: float = setting(
        60.0,
        "Seconds a client may take to send a request's headers, from the "
        "connection's start or the first byte of the next request; then 408 if "
        "part of a request arrived, and the connection is closed.",
        check=above_zero,
    )
    client_body_timeout_s: float = setting(
        60.0,
        "Longest pause, in seconds, while a client sends a request body, uploads "
        "included; then 408 and the connection is closed (nothing half-received "
        "goes to Azure).",
        check=above_zero,
    )
    keepalive_timeout_s: float = setting(
        75.0,
        "Seconds an idle keep-alive connection from a client stays open.",
        check=above_zero,
    )
    max_connections: int | None = setting(
        None,
        "Client connections per process, realtime sessions included (503 "
        "`too_many_connections` and closed above). `auto`: a third of the "
        "open-file limit (a client, Azure and a spool file each), which azproxy "
        "raises to its hard limit at start, at most 10,000 (memory, not "
        "descriptors, bounds more).",
        check=auto_or_one_or_more,
    )
    realtime_idle_timeout_s: float = setting(
        300.0,
        "Seconds a realtime session may go without a message in either "
        "direction; then it is closed.",
        check=above_zero,
    )
    realtime_max_message_mb: float = setting(
        16.0,
        "Largest realtime WebSocket message relayed in either direction, in MiB "
        "(the session is closed with 1009 above).",
        check=above_zero,
    )

    # What azproxy sends back and tells the operator.
    sse_compat: str = setting(
        "openai",
        "Chat and completion streams: `openai` drops Azure's prompt-filter and "
        "delta-less annotation chunks that strict OpenAI clients choke on, and "
        "asks Azure for the usage of streams whose client did not (its chunk "
        "removed again); `raw` relays Azure's bytes untouched, and a stream's "
        "usage is then known only when the client asks for it.",
        check=one_of("openai", "raw"),
    )
    shutdown_grace_s: float = setting(
        30.0,
        "On SIGTERM, seconds requests in flight (streams included) may take to "
        "finish; a stream still running then ends with an explicit error event.",
        check=zero_or_more,
    )
    log_level: str = setting(
        "info",
        "Log level: `debug`, `info`, `warning` or `error`.",
        check=one_of("debug", "info", "warning", "error"),
    )
    log_format: str = setting(
        "auto",
        "Log and access-log lines as `json` (one object per line) or `text` (for "
        "humans); `auto`: text on a terminal, JSON otherwise (each of stdout, "
        "the access log, and stderr, the application log, on its own).",
        check=one_of("auto", "json", "text"),
    )
    access_log: bool = setting(
        True, "One line per request on stdout (never a secret or a prompt)."
    )
    metrics_require_key: bool = setting(
        False, "`GET /metrics` needs an azproxy access key (401 without)."
    )
    metrics_key: Secret | None = setting(
        None,
        "A secret `GET /metrics` requires (`Authorization: Bearer` or `api-key`; "
        "401 without), in every mode, pass-through included; at least 16 "
        "characters.",
        secret=True,
        parser=read_secret,
        check=long_secret,
    )

    # Shared state: a fleet of processes acting as one (docs/fleet.md).
    redis_url: RedisURL | None = setting(
        None,
        "Redis that every azproxy process of a fleet shares deployment state "
        "through (cooldowns, breakers): `redis://HOST:PORT/DB`, or "
        "`rediss://...` for TLS with the certificate checked. A password in the "
        "URL, or as a reference: `rediss://:env:REDIS_PASSWORD@HOST:6380`; never "
        "shown. Without it (or `none`) each process, each of `--workers N` too, "
        "keeps its own.",
        parser=read_redis_url,
    )
    redis_prefix: str = setting(
        "azproxy",
        "Start of every Redis key and channel azproxy uses, so that several "
        "fleets can share one Redis: letters, digits and `-_.:`.",
        check=redis_prefix,
    )
    redis_timeout_ms: int = setting(
        100,
        "Milliseconds every Redis operation may take; then Redis counts as away "
        "and azproxy goes on with local state until it is back.",
        check=one_or_more,
    )
    redis_lease_s: int = setting(
        30,
        "Seconds a concurrency slot (max_concurrent) counted in Redis outlives "
        "the process holding it: a process that dies mid-stream gives its "
        "slots back after this long. Live slots are renewed every third of it.",
        check=one_or_more,
    )
    redis_failure: str = setting(
        "open",
        "While Redis is away: `open` serves every key on local state; `closed` "
        "refuses keys that have a token quota (503) until it is back.",
        check=one_of("open", "closed"),
    )

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    @classmethod
    def load(
        cls,
        flags: Mapping[str, str | None] | None = None,
        environ: Mapping[str, str] | None = None,
        file_values: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Config:
        """Build a Config from flag values, environment and config file
        (read_values says how). Overrides are typed values set by code (the
        demo mode, tests) and win over everything. Raises ConfigError listing
        every problem found, not just the first."""
        values = read_values(settings(), flags or {}, environ or {}, file_values or {})
        return cls(**(values | overrides))

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MIB)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def max_buffered_body_bytes(self) -> int:
        return int(self.max_buffered_body_mb * MIB)

    @property
    def max_spool_bytes(self) -> int:
        return int(self.max_spool_mb * MIB)

    @property
    def realtime_max_message_bytes(self) -> int:
        return int(self.realtime_max_message_mb * MIB)

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
        if self.redis_url is not None and self.redis_url.password is not None:
            found.append(self.redis_url.password)
        return [s.reveal() for s in found]

    def warnings(self) -> list[str]:
        """What is allowed but probably not meant, each saying why and what
        to change: said at start (serve) and by check-config."""
        found = []
        if self.server_side and not self.access_keys:  # allow_anonymous
            found.append(
                "allow_anonymous = true: anyone who can reach this port can use "
                "the configured Azure credentials"
            )
        if self.server_side and not self.model_map and not self.model_fallback:
            found.append(
                "model_map: endpoints are configured but no model is mapped to a "
                "deployment, so every request naming a model will fail (400 "
                "model_not_found); set AZPROXY_MODEL_MAP (e.g. "
                "gpt-4o=my-gpt-4o-deployment) or a [model_map] table, or "
                "model_fallback = true to use deployments named like the models"
            )
        return found

    def problems(self) -> list[str]:
        """Every problem with these values, each saying what to change: each
        setting's own check (declared with it), then those between settings."""
        found = [p for s in settings() for p in s.problems(getattr(self, s.name))]
        if self.max_body_mb > self.max_buffered_body_mb > 0:
            # A body azproxy parses is held in memory whole: one larger than
            # the budget would get 503 and Retry-After forever.
            found.append(
                f"max_buffered_body_mb: {self.max_buffered_body_mb:g} is less than "
                f"max_body_mb ({self.max_body_mb:g}), so a JSON body azproxy must "
                "read could never be held; raise it or lower max_body_mb"
            )
        if self.metrics_require_key and not self.access_keys:
            found.append(
                "metrics_require_key: no access keys are configured to require"
            )
        found.extend(self._routing_problems())
        return found

    def _routing_problems(self) -> list[str]:
        """Whether endpoints, model map, access keys and modes fit together."""
        found: list[str] = []
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            found.append("endpoints: two endpoints have the same name")
        for model, routes in self.model_map.items():
            found.extend(self._route_problems(model, routes, names))
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

    def _route_problems(
        self, model: str, routes: tuple[RouteConfig, ...], names: list[str]
    ) -> list[str]:
        found = []
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
        return found


def settings() -> tuple[Setting, ...]:
    """Every setting, in declaration order."""
    return _SETTINGS


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


_SETTINGS = collect_settings(Config)
