"""Shared helpers for the history tests."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from desktop_proxy.config.models import ProviderConfig
from desktop_proxy.history.pricing import Pricer
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.store import unpack_body

CLAUDE = ProviderConfig(
    name="claude",
    kind="anthropic",
    base_url="https://api.anthropic.com",
    protocol="anthropic",
    auth="x-api-key",
)
OPENAI = ProviderConfig(
    name="openai",
    kind="openai",
    base_url="https://api.openai.com/v1",
    protocol="openai",
    auth="bearer",
)
OLLAMA = ProviderConfig(
    name="ollama",
    kind="ollama",
    base_url="http://127.0.0.1:11434/v1",
    protocol="openai",
    auth="none",
)


def pricer() -> Pricer:
    return Pricer([CLAUDE, OPENAI, OLLAMA])


def make_record(**overrides: Any) -> RequestRecord:
    """A finished, successful record; keyword arguments override fields."""
    status = overrides.pop("status", 200)
    error = overrides.pop("error", None)
    fields: dict[str, Any] = {
        "client_api": "anthropic",
        "path": "/v1/messages",
        "client": "claude-cli/2.0 (cli)",
        "requested_model": "sonnet",
        "provider": "claude",
        "model": "claude-sonnet-4-5",
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
    }
    fields.update(overrides)
    rec = RequestRecord(**fields)
    rec.finish(status, error)
    return rec


def db_bytes(data_dir: Path) -> bytes:
    """Every byte of every file under `data_dir` (database, WAL, shared memory, moved files),
    and the text of the bodies stored compressed, which a search of the raw bytes would miss."""
    files = sorted(p for p in data_dir.rglob("*") if p.is_file())
    unpacked: list[bytes] = []
    for path in files:
        if path.name.endswith(".sqlite3"):
            unpacked.extend(_compressed_bodies(path))
    return b"".join([*(p.read_bytes() for p in files), *unpacked])


def _compressed_bodies(path: Path) -> list[bytes]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT request_body, response_body FROM bodies WHERE typeof(request_body) = "
                "'blob' OR typeof(response_body) = 'blob'"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:  # not a history database, or a damaged one moved aside
        return []
    return [
        (unpack_body(value) or "").encode() for row in rows for value in row if value is not None
    ]


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
