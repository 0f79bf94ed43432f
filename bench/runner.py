"""`python -m bench`: throughput and added latency through the gateway versus the upstream direct.

Three kinds of process, all on 127.0.0.1: two fake upstreams (the minimal bench/upstream.py,
and the tests' fake, tests/fakes/upstream.py, via bench/faithful_upstream.py), a gateway in
front of each (`python -m desktop_proxy serve`), and the load generator (wrk, hey, or the Python
fallback and the stream probe). This process only orchestrates and sits idle while a
measurement runs. Every scenario warms up, then runs several rounds that alternate between the
targets; the figures reported are the medians of the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import loadgen, report
from bench.loadgen import LoadResult
from bench.procs import (
    REPO_ROOT,
    ForeignLoad,
    ManagedProcess,
    history_files,
    start_gateway,
    start_tests_fake_upstream,
    start_upstream,
)

CHAT_BODY = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 16,
}
STREAM_BODY = {**CHAT_BODY, "stream": True, "max_tokens": 64}
CHAT_PATH = "/v1/chat/completions"

Metrics = dict[str, float]


@dataclass
class Settings:
    quick: bool
    rounds: int
    seconds: int
    warmup_seconds: int
    probe_streams: int
    chunks: int
    delay_ms: float
    loadgen: str  # "wrk" or "python"
    history: str  # "auto", "on", "off"
    history_rounds: int  # paired rounds of history off/on per concurrency, for the verdict
    concurrencies: tuple[int, ...]
    peer_row: bool
    floor: bool


@dataclass
class Target:
    name: str
    url: str
    # For CPU accounting: the upstream behind the target, and the process the client talks to
    # when it is not the upstream.
    upstream: ManagedProcess
    gateway: ManagedProcess | None = None


@dataclass
class Run:
    """Everything measured: per scenario, per target, one Metrics per round."""

    settings: Settings
    targets: list[str]
    rounds: dict[str, dict[str, list[Metrics]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    history_status: str = "pending"
    idle_check_pct: float | None = None
    history_writer_seen: bool = False
    started: float = field(default_factory=time.time)
    elapsed_s: float = 0.0

    def add(self, scenario: str, target: str, metrics: Metrics) -> None:
        self.rounds.setdefault(scenario, {}).setdefault(target, []).append(metrics)

    def median(self, scenario: str, target: str, key: str) -> float | None:
        values = [m[key] for m in self.rounds.get(scenario, {}).get(target, []) if key in m]
        return statistics.median(values) if values else None


class Bench:
    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.s = settings
        self.workdir = workdir
        self.chat_file = workdir / "chat.json"
        self.stream_file = workdir / "stream.json"
        self.chat_file.write_text(json.dumps(CHAT_BODY))
        self.stream_file.write_text(json.dumps(STREAM_BODY))
        self.chat_lua = loadgen.wrk_script(workdir, self.chat_file)
        self.stream_lua = loadgen.wrk_script(workdir, self.stream_file)
        self.upstream: ManagedProcess | None = None
        self.processes: list[ManagedProcess] = []

    # --- processes ---------------------------------------------------------------------------

    def start(self) -> list[Target]:
        self.upstream = start_upstream(self.workdir, self.s.chunks, self.s.delay_ms)
        self.processes.append(self.upstream)
        targets = [Target(report.DIRECT, self.upstream.url + CHAT_PATH, self.upstream)]
        gateway, _ = start_gateway(self.workdir, self.upstream.url, history=False, label="off")
        self.processes.append(gateway)
        targets.append(Target(report.GATEWAY, gateway.url + CHAT_PATH, self.upstream, gateway))
        return targets

    def start_tests_fake(self) -> list[Target]:
        """The tests' fake upstream, direct and behind a gateway of its own (history off)."""
        upstream = start_tests_fake_upstream(self.workdir)
        self.processes.append(upstream)
        gateway, _ = start_gateway(self.workdir, upstream.url, history=False, label="tests-fake")
        self.processes.append(gateway)
        return [
            Target(report.TESTS_DIRECT, upstream.url + CHAT_PATH, upstream),
            Target(report.TESTS_GATEWAY, gateway.url + CHAT_PATH, upstream, gateway),
        ]

    def start_history_target(self, run: Run) -> Target | None:
        """A gateway with history on, if the history writer exists (or `--history on`)."""
        assert self.upstream is not None
        if self.s.history == "off":
            run.history_status = "not measured (--history off)"
            return None
        if self.s.history == "auto" and self.s.quick:
            run.history_status = "not measured in a --quick run (use --history on)"
            return None
        gateway, home = start_gateway(self.workdir, self.upstream.url, history=True, label="on")
        self.processes.append(gateway)
        url = gateway.url + CHAT_PATH
        warm(url, self.chat_file.read_bytes(), 20)
        # A background writer batches and may open its database lazily: give it a few seconds.
        deadline = time.monotonic() + 3.0
        while not (files := history_files(home)) and time.monotonic() < deadline:
            time.sleep(0.25)
        run.history_writer_seen = bool(files)
        if files:
            run.history_status = (
                "measured (history writer wrote " + ", ".join(p.name for p in files) + ")"
            )
            return Target(report.HISTORY, url, self.upstream, gateway)
        if self.s.history == "on":
            run.history_status = (
                "measured, but no history file appeared: the writer is probably not wired yet, "
                "so the figures show no history cost"
            )
            return Target(report.HISTORY, url, self.upstream, gateway)
        run.history_status = (
            "pending: the history writer is not wired yet (a gateway started with history on "
            "wrote no history file), so history on vs off was not measured"
        )
        gateway.stop()
        self.processes.remove(gateway)
        return None

    def start_floor(self) -> Target:
        """The bare proxy (bench/floorproxy.py): the cost of the gateway's HTTP stack alone."""
        assert self.upstream is not None
        argv = [sys.executable, "-m", "bench.floorproxy", "--upstream", self.upstream.url]
        proc = ManagedProcess("bare proxy", argv, stderr_file=self.workdir / "floor.stderr.log")
        self.processes.append(proc)
        return Target(report.FLOOR, proc.url + CHAT_PATH, self.upstream, proc)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop()
        self.processes.clear()

    # --- one measurement -----------------------------------------------------------------------

    def cpu(self, target: Target) -> tuple[float | None, float | None]:
        up = target.upstream.cpu_seconds()
        gw = target.gateway.cpu_seconds() if target.gateway else None
        return up, gw

    def load(self, target: Target, stream: bool, concurrency: int, seconds: int) -> Metrics:
        before = self.cpu(target)
        if self.s.loadgen == "wrk":
            script = self.stream_lua if stream else self.chat_lua
            result = loadgen.run_wrk(target.url, script, concurrency, seconds)
        else:
            body = self.stream_file if stream else self.chat_file
            result = loadgen.run_python(target.url, body, concurrency, seconds)
        after = self.cpu(target)
        return load_metrics(result, before, after)

    def hey(self, target: Target) -> Metrics:
        result = loadgen.run_hey(target.url, self.chat_file)
        return load_metrics(result, (None, None), (None, None))

    def probe(self, target: Target, streams: int) -> Metrics:
        argv = [
            sys.executable,
            "-m",
            "bench.streamprobe",
            "--url",
            target.url,
            "--body-file",
            str(self.stream_file),
            "--streams",
            str(streams),
            "--concurrency",
            "1",
        ]
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=60 + streams * 5, cwd=REPO_ROOT
        )
        if out.returncode != 0:
            raise RuntimeError(f"stream probe failed: {out.stderr[-1000:]}")
        return probe_metrics(json.loads(out.stdout.strip().splitlines()[-1]))

    # --- the whole run -------------------------------------------------------------------------

    def scenario(
        self,
        run: Run,
        name: str,
        targets: list[Target],
        measure: Callable[[Target], Metrics],
        warmup: Callable[[Target], Metrics] | None,
        rounds: int | None = None,
    ) -> None:
        print(f"  {name} ...", end="", flush=True)
        t0 = time.monotonic()
        if warmup is not None:
            for target in targets:
                warmup(target)
        for r in range(self.s.rounds if rounds is None else rounds):
            # Alternate the order so no target always runs first (or right after a warm-up).
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for target in order:
                foreign = ForeignLoad(self.processes)
                metrics = measure(target)
                pct = foreign.percent_of_a_cpu()
                if pct is not None:
                    metrics["foreign_pct"] = pct
                run.add(name, target.name, metrics)
        print(f" {time.monotonic() - t0:.0f}s", flush=True)

    def execute(self) -> Run:
        s = self.s
        run = Run(settings=s, targets=[])
        idle = ForeignLoad([])
        time.sleep(0.3 if s.quick else 1.0)
        run.idle_check_pct = idle.percent_of_a_cpu()
        if run.idle_check_pct is not None and run.idle_check_pct > report.BUSY_WARNING_PCT:
            print(
                f"bench: warning: other processes are using {run.idle_check_pct:.0f}% of a CPU "
                "right now; they compete with the benchmark for the cores and skew the figures. "
                "Run it on an otherwise idle machine.",
                file=sys.stderr,
                flush=True,
            )
        targets = self.start()
        history_target = self.start_history_target(run)
        if history_target is not None:
            targets.append(history_target)
        if s.floor:
            targets.append(self.start_floor())
        # Measured in the non-streamed scenarios only: the throughput budget's reference.
        chat_targets = targets + self.start_tests_fake()
        run.targets = [t.name for t in chat_targets]
        chat = self.chat_file.read_bytes()
        for target in chat_targets:
            warm(target.url, chat, 50)
        print(
            f"bench: {', '.join(run.targets)}; load generator {s.loadgen}; "
            f"{s.rounds} round(s) of {s.seconds}s per scenario",
            flush=True,
        )

        def loader(stream: bool, c: int, seconds: int) -> Callable[[Target], Metrics]:
            return lambda t: self.load(t, stream, c, seconds)

        def warmup(stream: bool, c: int) -> Callable[[Target], Metrics] | None:
            return loader(stream, c, s.warmup_seconds) if s.warmup_seconds > 0 else None

        self.scenario(run, "chat-c1", chat_targets, loader(False, 1, s.seconds), warmup(False, 1))
        for c in s.concurrencies:
            self.scenario(
                run, f"chat-c{c}", chat_targets, loader(False, c, s.seconds), warmup(False, c)
            )
        self.scenario(
            run,
            "stream-c1",
            targets,
            lambda t: self.probe(t, s.probe_streams),
            (lambda t: self.probe(t, 2)) if s.warmup_seconds > 0 else None,
        )
        for c in s.concurrencies:
            self.scenario(run, f"stream-c{c}", targets, loader(True, c, s.seconds), warmup(True, c))
        if s.peer_row:
            self.scenario(run, "hey-n300-c10", targets, self.hey, None)
        if history_target is not None and s.history_rounds > 0:
            # The verdict's own measurement: many short rounds of just the two gateways, each
            # pair run back to back, so that drift in the machine's speed (other load, time
            # the hypervisor takes) hits both halves of a pair alike.
            pair = [next(t for t in targets if t.name == report.GATEWAY), history_target]
            for c in s.concurrencies:
                self.scenario(
                    run,
                    f"history-c{c}",
                    pair,
                    loader(False, c, s.seconds),
                    None,
                    rounds=s.history_rounds,
                )
        return run


def warm(url: str, body: bytes, count: int) -> None:
    for _ in range(count):
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def load_metrics(
    result: LoadResult,
    before: tuple[float | None, float | None],
    after: tuple[float | None, float | None],
) -> Metrics:
    m: Metrics = {
        "rps": result.rps,
        "p50": result.p50_ms,
        "p90": result.p90_ms,
        "p99": result.p99_ms,
        "mean": result.mean_ms,
        "requests": float(result.requests),
        "errors": float(result.errors),
    }
    for key, b, a in (("up", before[0], after[0]), ("gw", before[1], after[1])):
        if b is not None and a is not None and result.requests and result.duration_s:
            m[f"{key}_cpu_pct"] = (a - b) / result.duration_s * 100
            m[f"{key}_cpu_us"] = (a - b) / result.requests * 1e6
    return m


def probe_metrics(streams: list[dict[str, object]]) -> Metrics:
    def col(key: str) -> list[float]:
        return [float(s[key]) for s in streams]  # type: ignore[arg-type]

    gaps = [float(g) for s in streams for g in s["gaps_ms"]]  # type: ignore[attr-defined]
    content_events = sum(col("content_events"))
    content_reads = sum(col("content_reads"))
    return {
        "ttfe": statistics.median(col("ttfe_ms")),
        "total": statistics.median(col("total_ms")),
        "span": statistics.median(col("span_ms")),
        "events": statistics.median(col("events")),
        "content_events": content_events / len(streams),
        "reads_per_event": content_reads / content_events if content_events else 0.0,
        "max_per_read": max(col("max_content_per_read")),
        "gap_p10": loadgen.percentile(gaps, 10),
        "gap_p50": loadgen.percentile(gaps, 50),
        "gap_p90": loadgen.percentile(gaps, 90),
        "errors": float(sum(1 for s in streams if s["status"] != 200)),
    }


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Gateway overhead against fake upstreams called directly (loopback only).",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (seconds)")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3; quick 1)")
    parser.add_argument("--seconds", type=int, help="seconds per load run (default 2; quick 1)")
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="wrk when installed (auto), else the Python aiohttp load generator",
    )
    parser.add_argument(
        "--history",
        choices=["auto", "on", "off"],
        default="auto",
        help="also measure a gateway with history on: auto = only if the history writer exists",
    )
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure a bare proxy on the gateway's HTTP stack, its floor "
        "(default: on, off with --quick)",
    )
    parser.add_argument(
        "--history-rounds",
        type=int,
        help="paired rounds (history off, then on, or the reverse) per concurrency for the "
        "history verdict (default 10; quick 2; 0: judge from the chat scenarios)",
    )
    parser.add_argument("--chunks", type=int, default=50, help="content chunks per stream")
    parser.add_argument(
        "--delay-ms", type=float, default=2.0, help="upstream pause between stream chunks"
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        default=REPO_ROOT / "docs" / "performance.md",
        help="write the figures into FILE (default docs/performance.md)",
    )
    out.add_argument("--no-write", action="store_true", help="print the table only")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    tool = loadgen.choose(args.loadgen, "bench")
    peer_row = loadgen.have("hey")
    if not peer_row:
        print(f"bench: {loadgen.HEY_INSTALL_HINT}", file=sys.stderr, flush=True)
    quick = bool(args.quick)
    return Settings(
        quick=quick,
        rounds=args.rounds or (1 if quick else 3),
        seconds=args.seconds or (1 if quick else 2),
        warmup_seconds=0 if quick else 1,
        probe_streams=3 if quick else 15,
        chunks=args.chunks,
        delay_ms=args.delay_ms,
        loadgen=tool,
        history=args.history,
        history_rounds=(2 if quick else 10) if args.history_rounds is None else args.history_rounds,
        concurrencies=(10,) if quick else (10, 50),
        peer_row=peer_row,
        floor=(not quick) if args.floor is None else args.floor,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
        bench = Bench(settings, Path(tmp))
        try:
            run = bench.execute()
        except KeyboardInterrupt:
            print("\nbench: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            print(f"\nbench: failed: {exc}", file=sys.stderr)
            for log in sorted(Path(tmp).glob("*.stderr.log")):
                tail = log.read_text(errors="replace")[-1500:]
                if tail.strip():
                    print(f"--- {log.name} (tail) ---\n{tail}", file=sys.stderr)
            return 1
        finally:
            bench.stop()
    run.elapsed_s = time.monotonic() - started
    machine = report.machine_info(settings.loadgen)
    print()
    print(report.text_table(run, machine))
    if not args.no_write:
        path: Path = args.markdown
        report.write_markdown(path, report.markdown_block(run, machine))
        print(f"\nbench: figures written to {path}")
    return 0
