"""docs/settings.md, generated from the setting declarations (config.py):

    python -m azproxy.settings.table > docs/settings.md

tests/test_docs.py fails while the committed page differs from this output,
so a default or a help text cannot drift from the code.
"""

from __future__ import annotations

import sys

from azproxy.settings.config import settings
from azproxy.settings.fields import Setting, shown_default

__all__ = ["COMMAND", "render"]

COMMAND = "python -m azproxy.settings.table > docs/settings.md"

INTRO = f"""\
# Settings

This page is generated from the declarations in
[`azproxy/settings/config.py`](../azproxy/settings/config.py), which
`azproxy serve --help` shows too. Change a setting there, then run this (a test
fails while the two differ):

```bash
{COMMAND}
```

Every setting has one name as config file key, `--flag` and `AZPROXY_*`
environment variable: `read_timeout_s`, `--read-timeout-s`,
`AZPROXY_READ_TIMEOUT_S`. A flag beats the environment, which beats the config
file (TOML, from `--config FILE` or `AZPROXY_CONFIG`), which beats the default.
Units are part of the name: `_s` seconds, `_kb` KiB, `_mb` MiB.

- True/false settings take `true` or `false` (also `yes`/`no`, `on`/`off`,
  `1`/`0`) in the environment and the file. On the command line they are
  switches: `--access-log` sets true, `--no-access-log` false (`passthrough`,
  whose default is `auto`, likewise). The old form `--access-log false` still
  works in this release, with a warning.
- An `AZPROXY_*` variable that names no setting is ignored, with a warning
  (`did you mean`) at start and from `azproxy check-config`.
- Lists are comma-separated in a flag or the environment, and TOML lists or
  tables in the file.
- Secrets have no flag, since a command line shows in `ps` and shell history:
  they come from the environment or the file, where `env:NAME` references keep
  them out of it.
- The standard Azure variables are honoured too: `AZURE_OPENAI_ENDPOINT` with
  `AZURE_OPENAI_API_KEY` or `AZURE_OPENAI_AD_TOKEN` (an endpoint named
  `default`, beside those of the file), and `OPENAI_API_VERSION` (below
  `AZPROXY_API_VERSION`).

| key | flag | env | default | meaning |
| --- | --- | --- | --- | --- |
"""


def render() -> str:
    """The whole page."""
    return INTRO + "".join(_row(s) + "\n" for s in settings())


def _row(s: Setting) -> str:
    flag = f"`{s.flag}`" if s.flag else "-"
    env = f"`{s.env}`" if s.env else "-"
    default = shown_default(s)
    if default != "none":
        default = f"`{default}`"
    meaning = s.help.replace("|", "\\|")  # a bare | would end the cell
    return f"| `{s.name}` | {flag} | {env} | {default} | {meaning} |"


if __name__ == "__main__":
    sys.stdout.write(render())
