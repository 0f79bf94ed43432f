"""History: lazy paging over 100k rows, filters, live rows, the chart's data, curl and CSV."""

from __future__ import annotations

import csv
import io
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from desktop_proxy.gui.bridge import GatewayBridge
from desktop_proxy.gui.facade import DayCost, HistoryFilter, start_of_today
from desktop_proxy.gui.history_model import (
    PAGE_SIZE,
    HistoryTableModel,
    chart_days,
    curl_command,
    export_csv,
    pretty_body,
)
from desktop_proxy.gui.history_window import HistoryWindow, summary_text
from desktop_proxy.gui.memory_history import MemoryHistory
from desktop_proxy.gui.tasks import InlineRunner
from desktop_proxy.history import query
from desktop_proxy.history.record import RequestRecord
from tests.gui.fakes import FakeFacade, make_record

pytestmark = pytest.mark.gui

ROWS = 100_000
NOW = time.time()


@pytest.fixture(scope="module")
def big_history() -> MemoryHistory:
    providers = ("openai", "anthropic", "groq", "ollama")
    records = [
        make_record(
            i,
            now=NOW,
            provider=providers[i % 4],
            model=f"model-{i % 7}",
            ok=i % 50 != 0,
            spacing=25.0,
        )
        for i in range(ROWS)
    ]
    return MemoryHistory(records)


def test_first_page_then_fetch_more(qapp: object, big_history: MemoryHistory) -> None:
    """Only one page is loaded up front; fetchMore appends the next one, continuing after the
    last row loaded (keyset), so rows arriving meanwhile cannot shift it."""
    big_history.before_calls.clear()
    model = HistoryTableModel(big_history, InlineRunner())
    model.set_filters(HistoryFilter())
    assert model.total == ROWS
    assert model.rowCount() == PAGE_SIZE
    assert model.canFetchMore()
    newest = model.record_at(0)
    assert newest is not None and newest.id == f"req_{ROWS - 1:08d}"
    model.fetchMore()
    assert model.rowCount() == 2 * PAGE_SIZE
    last_of_first = f"req_{ROWS - PAGE_SIZE:08d}"
    assert big_history.before_calls == [(None, PAGE_SIZE), (last_of_first, PAGE_SIZE)]
    ids = [model.record_at(i).id for i in range(2 * PAGE_SIZE)]  # type: ignore[union-attr]
    assert ids == [f"req_{ROWS - 1 - i:08d}" for i in range(2 * PAGE_SIZE)]
    assert model.data(model.index(PAGE_SIZE, 4)) in ("openai", "anthropic", "groq", "ollama")


def test_paging_to_the_end_stops(qapp: object) -> None:
    history = MemoryHistory([make_record(i) for i in range(450)])
    model = HistoryTableModel(history, InlineRunner())
    model.set_filters(HistoryFilter())
    while model.canFetchMore():
        model.fetchMore()
    assert model.rowCount() == 450
    assert len({model.record_at(i).id for i in range(450)}) == 450  # type: ignore[union-attr]


def test_view_fetches_as_it_scrolls(
    qapp: object, qtbot: object, big_history: MemoryHistory
) -> None:
    from PySide6.QtWidgets import QTableView

    model = HistoryTableModel(big_history, InlineRunner())
    view = QTableView()
    qtbot.addWidget(view)  # type: ignore[attr-defined]
    view.setModel(model)
    view.resize(800, 400)
    view.show()
    model.set_filters(HistoryFilter())
    before = model.rowCount()
    for _ in range(3):
        view.scrollToBottom()
        qapp.processEvents()  # type: ignore[attr-defined]
    assert model.rowCount() > before
    assert model.rowCount() < ROWS  # never everything at once


def test_filters(qapp: object, big_history: MemoryHistory) -> None:
    model = HistoryTableModel(big_history, InlineRunner())
    model.set_filters(HistoryFilter(provider="groq", status="error"))
    rows = [model.record_at(i) for i in range(model.rowCount())]
    assert rows and all(r is not None and r.provider == "groq" and not r.ok for r in rows)
    assert model.total == sum(1 for i in range(ROWS) if i % 4 == 2 and i % 50 == 0)
    model.set_filters(HistoryFilter(text="req_00000042"))
    assert model.total == 1
    model.set_filters(HistoryFilter(since=NOW - 3600))
    assert model.total == 3600 // 25
    model.set_filters(HistoryFilter(model="model-3"))
    assert all(model.record_at(i).model == "model-3" for i in range(model.rowCount()))  # type: ignore[union-attr]


def test_live_rows_arrive_on_top_in_batches(qapp: object) -> None:
    history = MemoryHistory([make_record(i) for i in range(10)])
    model = HistoryTableModel(history, InlineRunner())
    model.set_filters(HistoryFilter(provider="openai"))
    live = make_record(1_000_001, now=NOW + 10_000_000)
    other = make_record(1_000_002, now=NOW + 10_000_000, provider="groq")
    model.add_live(live)
    model.add_live(other)
    assert model.rowCount() == 10  # batched until the flush timer fires
    model.flush_live()
    assert model.rowCount() == 11
    assert model.record_at(0) is live
    assert model.total == 11


def test_chart_days_fills_the_gaps() -> None:
    today = date(2026, 3, 31)
    days = chart_days([DayCost(today, 3, 0.5), DayCost(today - timedelta(days=2), 1, 0.25)], today)
    assert len(days) == 30
    assert days[0].day == today - timedelta(days=29)
    assert [d.cost_usd for d in days[-3:]] == [0.25, 0.0, 0.5]


def test_stats_group_by_local_day(big_history: MemoryHistory) -> None:
    stats = big_history.stats(HistoryFilter(since=start_of_today(NOW) - 86400))
    assert stats.requests == sum(d.requests for d in stats.days)
    assert 1 <= len(stats.days) <= 2
    assert stats.cost_usd == pytest.approx(stats.requests * 0.001)
    assert summary_text(stats).startswith(f"{stats.requests:,} requests")


def test_curl_never_contains_a_key() -> None:
    rec = make_record(1)
    rec.request_body = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "it\'s"}]}'
    )
    text = curl_command(rec, "http://127.0.0.1:6789", needs_key=True)
    assert text.startswith("curl http://127.0.0.1:6789/v1/chat/completions")
    assert '"Authorization: Bearer $DESKTOP_PROXY_KEY"' in text
    assert "--data-binary" in text
    rec.client_api = "anthropic"
    assert "anthropic-version: 2023-06-01" in curl_command(rec, "http://h:1", needs_key=False)
    assert pretty_body(b'{"a":1}') == '{\n  "a": 1\n}'
    assert pretty_body(None) == "(not stored)"


def test_export_csv(tmp_path: Path) -> None:
    history = MemoryHistory(
        [make_record(i, provider="groq" if i % 2 else "openai") for i in range(25)]
    )
    out = tmp_path / "h.csv"
    assert export_csv(history, HistoryFilter(provider="groq"), out, chunk=5) == 12
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["provider"] for r in rows} == {"groq"}
    # The same file `desktop-proxy history export --format csv` writes: every column, camelCase,
    # UTC times, true/false.
    cli = io.StringIO()
    query.export_csv([], cli)
    assert out.read_text(encoding="utf-8").splitlines()[0] == cli.getvalue().strip()
    assert {"unpriced", "priceSource", "upstreamKeyId", "sessionId"} <= set(rows[0])
    assert rows[0]["time"].endswith("Z") and rows[0]["ok"] in ("true", "false")


def test_history_window(
    qtbot: object, bridge: GatewayBridge, facade: FakeFacade, tmp_path: Path
) -> None:
    """The window loads, summarises, shows details and follows live records."""
    records = [make_record(i, now=NOW, spacing=1.0) for i in range(300)]
    records[-1].request_body = b'{"model":"gpt-4o-mini","messages":[]}'
    records[-1].response_body = b'{"choices":[]}'
    facade.history = MemoryHistory(records)
    window = HistoryWindow(bridge)
    qtbot.addWidget(window)  # type: ignore[attr-defined]
    window.show()
    assert window.model.total == 300
    assert window.summary_label.text().startswith("300 requests")
    window.table.selectRow(0)
    assert '"model": "gpt-4o-mini"' in window.request_text.toPlainText()
    assert "Request id" in window.overview_text.toPlainText()
    assert window.curl_button.isEnabled()
    window.status_box.setCurrentIndex(2)  # failed only
    assert window.model.total == 0
    window.status_box.setCurrentIndex(0)
    live = make_record(999_999, now=NOW + 10_000_000)
    live.time = time.time()
    facade.history.add(live)  # type: ignore[union-attr]
    facade.emit_record(live)
    window.model.flush_live()
    assert window.model.record_at(0) is live
    window.export_to(tmp_path / "out.csv")
    assert "Exported 301 requests" in window.count_label.text()


class StoredLater(MemoryHistory):
    """A history whose database is behind, like the real one while the writer batches."""

    def stored(self, rec: RequestRecord) -> None:
        super().add(rec)

    def add(self, rec: RequestRecord) -> None:  # the live listener: not in the database yet
        return None


def test_summary_catches_up_once_the_writer_has_stored_the_request(
    qtbot: object, bridge: GatewayBridge, facade: FakeFacade
) -> None:
    history = StoredLater([])
    facade.history = history
    window = HistoryWindow(bridge)
    window._settle_timer.setInterval(1500)  # (2.5 s in the app)
    qtbot.addWidget(window)  # type: ignore[attr-defined]
    window.show()
    assert window.summary_label.text().startswith("0 requests")
    live = make_record(1, now=NOW)
    live.time = time.time()
    facade.emit_record(live)  # shown at once, while the database does not have it yet
    window.model.flush_live()
    assert window.model.record_at(0) is live
    qtbot.wait(1200)  # type: ignore[attr-defined]  # the throttled refresh came: still 0
    assert window.summary_label.text().startswith("0 requests")
    history.stored(live)  # the writer's batch lands; no new request follows
    qtbot.waitUntil(  # type: ignore[attr-defined]
        lambda: window.summary_label.text().startswith("1 request"), timeout=3000
    )
    # The same when the request came while the window was closed.
    window.close()
    later = make_record(2, now=NOW)
    later.time = time.time()
    facade.emit_record(later)
    window.show()
    window.model.flush_live()
    assert window.model.record_at(0) is later
    assert window.summary_label.text().startswith("1 request")
    history.stored(later)
    qtbot.waitUntil(  # type: ignore[attr-defined]
        lambda: window.summary_label.text().startswith("2 requests"), timeout=3000
    )


def test_summary_refresh_backs_off_for_slow_queries() -> None:
    from desktop_proxy.gui.history_window import stats_interval_ms

    assert stats_interval_ms(0.005) == 1000  # at most once a second
    assert stats_interval_ms(0.3) == 3000  # a 300 ms "All time" query: every 3 s


def test_live_rows_are_capped_and_paging_resumes(qapp: object) -> None:
    """A window left open at 100 req/s keeps at most max_rows rows; scrolling down reloads."""
    history = MemoryHistory([make_record(i, now=NOW, spacing=1.0) for i in range(1000)])
    model = HistoryTableModel(history, InlineRunner(), page_size=200, max_rows=400)
    model.set_filters(HistoryFilter())
    assert model.rowCount() == 200
    live = [make_record(5000 + i, now=NOW + 200_000, spacing=1.0) for i in range(500)]
    for rec in live:
        history.add(rec)  # stored, as the gateway does
        model.add_live(rec)
    model.flush_live()
    assert model.rowCount() == 400  # 700 rows: trimmed to the newest 400
    assert model.total == 1500 and model.canFetchMore()
    while model.canFetchMore():
        model.fetchMore()
    ids = [model.record_at(i).id for i in range(model.rowCount())]  # type: ignore[union-attr]
    assert len(ids) == len(set(ids)) == 1500
