"""`desktop-proxy launch claude [--print-env] [--shell STYLE] [-- ARGS...]`."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from desktop_proxy.launch.claude_code import run_claude
from desktop_proxy.logs import configure_logging
from desktop_proxy.services import Services

EXIT_INTERRUPTED = 130


def add_launch_parser(
    subparsers: argparse._SubParsersAction[Any], parents: list[argparse.ArgumentParser]
) -> None:
    """Register `launch` and its `claude` client under the top-level subcommands."""
    shared = parents
    launch = subparsers.add_parser(
        "launch",
        parents=shared,
        help="run a coding agent through the gateway",
        description="Run a client with a process-scoped environment pointing at the gateway. "
        "No settings files are edited.",
    )
    clients = launch.add_subparsers(dest="client", metavar="CLIENT", required=True)
    claude = clients.add_parser(
        "claude",
        parents=shared,
        help="Claude Code",
        description="Run Claude Code through the gateway: the running gateway on the configured "
        "address, or an embedded one for the session. Arguments after -- go to claude.",
        usage="%(prog)s [--print-env [--shell STYLE]] [-- ARGS...]",
    )
    claude.add_argument(
        "--print-env",
        action="store_true",
        help="print the environment to paste into a shell instead of running claude",
    )
    claude.add_argument(
        "--shell",
        choices=["posix", "powershell", "cmd"],
        help="syntax for --print-env (default: this system's shell)",
    )
    claude.add_argument("claude_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run_launch(services: Services, args: argparse.Namespace) -> int:
    """Run the `launch` command parsed by `add_launch_parser`; returns the exit code."""
    claude_args = list(args.claude_args)
    if claude_args and claude_args[0] == "--":
        claude_args = claude_args[1:]
    # The gateway logs to the log file only: stderr belongs to the client's terminal UI.
    configure_logging(services.paths.log_file, "INFO", stderr=False)
    try:
        return asyncio.run(
            run_claude(services, claude_args, print_env=args.print_env, shell=args.shell)
        )
    except KeyboardInterrupt:  # Ctrl+C before claude started (afterwards, claude handles it)
        return EXIT_INTERRUPTED
