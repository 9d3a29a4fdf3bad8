"""What a setting's value may be: the parsers of structured settings and the
checks of single values, named in the declarations (config.py).

A check gets the setting's name and its typed value and returns one line per
problem, each saying what to change; an empty list means the value is fine.
Checks that involve several settings are Config's own (Config.problems).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from yarl import URL

from azproxy.relay.families import family_version_problems, parse_family_versions
from azproxy.settings.fields import Check, parse_as
from azproxy.settings.patterns import API_VERSION_RE
from azproxy.settings.secrets import Secret, resolve_secret
from azproxy.settings.server_side import (
    check_api_version,
    parse_access_keys,
    parse_endpoints,
    parse_model_map,
)

__all__ = [
    "MAX_JSON_DEPTH",
    "MIN_SECRET_LENGTH",
    "above_zero",
    "api_version_form",
    "auto_or_one_or_more",
    "json_depth",
    "long_secret",
    "one_of",
    "one_or_more",
    "read_access_keys",
    "read_api_version",
    "read_endpoints",
    "read_family_versions",
    "read_model_map",
    "read_port",
    "read_secret",
    "redis_prefix",
    "served_families",
    "tcp_port",
    "upstream_template",
    "zero_or_more",
]

# Well below Python's recursion limit, which json.loads counts levels against.
MAX_JSON_DEPTH = 500
MIN_SECRET_LENGTH = 16


# Parsers: (raw, source, environ) -> value, adapting server_side's parsers.


def read_endpoints(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return parse_endpoints(raw, environ)


def read_model_map(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return parse_model_map(raw)


def read_access_keys(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return parse_access_keys(raw, environ)


def read_api_version(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return check_api_version(raw, source)


def read_family_versions(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return parse_family_versions(raw)


def read_secret(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    return resolve_secret(raw, source, environ)


def read_port(raw: Any, source: str, environ: Mapping[str, str]) -> Any:
    if isinstance(raw, str) and raw.startswith("tcp://"):
        # Kubernetes' service links: a Service named azproxy gives every pod
        # after it AZPROXY_PORT=tcp://IP:PORT (and AZPROXY_SERVICE_HOST...).
        raise ValueError(
            f"{source}: {raw!r} is the address Kubernetes gives a Service named "
            "azproxy, not a port; set enableServiceLinks: false in the pod spec"
        )
    try:
        return parse_as(int, raw)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: expected a whole number, got {raw!r}") from None


# Checks of one value: (name, value) -> problems.


def above_zero(name: str, value: float) -> list[str]:
    return [] if value > 0 else [f"{name}: must be greater than 0"]


def zero_or_more(name: str, value: float) -> list[str]:
    return [] if value >= 0 else [f"{name}: must be 0 or more"]


def one_or_more(name: str, value: float) -> list[str]:
    return [] if value >= 1 else [f"{name}: must be 1 or more"]


def auto_or_one_or_more(name: str, value: int | None) -> list[str]:
    if value is None or value >= 1:
        return []
    return [f"{name}: must be 1 or more (or auto)"]


def one_of(*choices: str) -> Check:
    def check(name: str, value: str) -> list[str]:
        return [] if value in choices else [f"{name}: use one of {', '.join(choices)}"]

    return check


def tcp_port(name: str, value: int) -> list[str]:
    return (
        [] if 0 <= value <= 65535 else [f"{name}: {value} is not a TCP port (0-65535)"]
    )


def api_version_form(name: str, value: str) -> list[str]:
    if API_VERSION_RE.fullmatch(value):
        return []
    return [
        f"{name}: {value!r} is not an Azure OpenAI api-version (use a date like "
        "2024-10-21, optionally with -preview, or v1)"
    ]


def served_families(name: str, value: Mapping[str, str]) -> list[str]:
    return family_version_problems(value)


def json_depth(name: str, value: int) -> list[str]:
    if 1 <= value <= MAX_JSON_DEPTH:
        return []
    return [
        f"{name}: use 1 to {MAX_JSON_DEPTH} (Python's parser recurses once per level)"
    ]


def long_secret(name: str, value: Secret | None) -> list[str]:
    if value is None or len(value.reveal()) >= MIN_SECRET_LENGTH:
        return []
    return [
        f"{name}: shorter than {MIN_SECRET_LENGTH} characters; use a long random "
        "key (e.g. `openssl rand -hex 24`)"
    ]


def upstream_template(name: str, template: str) -> list[str]:
    """An http(s) URL with a host, where `{resource}` may appear once."""
    if template.count("{resource}") > 1 or re.search(r"\{(?!resource\})", template):
        return [f"{name}: the only placeholder allowed is one {{resource}}"]
    try:
        url = URL(template.replace("{resource}", "resource"))
    except ValueError:
        return [f"{name}: {template!r} is not a URL"]
    if url.scheme not in ("http", "https") or not url.host:
        return [f"{name}: {template!r} must be an http:// or https:// URL with a host"]
    if url.query_string or url.fragment or url.user or url.password:
        return [f"{name}: no query, fragment or credentials allowed in the URL"]
    return []


_REDIS_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def redis_prefix(name: str, value: str) -> list[str]:
    # No braces: a `{...}` in a key name is Redis Cluster's hash tag, which
    # azproxy places itself (fleet/names.py).
    if _REDIS_PREFIX.fullmatch(value):
        return []
    return [f"{name}: use 1 to 64 letters, digits or -_.: (no braces)"]
