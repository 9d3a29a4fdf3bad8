"""Server-side credentials and routing, as settings: endpoints, the model map
and access keys. Pure parsing; each parser raises ConfigError listing every
problem it found, each saying what to change.

Config file form (TOML)::

    [endpoints.sweden]
    resource = "my-sweden"            # or url = "https://gw.example.com"
    api_key = "env:AZURE_KEY_SWEDEN"  # or entra = true, or ad_token = "env:..."
    api_version = "2024-10-21"        # a string: quote it
    deployments = ["gpt-4o", "mini"]  # optional: names that exist there

    [model_map]
    "gpt-4o-mini" = "sweden/mini"     # endpoint/deployment
    "gpt-4o" = [                      # several deployments: failover and spread
      { endpoint = "sweden", deployment = "gpt-4o", priority = 1, weight = 2 },
      { endpoint = "east", deployment = "gpt-4o", priority = 2 },
    ]

    access_keys = ["env:KEY_A", { key = "env:KEY_B", models = ["gpt-4o-mini"] }]
    # Limits per key (all optional; a named key only):
    # { key = "env:KEY_C", name = "team-c", rpm = 600, tpm = 200000,
    #   max_concurrent = 20, token_quota = 5000000, token_quota_period = "day" }

Environment form: AZPROXY_MODEL_MAP="gpt-4o=dep1,gpt-4o-mini=sweden/dep2",
AZPROXY_ACCESS_KEYS="key1,key2"; the endpoint comes from AZURE_OPENAI_ENDPOINT.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from azproxy.errors import ConfigError
from azproxy.settings.patterns import (
    API_VERSION_RE,
    DEPLOYMENT_RE,
    MODEL_RE,
    RESOURCE_RE,
)
from azproxy.settings.secrets import Secret, resolve_secret

__all__ = [
    "KEY_NAME_RE",
    "LIMIT_FIELDS",
    "QUOTA_PERIODS",
    "RESERVED_KEY_NAMES",
    "AccessKey",
    "EndpointConfig",
    "Limits",
    "RouteConfig",
    "check_api_version",
    "parse_access_keys",
    "parse_endpoints",
    "parse_model_map",
    "unknown_keys",
    "upstream_base",
]

MIN_ACCESS_KEY_LENGTH = 16


def upstream_base(template: str, resource: str) -> str:
    """The Azure base URL for a resource: the upstream setting's template
    with `{resource}` expanded (the one place that does it, for pass-through
    tokens and configured endpoints alike). The name was validated
    beforehand."""
    return template.replace("{resource}", resource).rstrip("/")


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One Azure OpenAI resource (or gateway) and how to authenticate to it."""

    name: str
    resource: str | None = None
    url: str | None = None
    api_key: Secret | None = None
    ad_token: Secret | None = None
    entra: bool = False
    api_version: str | None = None  # None: the global api_version
    deployments: frozenset[str] | None = None  # None: not declared

    def base_url(self, template: str) -> str:
        """Its url, or the upstream template expanded for its resource."""
        if self.url is not None:
            return self.url
        assert self.resource is not None
        return upstream_base(template, self.resource)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """A model served by one deployment on one endpoint."""

    endpoint: str  # "" means the only endpoint there is
    deployment: str
    priority: int = 1  # lower is preferred
    weight: float = 1.0  # share among deployments of the same priority


# A key's name is a metric label and (with Redis, issue 12) part of the
# counters' key names: short, printable, no spaces, braces or colons.
KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# What metrics call the callers that present no access key.
RESERVED_KEY_NAMES = frozenset({"anonymous", "passthrough"})
LIMIT_FIELDS = ("rpm", "tpm", "max_concurrent", "token_quota")
QUOTA_PERIODS = ("hour", "day", "week", "month")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one access key (by name) may use; None: no such limit."""

    name: str  # the counters' identity: entries with one name share them
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute
    max_concurrent: int | None = None  # requests (and realtime sessions) at once
    token_quota: int | None = None  # tokens per token_quota_period
    token_quota_period: str = "month"  # hour, day, week (from Monday) or month, UTC

    def describe(self) -> str:
        """`rpm 600, tpm 200000, ...`: what check-config prints."""
        parts = [
            f"{field} {value}"
            for field in LIMIT_FIELDS
            if (value := getattr(self, field)) is not None
        ]
        if self.token_quota is not None:
            parts[-1] += f" per {self.token_quota_period} (UTC)"
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class AccessKey:
    key: Secret
    name: str
    models: frozenset[str] | None = None  # None: every model
    limits: Limits | None = None  # None: no limit at all (nothing counted)


def unknown_keys(
    table: Mapping[str, Any], known: Iterable[str], where: str
) -> list[str]:
    known = list(known)
    problems = []
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}: unknown key {key!r}{hint}")
    return problems


def check_api_version(raw: Any, where: str) -> str:
    """A valid api-version string, or ValueError telling how to write it."""
    if isinstance(raw, datetime.date | int | float) and not isinstance(raw, bool):
        kind = "date" if isinstance(raw, datetime.date) else "number"
        raise ValueError(
            f"{where}: TOML read {raw} as a {kind}, not text; "
            f'quote it: api_version = "{raw}"'
        )
    if not isinstance(raw, str) or not API_VERSION_RE.fullmatch(raw):
        raise ValueError(
            f"{where}: {raw!r} is not an Azure OpenAI api-version "
            "(use a date like 2024-10-21, optionally with -preview, or v1)"
        )
    return raw


ENDPOINT_KEYS = (
    "resource",
    "url",
    "api_key",
    "ad_token",
    "entra",
    "api_version",
    "deployments",
)


def parse_endpoints(raw: Any, environ: Mapping[str, str]) -> tuple[EndpointConfig, ...]:
    if not isinstance(raw, Mapping):
        raise ConfigError(["endpoints: expected a table of [endpoints.NAME] tables"])
    endpoints, problems = [], []
    for name, table in raw.items():
        try:
            endpoints.append(_endpoint(str(name), table, environ))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return tuple(endpoints)


def _endpoint(name: str, table: Any, environ: Mapping[str, str]) -> EndpointConfig:
    where = f"endpoints.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError([f"{where}: expected a table"])
    problems = unknown_keys(table, ENDPOINT_KEYS, where)
    resource, url = table.get("resource"), table.get("url")
    if (resource is None) == (url is None):
        problems.append(
            f'{where}: set exactly one of resource = "NAME" or url = "https://..."'
        )
    if resource is not None and not (
        isinstance(resource, str) and RESOURCE_RE.fullmatch(resource)
    ):
        problems.append(
            f"{where}.resource: {resource!r} is not a resource name "
            "(1-64 letters, digits or inner hyphens; the xxx of xxx.openai.azure.com)"
        )
    if url is not None:
        try:
            parsed = URL(str(url))
            valid = parsed.scheme in ("http", "https") and bool(parsed.host)
        except ValueError:
            valid = False
        if not valid or parsed.query_string or parsed.user:
            problems.append(f"{where}.url: {url!r} must be an http(s) URL with a host")
        url = str(url).rstrip("/")
    secrets: dict[str, Secret | None] = {"api_key": None, "ad_token": None}
    for key in secrets:
        if key in table:
            try:
                secrets[key] = resolve_secret(table[key], f"{where}.{key}", environ)
            except ValueError as exc:
                problems.append(str(exc))
    entra = table.get("entra", False)
    if not isinstance(entra, bool):
        problems.append(f"{where}.entra: expected true or false")
    given = [k for k in ("api_key", "ad_token", "entra") if table.get(k)]
    if len(given) != 1:
        problems.append(
            f"{where}: set exactly one of api_key, ad_token or entra = true "
            f"(found {', '.join(given) or 'none'})"
        )
    version = None
    if "api_version" in table:
        try:
            version = check_api_version(table["api_version"], f"{where}.api_version")
        except ValueError as exc:
            problems.append(str(exc))
    deployments = table.get("deployments")
    if deployments is not None:
        if not isinstance(deployments, list) or not all(
            isinstance(d, str) and DEPLOYMENT_RE.fullmatch(d) for d in deployments
        ):
            problems.append(f"{where}.deployments: expected a list of deployment names")
            deployments = None
        else:
            deployments = frozenset(deployments)
    if problems:
        raise ConfigError(problems)
    return EndpointConfig(
        name=name,
        resource=resource,
        url=url,
        api_key=secrets["api_key"],
        ad_token=secrets["ad_token"],
        entra=bool(entra),
        api_version=version,
        deployments=deployments,
    )


def parse_model_map(raw: Any) -> dict[str, tuple[RouteConfig, ...]]:
    """From a TOML table or the env form `model=[endpoint/]deployment,...`."""
    if isinstance(raw, str):
        table: dict[str, Any] = {}
        problems = []
        for pair in filter(None, (p.strip() for p in raw.split(","))):
            model, sep, target = pair.partition("=")
            if not sep:
                problems.append(f"model_map: {pair!r} is not model=deployment")
                continue
            table.setdefault(model.strip(), []).append(target.strip())
        if problems:
            raise ConfigError(problems)
        raw = table
    if not isinstance(raw, Mapping):
        raise ConfigError(["model_map: expected a table of model = deployment"])
    routes: dict[str, tuple[RouteConfig, ...]] = {}
    problems = []
    for model, spec in raw.items():
        where = f"model_map.{model}"
        if not MODEL_RE.fullmatch(str(model)):
            problems.append(f"{where}: {model!r} is not a model name")
            continue
        entries = spec if isinstance(spec, list) else [spec]
        parsed = []
        for entry in entries:
            try:
                parsed.append(_route(entry, where))
            except ValueError as exc:
                problems.append(str(exc))
        if not entries:
            problems.append(f"{where}: needs at least one deployment")
        routes[str(model)] = tuple(parsed)
    if problems:
        raise ConfigError(problems)
    return routes


def _route(entry: Any, where: str) -> RouteConfig:
    if isinstance(entry, str):
        endpoint_name, _, name = entry.rpartition("/")
        entry = {"endpoint": endpoint_name, "deployment": name}
    if not isinstance(entry, Mapping):
        raise ValueError(f'{where}: expected "[endpoint/]deployment" or a table')
    problems = unknown_keys(
        entry, ("endpoint", "deployment", "priority", "weight"), where
    )
    if problems:
        raise ValueError("; ".join(problems))
    deployment = entry.get("deployment")
    if not isinstance(deployment, str) or not DEPLOYMENT_RE.fullmatch(deployment):
        raise ValueError(
            f"{where}: deployment {deployment!r} is invalid: 1-64 letters, digits, "
            "'-', '_' or '.', starting with a letter or digit"
        )
    priority, weight = entry.get("priority", 1), entry.get("weight", 1)
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise ValueError(f"{where}: priority must be a whole number, 0 or more")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise ValueError(f"{where}: weight must be a number greater than 0")
    return RouteConfig(str(entry.get("endpoint") or ""), deployment, priority, weight)


ACCESS_KEY_FIELDS = ("key", "name", "models", *LIMIT_FIELDS, "token_quota_period")


def parse_access_keys(raw: Any, environ: Mapping[str, str]) -> tuple[AccessKey, ...]:
    """From a TOML list (strings or {key, name, models, limits...} tables) or
    `key1,key2`."""
    entries = raw
    if isinstance(raw, str):
        entries = [k.strip() for k in raw.split(",") if k.strip()]
    if not isinstance(entries, list):
        raise ConfigError(["access_keys: expected a list of keys"])
    keys, problems = [], []
    for index, entry in enumerate(entries, 1):
        where = f"access_keys #{index}"
        table = entry if isinstance(entry, Mapping) else {"key": entry}
        found = unknown_keys(table, ACCESS_KEY_FIELDS, where)
        try:
            key = resolve_secret(table.get("key"), where, environ)
        except ValueError as exc:
            problems.extend([*found, str(exc)])
            continue
        if len(key.reveal()) < MIN_ACCESS_KEY_LENGTH:
            found.append(
                f"{where}: shorter than {MIN_ACCESS_KEY_LENGTH} characters; "
                "use a long random key (e.g. `openssl rand -hex 24`)"
            )
        models = table.get("models")
        if models is not None and not (
            isinstance(models, list) and all(isinstance(m, str) for m in models)
        ):
            found.append(f"{where}.models: expected a list of model names")
        elif models == []:
            found.append(
                f"{where}.models: an empty list would allow no model; name the "
                "models, or leave models out to allow every model"
            )
        named = table.get("name")
        if named is not None and not (
            isinstance(named, str) and KEY_NAME_RE.fullmatch(named)
        ):
            found.append(
                f"{where}.name: {named!r} is not a key name (1-64 letters, digits, "
                "'-', '_' or '.', starting with a letter or digit)"
            )
        elif named in RESERVED_KEY_NAMES:
            found.append(
                f"{where}.name: {named!r} is what metrics call callers without "
                "an access key; choose another name"
            )
        name = named if isinstance(named, str) else f"key-{index}"
        limits = _limits(table, name, where, found)
        problems.extend(found)
        allowed = frozenset(models) if isinstance(models, list) else None
        keys.append(AccessKey(key, name, allowed, limits))
    problems.extend(_shared_name_problems(keys))
    if problems:
        raise ConfigError(problems)
    return tuple(keys)


def _limits(
    table: Mapping[str, Any], name: str, where: str, problems: list[str]
) -> Limits | None:
    """The entry's limits (None without any), each a whole number above 0."""
    values: dict[str, int] = {}
    for field in LIMIT_FIELDS:
        value = table.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{where}.{field}: expected a whole number above 0")
        else:
            values[field] = value
    period = table.get("token_quota_period")
    if period is not None and "token_quota" not in table:
        problems.append(
            f"{where}.token_quota_period: set only with token_quota "
            "(the tokens allowed per period)"
        )
    elif period is not None and period not in QUOTA_PERIODS:
        problems.append(
            f"{where}.token_quota_period: {period!r} is not one of "
            f"{', '.join(QUOTA_PERIODS)}"
        )
    if not values:
        return None
    if "name" not in table:
        # Metrics and the counters are keyed by name: a number that moves
        # when a key is added above it would lose a key's counts.
        problems.append(
            f'{where}: a key with limits needs a name (name = "team-a"), which '
            "its counters and metrics use"
        )
    return Limits(
        name,
        rpm=values.get("rpm"),
        tpm=values.get("tpm"),
        max_concurrent=values.get("max_concurrent"),
        token_quota=values.get("token_quota"),
        token_quota_period=period if period in QUOTA_PERIODS else "month",
    )


def _shared_name_problems(keys: list[AccessKey]) -> list[str]:
    """Entries may share a name (a key being rotated: old and new count as
    one); then they share counters, so their limits must be the same."""
    problems, first = [], dict[str, AccessKey]()
    for key in keys:
        seen = first.setdefault(key.name, key)
        if seen is not key and seen.limits != key.limits:
            problems.append(
                f"access key {key.name!r}: two entries with this name have "
                "different limits; entries sharing a name share their counters, "
                "so give them the same limits or different names"
            )
    return problems
