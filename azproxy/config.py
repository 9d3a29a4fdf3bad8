"""Server settings.

Every setting has one name across the Config field, the config file key, the
`--flag` and the `AZPROXY_*` environment variable (`read_timeout_s`,
`--read-timeout-s`, `AZPROXY_READ_TIMEOUT_S`); units are part of the name.
Precedence: flag > environment > config file > default. Values from every
source go through the same parser, so a setting means the same wherever it is set.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

__all__ = [
    "API_VERSION_RE",
    "Config",
    "ConfigError",
    "Setting",
    "env_name",
    "flag_name",
    "settings",
]

# Dated GA or preview versions, or Azure's version-less v1 API.
API_VERSION_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:-preview)?|v1")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


def setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    host: str = setting(
        "127.0.0.1", "Address to listen on (the container uses 0.0.0.0)."
    )
    port: int = setting(3000, "TCP port to listen on.")
    upstream: str = setting(
        "https://{resource}.openai.azure.com",
        "Azure OpenAI base URL template; `{resource}` becomes the resource name.",
    )
    api_version: str = setting(
        "2024-10-21",
        "api-version used when the credentials name none; `v1` selects Azure's v1 API.",
    )
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
    max_body_mb: float = setting(32.0, "Largest request body accepted (413 above).")
    shutdown_grace_s: float = setting(
        30.0, "On SIGTERM, how long requests in flight may take to finish."
    )
    log_level: str = setting("info", "Log level: debug, info, warning or error.")

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def problems(self) -> list[str]:
        """Every problem with these values, each saying what to change."""
        found: list[str] = []
        if not 0 <= self.port <= 65535:
            found.append(f"port: {self.port} is not a TCP port (0-65535)")
        found.extend(_upstream_problems(self.upstream))
        if not API_VERSION_RE.fullmatch(self.api_version):
            found.append(
                f"api_version: {self.api_version!r} is not an Azure OpenAI api-version "
                "(use a date like 2024-10-21, optionally with -preview, or v1)"
            )
        for name in ("connect_timeout_s", "header_timeout_s", "read_timeout_s"):
            if getattr(self, name) <= 0:
                found.append(f"{name}: must be greater than 0")
        if self.retries < 0:
            found.append("retries: must be 0 or more")
        if self.retry_delay_s < 0:
            found.append("retry_delay_s: must be 0 or more")
        if self.shutdown_grace_s < 0:
            found.append("shutdown_grace_s: must be 0 or more")
        if self.max_body_mb <= 0:
            found.append("max_body_mb: must be greater than 0")
        if self.log_level not in LOG_LEVELS:
            found.append(f"log_level: use one of {', '.join(LOG_LEVELS)}")
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
        set by code (the demo mode, tests) and win over everything.
        """
        values: dict[str, Any] = {}
        for s in settings():
            raw: Any = None
            source = ""
            if flags and flags.get(s.name) is not None:
                raw, source = flags[s.name], s.flag
            elif environ and s.env in environ:
                raw, source = environ[s.env], s.env
            elif file_values and s.name in file_values:
                raw, source = file_values[s.name], f"config key {s.name}"
            if source:
                values[s.name] = s.parse(raw, source)
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Setting:
    """One Config field with the names it has in every source."""

    name: str
    type: Any
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return flag_name(self.name)

    @property
    def env(self) -> str:
        return env_name(self.name)

    def parse(self, raw: Any, source: str) -> Any:
        """Turn a raw value (a string or a typed TOML value) into this type."""
        try:
            return _parse_as(self.type, raw)
        except (TypeError, ValueError):
            expected = _TYPE_WORDS.get(self.type, "a value")
            raise ConfigError(f"{source}: expected {expected}, got {raw!r}") from None


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
    str: "a string",
    tuple[str, ...]: "a comma-separated list",
}


def _parse_as(type_: Any, raw: Any) -> Any:
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


def _collect_settings() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Config)
    return tuple(
        Setting(f.name, hints[f.name], f.default, f.metadata["help"])
        for f in dataclasses.fields(Config)
    )


_SETTINGS = _collect_settings()
