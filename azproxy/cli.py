"""`azproxy serve | simulate`: flags, environment and defaults -> running server."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence

from azproxy import __version__
from azproxy.app import create_app
from azproxy.doctor import describe, probe
from azproxy.errors import ConfigError
from azproxy.front.lifecycle import drain
from azproxy.observe.logging import configure_logging
from azproxy.server.fdlimit import start_with_open_file_limit
from azproxy.server.runner import bound_port, run, start_site, wait_for_signal
from azproxy.server.workers import serve_workers
from azproxy.settings.config import Config, settings
from azproxy.settings.fields import shown_default
from azproxy.settings.load import load_file
from azproxy.simulator import SimSettings, apply_faults, create_simulator, parse_fault
from azproxy.simulator.app import SIM_STATE

__all__ = ["build_parser", "config_from", "demo_curl", "main"]

log = logging.getLogger("azproxy")

DEMO_TOKEN = "demo:gpt-4o:demo-key"
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azproxy",
        description="Let OpenAI API clients use Azure OpenAI unchanged.",
    )
    parser.add_argument("--version", action="version", version=f"azproxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the proxy",
        epilog=_secrets_help(),
        # Keeps the epilog's own layout (one entry per secret); flag help is
        # still wrapped.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_flags(serve)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="also run the built-in Azure OpenAI simulator and point azproxy at it",
    )

    check = commands.add_parser(
        "check-config",
        help="validate the settings without serving; exit 1 listing each problem",
    )
    add_settings_flags(check)
    check.add_argument(
        "--probe",
        action="store_true",
        help="also send a minimal request to each mapped deployment",
    )

    sim = commands.add_parser("simulate", help="run the Azure OpenAI simulator")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9000)
    sim.add_argument("--chunks", type=int, default=8, help="content chunks per stream")
    sim.add_argument("--chunk-delay-ms", type=float, default=20.0)
    sim.add_argument("--first-byte-ms", type=float, default=0.0)
    sim.add_argument(
        "--deployments",
        help="comma list of deployments that exist (default: any name)",
    )
    sim.add_argument(
        "--async-filter",
        action="store_true",
        help="emit Azure's asynchronous content-filter chunks in streams",
    )
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="DEPLOYMENT=KIND[,KIND]",
        help="inject faults on a deployment (KIND* repeats for ever)",
    )
    return parser


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file [env AZPROXY_CONFIG]",
    )
    for s in settings():
        if not s.has_flag:
            continue
        # argparse expands %-formats in help: a literal % must be doubled.
        text = f"{s.help} [env {s.env}, default {shown_default(s)}]"
        parser.add_argument(
            s.flag,
            dest=s.name,
            metavar=s.name.upper().split("_")[-1],
            help=text.replace("%", "%%"),
        )


def _secrets_help() -> str:
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


def main(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    if args.command == "simulate":
        return simulate(args, env)
    if args.command == "check-config":
        return check_config(args, env)
    return serve(args, env)


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """Flags, environment and config file -> Config (or ConfigError)."""
    flags = {s.name: getattr(args, s.name) for s in settings() if s.has_flag}
    path = args.config or env.get("AZPROXY_CONFIG")
    file_values = load_file(path) if path else {}
    return Config.load(flags, env, file_values)


def serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        config = config_from(args, env)
        # The demo builds its app once the simulator's address is known.
        app = None if args.demo else create_app(config)
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_CONFIG
    if args.demo and config.workers > 1:
        print_problems(["--demo runs in one process: leave out --workers"])
        return EXIT_CONFIG
    configure_logging(config.log_level, config.secrets(), config.log_format)
    if config.server_side and not config.access_keys:
        log.warning(
            "allow_anonymous = true: anyone who can reach this port can use "
            "the configured Azure credentials"
        )
    start_with_open_file_limit(config.max_connections)
    if config.workers > 1:
        return serve_workers(config)

    async def main() -> None:
        nonlocal config, app
        runners = []
        if args.demo:
            sim = await start_site(create_simulator(), "127.0.0.1", 0)
            runners.append(sim)
            upstream = f"http://127.0.0.1:{bound_port(sim)}"
            config = dataclasses.replace(config, upstream=upstream)
            app = create_app(config)
        assert app is not None
        proxy = await start_site(app, config.host, config.port)
        runners.append(proxy)
        port = bound_port(proxy)
        log.info("azproxy %s listening on http://%s:%d", __version__, config.host, port)
        if args.demo:
            print(f"azproxy demo: Azure OpenAI simulator at {config.upstream}; try:")
            print(demo_curl(config.host, port), flush=True)
        try:
            await wait_for_signal()
            await drain(proxy, config.shutdown_grace_s)
        finally:
            for runner in reversed(runners):
                await runner.cleanup()

    run(main)
    return 0


def print_problems(problems: Sequence[str]) -> None:
    for problem in problems:
        print(f"azproxy: configuration error: {problem}", file=sys.stderr)


def check_config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Validate without serving: one line per problem; exit 1 when any."""
    try:
        config = config_from(args, env)
        create_app(config)
    except ConfigError as exc:
        print_problems(exc.problems)
        return 1
    print(describe(config))
    if args.probe:
        results = asyncio.run(probe(config))
        for line in results.lines:
            print(line)
        return 0 if results.ok else 1
    return 0


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


def simulate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        faults = [parse_fault(spec) for spec in args.fault]
    except ValueError as exc:
        print(f"azproxy simulate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    deployments = (
        frozenset(d.strip() for d in args.deployments.split(",") if d.strip())
        if args.deployments
        else None
    )
    sim_settings = SimSettings(
        api_key=env.get("AZPROXY_SIM_API_KEY") or None,
        deployments=deployments,
        chunks=args.chunks,
        chunk_delay_ms=args.chunk_delay_ms,
        first_byte_ms=args.first_byte_ms,
        async_filter=args.async_filter,
    )
    configure_logging("info")
    app = create_simulator(sim_settings)
    for deployment, kinds in faults:
        apply_faults(app[SIM_STATE], deployment, kinds)

    async def main() -> None:
        runner = await start_site(app, args.host, args.port)
        log.info(
            "Azure OpenAI simulator on http://%s:%d", args.host, bound_port(runner)
        )
        try:
            await wait_for_signal()
        finally:
            await runner.cleanup()

    run(main)
    return 0
