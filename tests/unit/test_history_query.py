"""Queries: filters, paging, aggregates, export, time parsing."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from desktop_proxy.history.pricing import Price
from desktop_proxy.history.query import (
    HistoryFilter,
    HistoryReader,
    export_csv,
    iso_time,
    parse_time,
)
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.store import Row, insert_rows, open_db, record_to_row
from tests.unit.history_helpers import make_record, pricer

NOW = time.time()
HOUR = 3600.0


def store(path: Path, records: list[RequestRecord], *, bodies: bool = True) -> None:
    conn = open_db(path)
    p = pricer()
    insert_rows(conn, [record_to_row(r, p.price_record(r), store_bodies=bodies) for r in records])
    conn.close()


@pytest.fixture
def sample(tmp_path: Path) -> tuple[HistoryReader, list[RequestRecord]]:
    """Ten requests an hour apart, newest first: Claude successes, an OpenAI error, Ollama,
    an unpriced model and a rejected request."""
    records = [
        make_record(time=NOW - 0 * HOUR, request_body=b'{"q": 1}', response_body=b'{"a": 1}'),
        make_record(
            time=NOW - 1 * HOUR,
            client_api="openai-chat",
            requested_model="gpt-4o-mini",
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=1_000_000,
            output_tokens=1_000_000,
        ),
        make_record(
            time=NOW - 2 * HOUR,
            status=502,
            error="upstream openai unreachable: connection refused",
            provider="openai",
            model="gpt-4o",
            input_tokens=None,
            output_tokens=None,
        ),
        make_record(time=NOW - 3 * HOUR, provider="ollama", model="llama3:8b", client="curl/8"),
        make_record(time=NOW - 4 * HOUR, provider="openai", model="renamed-model-x"),
        make_record(
            time=NOW - 5 * HOUR,
            input_tokens=1000,
            cache_read_tokens=2000,
            cache_write_tokens=500,
            output_tokens=300,
        ),
        make_record(
            time=NOW - 6 * HOUR,
            status=401,
            error="missing access key",
            provider=None,
            model=None,
            requested_model=None,
            input_tokens=None,
            output_tokens=None,
            cache_read_tokens=None,
            cache_write_tokens=None,
        ),
        *[make_record(time=NOW - (7 + i) * HOUR) for i in range(3)],
    ]
    path = tmp_path / "history.sqlite3"
    store(path, records)
    reader = HistoryReader(path)
    yield reader, records
    reader.close()


def test_missing_database_reads_empty_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "none" / "history.sqlite3"
    with HistoryReader(path) as reader:
        assert reader.count() == 0
        assert reader.page() == []
        assert reader.aggregate() == []
        assert reader.totals().requests == 0
        assert list(reader.iter_entries()) == []
    assert not path.exists()


def test_page_newest_first_and_offsets(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, records = sample
    assert reader.count() == 10
    assert [e.id for e in reader.page(limit=3)] == [r.id for r in records[:3]]
    assert [e.id for e in reader.page(offset=8, limit=5)] == [r.id for r in records[8:]]


def test_keyset_paging_walks_everything(
    sample: tuple[HistoryReader, list[RequestRecord]],
) -> None:
    reader, records = sample
    seen: list[str] = []
    cursor = None
    while True:
        page = reader.page_before(cursor=cursor, limit=4)
        if not page:
            break
        seen += [e.id for e in page]
        cursor = page[-1].cursor
    assert seen == [r.id for r in records]


def test_filters(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, records = sample

    def ids(flt: HistoryFilter) -> list[str]:
        return [e.id for e in reader.page(flt, limit=100)]

    assert ids(HistoryFilter(since=NOW - 2.5 * HOUR)) == [r.id for r in records[:3]]
    assert ids(HistoryFilter(until=NOW - 8.5 * HOUR)) == [records[9].id]
    assert ids(HistoryFilter(providers=("ollama",))) == [records[3].id]
    assert ids(HistoryFilter(models=("gpt-4o",))) == [records[2].id]
    assert ids(HistoryFilter(models=("sonnet",))) == [  # the requested name matches too
        r.id for r in records if r.requested_model == "sonnet"
    ]
    assert ids(HistoryFilter(errors_only=True)) == [records[2].id, records[6].id]
    assert ids(HistoryFilter(status=401)) == [records[6].id]
    assert ids(HistoryFilter(text="REFUSED")) == [records[2].id]
    assert ids(HistoryFilter(text="curl")) == [records[3].id]
    assert ids(HistoryFilter(text="100%_")) == []  # LIKE wildcards are literal
    assert ids(HistoryFilter(client_api="openai-chat")) == [records[1].id]
    assert reader.count(HistoryFilter(errors_only=True, providers=("openai",))) == 1


def test_entries_carry_cost_and_flags(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, records = sample
    by_id = {e.id: e for e in reader.page(limit=100)}
    assert by_id[records[5].id].cost_usd == pytest.approx(0.009975)
    assert by_id[records[1].id].cost_usd == pytest.approx(0.75)
    assert by_id[records[3].id].cost_usd == 0.0
    unpriced = by_id[records[4].id]
    assert unpriced.unpriced and unpriced.cost_usd is None
    rejected = by_id[records[6].id]
    assert rejected.cost_usd is None and not rejected.unpriced and not rejected.ok


def test_bodies_on_request(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, records = sample
    (plain,) = reader.page(limit=1)
    assert plain.request_body is None
    (full,) = reader.page(limit=1, bodies=True)
    assert (full.request_body, full.response_body) == ('{"q": 1}', '{"a": 1}')
    got = reader.get(records[0].id)
    assert got is not None and got.request_body == '{"q": 1}'
    assert reader.get("req_missing") is None


def test_json_shape(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, records = sample
    data = reader.page(limit=1)[0].to_json()
    expected = [
        "id", "time", "clientApi", "client", "sessionId", "accessKey", "requestedModel",
        "provider", "model", "upstreamKeyId", "status", "ok", "error", "stream", "ttfbMs",
        "durationMs", "inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens",
        "reasoningTokens", "usageEstimated", "costUsd", "unpriced",
    ]  # fmt: skip
    assert set(expected) <= set(data)
    assert "requestBody" not in data
    assert data["time"] == iso_time(records[0].time)
    assert data["time"].endswith("Z")
    assert datetime.fromisoformat(data["time"]).timestamp() == pytest.approx(records[0].time, 1e-3)


def test_aggregates(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, _ = sample
    by_model = {(g.provider, g.key): g for g in reader.aggregate(by="model")}
    sonnet = by_model[("claude", "claude-sonnet-4-5")]
    assert sonnet.requests == 5
    assert sonnet.cache_read_tokens == 2000 and sonnet.cache_write_tokens == 500
    assert sonnet.input_tokens == 4 * 100 + 1000
    assert sonnet.cost_usd == pytest.approx(0.009975 + 4 * (100 * 3 + 20 * 15) / 1e6)
    assert by_model[("openai", "renamed-model-x")].unpriced_requests == 1
    assert by_model[("openai", "renamed-model-x")].priced_requests == 0
    assert by_model[("openai", "gpt-4o")].errors == 1
    # Most expensive first.
    assert reader.aggregate(by="model")[0].key == "gpt-4o-mini"

    by_provider = {g.key: g for g in reader.aggregate(by="provider")}
    assert by_provider["openai"].requests == 3
    assert by_provider[None].requests == 1  # the rejected request

    days = reader.aggregate(by="day")
    assert sum(d.requests for d in days) == 10
    assert [d.key for d in days] == sorted(d.key or "" for d in days)

    total = reader.totals()
    assert total.requests == 10 and total.errors == 2 and total.unpriced_requests == 1
    assert total.cost_usd == pytest.approx(sum(g.cost_usd for g in reader.aggregate()))
    assert reader.totals(HistoryFilter(providers=("ollama",))).cost_usd == 0.0
    json.dumps(total.to_json())


def test_aggregate_by_day_local_and_utc(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    noon = datetime(2025, 3, 10, 12, 0).timestamp()
    store(path, [make_record(time=noon), make_record(time=noon - 86400)])
    with HistoryReader(path) as reader:
        assert [d.key for d in reader.aggregate(by="day")] == ["2025-03-09", "2025-03-10"]
        assert len(reader.aggregate(by="day", utc=True)) == 2
        with pytest.raises(ValueError, match="cannot group"):
            reader.aggregate(by="week")  # type: ignore[arg-type]


def test_export_csv_of_live_records_matches_stored_ones(
    sample: tuple[HistoryReader, list[RequestRecord]],
) -> None:
    """The History window exports the records it pages through: the same CSV as the CLI's,
    bodies as text."""
    reader, records = sample
    stored, live = io.StringIO(), io.StringIO()
    reader.export(stored, "csv")
    # What was stored of the records (prices, masks), as RequestRecords, the window's view.
    entries = list(reader.iter_entries(HistoryFilter(), bodies=True))
    assert export_csv([e.to_record() for e in entries], live) == len(records)
    assert live.getvalue() == stored.getvalue()
    with_body = io.StringIO()
    export_csv([make_record(request_body=b'{"q": "\xc3\xa9"}')], with_body, bodies=True)
    (row,) = csv.DictReader(io.StringIO(with_body.getvalue()))
    assert row["requestBody"] == '{"q": "é"}'


def test_export_csv_and_jsonl(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, records = sample
    out = io.StringIO()
    assert reader.export(out, "csv") == 10
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["id"] for r in rows] == [r.id for r in records]
    first = rows[5]
    assert first["costUsd"] == "0.009975"
    assert first["ok"] == "true" and first["unpriced"] == "false"
    assert rows[4]["unpriced"] == "true" and rows[4]["costUsd"] == ""
    assert "requestBody" not in rows[0]

    out = io.StringIO()
    assert reader.export(out, "jsonl", HistoryFilter(errors_only=True), bodies=True) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [x["id"] for x in lines] == [records[2].id, records[6].id]
    assert "requestBody" in lines[0]

    out = io.StringIO()
    assert reader.export(out, "csv", bodies=True, limit=1) == 1
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row["requestBody"] == '{"q": 1}'


def test_export_streams_many_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    base = NOW - 10_000
    store(path, [make_record(time=base + i) for i in range(3000)], bodies=False)
    with HistoryReader(path) as reader:
        entries = reader.iter_entries(batch=100)
        first = next(entries)
        assert first.time == pytest.approx(base + 2999)
        assert sum(1 for _ in entries) == 2999
        assert reader.count() == 3000


async def test_async_wrappers(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, records = sample
    assert await reader.acount() == 10
    assert [e.id for e in await reader.apage(limit=2)] == [r.id for r in records[:2]]
    page = await reader.apage_before(limit=1)
    assert [e.id for e in await reader.apage_before(cursor=page[0].cursor, limit=1)] == [
        records[1].id
    ]
    assert (await reader.aget(records[0].id)) is not None
    assert len(await reader.aaggregate(by="provider")) >= 3
    assert (await reader.atotals()).requests == 10


def test_to_record_and_facets(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, records = sample
    got = reader.get(records[0].id)
    assert got is not None
    rec = got.to_record()
    assert isinstance(rec, RequestRecord)
    assert (rec.id, rec.model, rec.request_body) == (records[0].id, records[0].model, b'{"q": 1}')
    assert rec.cost_usd == pytest.approx(got.cost_usd or 0) and not rec.unpriced
    unpriced = reader.get(records[4].id, bodies=False)
    assert unpriced is not None and unpriced.to_record().unpriced
    providers, models = reader.facets()
    assert providers == ["claude", "ollama", "openai"]
    assert "renamed-model-x" in models and "llama3:8b" in models
    assert reader.facets(HistoryFilter(providers=("ollama",))) == (["ollama"], ["llama3:8b"])


def test_clear(sample: tuple[HistoryReader, list[RequestRecord]]) -> None:
    reader, _ = sample
    assert reader.clear() == 10
    assert reader.count() == 0


def test_reads_while_a_writer_holds_a_write_lock(
    sample: tuple[HistoryReader, list[RequestRecord]],
) -> None:
    """WAL: a gateway in the middle of a write transaction does not block readers."""
    reader, _ = sample
    import sqlite3

    writer = sqlite3.connect(str(reader.path), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM requests")
    try:
        assert reader.count() == 10
        assert len(list(reader.iter_entries())) == 10
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_count_and_page_are_fast_on_100k_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    conn = open_db(path)
    base = NOW - 200_000
    templates = [
        record_to_row(make_record(**kw), Price(0.001), store_bodies=False).values
        for kw in (
            {"provider": "claude", "model": "claude-sonnet-4-5"},
            {"provider": "openai", "model": "gpt-4o"},
            {"provider": "openai", "model": "gpt-4o", "status": 500, "error": "boom"},
        )
    ]
    rows = []
    claude = 0
    for i in range(100_000):
        template = templates[2] if i % 50 == 1 else templates[0 if i % 3 == 0 else 1]
        claude += template is templates[0]
        rows.append(Row((f"req_{i}", base + i * 2, *template[2:])))
    insert_rows(conn, rows)
    conn.close()
    with HistoryReader(path) as reader:
        reader.count()  # open, warm the cache
        start = time.perf_counter()
        assert reader.count() == 100_000
        assert reader.count(HistoryFilter(errors_only=True)) == 2000
        assert len(reader.page(offset=90_000, limit=100)) == 100
        assert len(reader.page(HistoryFilter(models=("claude-sonnet-4-5",)), 0, 100)) == 100
        assert reader.count(HistoryFilter(providers=("claude",))) == claude
        assert len(reader.page(HistoryFilter(providers=("openai",)), 50_000, 100)) == 100
        elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed


# --- time parsing ----------------------------------------------------------------------------


def test_parse_time_relative_and_absolute() -> None:
    now = datetime(2025, 6, 10, 15, 30).timestamp()
    assert parse_time("24h", now=now) == now - 86400
    assert parse_time("7d", now=now) == now - 7 * 86400
    assert parse_time("30m", now=now) == now - 1800
    assert parse_time("90s", now=now) == now - 90
    assert parse_time("2w", now=now) == now - 14 * 86400
    assert parse_time("1.5h", now=now) == now - 5400
    assert parse_time("now", now=now) == now
    assert parse_time("today", now=now) == datetime(2025, 6, 10).timestamp()
    assert parse_time("yesterday", now=now) == (datetime(2025, 6, 10) - timedelta(1)).timestamp()
    assert parse_time("2025-06-01", now=now) == datetime(2025, 6, 1).timestamp()
    assert parse_time("2025-06-01T14:30", now=now) == datetime(2025, 6, 1, 14, 30).timestamp()
    assert parse_time("2025-06-01T14:30:00Z", now=now) == 1748788200.0
    assert parse_time("2025-06-01 14:30:00+02:00", now=now) == 1748788200.0 - 7200
    with pytest.raises(ValueError, match="24h, 7d"):
        parse_time("last tuesday")
