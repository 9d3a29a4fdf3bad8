"""`azproxy serve | check-config | simulate`: flags, environment and defaults
-> running server.

One exit code per outcome, whichever command (docs/operations.md#exit-codes):
EXIT_OK, EXIT_FAILED (could not serve: the address is taken, a worker died
at start; or a deployment failed check-config --probe), EXIT_CONFIG (the
settings or the command line are wrong; argparse exits 2 too).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from functools import partial

from aiohttp import web

from azproxy.app import create_app
from azproxy.demo import run_demo, without_server_side
from azproxy.doctor import describe, probe
from azproxy.errors import CannotListen, ConfigError
from azproxy.observe.logging import configure_logging
from azproxy.server.fdlimit import start_with_open_file_limit
from azproxy.server.runner import (
    bound_port,
    run,
    serve_until_signal,
    start_site,
    wait_for_signal,
)
from azproxy.server.workers import serve_workers
from azproxy.settings.config import Config, settings
from azproxy.settings.flags import add_settings_flags, modern_switches, secrets_help
from azproxy.settings.load import Sources, load_file, unknown_variables
from azproxy.simulator import SimSettings, apply_faults, create_simulator, parse_fault
from azproxy.simulator.app import SIM_STATE
from azproxy.version import __version__

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "build_parser",
    "config_from",
    "main",
]

log = logging.getLogger("azproxy")

EXIT_OK = 0
EXIT_FAILED = 1
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
        epilog=secrets_help(),
        # Keeps the epilog's own layout (one entry per secret); flag help is
        # still wrapped.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_flags(serve)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="also run the built-in Azure OpenAI simulator and point azproxy at it "
        "(server-side settings are ignored: the demo serves pass-through tokens)",
    )

    check = commands.add_parser(
        "check-config",
        help=f"validate the settings without serving; exit {EXIT_CONFIG} listing "
        "each problem",
    )
    add_settings_flags(check)
    check.add_argument(
        "--probe",
        action="store_true",
        help="also send a minimal request to each mapped deployment "
        f"(exit {EXIT_FAILED} if one does not answer)",
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


def main(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> int:
    argv, deprecated = modern_switches(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for line in deprecated:
        print(f"azproxy: warning: {line}", file=sys.stderr)
    env = os.environ if environ is None else environ
    if args.command == "simulate":
        return simulate(args, env)
    if args.command == "check-config":
        return check_config(args, env)
    return serve(args, env)


def sources_from(args: argparse.Namespace, env: Mapping[str, str]) -> Sources:
    """Flag values, the environment and the config file's values."""
    flags = {s.name: getattr(args, s.name) for s in settings() if s.has_flag}
    path = args.config or env.get("AZPROXY_CONFIG")
    return flags, env, load_file(path) if path else {}


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """Flags, environment and config file -> Config (or ConfigError)."""
    return Config.load(*sources_from(args, env))


def warnings_for(config: Config, sources: Sources) -> list[str]:
    """What serve says at start and check-config prints: allowed, but
    probably not meant."""
    _, env, file_values = sources
    return unknown_variables(settings(), env, file_values) + config.warnings()


def serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    ignored: list[str] = []
    try:
        sources = sources_from(args, env)
        if args.demo:
            sources, ignored = without_server_side(*sources)
        config = Config.load(*sources)
        # The demo builds its app once the simulator's address is known.
        app = None if args.demo else create_app(config)
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_CONFIG
    if args.demo and config.workers > 1:
        print_problems(["--demo runs in one process: leave out --workers"])
        return EXIT_CONFIG
    configure_logging(config.log_level, config.secrets(), config.log_format)
    for line in warnings_for(config, sources):
        log.warning("%s", line)
    if ignored:
        log.warning(
            "demo: ignoring %s; the demo serves pass-through tokens from its "
            "built-in simulator only",
            ", ".join(ignored),
        )
    start_with_open_file_limit(config.max_connections)
    if config.workers > 1:
        return serve_workers(config)
    return serve_one(config, app)


def serve_one(config: Config, app: web.Application | None) -> int:
    """One process: `app`, or the demo (app None), until a signal."""
    try:
        if app is None:
            run(partial(run_demo, config))
        else:
            run(partial(serve_until_signal, app, config))
    except CannotListen as exc:
        print(f"azproxy: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def print_problems(problems: Sequence[str]) -> None:
    for problem in problems:
        print(f"azproxy: configuration error: {problem}", file=sys.stderr)


def check_config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Validate without serving: one line per problem, exit EXIT_CONFIG when
    any; with --probe, ask every deployment, exit EXIT_FAILED when one fails."""
    try:
        sources = sources_from(args, env)
        config = Config.load(*sources)
        create_app(config)
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_CONFIG
    for line in warnings_for(config, sources):
        print(f"azproxy: warning: {line}", file=sys.stderr)
    if not args.probe:
        print(describe(config))
        return EXIT_OK
    print(describe(config, "settings valid"))
    results = asyncio.run(probe(config))
    for line in results.lines:
        print(line)
    print(results.verdict())
    return EXIT_OK if results.ok else EXIT_FAILED


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

    try:
        run(main)
    except CannotListen as exc:
        print(f"azproxy simulate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
