"""Where each setting's value comes from: flag > environment > config file >
default.

Standard Azure variables are honoured below azproxy's own: OPENAI_API_VERSION
for api_version, and AZURE_OPENAI_ENDPOINT (with AZURE_OPENAI_API_KEY,
AZURE_OPENAI_AD_TOKEN or AZPROXY_ENTRA=true) as the endpoint named "default",
the container-friendly way to configure one endpoint without a file.

An AZPROXY_* variable that names no setting is ignored, with a warning
(unknown_variables): a typo must not pass for a default.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azproxy.errors import ConfigError
from azproxy.settings.server_side import EndpointConfig, parse_endpoints, unknown_keys

if TYPE_CHECKING:
    from azproxy.settings.fields import Setting

__all__ = [
    "DEFAULT_ENDPOINT",
    "Sources",
    "load_file",
    "read_values",
    "unknown_variables",
]

DEFAULT_ENDPOINT = "default"
# Where settings come from, as Config.load takes them: flag values by setting
# name, the environment, the config file's values.
Sources = tuple[Mapping[str, Any], Mapping[str, str], Mapping[str, Any]]
PREFIX = "AZPROXY_"
# AZPROXY_* variables that are not settings: the config file's path, and the
# simulator's key (`azproxy simulate`).
OTHER_VARIABLES = ("AZPROXY_CONFIG", "AZPROXY_SIM_API_KEY")
_REFERENCE = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")


def read_values(
    settings: Sequence[Setting],
    flags: Mapping[str, str | None],
    environ: Mapping[str, str],
    file_values: Mapping[str, Any],
) -> dict[str, Any]:
    """The parsed value of every setting some source gives (the others keep
    their default). Flag values are strings keyed by setting name (None: not
    given); file values may already be typed (TOML). Raises ConfigError
    listing every problem found, not just the first."""
    problems = unknown_keys(file_values, [s.name for s in settings], "config file")
    values: dict[str, Any] = {}
    for s in settings:
        raw, source = _raw_value(s, flags, environ, file_values)
        if not source:
            continue
        try:
            values[s.name] = s.parse(raw, source, environ)
        except ConfigError as exc:
            problems.extend(exc.problems)
    try:
        endpoint = _environment_endpoint(environ, values.get("entra", False))
    except ConfigError as exc:
        problems.extend(exc.problems)
        endpoint = None
    if endpoint is not None:
        others = [e for e in values.get("endpoints", ()) if e.name != endpoint.name]
        values["endpoints"] = (endpoint, *others)
    if problems:
        raise ConfigError(problems)
    return values


def unknown_variables(
    settings: Sequence[Setting],
    environ: Mapping[str, str],
    file_values: Mapping[str, Any],
) -> list[str]:
    """A warning for each AZPROXY_* variable that is no setting, with the
    closest name, as a config file's unknown keys get. Variables a secret
    names (`env:AZPROXY_KEY_WEB`) are known."""
    known = [s.env for s in settings if s.env] + list(OTHER_VARIABLES)
    # The file's repr holds each of its strings, `env:NAME` included.
    texts = [repr(file_values)] + [environ[name] for name in known if name in environ]
    referenced = {name for text in texts for name in _REFERENCE.findall(text)}
    found = []
    # Compared without the prefix they share, which would make every name close.
    stems = [k.removeprefix(PREFIX) for k in known]
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known and name not in referenced:
            close = difflib.get_close_matches(name.removeprefix(PREFIX), stems, n=1)
            hint = f" (did you mean {PREFIX}{close[0]}?)" if close else ""
            found.append(f"environment: unknown variable {name}{hint}; it is ignored")
    return found


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; a missing or malformed file is a ConfigError."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError([f"config file {path}: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {path}: not valid TOML ({exc})"]) from None


def _raw_value(
    s: Setting,
    flags: Mapping[str, str | None],
    environ: Mapping[str, str],
    file_values: Mapping[str, Any],
) -> tuple[Any, str]:
    """The raw value and where it came from ("" when no source gives one)."""
    if s.flag and flags.get(s.name) is not None:
        return flags[s.name], s.flag
    if s.env and s.env in environ:
        return environ[s.env], s.env
    if s.name == "api_version" and "OPENAI_API_VERSION" in environ:
        return environ["OPENAI_API_VERSION"], "OPENAI_API_VERSION"
    if s.name in file_values:
        return file_values[s.name], f"config key {s.name}"
    return None, ""


def _environment_endpoint(
    environ: Mapping[str, str], entra: bool
) -> EndpointConfig | None:
    """The endpoint AZURE_OPENAI_* variables describe, if any."""
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
    elif empty := [
        name
        for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN")
        if name in environ
    ]:
        raise ConfigError(
            [
                f"AZURE_OPENAI_ENDPOINT is set but {empty[0]} is empty; give it "
                "the key (or token), or set AZPROXY_ENTRA=true"
            ]
        )
    else:
        raise ConfigError(
            [
                "AZURE_OPENAI_ENDPOINT is set but neither AZURE_OPENAI_API_KEY, "
                "AZURE_OPENAI_AD_TOKEN nor AZPROXY_ENTRA=true says how to "
                "authenticate to it"
            ]
        )
    return parse_endpoints({DEFAULT_ENDPOINT: table}, environ)[0]
