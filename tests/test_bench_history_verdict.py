"""The bench's history verdict: judged from paired rounds, so that a slow patch of the machine
during one gateway's runs does not decide it (synthetic figures), with the history writer
process's CPU counted."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.procs import _tree_cpu_seconds
from bench.runner import Run, Settings


def settings(history_rounds: int = 4) -> Settings:
    return Settings(
        quick=False,
        rounds=3,
        seconds=2,
        warmup_seconds=1,
        probe_streams=15,
        chunks=50,
        delay_ms=2.0,
        loadgen="wrk",
        history="on",
        history_rounds=history_rounds,
        concurrencies=(10,),
        peer_row=False,
        floor=False,
    )


def run_with(pairs: list[tuple[float, float]], chat: tuple[float, float] | None = None) -> Run:
    run = Run(settings=settings(len(pairs)), targets=[report.GATEWAY, report.HISTORY])
    run.history_writer_seen = True
    for off, on in pairs:
        run.add("history-c10", report.GATEWAY, {"rps": off, "gw_cpu_us": 200.0})
        run.add("history-c10", report.HISTORY, {"rps": on, "gw_cpu_us": 216.0})
    if chat is not None:
        run.add("chat-c10", report.GATEWAY, {"rps": chat[0]})
        run.add("chat-c10", report.HISTORY, {"rps": chat[1]})
    return run


def test_each_round_is_compared_with_its_own_pair() -> None:
    # The machine slows down by half midway: unpaired medians would see a 45% cost.
    pairs = [(5000, 4700), (5000, 4650), (2500, 2350), (2500, 2300), (2500, 2360)]
    costs = report.paired_costs(run_with(pairs), "history-c10")
    assert [round(c, 3) for c in costs] == [0.06, 0.07, 0.06, 0.08, 0.056]
    verdict = report.history_verdict(run_with(pairs))
    assert verdict.verdict == "PASS"
    assert "c=10: +6% cost, median of 5 paired rounds" in verdict.figure
    assert "CPU per request at c=10 216 vs 200 µs (+8%)" in verdict.figure


def test_a_cost_above_the_budget_fails() -> None:
    verdict = report.history_verdict(run_with([(5000, 4300), (4800, 4100), (5100, 4500)]))
    assert verdict.verdict == "FAIL"
    assert "c=10: +14% cost" in verdict.figure


def test_without_paired_rounds_the_chat_scenario_decides() -> None:
    run = run_with([], chat=(5000, 4000))
    verdict = report.history_verdict(run)
    assert verdict.verdict == "FAIL"
    assert "c=10: 4,000 vs 5,000 req/s = +20% cost" in verdict.figure


def paired(costs: list[float], off: float = 5000.0) -> list[tuple[float, float]]:
    return [(off, off * (1 - cost)) for cost in costs]


def test_the_figure_says_when_rounds_too_scattered_to_settle_the_budget() -> None:
    # Ten rounds whose median is under the budget, but whose spread puts another run's median
    # above it as easily: the report must not let the PASS read as settled.
    scattered = [0.22, -0.12, 0.15, 0.02, 0.19, -0.05, 0.11, 0.04, 0.16, 0.08]
    verdict = report.history_verdict(run_with(paired(scattered)))
    assert verdict.verdict == "PASS"
    assert "c=10: +9% cost" in verdict.figure
    assert "which spans the budget" in verdict.figure

    steady = [0.05, 0.06, 0.04, 0.05, 0.07, 0.05, 0.06, 0.04, 0.05, 0.06]
    verdict = report.history_verdict(run_with(paired(steady)))
    assert verdict.verdict == "PASS"
    assert "95% interval of the median +5% to +6%;" in verdict.figure
    assert "spans the budget" not in verdict.figure


def test_the_interval_brackets_the_median_and_narrows_with_more_rounds() -> None:
    costs = [0.02, 0.18, 0.09, 0.11, -0.04, 0.14, 0.07, 0.12, 0.01, 0.16]
    low, high = report.median_interval(costs)
    assert min(costs) <= low <= statistics.median(costs) <= high <= max(costs)
    assert report.median_interval(costs) == (low, high)  # seeded: one run, one report
    low4, high4 = report.median_interval(costs * 4)
    assert high4 - low4 < high - low


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
def test_cpu_of_a_child_started_from_a_worker_thread_is_counted() -> None:
    """The gateway starts its history writer from a worker thread; the writer's CPU is part
    of what history costs, so the bench must find it under that thread, not only the main."""
    busy_child = (
        "import time\n"
        "while time.process_time() < 0.4: pass\n"
        "print('done', flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = (
        "import subprocess, sys, threading\n"
        f"code = {busy_child!r}\n"
        # The thread lives on (like an executor's): its children stay its own.
        "t = threading.Thread(target=lambda: subprocess.Popen("
        "[sys.executable, '-c', code], stdout=sys.stdout).wait())\n"
        "t.start(); t.join()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "done"
        seconds = _tree_cpu_seconds(proc.pid)
        assert seconds is not None and seconds >= 0.4
    finally:
        for pid in Path(f"/proc/{proc.pid}/task").glob("*/children"):
            for child in pid.read_text().split():
                os.kill(int(child), signal.SIGKILL)
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
