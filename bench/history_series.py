"""History on vs off over many short series, each in fresh processes.

The full bench (`python -m bench`) judges history from 10 paired rounds against one gateway
process per target. On a shared 2-core VM that is one draw: the machine's speed drifts, and
two processes of the same build can differ by more than history costs (docs/performance.md,
"History on vs off"). This tool (`python -m bench.history_series`) repeats the paired
measurement in `--series` series, each starting its own upstream and its own two gateways
(history off, history on), and pools every round's cost (1 − on/off) into one median with a
bootstrap interval. It prints; it writes nothing unless asked (`--json FILE`), and it never
fails on a figure.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import loadgen
from bench.procs import ManagedProcess, start_gateway, start_upstream
from bench.report import MAX_HISTORY_COST, median_interval
from bench.runner import CHAT_BODY, CHAT_PATH, warm


@dataclass(slots=True)
class Round:
    off_rps: float
    on_rps: float
    off_cpu_us: float | None  # the gateway's process tree: the history writer counts
    on_cpu_us: float | None

    @property
    def cost(self) -> float:
        return 1 - self.on_rps / self.off_rps


@dataclass(slots=True)
class Series:
    concurrency: int
    rounds: list[Round] = field(default_factory=list)

    def median_cost(self) -> float:
        return statistics.median(r.cost for r in self.rounds) if self.rounds else math.nan


def _load(
    gateway: ManagedProcess, chat: Path, script: Path, tool: str, c: int, seconds: int
) -> tuple[float, float | None]:
    url = gateway.url + CHAT_PATH
    before = gateway.cpu_seconds()
    if tool == "wrk":
        result = loadgen.run_wrk(url, script, c, seconds)
    else:
        result = loadgen.run_python(url, chat, c, seconds)
    after = gateway.cpu_seconds()
    cpu_us = None
    if before is not None and after is not None and result.requests:
        cpu_us = (after - before) / result.requests * 1e6
    return result.rps, cpu_us


def run_series(workdir: Path, concurrency: int, rounds: int, seconds: int, tool: str) -> Series:
    chat = workdir / "chat.json"
    chat.write_text(json.dumps(CHAT_BODY))
    script = loadgen.wrk_script(workdir, chat)
    processes: list[ManagedProcess] = []
    try:
        upstream = start_upstream(workdir, chunks=50, delay_ms=2.0)
        processes.append(upstream)
        off, _ = start_gateway(workdir, upstream.url, history=False, label="off")
        processes.append(off)
        on, _ = start_gateway(workdir, upstream.url, history=True, label="on")
        processes.append(on)
        for gateway in (off, on):
            warm(gateway.url + CHAT_PATH, chat.read_bytes(), 20)
            _load(gateway, chat, script, tool, concurrency, 1)
        series = Series(concurrency)
        for index in range(rounds):
            # Alternating order, so that neither always runs on a machine the other warmed.
            order = (off, on) if index % 2 == 0 else (on, off)
            measured = {g: _load(g, chat, script, tool, concurrency, seconds) for g in order}
            (off_rps, off_cpu), (on_rps, on_cpu) = measured[off], measured[on]
            if off_rps > 0:  # a round with nothing served says nothing about the cost
                series.rounds.append(Round(off_rps, on_rps, off_cpu, on_cpu))
        return series
    finally:
        for process in reversed(processes):
            process.stop()


def _pct(value: float) -> str:
    return f"{value * 100:+.1f}%"


def summary(all_series: list[Series], concurrency: int) -> list[str]:
    chosen = [s for s in all_series if s.concurrency == concurrency and s.rounds]
    costs = [r.cost for s in chosen for r in s.rounds]
    if not costs:
        return [f"c={concurrency}: no rounds"]
    median = statistics.median(costs)
    lo, hi = median_interval(costs)
    if hi <= MAX_HISTORY_COST:
        verdict = f"within the {MAX_HISTORY_COST:.0%} budget"
    elif lo > MAX_HISTORY_COST:
        verdict = f"over the {MAX_HISTORY_COST:.0%} budget"
    else:
        side = "under" if median <= MAX_HISTORY_COST else "over"
        verdict = f"median {side} the {MAX_HISTORY_COST:.0%} budget; the interval spans it"
    cpu = [
        (r.off_cpu_us, r.on_cpu_us)
        for s in chosen
        for r in s.rounds
        if r.off_cpu_us is not None and r.on_cpu_us is not None
    ]
    lines = [
        f"c={concurrency}: history costs {_pct(median)} of throughput, median of {len(costs)} "
        f"paired rounds in {len(chosen)} series (95% interval of the median {_pct(lo)} to "
        f"{_pct(hi)}): {verdict}",
        "  per series: " + ", ".join(_pct(s.median_cost()) for s in chosen),
    ]
    if cpu:
        off_us = statistics.median(c[0] for c in cpu)
        on_us = statistics.median(c[1] for c in cpu)
        lines.append(
            f"  gateway CPU per request, its history writer included: {off_us:.0f} µs off, "
            f"{on_us:.0f} µs on"
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.history_series",
        description="History on vs off, pooled over series of paired rounds in fresh processes.",
    )
    parser.add_argument("--series", type=int, default=10, help="series per concurrency")
    parser.add_argument("--rounds", type=int, default=8, help="paired rounds per series")
    parser.add_argument("--seconds", type=int, default=3, help="seconds per load run")
    parser.add_argument(
        "-c",
        "--concurrency",
        type=int,
        action="append",
        help="connections (repeat for several; default 50 and 10)",
    )
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--json", type=Path, help="also write every round's figures here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tool = loadgen.choose(args.loadgen, "history_series")
    concurrencies = args.concurrency or [50, 10]
    started = time.monotonic()
    done: list[Series] = []
    try:
        for c in concurrencies:
            for index in range(args.series):
                with tempfile.TemporaryDirectory(prefix="dp-history-series-") as tmp:
                    series = run_series(Path(tmp), c, args.rounds, args.seconds, tool)
                done.append(series)
                print(
                    f"c={c} series {index + 1}/{args.series}: {_pct(series.median_cost())}",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("\nhistory_series: interrupted; pooling the series finished so far", file=sys.stderr)
    except Exception as exc:
        print(f"\nhistory_series: failed: {exc}", file=sys.stderr)
        return 1
    print(f"\nhistory on vs off ({tool}, {time.monotonic() - started:.0f} s):")
    for c in concurrencies:
        print("\n".join(summary(done, c)))
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in done], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
