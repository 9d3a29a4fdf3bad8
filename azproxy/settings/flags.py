"""The settings as command-line flags, built from their declarations.

Every setting but a secret has a flag, with the same help text as
docs/settings.md. A true/false setting is a switch, `--access-log` and
`--no-access-log` (both leave it to the environment, the file or the default
when absent). For one release the old value form `--access-log false` still
works, rewritten by modern_switches with a deprecation warning.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

from azproxy.settings.config import settings
from azproxy.settings.fields import Setting, parse_as, shown_default

__all__ = ["add_settings_flags", "modern_switches", "secrets_help"]

_SWITCH_WORDS = {"1", "true", "yes", "on", "0", "false", "no", "off", "auto"}


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file [env AZPROXY_CONFIG]",
    )
    for s in settings():
        if not s.has_flag:
            continue
        if s.is_switch:
            parser.add_argument(
                s.flag,
                dest=s.name,
                action=argparse.BooleanOptionalAction,
                help=_help(s),
            )
        else:
            parser.add_argument(
                s.flag,
                dest=s.name,
                metavar=s.name.upper().split("_")[-1],
                help=_help(s),
            )


def _help(s: Setting) -> str:
    if s.is_switch:
        # Where the setting is not a switch (environment, file) it is a word.
        words = "true or false" if s.type is bool else "true, false or auto"
        where = f"[env {s.env}: {words}; default {shown_default(s)}]"
    else:
        where = f"[env {s.env}, default {shown_default(s)}]"
    # argparse expands %-formats in help: a literal % must be doubled.
    return f"{s.help} {where}".replace("%", "%%")


def secrets_help() -> str:
    """The settings that have no flag, with the same help as docs/settings.md."""
    lines = [
        "settings without a flag, because they are secrets (set them in the",
        "environment or the config file):",
    ]
    indent = " " * 6
    for s in settings():
        if not s.has_flag:
            lines.append(f"  {s.name}" + (f" [env {s.env}]" if s.env else ""))
            lines += textwrap.wrap(
                s.help,
                78,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
            )
    return "\n".join(lines)


def modern_switches(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """`argv` with the deprecated `--switch VALUE` and `--switch=VALUE` forms
    rewritten as `--switch` or `--no-switch` (`auto`: left out), and one
    warning for each. Anything else is left for argparse to judge."""
    switches = {s.flag: s for s in settings() if s.has_flag and s.is_switch}
    args, out, warnings = list(argv), [], []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            out += args[index - 1 :]
            break
        flag, equals, value = arg.partition("=")
        if flag not in switches:
            out.append(arg)
            continue
        if not equals and index < len(args) and args[index].lower() in _SWITCH_WORDS:
            value, index = args[index], index + 1
        elif not equals:
            out.append(arg)
            continue
        written = f"{flag} {value}"
        replacement = _switch_for(switches[flag], value)
        if replacement is None:
            out.append(arg)  # not a word for true or false: argparse says so
            continue
        out += replacement
        instead = " ".join(replacement) or "nothing (auto is the default)"
        warnings.append(
            f"`{written}` is deprecated and goes in the next release; write {instead}"
        )
    return out, warnings


def _switch_for(s: Setting, value: str) -> list[str] | None:
    """The switch that says what `--flag value` said; None if value is no
    word for true or false (or auto, where the setting has it)."""
    if value.strip().lower() == "auto":
        return None if s.type is bool else []
    try:
        on = parse_as(bool, value)
    except ValueError:
        return None
    return [s.flag] if on else ["--no-" + s.flag[2:]]
