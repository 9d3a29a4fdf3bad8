"""`azproxy serve --demo`: azproxy and the built-in Azure OpenAI simulator in
one process, and a curl line that streams a whole answer through both.

The demo is a pass-through proxy in front of the simulator, whatever else is
configured: settings that would make it a server-side proxy or point it
elsewhere (AZURE_OPENAI_ENDPOINT and its key, AZPROXY_MODEL_MAP,
AZPROXY_ACCESS_KEYS, passthrough...) are left out, from every source, and
one line says which. Left in, they would silently turn its curl line into a
401, or send a request with a valid access key to a real Azure endpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from azproxy.app import create_app
from azproxy.server.runner import bound_port, serve_until_signal, start_site
from azproxy.settings.config import Config, settings
from azproxy.simulator import SimSettings, create_simulator
from azproxy.simulator.answers import ANSWER_WORDS

if TYPE_CHECKING:
    from azproxy.settings.load import Sources

__all__ = [
    "DEMO_SIMULATOR",
    "DEMO_TOKEN",
    "SERVER_SIDE",
    "demo_curl",
    "run_demo",
    "without_server_side",
]

log = logging.getLogger("azproxy")

DEMO_TOKEN = "demo:gpt-4o:demo-key"
# The simulator's whole answer, not the first 8 words its default streams
# (which stop mid-sentence).
DEMO_SIMULATOR = SimSettings(chunks=len(ANSWER_WORDS))
# Settings that would route the demo's requests anywhere but the simulator.
SERVER_SIDE = frozenset(
    {
        "upstream",
        "endpoints",
        "model_map",
        "model_fallback",
        "access_keys",
        "allow_anonymous",
        "passthrough",
        "entra",
        "entra_scope",
    }
)
# The standard variables that configure an endpoint (settings/load.py).
AZURE_VARIABLES = (
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
)


def without_server_side(
    flags: Mapping[str, Any], environ: Mapping[str, str], file_values: Mapping[str, Any]
) -> tuple[Sources, list[str]]:
    """The three sources of settings without SERVER_SIDE ones, and the names
    of those left out, as the user wrote them."""
    variables = {s.env for s in settings() if s.name in SERVER_SIDE and s.env}
    variables.update(AZURE_VARIABLES)
    ignored = [
        f"--{name.replace('_', '-')}"
        for name, value in flags.items()
        if name in SERVER_SIDE and value is not None
    ]
    ignored += sorted(name for name in environ if name in variables)
    ignored += [f"{key} (config file)" for key in file_values if key in SERVER_SIDE]
    sources = (
        {k: v for k, v in flags.items() if k not in SERVER_SIDE},
        {k: v for k, v in environ.items() if k not in variables},
        {k: v for k, v in file_values.items() if k not in SERVER_SIDE},
    )
    return sources, ignored


async def run_demo(config: Config) -> None:
    """The simulator on a free loopback port, azproxy in front of it, until
    a signal; prints the curl line once both listen."""
    simulator = await start_site(create_simulator(DEMO_SIMULATOR), "127.0.0.1", 0)
    try:
        upstream = f"http://127.0.0.1:{bound_port(simulator)}"
        config = dataclasses.replace(config, upstream=upstream)

        def announce(port: int) -> None:
            print(f"azproxy demo: Azure OpenAI simulator at {upstream}; try:")
            print(demo_curl(config.host, port), flush=True)

        await serve_until_signal(create_app(config), config, announce)
    finally:
        await simulator.cleanup()


def demo_curl(host: str, port: int) -> str:
    """One copy-pasteable line that streams an answer through the proxy."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    body = (
        '{"model":"gpt-4o","stream":true,'
        '"messages":[{"role":"user","content":"Say hello"}]}'
    )
    return (
        f"curl -sN http://{host}:{port}/v1/chat/completions "
        f"-H 'Authorization: Bearer {DEMO_TOKEN}' "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )
