"""The SQLite store: schema, migrations, WAL, redaction, idempotent inserts, retention."""

from __future__ import annotations

import base64
import dataclasses
import os
import random
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from desktop_proxy.history.pricing import Price
from desktop_proxy.history.query import HistoryFilter
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.store import (
    BODY_LIMIT,
    MIGRATIONS,
    RECORD_COLUMNS,
    SCHEMA_VERSION,
    SchemaTooNewError,
    _may_hold_secret_or_payload,
    apply_retention,
    cap_text,
    clear_all,
    insert_rows,
    is_corruption,
    mask_secrets,
    move_aside,
    open_db,
    prepare_body,
    quick_check,
    record_to_row,
    redact_base64,
    redact_base64_bytes,
    row_count,
    used_bytes,
)
from tests.unit.history_helpers import make_record

PRICE = Price(0.01, False, "test")


def insert(conn: sqlite3.Connection, *records: RequestRecord, bodies: bool = False) -> None:
    insert_rows(conn, [record_to_row(r, PRICE, store_bodies=bodies) for r in records])


def test_schema_has_a_column_for_every_record_field(tmp_path: Path) -> None:
    """Every RequestRecord field (but bodies, kept apart) is a column; nothing else is stored."""
    conn = open_db(tmp_path / "h.sqlite3")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(requests)")]
    record_fields = {
        f.name for f in dataclasses.fields(RequestRecord) if not f.name.startswith("_")
    } - {"request_body", "response_body"}
    assert set(columns) == record_fields | {"rid"}
    assert set(RECORD_COLUMNS) == record_fields
    body_columns = [r[1] for r in conn.execute("PRAGMA table_info(bodies)")]
    assert body_columns == ["rid", "request_body", "response_body"]


def test_no_header_or_secret_columns(tmp_path: Path) -> None:
    """Records carry no headers, and the schema has nowhere to put keys."""
    names = {f.name for f in dataclasses.fields(RequestRecord)}
    assert not names & {"headers", "authorization", "api_key", "key", "x_api_key", "secret"}
    conn = open_db(tmp_path / "h.sqlite3")
    sql = " ".join(r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE sql NOT NULL"))
    for word in ("header", "authorization", "api_key", "secret", "password", "token TEXT"):
        assert word not in sql.lower()


def test_wal_version_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "data" / "history.sqlite3"
    conn = open_db(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {
        "requests_time",
        "requests_model_time",
        "requests_requested_model_time",
        "requests_provider_time",
        "requests_errors_time",
    } <= indexes

    def plan(where: str, *params: object) -> str:
        sql = f"EXPLAIN QUERY PLAN SELECT * FROM requests WHERE {where} ORDER BY time DESC LIMIT 10"
        return " ".join(str(r[-1]) for r in conn.execute(sql, params))

    assert "requests_model_time" in plan("model = ?", "x")
    errors, params = HistoryFilter(errors_only=True).where()
    assert "requests_errors_time" in plan(errors, *params)
    status, params = HistoryFilter(status=429).where()
    assert "requests_errors_time" in plan(status, *params)
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    """Version 2 replaced the ok and status indexes by one partial index of failed requests."""
    path = tmp_path / "h.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    insert(conn, make_record(), make_record(status=500, error="boom"))
    conn.close()
    conn = open_db(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "requests_errors_time" in indexes
    assert not indexes & {"requests_ok_time", "requests_status_time"}
    assert row_count(conn) == 2
    where, params = HistoryFilter(errors_only=True).where()
    assert conn.execute(f"SELECT error FROM requests WHERE {where}", params).fetchall() == [
        ("boom",)
    ]


def test_reopen_is_a_no_op_and_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    conn = open_db(path)
    insert(conn, make_record())
    conn.close()
    conn = open_db(path)
    assert row_count(conn) == 1
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNewError, match="newer"):
        open_db(path)


def test_insert_is_idempotent_by_id(tmp_path: Path) -> None:
    """A batch retried after an uncertain commit never duplicates rows."""
    conn = open_db(tmp_path / "h.sqlite3")
    rec = make_record()
    insert(conn, rec)
    insert(conn, rec, make_record())
    assert row_count(conn) == 2


def test_a_batch_sent_again_keeps_each_body_with_its_request(tmp_path: Path) -> None:
    """Bodies normally go in by the rowids the new requests got; when part of a batch was
    stored before (a writer process restarted before saying so), they find them by id."""
    conn = open_db(tmp_path / "h.sqlite3")
    first = [make_record(request_body=b'{"n": %d}' % n) for n in range(5)]
    insert(conn, *first[:2], bodies=True)
    insert(conn, *first, make_record(request_body=b'{"n": 5}'), bodies=True)
    rows = conn.execute(
        "SELECT b.request_body FROM requests r JOIN bodies b ON b.rid = r.rid ORDER BY r.time"
    ).fetchall()
    assert [r[0] for r in rows] == [f'{{"n": {n}}}' for n in range(6)]
    assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 6


def test_a_value_sqlite_cannot_take_does_not_lose_the_batch(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "h.sqlite3")
    odd = make_record(request_body=b'{"odd": true}')
    odd.client = {"not": "text"}  # type: ignore[assignment]
    odd.input_tokens = 2**70  # beyond SQLite's integers
    insert(conn, make_record(request_body=b'{"a": 1}'), odd, bodies=True)
    assert row_count(conn) == 2
    row = conn.execute(
        "SELECT r.client, r.input_tokens, b.request_body FROM requests r "
        "JOIN bodies b ON b.rid = r.rid WHERE r.id = ?",
        (odd.id,),
    ).fetchone()
    assert row == ("{'not': 'text'}", None, '{"odd": true}')


def test_values_round_trip(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "h.sqlite3")
    rec = make_record(
        stream=True,
        session_id="sess-1",
        access_key="laptop",
        upstream_key_id="…9876",
        reasoning_tokens=7,
        usage_estimated=True,
        ttfb_ms=12.5,
    )
    insert(conn, rec)
    row = conn.execute(f"SELECT {', '.join(RECORD_COLUMNS)} FROM requests").fetchone()
    stored = dict(zip(RECORD_COLUMNS, row, strict=True))
    assert stored["id"] == rec.id
    assert stored["time"] == pytest.approx(rec.time)
    assert (stored["stream"], stored["ok"], stored["usage_estimated"]) == (1, 1, 1)
    assert (stored["session_id"], stored["access_key"], stored["upstream_key_id"]) == (
        "sess-1",
        "laptop",
        "…9876",
    )
    assert (stored["reasoning_tokens"], stored["ttfb_ms"]) == (7, 12.5)
    assert (stored["cost_usd"], stored["unpriced"], stored["price_source"]) == (0.01, 0, "test")


def test_bodies_only_when_enabled(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "h.sqlite3")
    with_bodies = make_record(request_body=b'{"a": 1}', response_body=b'{"b": 2}')
    without = make_record(request_body=b'{"c": 3}', response_body=b'{"d": 4}')
    insert(conn, with_bodies, bodies=True)
    insert(conn, without, bodies=False)
    rows = conn.execute(
        "SELECT r.id, b.request_body, b.response_body FROM requests r "
        "LEFT JOIN bodies b ON b.rid = r.rid"
    ).fetchall()
    assert dict((r[0], (r[1], r[2])) for r in rows) == {
        with_bodies.id: ('{"a": 1}', '{"b": 2}'),
        without.id: (None, None),
    }


def test_large_batches_keep_every_row_and_its_own_bodies(tmp_path: Path) -> None:
    """A batch larger than one INSERT statement can carry (SQLite's parameter limit)."""
    conn = open_db(tmp_path / "h.sqlite3")
    records = [
        make_record(request_body=b'{"n": %d}' % n, response_body=b'{"r": %d}' % n)
        if n % 3
        else make_record()
        for n in range(2600)
    ]
    insert(conn, *records, bodies=True)
    assert row_count(conn) == 2600
    rows = dict(
        (r[0], (r[1], r[2]))
        for r in conn.execute(
            "SELECT r.id, b.request_body, b.response_body FROM requests r "
            "LEFT JOIN bodies b ON b.rid = r.rid"
        )
    )
    for n, rec in enumerate(records):
        expected = (f'{{"n": {n}}}', f'{{"r": {n}}}') if n % 3 else (None, None)
        assert rows[rec.id] == expected


def test_base64_is_replaced_by_a_placeholder() -> None:
    png = base64.b64encode(b"\x89PNG" + bytes(123_452)).decode()
    anthropic = (
        '{"type":"image","source":{"type":"base64","media_type":"image/png","data":"' + png + '"}}'
    )
    out = redact_base64(anthropic)
    assert png not in out
    assert '"data":"[base64 image/png, 123456 bytes]"' in out
    assert '"media_type":"image/png"' in out

    url = '{"image_url": {"url": "data:image/jpeg;base64,' + png + '"}}'
    assert redact_base64(url) == '{"image_url": {"url": "[base64 image/jpeg, 123456 bytes]"}}'

    escaped = '{"url":"data:image\\/webp;base64,' + png.replace("/", "\\/") + '"}'
    assert redact_base64(escaped) == '{"url":"[base64 image/webp, 123456 bytes]"}'

    pdf = base64.b64encode(bytes(3000)).decode()
    doc = '{"type":"document","source":{"type":"base64","media_type":"application/pdf",'
    doc += '"data":"' + pdf + '"}}'
    assert "[base64 application/pdf, 3000 bytes]" in redact_base64(doc)

    gemini = '{"inlineData": {"mimeType": "audio/wav", "data": "' + pdf + '"}}'
    assert "[base64 audio/wav, 3000 bytes]" in redact_base64(gemini)

    # A long base64 run under any other key, and inside an SSE stream.
    sse = 'data: {"b64_json":"' + png + '"}\n\ndata: {"x":"' + png + '"}\n\n'
    out = redact_base64(sse)
    assert png not in out and out.count("bytes]") == 2

    # Ordinary text is left alone, even when it starts like base64.
    text = '{"messages":[{"role":"user","content":"data: hello, see https://x.test/a?b=c"}]}'
    assert redact_base64(text) == text
    cut = '{"type":"image","source":{"media_type":"image/gif","data":"' + png[:5000]
    assert redact_base64(cut).endswith('"data":"[base64 image/gif, 3750 bytes]')
    almost = '{"data":"' + "A" * 2000 + ' and then words"}'
    assert redact_base64(almost) == almost
    short = '{"id":"' + "A" * 500 + '"}'  # not a payload key, not long: kept
    assert redact_base64(short) == short


def test_secret_shaped_strings_are_masked() -> None:
    text = (
        "key sk-ant-api03-abcdefghijklmnopqrstuvwx and sk-proj-ABCDEFGHIJKLMNOP1234 "
        "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345 "
        "AIzaSyA1234567890abcdefghijklmnopqrstu "
        "but not a task-management-system-document or risk-assessment-framework-x"
    )
    out = mask_secrets(text)
    for secret in (
        "abcdefghijklmnopqrstuvwx",
        "ABCDEFGHIJKLMNOP1234",
        "abcdefghijklmnopqrstuvwxyz012345",
        "SyA1234567890",
    ):
        assert secret not in out
    assert "sk-[redacted]" in out and "Bearer [redacted]" in out
    assert "task-management-system-document" in out
    assert "risk-assessment-framework-x" in out


def _full_pass(body: bytes) -> str:
    """What prepare_body stores when it runs every search (bodies under the size cap)."""
    return mask_secrets(redact_base64_bytes(body).decode("utf-8", "replace"))


def test_the_quick_look_at_a_body_never_skips_what_the_full_searches_would_change() -> None:
    """prepare_body skips the searches for bodies with no run that could be a key or a payload;
    on thousands of bodies mixing keys, tokens, data: URLs, base64 values, long JSON names and
    non-ASCII text, what it stores is exactly what the full searches give."""
    png = base64.b64encode(bytes(300)).decode()
    pieces = [
        '{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"',
        '"usage":{"prompt_tokens":9,"completion_tokens":12,"cache_creation_input_tokens":0}',
        '"content":"Say hello"',
        "sk-ant-api03-abcdefghijklmnopqrstuvwx",
        "gsk_ABCDEFGHIJKLMNOPQRSTUV",
        "xai-0123456789abcdefghij",
        "AIzaSyA1234567890abcdefghij",
        "dp-live_0123456789abcdef",
        "task-management-system-document",
        "Bearer",
        "BEARER",
        "bearer",
        "abcdefghijklmnopqrstuvwxyz012345==",
        "data:image/png;base64," + png,
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",  # shorter than a base64 value
        '"data":"' + png + '"',
        '"b64_json":"' + png[:80] + '"',
        "/v1/chat/completions/and/a/long/path",
        "naïve café ünïcödé 日本語",
        "msg_01XFDUDYJgAACzvnptvVoYEL",
        "x" * 70,
        "y" * 15,
    ]
    separators = [" ", "  ", "\n", "\t", '"', ":", ",", "", "\u00a0", "=", "\\"]
    rng = random.Random(20261122)
    skipped = 0
    for _ in range(3000):
        parts = [rng.choice(pieces) for _ in range(rng.randint(1, 6))]
        body = "".join(p + rng.choice(separators) for p in parts).encode()
        prepared = prepare_body(body)
        assert prepared == _full_pass(body), body
        skipped += not _may_hold_secret_or_payload(body)
    long_space = b"Bearer" + b" " * 100 + b"abcdefghijklmnopqrstuvwxyz012345"
    assert prepare_body(long_space) == _full_pass(long_space) != long_space.decode()
    assert skipped > 300  # and the quick look did let ordinary bodies through


def test_bodies_are_capped() -> None:
    big = "é" * BODY_LIMIT  # 2 bytes each
    out = cap_text(big)
    assert len(out.encode()) < BODY_LIMIT + 100
    assert out.endswith(f"[truncated: {2 * BODY_LIMIT} bytes in total, {BODY_LIMIT} kept]")
    assert cap_text("small") == "small"
    # Base64 goes first, so an image-heavy request keeps its text.
    image = base64.b64encode(bytes(2 * BODY_LIMIT)).decode()
    body = ('{"data":"' + image + '","text":"keep me"}').encode()
    prepared = prepare_body(body)
    assert prepared is not None and "keep me" in prepared and "truncated" not in prepared
    assert prepare_body(None) is None
    assert prepare_body(b"\xff\xfe not utf-8") is not None


def test_error_text_is_masked(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "h.sqlite3")
    insert(conn, make_record(status=401, error="invalid x-api-key sk-ant-api03-SECRETSECRET1234"))
    (error,) = conn.execute("SELECT error FROM requests").fetchone()
    assert "SECRETSECRET" not in error


def test_odd_values_do_not_lose_the_record(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "h.sqlite3")
    rec = make_record()
    rec.input_tokens = float("nan")  # type: ignore[assignment]
    rec.ttfb_ms = float("inf")
    rec.error = 42  # type: ignore[assignment]
    insert(conn, rec)
    row = conn.execute("SELECT input_tokens, ttfb_ms, error FROM requests").fetchone()
    assert row == (None, None, "42")


def test_corruption_detection_and_move_aside(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not a database " * 100)
    with pytest.raises(sqlite3.DatabaseError) as info:
        open_db(path)
    assert is_corruption(info.value)
    assert not is_corruption(sqlite3.OperationalError("database is locked"))
    (tmp_path / "history.sqlite3-wal").write_bytes(b"wal")
    target = move_aside(path, now=time.mktime((2025, 6, 1, 12, 30, 5, 0, 0, -1)))
    assert target.name == "history.sqlite3.corrupt-20250601-123005"
    assert not path.exists() and target.exists()
    assert (tmp_path / "history.sqlite3.corrupt-20250601-123005-wal").read_bytes() == b"wal"
    path.write_bytes(b"again")
    second = move_aside(path, now=time.mktime((2025, 6, 1, 12, 30, 5, 0, 0, -1)))
    assert second.name == "history.sqlite3.corrupt-20250601-123005-1"


def test_quick_check_finds_damaged_pages(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    conn = open_db(path)
    insert(conn, *[make_record(request_body=b"x" * 3000) for _ in range(50)], bodies=True)
    assert quick_check(conn) is None
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(page * 2, len(data), 7):
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    try:
        conn = open_db(path)
        problem = quick_check(conn)
    except sqlite3.DatabaseError as exc:
        assert is_corruption(exc)
    else:
        assert problem is not None


# --- retention -------------------------------------------------------------------------------


def test_retention_by_age(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "h.sqlite3")
    now = time.time()
    old = [make_record(time=now - 40 * 86400, request_body=b"old") for _ in range(30)]
    new = [make_record(time=now - 86400) for _ in range(10)]
    insert(conn, *old, *new, bodies=True)
    result = apply_retention(conn, retention_days=30, max_size_mb=0, now=now)
    assert (result.deleted_by_age, result.deleted_by_size) == (30, 0)
    assert result.vacuum == "full"
    assert row_count(conn) == 10
    assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 0
    # 0 days keeps everything.
    assert apply_retention(conn, retention_days=0, max_size_mb=0, now=now + 1e9).deleted == 0


def test_retention_by_size_drops_old_bodies_first(tmp_path: Path) -> None:
    """Over max_size_mb, the oldest bodies go first: every request stays listed and priced."""
    path = tmp_path / "h.sqlite3"
    conn = open_db(path)
    now = time.time()
    records = [
        make_record(time=now - i, request_body=" ".join(os.urandom(1500).hex()).encode())
        for i in range(400)
    ]
    insert(conn, *records, bodies=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.stat().st_size
    assert used_bytes(conn) > 2 * 1024 * 1024
    result = apply_retention(conn, retention_days=0, max_size_mb=2, now=now)
    assert result.bodies_deleted > 0 and result.deleted == 0
    assert used_bytes(conn) <= 2 * 1024 * 1024
    assert path.stat().st_size < before  # vacuum gave the space back
    assert row_count(conn) == 400
    with_body = {
        r[0] for r in conn.execute("SELECT id FROM requests WHERE rid IN (SELECT rid FROM bodies)")
    }
    newest_first = [r.id for r in records]
    assert with_body == set(newest_first[: len(with_body)])  # the oldest bodies went first


def test_retention_by_size_deletes_oldest_requests_without_bodies(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "h.sqlite3")
    now = time.time()
    long_error = "e" * 3000  # big rows, no bodies
    records = [make_record(time=now - i, status=500, error=long_error) for i in range(1200)]
    insert(conn, *records)
    assert used_bytes(conn) > 1024 * 1024
    result = apply_retention(conn, retention_days=0, max_size_mb=1, now=now)
    assert result.deleted_by_size > 0
    assert used_bytes(conn) <= 1024 * 1024
    kept = [r[0] for r in conn.execute("SELECT id FROM requests ORDER BY time DESC")]
    assert kept == [r.id for r in records[: len(kept)]]  # the newest are kept


def test_clear_all(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "h.sqlite3")
    insert(conn, *[make_record(request_body=b"x") for _ in range(5)], bodies=True)
    assert clear_all(conn) == 5
    assert row_count(conn) == 0
    assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 0
