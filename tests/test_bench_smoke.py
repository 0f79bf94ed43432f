"""Smoke test of the benchmark tool: `python -m bench --quick --no-write` runs and prints its table.

Not a performance test: nothing here compares a figure with a threshold.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_run_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-write"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "desktop_proxy benchmark" in out
    for heading in ("metric", "direct", "gateway", "Non-streamed chat completions", "Streams"):
        assert heading in out
    for row in ("c=1 latency p50 (ms)", "c=10 throughput (req/s)", "reads per content event"):
        assert row in out
    assert "budgets:" in out
    assert "stream chunks relayed without batching" in out
