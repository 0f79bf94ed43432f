"""The history writer: batching, nothing lost on close, failures never reach the gateway."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import sqlite3
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp.test_utils import make_mocked_request

from desktop_proxy.config.models import HistorySettings
from desktop_proxy.history.query import HistoryReader
from desktop_proxy.history.store import RECORD_COLUMNS, open_db, prepare_body, row_count
from desktop_proxy.history.writer import HistoryWriter, WriterStatus
from tests.unit.history_helpers import db_bytes, make_record, pricer, wait_for


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


@pytest.fixture
def writers() -> Iterator[list[HistoryWriter]]:
    """Writers created by a test are closed at its end, even when it fails."""
    made: list[HistoryWriter] = []
    yield made
    for w in made:
        w.close(timeout=5)


def new_writer(writers: list[HistoryWriter], db: Path, **kwargs: Any) -> HistoryWriter:
    kwargs.setdefault("pricer", pricer())
    kwargs.setdefault("retry_initial", 0.02)
    kwargs.setdefault("retry_max", 0.1)
    w = HistoryWriter(db, **kwargs)
    writers.append(w)
    return w.start()


def stored_ids(db: Path) -> list[str]:
    conn = open_db(db)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM requests")]
    finally:
        conn.close()


class CountingConnection(sqlite3.Connection):
    """Counts the rows inserted into `requests` by each transaction (a batch)."""

    batches: ClassVar[list[int]] = []

    def execute(self, sql: str, params: Any = (), /) -> sqlite3.Cursor:
        if sql.startswith("BEGIN"):
            CountingConnection.batches.append(0)
        elif sql.startswith("INSERT OR IGNORE INTO requests"):
            CountingConnection.batches[-1] += len(params) // len(RECORD_COLUMNS)
        return super().execute(sql, params)


def counting_connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, factory=CountingConnection
    )


def test_batches_and_flush_on_close(writers: list[HistoryWriter], db: Path) -> None:
    CountingConnection.batches = []
    w = new_writer(writers, db, connect=counting_connect, batch_size=200, batch_interval=0.2)
    records = [make_record() for _ in range(450)]
    for rec in records:
        w.record(rec)
    assert w.close() is True
    assert sorted(stored_ids(db)) == sorted(r.id for r in records)
    batches = [n for n in CountingConnection.batches if n]  # retention runs transactions too
    assert sum(batches) == 450
    assert max(batches) <= 200
    assert len(batches) <= 5  # batched, not one transaction per record
    assert w.status.state == "closed" and w.status.written == 450


def test_a_lone_record_is_written_without_flush(writers: list[HistoryWriter], db: Path) -> None:
    w = new_writer(writers, db, batch_interval=0.05)
    rec = make_record()
    w.record(rec)
    assert wait_for(lambda: db.exists() and stored_ids(db) == [rec.id], timeout=5)


def test_record_is_cheap_and_never_blocks(writers: list[HistoryWriter], db: Path) -> None:
    """record() only enqueues: 10,000 calls take well under a second, even with big bodies."""
    w = new_writer(writers, db, max_buffer=20_000)
    body = b'{"content": "' + b"words and more words " * 50 + b'"}'
    start = time.perf_counter()
    for _ in range(10_000):
        w.record(make_record(request_body=body))
    assert time.perf_counter() - start < 1.0
    assert w.flush(timeout=60)
    assert len(stored_ids(db)) == 10_000


def test_concurrent_threads_and_tasks_one_row_each(writers: list[HistoryWriter], db: Path) -> None:
    """Hundreds of records from several threads and event-loop tasks: exactly one row each."""
    w = new_writer(writers, db)
    ids: list[str] = []
    lock = threading.Lock()

    def from_thread() -> None:
        for _ in range(100):
            rec = make_record()
            with lock:
                ids.append(rec.id)
            w.record(rec)

    async def from_tasks() -> None:
        async def one() -> None:
            await asyncio.sleep(0)
            rec = make_record(client_api="openai-chat")
            ids.append(rec.id)  # single loop thread, but shares the list with threads
            w.record(rec)

        await asyncio.gather(*(one() for _ in range(300)))

    threads = [threading.Thread(target=from_thread) for _ in range(6)]
    for t in threads:
        t.start()
    asyncio.run(from_tasks())
    for t in threads:
        t.join()
    assert w.close() is True
    stored = stored_ids(db)
    assert len(stored) == len(set(stored)) == 900
    assert set(stored) == set(ids)


async def test_aclose_from_the_event_loop(writers: list[HistoryWriter], db: Path) -> None:
    w = new_writer(writers, db)
    recs = [make_record() for _ in range(50)]
    for rec in recs:
        w.record(rec)
    assert await w.aclose() is True
    assert sorted(stored_ids(db)) == sorted(r.id for r in recs)


def test_record_after_close_is_counted_not_raised(writers: list[HistoryWriter], db: Path) -> None:
    w = new_writer(writers, db)
    w.close()
    w.record(make_record())
    assert w.dropped == 1


def test_costs_are_stored(writers: list[HistoryWriter], db: Path) -> None:
    w = new_writer(writers, db)
    w.record(
        make_record(
            input_tokens=1000, cache_read_tokens=2000, cache_write_tokens=500, output_tokens=300
        )
    )
    w.record(make_record(provider="openai", model="no-such-model-zz"))
    w.close()
    conn = open_db(db)
    rows = conn.execute("SELECT model, cost_usd, unpriced FROM requests ORDER BY model").fetchall()
    assert rows[0] == ("claude-sonnet-4-5", pytest.approx(0.009975), 0)
    assert rows[1] == ("no-such-model-zz", None, 1)


# --- failures --------------------------------------------------------------------------------


def test_locked_database_waits_then_writes(writers: list[HistoryWriter], db: Path) -> None:
    """Another program holding an exclusive lock: records wait, status degrades, then all land."""
    open_db(db).close()
    blocker = sqlite3.connect(str(db), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    statuses: list[WriterStatus] = []
    w = HistoryWriter(db, pricer=pricer(), busy_timeout_ms=20, retry_initial=0.02, retry_max=0.1)
    writers.append(w)
    w.listeners.append(statuses.append)
    w.start()
    records = [make_record() for _ in range(20)]
    try:
        for rec in records:
            w.record(rec)  # never raises, never blocks
        assert wait_for(lambda: w.status.state == "degraded")
        assert "locked" in (w.status.message or "")
        assert w.status.pending == 20
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert w.flush(timeout=10)
    assert sorted(stored_ids(db)) == sorted(r.id for r in records)
    assert w.status.state == "ok"
    assert [s.state for s in statuses][-2:] == ["degraded", "ok"]


class FlakyFactory:
    """A connection factory that fails while `failing` is set."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.failing = True
        self.calls = 0

    def __call__(self, path: Path) -> sqlite3.Connection:
        self.calls += 1
        if self.failing:
            raise self.error
        return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)


def test_failing_connection_factory(writers: list[HistoryWriter], db: Path) -> None:
    factory = FlakyFactory(sqlite3.OperationalError("unable to open database file"))
    w = new_writer(writers, db, connect=factory)
    records = [make_record() for _ in range(30)]
    for rec in records:
        w.record(rec)
    assert wait_for(lambda: w.status.state == "degraded" and factory.calls >= 3)
    assert "unable to open database file" in (w.status.message or "")
    factory.failing = False
    assert w.flush(timeout=10)
    assert sorted(stored_ids(db)) == sorted(r.id for r in records)
    assert w.status.state == "ok"


def test_a_failing_database_is_not_hammered(writers: list[HistoryWriter], db: Path) -> None:
    """Retries back off even while records keep arriving and the buffer overflows."""
    factory = FlakyFactory(sqlite3.OperationalError("disk I/O error"))
    w = new_writer(writers, db, connect=factory, retry_initial=0.2, retry_max=0.4, max_buffer=50)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for _ in range(50):
            w.record(make_record())
        time.sleep(0.01)
    assert factory.calls <= 8, factory.calls
    assert w.status.state == "degraded" and w.status.dropped > 0
    factory.failing = False
    assert w.flush(timeout=10)
    assert len(stored_ids(db)) == 50


class DiskFull:
    """Connections limited to the pages the file has now: SQLite itself reports SQLITE_FULL."""

    def __init__(self) -> None:
        self.full = True

    def __call__(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        if self.full:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn


def test_disk_full_then_space_freed(writers: list[HistoryWriter], db: Path) -> None:
    open_db(db).close()
    disk = DiskFull()
    w = new_writer(writers, db, connect=disk)
    records = [make_record(request_body=b"y " * 20_000) for _ in range(25)]
    for rec in records:
        w.record(rec)
    assert wait_for(lambda: w.status.state == "degraded")
    assert "full" in (w.status.message or "")
    assert stored_ids(db) == []
    disk.full = False
    assert w.flush(timeout=10)
    assert sorted(stored_ids(db)) == sorted(r.id for r in records)


class FailingInserts(sqlite3.Connection):
    """A connection whose inserts fail with a chosen error while `fail` is set."""

    fail = True
    message = "database or disk is full"

    def execute(self, sql: str, params: Any = (), /) -> sqlite3.Cursor:
        if FailingInserts.fail and sql.startswith("INSERT OR IGNORE INTO requests"):
            raise sqlite3.OperationalError(FailingInserts.message)
        return super().execute(sql, params)


def failing_connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, factory=FailingInserts
    )


def test_bounded_buffer_drops_oldest(writers: list[HistoryWriter], db: Path) -> None:
    FailingInserts.fail = True
    w = new_writer(writers, db, connect=failing_connect, max_buffer=50)
    records = [make_record() for _ in range(80)]
    for rec in records:
        w.record(rec)
    assert wait_for(lambda: w.status.state == "degraded")
    assert w.status.pending == 50
    assert w.status.dropped == 30
    FailingInserts.fail = False
    assert w.flush(timeout=10)
    assert sorted(stored_ids(db)) == sorted(r.id for r in records[30:])


def test_buffered_bodies_are_bounded(writers: list[HistoryWriter], db: Path) -> None:
    """While the database is down, big bodies are dropped first, records kept. (The budget
    counts bodies as stored, compressed: these barely compress.)"""
    FailingInserts.fail = True
    w = new_writer(writers, db, connect=failing_connect, max_buffer_body_bytes=100_000)
    rng = random.Random(7)
    words = "".join(rng.choice(string.ascii_letters) for _ in range(40_000))
    body = " ".join(words[i : i + 6] for i in range(0, len(words), 6)).encode()
    records = [make_record(request_body=body) for _ in range(20)]
    for rec in records:
        w.record(rec)
    assert wait_for(lambda: w.status.state == "degraded")
    FailingInserts.fail = False
    assert w.flush(timeout=10)
    conn = open_db(db)
    assert row_count(conn) == 20
    kept = conn.execute("SELECT count(*) FROM bodies").fetchone()[0]
    assert 0 < kept < 20


def test_close_gives_up_when_the_database_stays_down(
    writers: list[HistoryWriter], db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    FailingInserts.fail = True
    try:
        w = new_writer(writers, db, connect=failing_connect)
        w.record(make_record())
        start = time.monotonic()
        assert w.close(timeout=0.5) is False
        assert time.monotonic() - start < 5
        assert "could not be written before shutdown" in caplog.text
    finally:
        FailingInserts.fail = False


def test_corrupt_file_at_start_is_moved_aside(
    writers: list[HistoryWriter], db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"definitely not sqlite " * 500)
    caplog.set_level(logging.WARNING)
    w = new_writer(writers, db)
    rec = make_record()
    w.record(rec)
    assert w.flush(timeout=10)
    moved = w.status.moved_aside
    assert moved is not None and moved.name.startswith("history.sqlite3.corrupt-")
    assert moved.read_bytes().startswith(b"definitely not sqlite")
    assert stored_ids(db) == [rec.id]
    assert str(moved) in caplog.text
    assert str(moved) in (w.status.message or "")


def test_damaged_pages_at_start_are_found(writers: list[HistoryWriter], db: Path) -> None:
    conn = open_db(db)
    from desktop_proxy.history.pricing import Price
    from desktop_proxy.history.store import insert_rows, record_to_row

    insert_rows(
        conn,
        [
            record_to_row(make_record(request_body=b"q" * 5000), Price.none(), store_bodies=True)
            for _ in range(40)
        ],
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(db.read_bytes())
    for offset in range(8192, len(data), 5):
        data[offset] = 0x5A
    db.write_bytes(bytes(data))
    w = new_writer(writers, db)
    rec = make_record()
    w.record(rec)
    assert w.flush(timeout=10)
    assert w.status.moved_aside is not None
    assert stored_ids(db) == [rec.id]


def test_listener_errors_do_not_break_the_writer(writers: list[HistoryWriter], db: Path) -> None:
    def bad(status: WriterStatus) -> None:
        raise RuntimeError("listener bug")

    w = HistoryWriter(db, pricer=pricer())
    writers.append(w)
    w.listeners.append(bad)
    w.start()
    w.record(make_record())
    assert w.flush(timeout=10)
    assert len(stored_ids(db)) == 1


# --- settings, retention ---------------------------------------------------------------------


def test_bodies_off_stores_none(writers: list[HistoryWriter], db: Path) -> None:
    w = new_writer(writers, db, settings=HistorySettings(store_bodies=False))
    w.record(make_record(request_body=b"secret prompt text", response_body=b"reply text"))
    w.close()
    conn = open_db(db)
    assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 0
    conn.close()
    assert b"secret prompt text" not in db_bytes(db.parent)


def test_retention_runs_at_start(writers: list[HistoryWriter], db: Path) -> None:
    from desktop_proxy.history.pricing import Price
    from desktop_proxy.history.store import insert_rows, record_to_row

    conn = open_db(db)
    old = [make_record(time=time.time() - 10 * 86400) for _ in range(5)]
    insert_rows(conn, [record_to_row(r, Price.none(), store_bodies=False) for r in old])
    conn.close()
    w = new_writer(writers, db, settings=HistorySettings(retention_days=3))
    assert wait_for(lambda: stored_ids(db) == [])
    w.configure(HistorySettings(retention_days=0))
    w.record(make_record(time=time.time() - 20 * 86400))
    assert w.flush(timeout=10)
    assert len(stored_ids(db)) == 1


# --- secrets ---------------------------------------------------------------------------------

ACCESS_KEY = "dp-TESTACCESSKEYvalue0123456789abcd"
PROVIDER_KEY = "sk-ant-api03-TESTPROVIDERKEY0123456789"


def test_no_secret_reaches_any_file(writers: list[HistoryWriter], db: Path) -> None:
    """Keys that only ever travelled in request headers are nowhere under the data dir."""
    from desktop_proxy.server.records import new_record

    request = make_mocked_request(
        "POST",
        "/v1/messages",
        headers={
            "Authorization": f"Bearer {ACCESS_KEY}",
            "x-api-key": ACCESS_KEY,
            "anthropic-api-key": PROVIDER_KEY,
            "User-Agent": "claude-cli/2.0.14 (external, cli)",
            "X-Claude-Code-Session-Id": "session-abc",
        },
    )
    w = new_writer(writers, db)
    for status in (200, 401, 500):
        rec = new_record(request, "anthropic")
        rec.requested_model = "sonnet"
        rec.provider, rec.model = "claude", "claude-sonnet-4-5"
        rec.upstream_key_id = "…6789"
        rec.request_body = b'{"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}'
        rec.response_body = b'{"content": [{"type": "text", "text": "hello"}]}'
        rec.finish(status, None if status == 200 else "upstream said no")
        w.record(rec)
    w.close()
    data = db_bytes(db.parent)
    assert b"session-abc" in data  # the records did arrive
    for secret in (ACCESS_KEY, PROVIDER_KEY, "TESTACCESSKEY", "TESTPROVIDERKEY"):
        assert secret.encode() not in data


def claude_code_sized_body(secret: str) -> bytes:
    """~150 KB of a Claude Code request: a long conversation, a key pasted in it."""
    rng = random.Random(3)
    words = [
        "def",
        "return",
        "self",
        "import",
        "class",
        "value",
        "error",
        "file",
        "test",
        "path",
        "user",
        "model",
        "data",
    ]
    messages = [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": " ".join(rng.choices(words, k=400)),
        }
        for i in range(60)
    ]
    messages.append({"role": "user", "content": f"my key is {secret}, do not print it"})
    return json.dumps({"model": "sonnet", "messages": messages}).encode()


def test_large_bodies_are_stored_compressed_and_read_back_as_text(
    writers: list[HistoryWriter], db: Path
) -> None:
    """A Claude Code request body takes a fraction of its size on disk; the History window, the
    CLI and exports read it back as the same (masked) text, and small bodies stay plain TEXT."""
    big = claude_code_sized_body(PROVIDER_KEY)
    w = new_writer(writers, db)
    large = make_record(request_body=big, response_body=b'{"content": "ok"}')
    w.record(large)
    assert w.flush(timeout=10)
    conn = open_db(db)
    kinds = conn.execute(
        "SELECT typeof(request_body), length(request_body), typeof(response_body) FROM bodies"
    ).fetchone()
    assert kinds[0] == "blob" and kinds[1] < len(big) / 3
    assert kinds[2] == "text"
    entry = HistoryReader(db).get(large.id)
    assert entry is not None and entry.request_body == prepare_body(big)
    assert entry.request_body is not None and "do not print it" in entry.request_body
    assert PROVIDER_KEY not in entry.request_body  # masked before it was compressed
    exported = io.StringIO()
    HistoryReader(db).export(exported, "jsonl", bodies=True)
    assert json.loads(exported.getvalue())["requestBody"] == entry.request_body
    assert PROVIDER_KEY.encode() not in db_bytes(db.parent)


def test_a_damaged_compressed_body_reads_as_a_note(writers: list[HistoryWriter], db: Path) -> None:
    w = new_writer(writers, db)
    rec = make_record(request_body=claude_code_sized_body("nothing secret"))
    w.record(rec)
    assert w.flush(timeout=10)
    conn = open_db(db)
    conn.execute("UPDATE bodies SET request_body = X'789c00ff00ff'")
    entry = HistoryReader(db).get(rec.id)
    assert entry is not None and entry.request_body is not None
    assert entry.request_body.startswith("[body unreadable: damaged compressed data")


def test_raw_bodies_waiting_for_a_database_that_cannot_open_stay_within_budget(
    writers: list[HistoryWriter], db: Path
) -> None:
    """While the database cannot even be opened, records wait unprepared, with their raw
    bodies: those are bounded too (the oldest lose theirs), records are all kept, and the
    request objects the gateway still holds are left as they were."""
    db.mkdir(parents=True)  # a directory where the database should be
    body = b"word " * 20_000  # 100 KB, a Claude Code-sized request
    w = new_writer(
        writers,
        db,
        batch_size=10,
        max_buffer_body_bytes=4_000_000,
        retry_initial=0.05,
        retry_max=0.2,
    )
    records = [make_record(request_body=body) for _ in range(600)]
    for rec in records:
        w.record(rec)
    assert wait_for(lambda: w.status.state == "degraded")
    assert w.status.pending == 600 and w.status.dropped == 0
    # Checked every 256 records: at most that many bodies above the budget, not 60 MB.
    assert w.buffered_body_bytes <= 4_000_000 + 256 * len(body)
    assert all(rec.request_body == body for rec in records)
    db.rmdir()
    assert w.flush(timeout=20)
    conn = open_db(db)
    assert row_count(conn) == 600
    with_bodies = {r[0] for r in conn.execute("SELECT id FROM requests JOIN bodies USING (rid)")}
    assert 0 < len(with_bodies) < 600
    assert records[-1].id in with_bodies and records[0].id not in with_bodies
