"""Does the UI stall while the gateway serves 100 requests per second? (issue 5, item 7)

`python -m bench.ui_stall` starts the tray app's real set-up offscreen (QT_QPA_PLATFORM=offscreen):
a QApplication on the app's event loop (gui.loop.GatewayEventLoop, qasync underneath), built by
desktop_proxy.gui.app.build_tray_app and started by TrayApp.start() as the app does, whose
Services start the real gateway in this process, on that loop, with history on (in a temporary
DESKTOP_PROXY_HOME, pre-filled with --prefill stored requests). The fake OpenAI upstream
(bench.upstream) and the load generator (this module's `loadgen` command) run as separate
processes. The load is open-loop: requests are sent on a fixed schedule (--rate per second, for
--seconds), whatever the answers' latency, and mixed: OpenAI chat and Anthropic messages, each
streamed and not streamed.

A 10 ms QTimer on the UI thread records when each tick fires; a tick's stall is how much later
than 10 ms after the previous one it came. Phases: idle (no load, window closed); load with the
History window opened 2 s in and left open (live updates, --window-range, the app's default
"Last 7 days"); load with the window closed. Each phase reports max, p99, p99.9 and the number
of stalls over 50 ms, and the load generator reports what it achieved (so an overloaded machine
is visible as such).

`--write-doc` replaces the "UI responsiveness" section of docs/performance.md (only that
section) with the figures; `--profile DIR` runs py-spy on this process during each load phase and
saves collapsed stacks per thread (install with `pip install py-spy`). UI_STALL_DEBUG=1 lists
slow event-loop callbacks and what the garbage collector tracks after each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC = REPO_ROOT / "docs" / "performance.md"
SECTION = "## UI responsiveness"
TICK_MS = 10.0
BUDGET_MS = 50.0
# The History window's time ranges (history_window.RANGES, in order); the app opens on 7d.
RANGE_CHOICES = ("hour", "today", "7d", "30d", "all")
DEFAULT_RANGE = "7d"
MODEL = "bench-model"


# --- the load generator (its own process) -------------------------------------------------------


def _kind(i: int) -> tuple[str, bool]:
    """Request i's front door and whether it streams: the four mixes in turn."""
    return ("openai" if i % 4 < 2 else "anthropic"), i % 2 == 1


def _body(kind: str, stream: bool, i: int) -> bytes:
    messages = [{"role": "user", "content": f"Say hello ({i})."}]
    if kind == "openai":
        return json.dumps({"model": MODEL, "messages": messages, "stream": stream}).encode()
    return json.dumps(
        {"model": MODEL, "max_tokens": 256, "messages": messages, "stream": stream}
    ).encode()


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _loadgen(base: str, rate: float, seconds: float) -> dict[str, Any]:
    import aiohttp

    total = max(1, round(rate * seconds))
    latencies: list[float] = []
    errors: list[str] = []
    behind: list[float] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False
    ) as session:

        async def one(i: int) -> None:
            kind, stream = _kind(i)
            url = base + ("/v1/chat/completions" if kind == "openai" else "/v1/messages")
            headers = {"Content-Type": "application/json"}
            if kind == "anthropic":
                headers["anthropic-version"] = "2023-06-01"
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=_body(kind, stream, i), headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors.append(f"HTTP {r.status}")
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(type(exc).__name__)
                return
            latencies.append((time.perf_counter() - t0) * 1000)

        tasks = []
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            behind.append(max(0.0, time.perf_counter() - due) * 1000)
            tasks.append(asyncio.create_task(one(i)))
        sent_in = time.perf_counter() - start
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "requests": total,
        "ok": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "send_rate": total / sent_in if sent_in > 0 else float("nan"),
        "elapsed_s": elapsed,
        "send_behind_p99_ms": percentile(behind, 99),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "latency_max_ms": max(latencies) if latencies else float("nan"),
    }


def loadgen_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_stall loadgen")
    parser.add_argument("--url", required=True, help="the gateway's base URL")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    result = asyncio.run(_loadgen(args.url.rstrip("/"), args.rate, args.seconds))
    print(json.dumps(result), flush=True)
    return 0


# --- child processes ----------------------------------------------------------------------------


class Child:
    """A child process that prints `Listening on URL` when ready (bench.upstream does)."""

    def __init__(self, argv: list[str], log_file: Path, env: dict[str, str] | None = None):
        self.log = log_file.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            preexec_fn=PREEXEC,
        )

    def wait_listening(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        found: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                match = re.search(r"Listening on (http://\S+)", line)
                if match:
                    found.append(match.group(1))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.stop()
            raise RuntimeError(f"{self.proc.args} did not start; see {self.log.name}")
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def _die_with_parent() -> None:
    """Linux: a child gets SIGTERM when this process dies, even if it aborts."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


PREEXEC = _die_with_parent if sys.platform.startswith("linux") else None


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- measuring the UI thread --------------------------------------------------------------------


@dataclass(slots=True)
class StallStats:
    phase: str
    seconds: float
    ticks: int
    max_ms: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    over_50: int
    over_20: int
    gc_max_ms: float
    gc_full: int
    # Other processes on the machine, and CPU stolen by the hypervisor: % of one CPU.
    foreign_cpu: tuple[float, float] | None = None
    worst: list[float] = field(default_factory=list)
    worst_at: list[float] = field(default_factory=list)  # seconds into the phase
    load: dict[str, Any] | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.max_ms <= BUDGET_MS


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds() -> tuple[float, float] | None:
    """CPU seconds all CPUs spent running something, and stolen by the hypervisor (a virtual
    machine's CPUs running someone else), since boot (Linux /proc/stat); None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq) / _CLK_TCK, steal / _CLK_TCK


def _own_seconds(pids: Sequence[int]) -> float:
    """CPU seconds of this process, its finished children and the running `pids`."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


class StallMeter:
    """A 10 ms QTimer on the UI thread; stall = actual interval - 10 ms. Also times the garbage
    collector's pauses (they stop the UI thread too)."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(int(TICK_MS))
        self.timer.timeout.connect(self._tick)
        self.times: list[float] = []
        self.gc_pauses: list[tuple[int, float]] = []
        self._gc_start = 0.0
        # Running children whose CPU is ours (the upstream); the load generator is counted
        # once it has exited (RUSAGE_CHILDREN).
        self.own_pids: list[int] = []
        self._cpu0: tuple[tuple[float, float] | None, float, float] = (None, 0.0, 0.0)

    def _tick(self) -> None:
        self.times.append(time.perf_counter())

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        # In any thread: a collection holds the GIL, so the UI thread waits for it too.
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start:
            self.gc_pauses.append(
                (info["generation"], (time.perf_counter() - self._gc_start) * 1e3)
            )

    def start(self) -> None:
        self.times.clear()
        self.gc_pauses.clear()
        self._cpu0 = (_cpu_seconds(), _own_seconds(self.own_pids), time.monotonic())
        gc.callbacks.append(self._gc)
        self.timer.start()

    def foreign_cpu(self) -> tuple[float, float] | None:
        """Since start(), in % of one CPU: other processes' CPU use, and CPU time the
        hypervisor gave to other machines (Linux)."""
        cpu0, own0, t0 = self._cpu0
        cpu = _cpu_seconds()
        wall = time.monotonic() - t0
        if cpu is None or cpu0 is None or wall <= 0:
            return None
        own = _own_seconds(self.own_pids) - own0
        others = max(0.0, (cpu[0] - cpu0[0]) - own) / wall * 100
        return others, max(0.0, cpu[1] - cpu0[1]) / wall * 100

    def stop(self, phase: str) -> StallStats:
        self.timer.stop()
        foreign = self.foreign_cpu()
        if os.environ.get("UI_STALL_DEBUG"):
            from collections import Counter

            objs = gc.get_objects()
            top = Counter(type(o).__name__ for o in objs).most_common(12)
            print(f"[{phase}] tracked {len(objs):,}, frozen {gc.get_freeze_count():,}: {top}")
            handles = [o for o in objs if isinstance(o, asyncio.Handle)]
            cancelled = sum(1 for h in handles if h.cancelled())
            print(f"[{phase}] asyncio handles alive: {len(handles):,}, cancelled {cancelled:,}")
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc)
        stalls = [
            max(0.0, (b - a) * 1000 - TICK_MS)
            for a, b in zip(self.times, self.times[1:], strict=False)
        ]
        seconds = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
        return StallStats(
            phase=phase,
            seconds=seconds,
            ticks=len(stalls),
            max_ms=max(stalls, default=0.0),
            p50_ms=percentile(stalls, 50),
            p99_ms=percentile(stalls, 99),
            p999_ms=percentile(stalls, 99.9),
            over_50=sum(1 for s in stalls if s > BUDGET_MS),
            over_20=sum(1 for s in stalls if s > 20),
            gc_max_ms=max((ms for _g, ms in self.gc_pauses), default=0.0),
            gc_full=sum(1 for g, _ms in self.gc_pauses if g == 2),
            foreign_cpu=foreign,
            worst=sorted(stalls, reverse=True)[:5],
            worst_at=[
                self.times[i + 1] - self.times[0]
                for i in sorted(range(len(stalls)), key=stalls.__getitem__, reverse=True)[:5]
            ],
        )


# --- the scenario -------------------------------------------------------------------------------


def prefill(db: Path, count: int) -> None:
    """`count` stored requests over the last 30 days, as a user with some history has."""
    if count <= 0:
        return
    from desktop_proxy.config.models import HistorySettings
    from desktop_proxy.history.record import RequestRecord
    from desktop_proxy.history.writer import HistoryWriter

    writer = HistoryWriter(
        db, settings=HistorySettings(store_bodies=False), batch_size=2000, max_buffer=count + 1
    )
    writer.start()
    now = time.time()
    span = 30 * 86400
    for i in range(count):
        ok = i % 40 != 0
        writer.record(
            RequestRecord(
                id=f"req_prefill_{i:08d}",
                time=now - span + span * i / count - 60,
                client_api="openai-chat" if i % 2 else "anthropic",
                path="/v1/chat/completions" if i % 2 else "/v1/messages",
                client="bench",
                requested_model=MODEL,
                provider="bench",
                model=MODEL,
                status=200 if ok else 502,
                ok=ok,
                error=None if ok else "upstream failed",
                stream=i % 3 == 0,
                duration_ms=120.0,
                input_tokens=1200,
                output_tokens=300,
                cost_usd=0.0021,
            )
        )
    if not writer.flush(600) or writer.status.written != count:
        raise RuntimeError(f"could not pre-fill the history: {writer.status}")
    writer.close()


def write_config(path: Path, upstream: str) -> None:
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": [
            {
                "name": "bench",
                "kind": "openai",
                "baseUrl": upstream + "/v1",
                "apiKey": "sk-bench-not-a-secret",
                "models": [MODEL],
            }
        ],
        "history": {"enabled": True, "storeBodies": True},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))


@dataclass(slots=True)
class Options:
    rate: float
    seconds: float
    idle_seconds: float
    warmup_seconds: float
    chunks: int
    delay_ms: float
    prefill: int
    profile: Path | None
    keep: bool
    window_range: str = DEFAULT_RANGE
    upstream_pid: int = 0  # set once the upstream runs: its CPU is ours, not "other load"


async def _sleep_ui(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _py_spy() -> str:
    """py-spy next to this Python (pip install py-spy into the venv), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    return found


OPEN_AT = 2.0  # seconds into the load when the History window is opened


async def _load_phase(
    name: str,
    url: str,
    opts: Options,
    meter: StallMeter,
    workdir: Path,
    during: Callable[[], object] | None = None,
) -> StallStats:
    argv = [
        sys.executable,
        "-m",
        "bench.ui_stall",
        "loadgen",
        "--url",
        url,
        "--rate",
        str(opts.rate),
        "--seconds",
        str(opts.seconds),
    ]
    slug = name.replace(" ", "-").replace("/", "").replace(",", "")
    spy = None
    if opts.profile is not None:
        opts.profile.mkdir(parents=True, exist_ok=True)
        spy = await asyncio.create_subprocess_exec(
            _py_spy(),
            "record",
            "--pid",
            str(os.getpid()),
            "--rate",
            "200",
            "--output",
            str(opts.profile / f"{slug}.txt"),
            "--format",
            "raw",  # collapsed stacks, per thread: flamegraph.pl or speedscope read them
            "--threads",
            "--duration",
            str(int(opts.seconds) + 1),
            "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(workdir / f"py-spy-{slug}.log").open("wb"),
        )
    meter.start()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO_ROOT,
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=(workdir / f"loadgen-{slug}.log").open("wb"),
        preexec_fn=PREEXEC,
    )
    if during is not None:
        asyncio.get_running_loop().call_later(OPEN_AT, during)
    out, _ = await proc.communicate()
    stats = meter.stop(name)
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the load generator failed ({proc.returncode}); see {workdir}")
    stats.load = json.loads(lines[-1])
    if spy is not None:
        await spy.wait()
    return stats


async def scenario(tray_app: Any, opts: Options, workdir: Path) -> list[StallStats]:
    from desktop_proxy.gui.facade import HistoryFilter

    facade = tray_app.facade
    tray_app.start()  # as TrayApp.main: tray, gateway (port 0 in the config), background work
    for _ in range(300):
        if facade.status().running:
            break
        await _sleep_ui(0.1)
    else:
        raise RuntimeError(f"the gateway did not start: {facade.status()}")
    url = facade.status().url
    # Start-up work settles: the History window is built hidden, the heap frozen (gui.app).
    await _sleep_ui(6.0)
    meter = StallMeter()
    meter.own_pids = [opts.upstream_pid] if opts.upstream_pid else []
    results: list[StallStats] = []

    meter.start()
    await _sleep_ui(opts.idle_seconds)
    results.append(meter.stop("idle, window closed"))

    if opts.warmup_seconds > 0:  # connection pools, the pricer's caches
        warm = Options(**{**asdict(opts), "seconds": opts.warmup_seconds, "profile": None})
        await _load_phase("warm-up", url, warm, meter, workdir)

    await _sleep_ui(1.0)  # the warm-up's last requests are stored
    before = await asyncio.to_thread(facade.history.count, HistoryFilter())
    if opts.window_range != DEFAULT_RANGE:
        tray_app.prepare_history()
        tray_app._history.range_box.setCurrentIndex(RANGE_CHOICES.index(opts.window_range))
    stats = await _load_phase(
        f"{opts.rate:.0f} req/s, History window ({opts.window_range}) opened at {OPEN_AT:.0f} s",
        url,
        opts,
        meter,
        workdir,
        during=tray_app.show_history,
    )
    await _sleep_ui(1.5)  # the last rows are written and flushed into the window
    window = tray_app._history
    flt = window.model.filters
    stored = await asyncio.to_thread(facade.history.count, flt)
    rows = window.model.rowCount()
    ids = {window.model.record_at(i).id for i in range(rows)}
    stats.note = (
        f"window: {window.model.total:,} matching requests, {rows:,} rows loaded "
        f"({len(ids):,} distinct); history has {stored:,} for its filter"
    )
    results.append(stats)
    window.close()
    await _sleep_ui(1.0)

    closed = await _load_phase(
        f"{opts.rate:.0f} req/s, History window closed", url, opts, meter, workdir
    )
    results.append(closed)
    await _sleep_ui(1.0)
    tray_app.tray.menu.aboutToShow.emit()  # the menu's figures, read in the background
    await _sleep_ui(1.0)
    status_line = tray_app.tray.status_action.text()
    await facade.shutdown()
    after = await asyncio.to_thread(facade.history.count, HistoryFilter())
    served = sum(r.load["requests"] for r in results if r.load is not None)
    closed.note = f"history stored {after - before:,} of the {served:,} requests of both phases"
    print(f"tray status line at the end: {status_line}", flush=True)
    return results


def run(opts: Options) -> list[StallStats]:
    workdir = Path(tempfile.mkdtemp(prefix="desktop-proxy-ui-stall-"))
    home = workdir / "home"
    os.environ["DESKTOP_PROXY_HOME"] = str(home)
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    upstream = Child(
        [
            sys.executable,
            "-m",
            "bench.upstream",
            "--port",
            "0",
            "--chunks",
            str(opts.chunks),
            "--delay-ms",
            str(opts.delay_ms),
        ],
        workdir / "upstream.log",
        env=child_env(),
    )
    try:
        upstream_url = upstream.wait_listening()
        from desktop_proxy.paths import AppPaths

        paths = AppPaths.from_environment()
        write_config(paths.config_file, upstream_url)
        t0 = time.perf_counter()
        prefill(paths.history_db, opts.prefill)
        if opts.prefill:
            print(
                f"pre-filled the history with {opts.prefill:,} requests "
                f"in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
        opts = replace(opts, upstream_pid=upstream.proc.pid)
        return _run_app(paths, opts, workdir)
    finally:
        upstream.stop()
        if not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", flush=True)


def _trace_slow_handles(threshold: float = 0.015) -> list[tuple[float, str]]:
    """UI_STALL_DEBUG: note every event-loop callback slower than `threshold` seconds."""
    slow: list[tuple[float, str]] = []
    original = asyncio.Handle._run
    started = time.perf_counter()

    def timed(handle: asyncio.Handle) -> None:
        t0 = time.perf_counter()
        original(handle)
        took = time.perf_counter() - t0
        if took > threshold:
            owner = getattr(getattr(handle, "_callback", None), "__self__", None)
            coro = getattr(owner, "get_coro", lambda: None)()
            what = getattr(coro, "__qualname__", None) or repr(handle)[:160]
            slow.append((took * 1000, f"{what} at {t0 - started:.1f} s"))

    asyncio.Handle._run = timed  # type: ignore[method-assign]
    return slow


def _run_app(paths: Any, opts: Options, workdir: Path) -> list[StallStats]:
    from PySide6.QtWidgets import QApplication

    from desktop_proxy.gui.app import build_tray_app
    from desktop_proxy.gui.loop import GatewayEventLoop
    from desktop_proxy.gui.prefs import GuiPrefs
    from desktop_proxy.logs import configure_logging
    from desktop_proxy.services import Services

    app = QApplication.instance() or QApplication(["desktop-proxy-bench"])
    assert isinstance(app, QApplication)
    app.setQuitOnLastWindowClosed(False)
    # As the app logs (one INFO line per request), to its log file; not to this terminal.
    configure_logging(paths.log_file, "INFO", stderr=False)
    services = Services(paths)
    services.load_config()
    loop = GatewayEventLoop(app)  # as gui.app.run does
    asyncio.set_event_loop(loop)
    tray_app = build_tray_app(app, services, loop, GuiPrefs(start_gateway_on_launch=True))
    tray_app.show_error = lambda title, message: print(f"error: {title}: {message}")  # type: ignore[method-assign]
    slow = _trace_slow_handles() if os.environ.get("UI_STALL_DEBUG") else None
    with loop:
        results = loop.run_until_complete(scenario(tray_app, opts, workdir))
    if slow is not None:
        for ms, what in sorted(slow, reverse=True)[:15]:
            print(f"slow callback {ms:.1f} ms: {what}")
    return results


# --- reporting ----------------------------------------------------------------------------------


def _f(value: float) -> str:
    return f"{value:.1f}"


def _foreign(value: tuple[float, float] | None) -> str:
    return "—" if value is None else f"{value[0]:.0f} / {value[1]:.0f}"


def table(results: list[StallStats]) -> str:
    head = (
        "| phase | UI ticks | max stall (ms) | p99 (ms) | p99.9 (ms) | > 50 ms | > 20 ms "
        "| worst GC pause (ms) | other processes / stolen (% of a CPU) | load achieved |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for r in results:
        load = "—"
        if r.load is not None:
            load = (
                f"{r.load['ok']:,}/{r.load['requests']:,} ok at {r.load['send_rate']:.0f} req/s, "
                f"p50 {r.load['latency_p50_ms']:.0f} ms / p99 {r.load['latency_p99_ms']:.0f} ms"
            )
        rows.append(
            f"| {r.phase} | {r.ticks:,} | {_f(r.max_ms)} | {_f(r.p99_ms)} | {_f(r.p999_ms)} "
            f"| {r.over_50} | {r.over_20} | {_f(r.gc_max_ms)} "
            f"| {_foreign(r.foreign_cpu)} | {load} |"
        )
    return head + "\n".join(rows) + "\n"


def machine() -> str:
    cpus = os.cpu_count() or 0
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from PySide6 import __version__ as pyside

    return (
        f"{platform.system()} {platform.release()}, {cpus} CPUs ({model}), "
        f"Python {platform.python_version()}, PySide6 {pyside}"
    )


FINDINGS = """\
**What it found, and what was fixed** (all in `desktop_proxy/gui/`; figures from the first runs
of this benchmark on the same machine):

1. *The app aborted.* PySide6 6.12.0 on CPython 3.11 returns `None` from void methods and the
   bool from `Signal.emit()` without taking a reference; qasync alone makes such calls for
   every callback, so within a minute at 100 req/s the interpreter died with
   `Fatal Python error: none_dealloc`. `gui/qt_fixes.py` detects the defect at start-up and
   makes those three objects immortal, as CPython 3.12 does.
2. *Full garbage collections stopped the UI for 50–130 ms* (the GC pause column), walking
   the ~85,000 objects Qt, aiohttp and the price tables leave for the life of the app.
   `heap.settle_heap` moves them out of the collector's way (`gc.freeze()`) at start-up and
   again once the gateway has run for a few seconds.
3. *Dead timers piled up.* qasync gives every `call_later` its own Qt timer and keeps a cancelled
   one until it would have fired; aiohttp arms about a dozen timeouts per request and cancels
   them: 34,000 dead handles after 40 s, more objects for every collection, heavier Qt timer
   bookkeeping. `gui/loop.py` (`GatewayEventLoop`, the app's loop now) keeps delayed callbacks
   in one heap behind a single Qt timer, as asyncio's own loops do: a few dozen remain.
4. *Opening the History window cost 130 ms* under load (import, widget tree, first paint).
   The app now builds it shortly after start-up, hidden, and paints it once off screen; it
   queries nothing until shown.

Before 2 and 3 (with 1): max stall 126–130 ms, 1–6 ticks over 50 ms per 20 s phase; with
them, on the same gateway code: 25–45 ms, and one 57.9 ms tick in ten runs. The history writer
then ran as a thread of the app and took the GIL from the UI thread for every batch it prepared;
since it runs as a process of its own (`history/remote.py`), the worst stall with the History
window open is 12–18 ms and with it closed 3–9 ms (the runs above).

The window's own work is small next to the gateway's (py-spy: the table model's `data()` and
the live-row path together ~4% of the UI thread's samples, socket writes of the relayed
streams 22%). The summary query backs off so that it uses at most 10% of a CPU ("All time"
over 100k rows takes ~0.2 s of CPU), and rows arriving live are capped at 20,000, so a window
left open for hours does not grow without end.

Not measured here: the Settings window (it reads the keyring, which a benchmark should not
touch); a real desktop's compositor and tray host (offscreen has neither).
"""


def _worst_load_phase(results: list[StallStats]) -> StallStats:
    return max((r for r in results if r.load is not None), key=lambda r: r.max_ms)


def runs_table(runs: list[list[StallStats]]) -> str:
    """One line per run and phase: the figures that matter for the budget."""
    lines = [
        "| run | phase | max stall (ms) | p99 (ms) | > 50 ms | other processes / stolen (%) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n, results in enumerate(runs, 1):
        for r in results:
            lines.append(
                f"| {n} | {r.phase} | {_f(r.max_ms)} | {_f(r.p99_ms)} | {r.over_50} "
                f"| {_foreign(r.foreign_cpu)} |"
            )
    return "\n".join(lines) + "\n"


def section(runs: list[list[StallStats]], opts: Options, notes: str = "") -> str:
    # The table shows the run whose worst stall under load was the largest (the conservative
    # pick); with several runs, every run's figures follow.
    results = max(runs, key=lambda rs: _worst_load_phase(rs).max_ms)
    within = sum(1 for rs in runs if all(r.ok for r in rs))
    if within == len(runs):
        verdict_text = f"within the {BUDGET_MS:.0f} ms budget" + (
            f" in all {len(runs)} runs" if len(runs) > 1 else ""
        )
    else:
        verdict_text = (
            f"within the {BUDGET_MS:.0f} ms budget in {within} of {len(runs)} runs"
            if len(runs) > 1
            else f"over the {BUDGET_MS:.0f} ms budget"
        )
    worst = _worst_load_phase(results)
    checks = "\n".join(f"- {r.phase}: {r.note}" for r in results if r.note)
    if len(runs) > 1:
        notes = (
            f"All {len(runs)} runs (the table above is run "
            f"{runs.index(results) + 1}, the one with the largest stall):\n\n"
            + runs_table(runs)
            + "\n"
            + notes
        )
    body = f"""{SECTION}

Issue 5 asks that the UI never stalls more than {BUDGET_MS:.0f} ms while the gateway serves
{opts.rate:.0f} requests per second. The gateway runs on the UI thread (qasync), so every
millisecond it spends is a millisecond the tray and windows cannot respond.

**Reproduce:** `python -m bench.ui_stall` (about two minutes; `--write-doc` rewrites this
section and nothing else; `--profile DIR` saves py-spy stacks of the load phases;
`UI_STALL_DEBUG=1` lists slow event-loop callbacks and what the garbage collector tracks).

**Method.** The tray app's own set-up (`gui.app.build_tray_app`, then `TrayApp.start()` as
`main()` does) runs offscreen (`QT_QPA_PLATFORM=offscreen`) on the app's event loop. Its
`Services` start the real gateway in the same process and thread, with history on (SQLite,
request and response bodies stored) in a temporary `DESKTOP_PROXY_HOME` pre-filled with
{opts.prefill:,} requests over 30 days; it logs to its log file at INFO, as the app does. The
fake OpenAI upstream (`bench.upstream`, {opts.chunks} deltas {opts.delay_ms:g} ms apart per
stream) and the load generator run as separate processes. The load is open-loop:
{opts.rate:.0f} requests per second for {opts.seconds:.0f} s, sent on schedule whatever the
latency, a quarter each of OpenAI chat and Anthropic messages, streamed and not. A
{TICK_MS:.0f} ms precise `QTimer` on the UI thread records each tick; stall = interval −
{TICK_MS:.0f} ms. The History window (range: {opts.window_range}) is opened {OPEN_AT:.0f} s into the
first load phase and follows the requests live from then on (rows inserted in batches every
250 ms, summary and chart re-read in a worker thread). The tray's figures are re-read in the
background. A warm-up of {opts.warmup_seconds:.0f} s at the same rate runs before the
measured phases. Measured {datetime.now():%Y-%m-%d} on {machine()}. The three processes share
those CPUs; "other processes" is CPU used by anything else on the machine, "stolen" the time a
virtual machine's host gave to other machines (0 on real hardware).

{table(results)}
**Verdict: {verdict_text}** (worst stall {worst.max_ms:.1f} ms, {worst.phase}; other
processes / CPU stolen by the hypervisor in that phase: {_foreign(worst.foreign_cpu)} % of a
CPU).

Consistency checks of the same run:

{checks}

{notes}
{FINDINGS}"""
    return body.rstrip() + "\n"


def write_doc(text: str, path: Path = DOC) -> None:
    """Replace our section (from its heading to the next `## ` heading), or append it; nothing
    else in the file changes."""
    current = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n"
    lines = current.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        new = current.rstrip("\n") + "\n\n" + text
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + tail if tail else "")
    path.write_text(new, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["loadgen"]:
        return loadgen_main(args_in[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.ui_stall", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="per load phase")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--chunks", type=int, default=50, help="content deltas per stream")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="between stream deltas")
    parser.add_argument("--prefill", type=int, default=100_000, help="stored requests first")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy stacks here")
    parser.add_argument(
        "--window-range",
        choices=RANGE_CHOICES,
        default=DEFAULT_RANGE,
        help="the History window's time range (all: the summary reads every stored request)",
    )
    parser.add_argument("--write-doc", action="store_true", help="update docs/performance.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home and logs")
    parser.add_argument("--runs", type=int, default=1, help="repeat, each from a fresh start")
    args = parser.parse_args(args_in)
    opts = Options(
        rate=args.rate,
        seconds=args.seconds,
        idle_seconds=args.idle_seconds,
        warmup_seconds=args.warmup_seconds,
        chunks=args.chunks,
        delay_ms=args.delay_ms,
        prefill=args.prefill,
        profile=args.profile,
        keep=args.keep,
        window_range=args.window_range,
    )
    runs: list[list[StallStats]] = []
    for n in range(args.runs):
        if args.runs > 1:
            print(f"\n=== run {n + 1} of {args.runs} ===", flush=True)
        results = run(opts)
        runs.append(results)
        print()
        print(table(results))
        for r in results:
            print(
                f"{r.phase}: worst stalls "
                + ", ".join(
                    f"{w:.1f} ms at {t:.1f} s" for w, t in zip(r.worst, r.worst_at, strict=False)
                )
                + "; "
                f"GC: {r.gc_full} full collections, worst pause {_f(r.gc_max_ms)} ms"
                + (f"; {r.note}" if r.note else "")
                + (f"; load errors {r.load['error_kinds']}" if r.load and r.load["errors"] else "")
            )
    if len(runs) > 1:
        print()
        print(runs_table(runs))
    ok = all(r.ok for results in runs for r in results)
    print(f"\nverdict: {'within' if ok else 'OVER'} the {BUDGET_MS:.0f} ms budget")
    if args.write_doc:
        write_doc(section(runs, opts))
        print(f"wrote the '{SECTION[3:]}' section of {DOC}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
