"""Headless commands. Never imports Qt: `desktop-proxy serve` runs on servers and over SSH."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from desktop_proxy._version import __version__
from desktop_proxy.config.loader import dump_config, first_run_message
from desktop_proxy.config.models import AppConfig
from desktop_proxy.config.presets import PRESETS
from desktop_proxy.config.secrets import describe_ref
from desktop_proxy.errors import DesktopProxyError, PortInUseError
from desktop_proxy.heap import SETTLE_DELAY_SECONDS, settle_heap
from desktop_proxy.history.cli import add_history_parser, run_history
from desktop_proxy.launch.cli import add_launch_parser, run_launch
from desktop_proxy.logs import configure_logging
from desktop_proxy.paths import AppPaths
from desktop_proxy.routing import ModelRouter
from desktop_proxy.server.state import ResolvedAccessKey
from desktop_proxy.services import GatewayOptions, Services, generate_access_key

EXIT_ERROR = 1
EXIT_PORT_IN_USE = 2


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's own --config default must not erase one given before it.
    common.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="use this config file instead of the default",
    )
    parser = argparse.ArgumentParser(
        prog="desktop-proxy",
        description="A local LLM API gateway. Without a command, starts the tray app.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"desktop-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the gateway headless")
    serve.add_argument("--host", help="address to listen on (default: config, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: config, 6789; 0 = any free port)")
    keys = serve.add_mutually_exclusive_group()
    keys.add_argument("-k", "--key", metavar="KEY", help="require this access key")
    keys.add_argument(
        "-g", "--generate-key", action="store_true", help="generate an access key, print it once"
    )
    serve.add_argument(
        "--provider", action="append", metavar="NAME", help="expose only this provider (repeatable)"
    )
    serve.add_argument(
        "-m",
        "--model",
        action="append",
        metavar="MODEL",
        help="expose only this model (repeatable)",
    )
    serve.add_argument("--no-history", action="store_true", help="do not record request history")
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow serving a non-loopback address without an access key (dangerous)",
    )

    config = sub.add_parser("config", parents=[common], help="inspect the configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_sub.add_parser("path", parents=[common], help="print the config file's path")
    config_sub.add_parser("show", parents=[common], help="print the config, secrets masked")
    config_sub.add_parser("validate", parents=[common], help="check the config file")

    sub.add_parser("models", parents=[common], help="list the models the gateway exposes")
    sub.add_parser(
        "providers", parents=[common], help="list provider presets and configured providers"
    )
    add_launch_parser(sub, [common])
    add_history_parser(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    services = Services(AppPaths.from_environment(), config_file=getattr(args, "config", None))
    try:
        if args.command == "serve":
            return serve(services, args)
        if args.command == "config":
            return config_command(services, args.config_command)
        if args.command == "models":
            return models_command(services)
        if args.command == "providers":
            return providers_command(services)
        if args.command == "launch":
            return run_launch(services, args)
        if args.command == "history":
            return run_history(services.paths, args)
    except DesktopProxyError as exc:
        print(f"desktop-proxy: {exc}", file=sys.stderr)
        return EXIT_ERROR
    parser.error(f"unknown command {args.command}")


# --- serve -----------------------------------------------------------------------------------


def serve(services: Services, args: argparse.Namespace) -> int:
    configure_logging(services.paths.log_file, args.log_level, stderr=True)
    services.load_config()
    if services.created_config:
        print(first_run_message(services.config_path), file=sys.stderr, flush=True)
    extra_keys: list[ResolvedAccessKey] = []
    generated: str | None = None
    if args.key:
        extra_keys.append(ResolvedAccessKey("cli", args.key))
    elif args.generate_key:
        generated = generate_access_key()
        extra_keys.append(ResolvedAccessKey("generated", generated))
    options = GatewayOptions(
        host=args.host,
        port=args.port,
        access_keys=extra_keys,
        only_providers=args.provider,
        only_models=args.model,
        history=False if args.no_history else None,
        allow_insecure_remote=args.insecure_no_auth,
    )
    try:
        return asyncio.run(_serve(services, options, generated))
    except PortInUseError as exc:
        print(f"desktop-proxy: {exc}", file=sys.stderr, flush=True)
        return EXIT_PORT_IN_USE
    except KeyboardInterrupt:
        return 0


async def _serve(services: Services, options: GatewayOptions, generated: str | None) -> int:
    server = await services.start_gateway(options)
    url = server.url
    lines = [
        f"Listening on {url}",
        f"  OpenAI base URL:    {url}/v1",
        f"  Anthropic base URL: {url}",
    ]
    if generated:
        lines.append(f"  Access key (shown once, not saved): {generated}")
    elif server.state.open_access:
        lines.append("  No access key required (loopback only).")
    else:
        lines.append("  Access key required (Authorization: Bearer KEY or x-api-key: KEY).")
    print("\n".join(lines), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # As the tray app does: once the price tables and pools are loaded, full collections skip
    # them. No collection first: requests may be arriving already.
    settle = loop.call_later(SETTLE_DELAY_SECONDS, functools.partial(settle_heap, collect=False))
    for sig in (signal.SIGINT, signal.SIGTERM):
        # On Windows there are no loop signal handlers: Ctrl+C arrives as KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        settle.cancel()
        logging.getLogger(__name__).info("stopping: letting in-flight requests finish")
        await services.stop_gateway()
    return 0


# --- inspection commands -----------------------------------------------------------------------


def mask_config(data: dict[str, Any]) -> dict[str, Any]:
    for provider in data.get("providers", []):
        if "apiKey" in provider:
            provider["apiKey"] = describe_ref(provider["apiKey"])
        if "apiKeys" in provider:
            provider["apiKeys"] = [describe_ref(k) for k in provider["apiKeys"]]
    for key in data.get("accessKeys", []):
        key["key"] = describe_ref(key["key"])
    return data


def config_command(services: Services, action: str) -> int:
    if action == "path":
        print(services.config_path)
        return 0
    config = services.load_config()
    if action == "validate":
        print(f"{services.config_path}: OK ({len(config.providers)} providers)")
        return 0
    print(json.dumps(mask_config(dump_config(config)), indent=2))
    return 0


def models_command(services: Services) -> int:
    config: AppConfig = services.load_config()
    entries = ModelRouter(config).list_models()
    if not entries:
        print("No models configured. Add a `models` list to a provider in the config file.")
        return 0
    width = max(len(e.id) for e in entries)
    for entry in entries:
        print(f"{entry.id:<{width}}  {entry.owned_by}")
    return 0


def providers_command(services: Services) -> int:
    print('Presets (use as a provider\'s "kind"):')
    for kind, preset in PRESETS.items():
        url = preset.base_url or "(you give baseUrl)"
        key = "no key" if not preset.requires_key else f"key: {preset.key_env or 'apiKey'}"
        print(f"  {kind:<20} {preset.protocol:<9} {url}  [{key}]")
    config = services.load_config()
    print(f"\nConfigured in {services.config_path}:")
    if not config.providers:
        print("  (none)")
    for p in config.providers:
        state = "" if p.enabled else "  (disabled)"
        keys = ", ".join(describe_ref(k) for k in p.api_keys) or "no key"
        print(f"  {p.name:<20} {p.kind:<12} {p.base_url}  [{keys}] {len(p.models)} models{state}")
    return 0
