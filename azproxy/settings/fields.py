"""What a setting is: one declaration, its names in every source, and how a
raw value becomes the setting's type.

Each Config field is declared once with setting(default, help, ...). The
field's name is its config file key; its `--flag` and `AZPROXY_*` variable
follow from that name (flag_name, env_name), so a setting has one name
everywhere. The help text is the setting's only description: `azproxy serve
--help` and docs/settings.md both show it. A raw value is a string (flag,
environment) or a typed TOML value (file); both go through the same parser,
so a setting means the same wherever it is set.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azproxy.errors import ConfigError

__all__ = [
    "Check",
    "Parser",
    "Setting",
    "collect_settings",
    "env_name",
    "flag_name",
    "parse_as",
    "setting",
    "shown_default",
]

# (raw value, where it came from, environment) -> typed value; raises
# ValueError, TypeError or ConfigError.
Parser = Callable[[Any, str, Mapping[str, str]], Any]
# (setting name, typed value) -> problem lines, each saying what to change.
Check = Callable[[str, Any], list[str]]


def setting(
    default: Any,
    help: str,
    *,
    secret: bool = False,
    env: bool = True,
    parser: Parser | None = None,
    check: Check | None = None,
) -> Any:
    """Declare a Config field.

    secret: never a flag value (a command line shows in `ps` and shell
    history); it comes from the environment or the file. env=False: no
    AZPROXY_* variable (the setting has its own environment form). A dict
    default is copied for each Config.
    """
    metadata = dict(help=help, secret=secret, env=env, parser=parser, check=check)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class Setting:
    """One Config field with the names it has in every source."""

    name: str
    type: Any
    default: Any
    help: str
    secret: bool
    has_env: bool
    parser: Parser | None
    check: Check | None

    @property
    def has_flag(self) -> bool:
        return not self.secret

    @property
    def flag(self) -> str:
        return flag_name(self.name) if self.has_flag else ""

    @property
    def is_switch(self) -> bool:
        """True or false (or auto): `--name` and `--no-name` on the command line."""
        return self.type is bool or self.type == bool | None

    @property
    def env(self) -> str:
        return env_name(self.name) if self.has_env else ""

    def parse(self, raw: Any, source: str, environ: Mapping[str, str]) -> Any:
        """A raw value (a string or a typed TOML value) as this setting's type."""
        try:
            if self.parser is not None:
                return self.parser(raw, source, environ)
            return parse_as(self.type, raw)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            if self.parser is not None:
                raise ConfigError([str(exc)]) from None
            expected = _TYPE_WORDS.get(self.type, "a value")
            raise ConfigError([f"{source}: expected {expected}, got {raw!r}"]) from None

    def problems(self, value: Any) -> list[str]:
        """What is wrong with this typed value on its own."""
        return self.check(self.name, value) if self.check is not None else []


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return "AZPROXY_" + name.upper()


def collect_settings(cls: type[Any]) -> tuple[Setting, ...]:
    """The settings of a dataclass whose fields are all declared by setting()."""
    hints = typing.get_type_hints(cls)
    return tuple(
        Setting(
            f.name,
            hints[f.name],
            _default(f),
            f.metadata["help"],
            f.metadata["secret"],
            f.metadata["env"],
            f.metadata["parser"],
            f.metadata["check"],
        )
        for f in dataclasses.fields(cls)
    )


def shown_default(s: Setting) -> str:
    """The default as a user would write it (`--help` and docs/settings.md)."""
    value = s.default
    if value is None:
        # Where the parser accepts `auto`, None means "azproxy decides".
        return "auto" if s.type in _OPTIONAL_TYPES else "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_OPTIONAL_TYPES = (bool | None, int | None)
_TYPE_WORDS = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    bool | None: "true, false or auto",
    int | None: "a whole number or auto",
    str: "a string",
    tuple[str, ...]: "a comma-separated list",
}


def parse_as(type_: Any, raw: Any) -> Any:
    """A string or TOML value as `type_`; TypeError or ValueError if it is not."""
    if type_ in _OPTIONAL_TYPES:
        if raw is None or str(raw).strip().lower() in ("auto", ""):
            return None
        return parse_as(bool if type_ == bool | None else int, raw)
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


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default
