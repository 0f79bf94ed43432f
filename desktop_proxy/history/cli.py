"""`desktop-proxy history …`: list, stats, export and clear the request history.

These commands read the database directly (no gateway needed) and work while a gateway is
writing to it (WAL). They never create the database: with none yet, they report no requests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from pathlib import Path
from typing import TextIO

from desktop_proxy.history.query import (
    GROUP_BY,
    AggregateRow,
    HistoryEntry,
    HistoryFilter,
    HistoryReader,
    parse_time,
)
from desktop_proxy.history.store import HistoryError
from desktop_proxy.paths import AppPaths

DEFAULT_LIMIT = 50
EXIT_OK = 0
EXIT_ERROR = 1

_FILTER_HELP = {
    "since": "only requests at or after this time: 24h, 7d, 30m, today, 2025-06-01, …",
    "until": "only requests before this time (same forms as --since)",
    "model": "only this model, requested or run (repeatable)",
    "provider": "only this provider (repeatable)",
    "errors": "only failed requests",
    "search": "only requests whose id, client, models, provider or error contain TEXT",
}


def _time_arg(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_filters(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Filter options. On subcommands their defaults are suppressed, so that a filter given
    before the subcommand (`history --since 7d stats`) is not reset by the subcommand."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--since", type=_time_arg, metavar="TIME", default=default(None), help=_FILTER_HELP["since"]
    )
    parser.add_argument(
        "--until", type=_time_arg, metavar="TIME", default=default(None), help=_FILTER_HELP["until"]
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        default=default(None),
        help=_FILTER_HELP["model"],
    )
    parser.add_argument(
        "--provider",
        action="append",
        metavar="NAME",
        default=default(None),
        help=_FILTER_HELP["provider"],
    )
    parser.add_argument(
        "--errors", action="store_true", default=default(False), help=_FILTER_HELP["errors"]
    )
    parser.add_argument(
        "--search", metavar="TEXT", default=default(None), help=_FILTER_HELP["search"]
    )


def add_history_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Register `history` (and its stats/export/clear actions) on the main CLI's subparsers."""
    history = subparsers.add_parser(
        "history",
        parents=list(parents),
        help="show, summarise, export or clear the request history",
        description="Without an action, lists recent requests, newest first.",
    )
    history.add_argument(
        "-n",
        "--limit",
        type=_positive,
        default=None,
        help=f"how many requests to list (default {DEFAULT_LIMIT})",
    )
    history.add_argument("--json", action="store_true", help="print a JSON array (camelCase)")
    history.add_argument(
        "--bodies", action="store_true", help="include stored request/response bodies"
    )
    _add_filters(history, suppress=False)
    actions = history.add_subparsers(dest="history_command", metavar="ACTION")

    stats = actions.add_parser(
        "stats",
        parents=list(parents),
        help="requests, tokens and cost per model, provider or day",
    )
    stats.add_argument(
        "--by", choices=GROUP_BY, default="model", help="group by model (default), provider, day"
    )
    stats.add_argument("--utc", action="store_true", help="days in UTC rather than local time")
    stats.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    _add_filters(stats, suppress=True)

    export = actions.add_parser(
        "export", parents=list(parents), help="write matching requests as CSV or JSON Lines"
    )
    export.add_argument("--format", choices=("csv", "jsonl"), required=True)
    export.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: stdout)"
    )
    export.add_argument(
        "--bodies", action="store_true", default=argparse.SUPPRESS, help="include bodies"
    )
    export.add_argument(
        "--limit",
        type=_positive,
        default=argparse.SUPPRESS,
        help="at most this many (newest) requests",
    )
    _add_filters(export, suppress=True)

    clear = actions.add_parser("clear", parents=list(parents), help="delete all stored requests")
    clear.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _filter_from(args: argparse.Namespace) -> HistoryFilter:
    return HistoryFilter(
        since=getattr(args, "since", None),
        until=getattr(args, "until", None),
        models=tuple(getattr(args, "model", None) or ()),
        providers=tuple(getattr(args, "provider", None) or ()),
        errors_only=bool(getattr(args, "errors", False)),
        text=getattr(args, "search", None),
    )


def run_history(paths: AppPaths, args: argparse.Namespace) -> int:
    """Run `history [ACTION]`; returns the exit code."""
    reader = HistoryReader(paths.history_db)
    try:
        action = getattr(args, "history_command", None)
        if action == "stats":
            return _stats(reader, args)
        if action == "export":
            return _export(reader, args)
        if action == "clear":
            return _clear(reader, args)
        return _list(reader, args)
    except (sqlite3.Error, HistoryError) as exc:
        print(_db_error(paths.history_db, exc), file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `desktop-proxy history | head`: not an error
        with contextlib.suppress(OSError, ValueError):
            # Keep Python's exit-time flush of stdout from failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        reader.close()


def _db_error(path: Path, exc: BaseException) -> str:
    from desktop_proxy.history.store import is_corruption

    if is_corruption(exc):
        return (
            f"desktop-proxy: the history database {path} is damaged ({exc}). The gateway moves a "
            "damaged database aside and starts a new one when it next starts."
        )
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower():
        return f"desktop-proxy: the history database {path} is busy ({exc}); try again."
    return f"desktop-proxy: cannot read the history database {path}: {exc}"


# --- list ------------------------------------------------------------------------------------


def _list(reader: HistoryReader, args: argparse.Namespace) -> int:
    flt = _filter_from(args)
    limit = args.limit or DEFAULT_LIMIT
    entries = reader.page(flt, 0, limit, bodies=args.bodies)
    if args.json:
        json.dump([e.to_json(bodies=args.bodies) for e in entries], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    if not entries:
        where = "" if reader.path.exists() else f" ({reader.path} does not exist yet)"
        print(f"No requests recorded{' match' if flt != HistoryFilter() else ''}{where}.")
        return EXIT_OK
    _print_table(entries, sys.stdout)
    if args.bodies:
        for e in entries:
            print(f"\n--- {e.id} request ---\n{e.request_body or '(not stored)'}")
            print(f"--- {e.id} response ---\n{e.response_body or '(not stored)'}")
    total = reader.count(flt)
    if total > len(entries):
        print(f"({len(entries)} of {total} shown; --limit N for more, or `history export`)")
    return EXIT_OK


def _local_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _cost_text(cost: float | None, unpriced: bool) -> str:
    if unpriced:
        return "unpriced"
    if cost is None:
        return "-"
    return f"${cost:.6f}"


def _tokens(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _entry_cells(e: HistoryEntry) -> list[str]:
    ran = f"{e.provider}:{e.model}" if e.provider and e.model else (e.model or "-")
    model = ran
    if e.requested_model and e.requested_model not in (e.model, ran):
        model = f"{ran} (as {e.requested_model})"
    status = str(e.status) + ("" if e.ok else " ✗")
    tokens = f"{_tokens(e.input_tokens)}/{_tokens(e.output_tokens)}"
    if e.cache_read_tokens or e.cache_write_tokens:
        tokens += f" c{_tokens(e.cache_read_tokens)}/{_tokens(e.cache_write_tokens)}"
    if e.usage_estimated:
        tokens += " ~"
    duration = "-" if e.duration_ms is None else f"{e.duration_ms / 1000:.1f}s"
    note = e.error or ""
    if len(note) > 60:
        note = note[:59] + "…"
    return [
        _local_time(e.time),
        e.client_api or "-",
        model,
        status,
        tokens,
        _cost_text(e.cost_usd, e.unpriced),
        duration,
        note,
    ]


def _print_table(entries: Sequence[HistoryEntry], out: TextIO) -> None:
    header = ["time", "api", "model", "status", "tokens in/out", "cost", "took", "error"]
    rows = [_entry_cells(e) for e in entries]
    _write_table(header, rows, out, right={3, 4, 5, 6})


def _write_table(
    header: list[str], rows: list[list[str]], out: TextIO, *, right: AbstractSet[int] = frozenset()
) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.write("  ".join(cells).rstrip() + "\n")


# --- stats -----------------------------------------------------------------------------------


def _stats(reader: HistoryReader, args: argparse.Namespace) -> int:
    flt = _filter_from(args)
    groups = reader.aggregate(flt, args.by, utc=args.utc)
    total = reader.totals(flt)
    if getattr(args, "json", False):
        data = {
            "by": args.by,
            "groups": [g.to_json() for g in groups],
            "total": total.to_json(),
        }
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    if not groups:
        print("No requests recorded" + (" match." if flt != HistoryFilter() else "."))
        return EXIT_OK
    first = {"day": "day", "model": "provider:model", "provider": "provider"}[args.by]
    header = [first, "requests", "errors", "input", "output", "cache read", "cache write", "cost"]
    rows = [_agg_cells(g, args.by) for g in groups]
    rows.append(_agg_cells(total, "total"))
    _write_table(header, rows, sys.stdout, right=set(range(1, 8)))
    unpriced = [g for g in groups if g.unpriced_requests]
    if unpriced and args.by != "day":
        names = ", ".join(_group_name(g, args.by) for g in unpriced)
        print(
            f"\n* unpriced: {_requests(total.unpriced_requests)} had no known price and are not "
            f"in the cost ({names}). Add prices under history.prices in config.json."
        )
    elif total.unpriced_requests:
        print(
            f"\n* unpriced: {_requests(total.unpriced_requests)} had no known price and are not "
            "in the cost; `history stats --by model` names the models."
        )
    if total.estimated_requests:
        print(
            f"~ {_requests(total.estimated_requests)} with estimated token counts (the upstream "
            "reported none)."
        )
    return EXIT_OK


def _requests(n: int) -> str:
    return f"{n} request" if n == 1 else f"{n} requests"


def _group_name(g: AggregateRow, by: str) -> str:
    if by == "total":
        return "total"
    if by == "model":
        return f"{g.provider or '-'}:{g.key or '-'}"
    return g.key or "-"


def _agg_cells(g: AggregateRow, by: str) -> list[str]:
    cost = f"${g.cost_usd:.4f}" if g.priced_requests else "-"
    if g.unpriced_requests:
        cost += f" + {g.unpriced_requests} unpriced *"
    return [
        _group_name(g, by),
        f"{g.requests:,}",
        f"{g.errors:,}",
        f"{g.input_tokens:,}",
        f"{g.output_tokens:,}",
        f"{g.cache_read_tokens:,}",
        f"{g.cache_write_tokens:,}",
        cost,
    ]


# --- export ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        yield f


def _export(reader: HistoryReader, args: argparse.Namespace) -> int:
    flt = _filter_from(args)
    try:
        with _output(args.output) as out:
            n = reader.export(
                out,
                args.format,
                flt,
                bodies=bool(getattr(args, "bodies", False)),
                limit=getattr(args, "limit", None),
            )
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        print(f"desktop-proxy: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.output is not None:
        print(f"Exported {n} requests to {args.output}", file=sys.stderr)
    return EXIT_OK


# --- clear -----------------------------------------------------------------------------------


def _clear(reader: HistoryReader, args: argparse.Namespace) -> int:
    count = reader.count()
    if count == 0:
        print("The history is already empty.")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                f"desktop-proxy: `history clear` would delete {count} requests; "
                "pass --yes to confirm when not running in a terminal.",
                file=sys.stderr,
            )
            return EXIT_ERROR
        answer = input(f"Delete all {count} recorded requests from {reader.path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return EXIT_OK
    deleted = reader.clear()
    print(f"Deleted {deleted} requests.")
    return EXIT_OK
