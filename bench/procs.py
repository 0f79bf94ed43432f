"""Start the fake upstreams and the gateways as separate processes; CPU accounting from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"Listening on (http://\S+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class StartError(RuntimeError):
    pass


class ManagedProcess:
    """A child process that prints `Listening on URL` when ready; stopped with SIGTERM."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stderr_file: Path,
        ready_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.stderr_path = stderr_file
        self._stderr: IO[bytes] = stderr_file.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            cwd=REPO_ROOT,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        self.url = self._wait_ready(ready_timeout)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # stop() closed the pipe
            for line in self.proc.stdout:
                self._lines.put(line)
        self._lines.put(None)

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise StartError(f"{self.name} did not report ready within {timeout:.0f}s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                tail = self.stderr_path.read_text(errors="replace")[-2000:]
                raise StartError(
                    f"{self.name} exited with code {code} before it was ready:\n{tail}"
                )
            match = _LISTENING.search(line)
            if match:
                return match.group(1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the process and its live descendants have used so far
        (Linux); None elsewhere. Descendants count: the gateway's history writer is a child
        process, and its work is part of what history costs."""
        return _tree_cpu_seconds(self.proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()
        # Close our end of its stdout too (an open pipe left to the garbage collector warns).
        self._drainer.join(timeout=2.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def system_busy_seconds() -> float | None:
    """CPU seconds all CPUs have spent not idle since boot (Linux); None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    ticks = [int(f) for f in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def _tree_cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    total = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    # Each thread lists the children it started: the gateway starts its history writer from a
    # worker thread, so the main thread's list alone would miss it.
    children: list[str] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                children += (task / "children").read_text().split()
    except OSError:
        pass
    for child in children:
        total += _tree_cpu_seconds(int(child)) or 0.0
    return total


def own_children_seconds() -> float:
    """CPU time of this process and of its finished children (wrk, hey, probes)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class ForeignLoad:
    """CPU used by processes that are not part of the benchmark, while it measures.

    Other work on the machine competes for the same cores and skews the figures; this makes
    it visible. Linux only (returns None elsewhere).
    """

    def __init__(self, running: Sequence[ManagedProcess]) -> None:
        self.running = list(running)
        self.t0 = time.monotonic()
        self.busy0 = system_busy_seconds()
        self.ours0 = self._ours()

    def _ours(self) -> float | None:
        cpu = [p.cpu_seconds() for p in self.running]
        if any(c is None for c in cpu):
            return None
        return sum(c for c in cpu if c is not None) + own_children_seconds()

    def percent_of_a_cpu(self) -> float | None:
        wall = time.monotonic() - self.t0
        busy, ours = system_busy_seconds(), self._ours()
        if None in (busy, ours, self.busy0, self.ours0) or wall <= 0:
            return None
        assert busy is not None and ours is not None
        assert self.busy0 is not None and self.ours0 is not None
        return max(0.0, (busy - self.busy0) - (ours - self.ours0)) / wall * 100


def start_upstream(workdir: Path, chunks: int, delay_ms: float) -> ManagedProcess:
    argv = [
        sys.executable,
        "-m",
        "bench.upstream",
        "--port",
        "0",
        "--chunks",
        str(chunks),
        "--delay-ms",
        str(delay_ms),
    ]
    return ManagedProcess("fake upstream", argv, stderr_file=workdir / "upstream.stderr.log")


def start_tests_fake_upstream(workdir: Path) -> ManagedProcess:
    """The tests' fake upstream (tests/fakes/upstream.py), run by bench/faithful_upstream.py."""
    argv = [sys.executable, "-m", "bench.faithful_upstream", "--port", "0"]
    return ManagedProcess(
        "tests' fake upstream", argv, stderr_file=workdir / "tests-fake-upstream.stderr.log"
    )


def write_gateway_config(path: Path, upstream_url: str, history: bool) -> None:
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "providers": [
            {
                "name": "bench",
                "kind": "openai",
                "baseUrl": upstream_url + "/v1",
                "apiKey": "sk-bench-not-a-secret",
                "models": ["bench-model"],
            }
        ],
        "history": {"enabled": history},
    }
    path.write_text(json.dumps(config, indent=2))


def start_gateway(
    workdir: Path, upstream_url: str, *, history: bool, label: str
) -> tuple[ManagedProcess, Path]:
    """`python -m desktop_proxy serve --port 0` with its own DESKTOP_PROXY_HOME under workdir.

    Runs at the default log level (INFO, one line per request to stderr and the log file), as a
    user would run it. Returns the process and its home directory.
    """
    home = workdir / f"home-{label}"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "bench-config.json"
    write_gateway_config(config, upstream_url, history)
    argv = [
        sys.executable,
        "-m",
        "desktop_proxy",
        "serve",
        "--port",
        "0",
        "--config",
        str(config),
    ]
    if not history:
        argv.append("--no-history")
    env = dict(os.environ)
    env["DESKTOP_PROXY_HOME"] = str(home)
    # Loopback only: make sure nothing routes the gateway's upstream calls through a proxy.
    env["NO_PROXY"] = "127.0.0.1,localhost"
    proc = ManagedProcess(
        f"gateway ({label})", argv, env=env, stderr_file=workdir / f"gateway-{label}.stderr.log"
    )
    return proc, home


def history_files(home: Path) -> list[Path]:
    """Anything the history writer produced under a gateway's data dir."""
    data = home / "data"
    if not data.is_dir():
        return []
    return sorted(p for p in data.rglob("*") if p.is_file() and "history" in p.name)
