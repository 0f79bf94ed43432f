"""`desktop-proxy history …` in a subprocess, with a private DESKTOP_PROXY_HOME."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desktop_proxy.history.writer import HistoryWriter
from desktop_proxy.paths import AppPaths
from tests.unit.history_helpers import make_record, pricer

NOW = time.time()


def run(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTOP_PROXY")}
    env["DESKTOP_PROXY_HOME"] = str(home)
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    return subprocess.run(
        [sys.executable, "-m", "desktop_proxy", "history", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home with five recorded requests (one error, one unpriced), via the real writer."""
    home = tmp_path / "home"
    writer = HistoryWriter(AppPaths.for_root(home).history_db, pricer=pricer()).start()
    records = [
        make_record(
            time=NOW - 60,
            input_tokens=1000,
            cache_read_tokens=2000,
            cache_write_tokens=500,
            output_tokens=300,
            session_id="sess-1",
            access_key="laptop",
            request_body=b'{"messages": []}',
        ),
        make_record(
            time=NOW - 120, provider="openai", model="gpt-4o-mini", client_api="openai-chat"
        ),
        make_record(time=NOW - 3 * 86400, status=500, error="upstream exploded"),
        make_record(time=NOW - 4 * 86400, provider="openai", model="secret-internal-model"),
        make_record(time=NOW - 5 * 86400, provider="ollama", model="llama3:8b"),
    ]
    for rec in records:
        writer.record(rec)
    assert writer.close()
    return home


def test_history_json_shape(home: Path) -> None:
    result = run(home, "--json", "--limit", "2")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, list) and len(data) == 2
    first = data[0]
    for key in (
        "id", "time", "clientApi", "client", "sessionId", "accessKey", "requestedModel",
        "provider", "model", "upstreamKeyId", "status", "ok", "error", "stream", "ttfbMs",
        "durationMs", "inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens",
        "reasoningTokens", "usageEstimated", "costUsd", "unpriced",
    ):  # fmt: skip
        assert key in first, key
    assert "requestBody" not in first
    assert first["time"].endswith("Z")
    assert first["costUsd"] == pytest.approx(0.009975)
    assert (first["sessionId"], first["accessKey"], first["ok"]) == ("sess-1", "laptop", True)
    assert data[1]["model"] == "gpt-4o-mini"  # newest first
    with_bodies = json.loads(run(home, "--json", "-n", "1", "--bodies").stdout)
    assert with_bodies[0]["requestBody"] == '{"messages": []}'


def test_history_filters(home: Path) -> None:
    def ids(*args: str) -> list[str]:
        result = run(home, "--json", *args)
        assert result.returncode == 0, result.stderr
        return [e["model"] for e in json.loads(result.stdout)]

    assert ids("--since", "1h") == ["claude-sonnet-4-5", "gpt-4o-mini"]
    assert ids("--errors") == ["claude-sonnet-4-5"]
    assert ids("--provider", "ollama") == ["llama3:8b"]
    assert ids("--model", "gpt-4o-mini") == ["gpt-4o-mini"]
    assert ids("--until", "2d", "--provider", "openai") == ["secret-internal-model"]
    assert ids("--search", "exploded") == ["claude-sonnet-4-5"]
    bad = run(home, "--since", "whenever")
    assert bad.returncode == 2 and "24h, 7d" in bad.stderr


def test_history_table(home: Path) -> None:
    result = run(home)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["time", "api", "model"]
    assert "claude:claude-sonnet-4-5 (as sonnet)" in lines[1]
    assert "$0.009975" in lines[1]
    assert any("unpriced" in line for line in lines)
    assert any("upstream exploded" in line for line in lines)


def test_stats_by_model_flags_unpriced(home: Path) -> None:
    result = run(home, "stats")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "openai:secret-internal-model" in out and "unpriced" in out
    assert "history.prices" in out
    data = json.loads(run(home, "stats", "--json").stdout)
    assert data["by"] == "model"
    groups = {(g["provider"], g["key"]): g for g in data["groups"]}
    sonnet = groups[("claude", "claude-sonnet-4-5")]
    assert sonnet["requests"] == 2 and sonnet["errors"] == 1
    assert sonnet["cacheReadTokens"] == 2000
    assert groups[("openai", "secret-internal-model")]["unpricedRequests"] == 1
    assert groups[("ollama", "llama3:8b")]["costUsd"] == 0
    assert data["total"]["requests"] == 5


def test_stats_by_day_and_provider_with_since(home: Path) -> None:
    days = json.loads(run(home, "stats", "--by", "day", "--json").stdout)["groups"]
    assert sum(d["requests"] for d in days) == 5 and len(days) >= 3
    recent = json.loads(run(home, "--since", "1d", "stats", "--by", "provider", "--json").stdout)
    assert {g["key"] for g in recent["groups"]} == {"claude", "openai"}
    assert recent["total"]["requests"] == 2
    table = run(home, "stats", "--by", "provider", "--since", "7d")
    assert table.returncode == 0
    assert any(line.startswith("total ") for line in table.stdout.splitlines())


def test_export_csv_to_file_and_jsonl(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "history.csv"
    result = run(home, "export", "--format", "csv", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert "Exported 5 requests" in result.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert len(rows) == 5
    assert rows[0]["costUsd"] == "0.009975" and rows[0]["cacheWriteTokens"] == "500"
    jsonl = run(home, "export", "--format", "jsonl", "--errors")
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [x["error"] for x in lines] == ["upstream exploded"]


def test_clear_needs_confirmation(home: Path) -> None:
    refused = run(home, "clear")  # stdin is not a terminal
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert len(json.loads(run(home, "--json").stdout)) == 5
    done = run(home, "clear", "--yes")
    assert done.returncode == 0 and "Deleted 5 requests" in done.stdout
    assert json.loads(run(home, "--json").stdout) == []


def test_no_database_yet(tmp_path: Path) -> None:
    home = tmp_path / "empty"
    result = run(home)
    assert result.returncode == 0 and "No requests recorded" in result.stdout
    assert json.loads(run(home, "--json").stdout) == []
    assert run(home, "stats").returncode == 0
    assert not (home / "data" / "history.sqlite3").exists()


def test_damaged_database_is_reported(tmp_path: Path) -> None:
    home = tmp_path / "bad"
    db = AppPaths.for_root(home).history_db
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database at all " * 100)
    result = run(home)
    assert result.returncode == 1
    assert "damaged" in result.stderr and "Traceback" not in result.stderr
