"""The History window over the real SQLite history: records written by HistoryWriter, read
through SqliteHistory / TrayHistory, compared with the reference semantics (HistoryFilter.matches
over the same records, as MemoryHistory implements them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from desktop_proxy.config.models import HistorySettings
from desktop_proxy.gui.bridge import GatewayBridge
from desktop_proxy.gui.facade import HistoryFilter, start_of_today
from desktop_proxy.gui.history_model import HistoryTableModel
from desktop_proxy.gui.history_window import HistoryWindow
from desktop_proxy.gui.memory_history import MemoryHistory
from desktop_proxy.gui.sqlite_history import (
    HISTORY_OFF_NOTICE,
    SqliteHistory,
    TrayHistory,
    query_filter,
)
from desktop_proxy.gui.tasks import InlineRunner
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.writer import HistoryWriter
from tests.gui.fakes import FakeFacade

pytestmark = pytest.mark.gui

N = 1000
NOW = time.time()
PROVIDERS = ("openai", "anthropic", "groq", "ollama")


def record(i: int, *, at: float | None = None) -> RequestRecord:
    """Record i of the fixture: one every 10 minutes back from now (about 7 days), newest last."""
    ok = i % 13 != 0
    rec = RequestRecord(
        id=f"req_{i:06d}",
        time=NOW - (N - i) * 600.0 if at is None else at,
        client_api="anthropic" if i % 3 == 0 else "openai-chat",
        path="/v1/messages" if i % 3 == 0 else "/v1/chat/completions",
        client=f"client-{i % 5}/1.0",
        session_id=f"session-{i % 17}",
        access_key="laptop" if i % 2 else None,
        requested_model="sonnet" if i % 7 == 0 else f"model-{i % 6}",
        provider=PROVIDERS[i % 4],
        model=f"model-{i % 6}",
        status=200 if ok else 502,
        ok=ok,
        error=None if ok else f"upstream failed #{i}",
        stream=i % 2 == 0,
        ttfb_ms=12.0,
        duration_ms=100.0 + i,
        input_tokens=100 + i,
        output_tokens=10 + i % 50,
        cost_usd=round(0.0001 * (i % 10 + 1), 6),
    )
    if i % 100 == 0:
        rec.request_body = b'{"model":"model-0","messages":[{"role":"user","content":"hi"}]}'
        rec.response_body = b'{"choices":[]}'
    return rec


def write(path: Path, records: list[RequestRecord]) -> None:
    writer = HistoryWriter(path, settings=HistorySettings(), batch_interval=0.01).start()
    try:
        for rec in records:
            writer.record(rec)
        assert writer.flush(30)
    finally:
        writer.close()


@pytest.fixture(scope="module")
def records() -> list[RequestRecord]:
    return [record(i) for i in range(N)]


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory, records: list[RequestRecord]) -> Path:
    path = tmp_path_factory.mktemp("history") / "data" / "history.sqlite3"
    write(path, records)
    return path


@pytest.fixture
def db(db_path: Path) -> Iterator[SqliteHistory]:
    source = SqliteHistory(db_path)
    yield source
    source.close()


@pytest.fixture(scope="module")
def reference(records: list[RequestRecord]) -> MemoryHistory:
    return MemoryHistory(records)


FILTERS = [
    HistoryFilter(),
    HistoryFilter(provider="groq"),
    HistoryFilter(model="model-3"),
    HistoryFilter(model="sonnet"),  # the requested model
    HistoryFilter(status="error"),
    HistoryFilter(status="ok", provider="openai"),
    HistoryFilter(since=NOW - 86400),
    HistoryFilter(since=NOW - 3 * 86400, until=NOW - 86400),
    HistoryFilter(text="SESSION-16"),  # case-insensitive, on the session id
    HistoryFilter(text="failed #26"),
    HistoryFilter(text="req_0004"),
    HistoryFilter(text="%"),  # LIKE wildcards are literal
    HistoryFilter(text="client-2", status="error", since=NOW - 5 * 86400),
]


def ids(recs: list[RequestRecord]) -> list[str]:
    return [r.id for r in recs]


def test_filter_mapping() -> None:
    flt = query_filter(
        HistoryFilter(since=1.0, until=2.0, provider="p", model="m", status="error", text=" x ")
    )
    assert (flt.since, flt.until, flt.providers, flt.models) == (1.0, 2.0, ("p",), ("m",))
    assert flt.errors_only and not flt.ok_only and flt.text == "x"
    empty = query_filter(HistoryFilter(status="ok"))
    assert empty.providers == () and empty.models == () and empty.text is None and empty.ok_only


@pytest.mark.parametrize("flt", FILTERS, ids=repr)
def test_count_and_pages_match_the_reference(
    db: SqliteHistory, reference: MemoryHistory, flt: HistoryFilter
) -> None:
    expected = ids(reference.page(flt, 0, N))
    assert db.count(flt) == len(expected)
    assert ids(db.page(flt, 0, 50)) == expected[:50]
    assert ids(db.page(flt, 37, 20)) == expected[37:57]
    # Keyset paging to the end gives every row once, in order.
    seen: list[str] = []
    last = None
    while True:
        page = db.page_before(flt, last, 64)
        seen += ids(page)
        if len(page) < 64:
            break
        last = page[-1]
    assert seen == expected


def test_records_round_trip(db: SqliteHistory, records: list[RequestRecord]) -> None:
    page = db.page(HistoryFilter(), 0, N)
    assert page[0].id == records[-1].id
    original = {r.id: r for r in records}
    for rec in page:
        want = original[rec.id]
        assert rec.request_body is None  # pages leave bodies out
        for name in ("time", "provider", "model", "requested_model", "status", "ok", "stream"):
            assert getattr(rec, name) == getattr(want, name), name
        assert rec.cost_usd == pytest.approx(want.cost_usd)
        assert rec.input_tokens == want.input_tokens
    full = db.get("req_000500")
    assert full is not None and full.request_body == records[500].request_body
    assert full.response_body == b'{"choices":[]}'
    assert db.get("req_missing") is None


@pytest.mark.parametrize("flt", FILTERS[:8], ids=repr)
def test_stats_match_the_reference(
    db: SqliteHistory, reference: MemoryHistory, flt: HistoryFilter
) -> None:
    got, want = db.stats(flt), reference.stats(flt)
    assert (got.requests, got.input_tokens, got.output_tokens, got.errors) == (
        want.requests,
        want.input_tokens,
        want.output_tokens,
        want.errors,
    )
    assert got.cost_usd == pytest.approx(want.cost_usd)
    assert [(d.day, d.requests) for d in got.days] == [(d.day, d.requests) for d in want.days]
    assert [d.cost_usd for d in got.days] == pytest.approx([d.cost_usd for d in want.days])


def test_facets(db: SqliteHistory) -> None:
    facets = db.facets()
    assert facets.providers == tuple(sorted(PROVIDERS))
    assert facets.models == tuple(f"model-{i}" for i in range(6))


def test_usage_since_says_which_live_requests_are_stored(
    db: SqliteHistory, records: list[RequestRecord]
) -> None:
    since = NOW - 86400
    stored_today = [r for r in records if r.time >= since]
    snap = db.usage_since(since, lambda: ["req_000999", "req_000001", "req_live"])
    assert snap.requests == len(stored_today)
    assert snap.cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in stored_today))
    assert snap.found == {"req_000999"}  # req_000001 is older than `since`; req_live unknown


def test_missing_database_reads_as_empty(tmp_path: Path) -> None:
    source = SqliteHistory(tmp_path / "none.sqlite3")
    assert source.count(HistoryFilter()) == 0
    assert source.page_before(HistoryFilter(), None, 10) == []
    assert source.stats(HistoryFilter()).requests == 0
    assert source.usage_since(0, list).requests == 0
    assert not (tmp_path / "none.sqlite3").exists()  # reading never creates it


# --- the model over the database ---------------------------------------------------------------


def test_model_pages_through_the_database(qapp: object, db: SqliteHistory) -> None:
    model = HistoryTableModel(db, InlineRunner(), page_size=128)
    model.set_filters(HistoryFilter())
    assert model.total == N and model.rowCount() == 128
    while model.canFetchMore():
        model.fetchMore()
    assert model.rowCount() == N
    assert [model.record_at(i).id for i in range(N)] == [  # type: ignore[union-attr]
        f"req_{i:06d}" for i in range(N - 1, -1, -1)
    ]
    model.set_filters(HistoryFilter(provider="groq", status="error"))
    rows = [model.record_at(i) for i in range(model.rowCount())]
    assert model.total == len(rows) == sum(1 for i in range(N) if i % 4 == 2 and i % 13 == 0)
    assert all(r is not None and r.provider == "groq" and not r.ok for r in rows)


def test_live_rows_and_pages_never_duplicate(qapp: object, tmp_path: Path) -> None:
    """Requests arrive live and are written meanwhile: pages continue after the last row they
    loaded (new rows do not shift them), and a request seen both ways appears once."""
    path = tmp_path / "history.sqlite3"
    write(path, [record(i) for i in range(300)])
    source = SqliteHistory(path)
    model = HistoryTableModel(source, InlineRunner(), page_size=100)
    model.set_filters(HistoryFilter())
    assert model.rowCount() == 100
    # 50 new requests: shown live, and written to the database (as the gateway does).
    fresh = [record(1000 + i, at=NOW + i) for i in range(50)]
    for rec in fresh:
        model.add_live(rec)
    model.flush_live()
    write(path, fresh)
    while model.canFetchMore():
        model.fetchMore()
    got = [model.record_at(i).id for i in range(model.rowCount())]  # type: ignore[union-attr]
    assert len(got) == len(set(got)) == 350
    assert got[:50] == [r.id for r in reversed(fresh)]
    # Reloading from the database (the window shown again) keeps them unique too.
    model.add_live(fresh[-1])
    model.refresh()
    model.add_live(fresh[-1])  # arrives again live after the reload: already there
    model.flush_live()
    while model.canFetchMore():
        model.fetchMore()
    again = [model.record_at(i).id for i in range(model.rowCount())]  # type: ignore[union-attr]
    assert again == [r.id for r in reversed(fresh)] + [f"req_{i:06d}" for i in range(299, -1, -1)]
    source.close()


class DeferredRunner(InlineRunner):
    """Blocking calls wait until `run_pending` (like a worker thread that has not finished)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[Any, Any, Any]] = []

    def call(self, fn: Any, on_done: Any = None, on_error: Any = None) -> None:
        self.pending.append((fn, on_done, on_error))

    def run_pending(self) -> None:
        while self.pending:
            fn, on_done, on_error = self.pending.pop(0)
            super().call(fn, on_done, on_error)


def test_live_row_before_its_page_arrives_once(qapp: object, tmp_path: Path) -> None:
    """A live row still waiting for the batch flush when its page arrives is not added twice."""
    path = tmp_path / "history.sqlite3"
    rec = record(1, at=NOW)
    write(path, [record(0, at=NOW - 10), rec])
    runner = DeferredRunner()
    model = HistoryTableModel(SqliteHistory(path), runner)
    model.set_filters(HistoryFilter())  # count and first page under way
    model.add_live(rec)  # queued for the next flush
    model.flush_live()  # the flush timer fires before the page is in: it waits for it
    assert model.rowCount() == 0
    runner.run_pending()  # the count and page arrive, with it
    model.flush_live()
    got = [model.record_at(i).id for i in range(model.rowCount())]  # type: ignore[union-attr]
    assert got == [rec.id, "req_000000"]
    assert model.total == 2


def test_requests_finished_while_closed_are_offered_once(qapp: object, tmp_path: Path) -> None:
    """Opening the window: requests that finished while it was closed and are not stored yet
    are shown on top; stored ones come with their page, never twice, and the total is right."""
    path = tmp_path / "history.sqlite3"
    stored = [record(i) for i in range(300)]
    write(path, stored)
    unstored = [record(900 + i, at=NOW + i) for i in range(2)]
    recent = [stored[-1], stored[-2], stored[10], stored[11], *unstored]
    model = HistoryTableModel(SqliteHistory(path), InlineRunner(), page_size=100)
    model.set_filters(HistoryFilter(), recent)
    model.flush_live()
    top = [model.record_at(i).id for i in range(3)]  # type: ignore[union-attr]
    assert top == [unstored[1].id, unstored[0].id, stored[-1].id]
    assert model.total == 302
    while model.canFetchMore():
        model.fetchMore()
    got = [model.record_at(i).id for i in range(model.rowCount())]  # type: ignore[union-attr]
    assert len(got) == len(set(got)) == 302


def test_live_rows_leave_bodies_to_the_source(qapp: object, db: SqliteHistory) -> None:
    model = HistoryTableModel(db, InlineRunner())
    model.set_filters(HistoryFilter())
    live = record(2000, at=NOW + 100)
    live.request_body = b"x" * 10_000
    model.add_live(live)
    model.flush_live()
    shown = model.record_at(0)
    assert shown is not None and shown.id == live.id and shown.request_body is None
    assert live.request_body is not None  # the gateway's record is untouched


# --- the app's source: fallbacks and notices --------------------------------------------------


def test_tray_history_reads_the_database(db_path: Path) -> None:
    history = TrayHistory(SqliteHistory(db_path))
    assert history.notice is None
    assert history.count(HistoryFilter()) == N
    history.close()


def test_tray_history_when_history_is_off(db_path: Path) -> None:
    enabled = [False]
    history = TrayHistory(SqliteHistory(db_path), enabled=lambda: enabled[0])
    live = record(5000, at=NOW)
    live.request_body = b"{}"
    history.add(live)
    assert history.notice == HISTORY_OFF_NOTICE
    assert history.count(HistoryFilter()) == 1  # this session's requests only
    kept = history.get(live.id)
    assert kept is not None and kept.request_body is None  # kept without bodies
    assert history.usage_since(0, lambda: [live.id]).found == {live.id}
    enabled[0] = True  # switched on in Settings
    assert history.count(HistoryFilter()) == N and history.notice is None
    history.close()


def test_tray_history_when_the_database_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    now = [0.0]
    history = TrayHistory(SqliteHistory(path), retry_after=30, clock=lambda: now[0])
    history.add(record(1, at=NOW))
    assert history.count(HistoryFilter()) == 1  # from memory, not an exception
    notice = history.notice
    assert notice is not None and "cannot be read" in notice and "this session" in notice
    # Repaired (say, moved aside and recreated by the writer): read again after retry_after.
    path.unlink()
    write(path, [record(i, at=NOW - i) for i in range(5)])
    assert history.count(HistoryFilter()) == 1
    now[0] = 31.0
    assert history.count(HistoryFilter()) == 5
    assert history.notice is None
    history.close()


def test_window_says_when_history_is_off(
    qtbot: object, bridge: GatewayBridge, facade: FakeFacade, db_path: Path
) -> None:
    facade.history = TrayHistory(SqliteHistory(db_path), enabled=lambda: False)
    window = HistoryWindow(bridge)
    qtbot.addWidget(window)  # type: ignore[attr-defined]
    window.show()
    assert window.notice_label.isVisible()
    assert "History is off" in window.notice_label.text()
    assert window.model.total == 0


def test_window_over_the_database(
    qtbot: object, bridge: GatewayBridge, facade: FakeFacade, db_path: Path
) -> None:
    facade.history = TrayHistory(SqliteHistory(db_path))
    window = HistoryWindow(bridge)
    qtbot.addWidget(window)  # type: ignore[attr-defined]
    window.range_box.setCurrentIndex(4)  # all time
    window.show()
    assert not window.notice_label.isVisible()
    assert window.model.total == N
    assert window.summary_label.text().startswith(f"{N:,} requests")
    shown = [window.model.record_at(i).id for i in range(window.model.rowCount())]  # type: ignore[union-attr]
    window.table.selectRow(shown.index("req_000900"))
    assert '"content": "hi"' in window.request_text.toPlainText()  # bodies read on selection
    providers = [window.provider_box.itemText(i) for i in range(window.provider_box.count())]
    assert set(PROVIDERS) <= set(providers)
    # Closed, it stops following live requests; shown again, it reloads from the database.
    window.close()
    before = window.model.rowCount()
    late = record(7000, at=time.time())
    facade.emit_record(late)
    window.model.flush_live()
    assert window.model.rowCount() == before
    window.show()
    assert window.model.total == N  # reloaded: the fake gateway did not store that one...
    window.model.flush_live()
    assert window.model.record_at(0).id == late.id  # type: ignore[union-attr]
    assert window.model.total == N + 1  # ...but it finished while closed, so it is offered


def test_today_in_the_tray_comes_from_the_database_plus_live(
    qapp: object, facade: FakeFacade, tmp_path: Path
) -> None:
    """Stored figures plus the live requests they do not include yet: never counted twice."""
    path = tmp_path / "history.sqlite3"
    today = max(start_of_today(), time.time() - 3600)
    stored = [record(i, at=today + i) for i in range(10)]
    write(path, stored)
    facade.history = SqliteHistory(path)
    bridge = GatewayBridge(facade, InlineRunner())
    bridge.refresh_usage()
    assert bridge.usage.requests == 10
    assert bridge.usage.cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in stored))
    live = [record(100 + i, at=time.time()) for i in range(5)]
    for rec in live:
        facade.emit_record(rec)
    assert bridge.usage.requests == 15  # not written yet: counted live
    bridge.refresh_usage()
    assert bridge.usage.requests == 15
    write(path, live)  # now they are stored too
    bridge.refresh_usage()
    assert bridge.usage.requests == 15
    assert bridge.usage.cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in stored + live))
    facade.emit_record(record(200, at=time.time()))
    assert bridge.usage.requests == 16
    yesterday = record(300, at=start_of_today() - 60)
    facade.emit_record(yesterday)  # finished today, but started yesterday: not today's
    assert bridge.usage.requests == 16
