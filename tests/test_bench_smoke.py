"""Smoke test of the benchmark tool: `python -m bench --quick --no-write` runs and prints its table.

Not a performance test: nothing here compares a figure with a threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from bench.procs import start_tests_fake_upstream

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_run_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-write", "--history", "on"],
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
    assert "Against the tests' fake upstream" in out
    assert "budgets:" in out
    assert "against the tests' fake upstream (the issue's reference): c=10:" in out
    assert "against the minimal bench upstream (stricter): c=10:" in out
    assert "stream chunks relayed without batching" in out
    # History on vs off, judged from rounds that pair the two gateways back to back.
    assert "history on costs ≤ 10% of throughput" in out
    assert "median of 2 paired rounds" in out


def test_tests_fake_upstream_runner_answers_the_bench_request(tmp_path: Path) -> None:
    upstream = start_tests_fake_upstream(tmp_path)
    try:
        body = {"model": "bench-model", "messages": [{"role": "user", "content": "Hi"}]}
        request = urllib.request.Request(
            upstream.url + "/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    finally:
        upstream.stop()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "bench-model"
    assert answer["choices"][0]["message"]["content"]
    assert upstream.proc.returncode == 0


def test_history_series_pools_paired_rounds_from_fresh_processes(tmp_path: Path) -> None:
    """`python -m bench.history_series` runs its series and pools them into one verdict line."""
    out_json = tmp_path / "rounds.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.history_series",
            "--series",
            "2",
            "--rounds",
            "2",
            "--seconds",
            "1",
            "-c",
            "10",
            "--json",
            str(out_json),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "median of 4 paired rounds in 2 series" in result.stdout
    series = json.loads(out_json.read_text())
    assert [s["concurrency"] for s in series] == [10, 10]
    for s in series:
        assert len(s["rounds"]) == 2
        assert all(r["off_rps"] > 0 and r["on_rps"] > 0 for r in s["rounds"])
