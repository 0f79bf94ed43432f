"""The history table's model: lazy pages from a `HistorySource`, live rows on top.

Pages are loaded through the TaskRunner (a worker thread in the app), so scrolling through
100k rows never runs a query on the UI thread; the view asks for more with canFetchMore /
fetchMore as it nears the end of what is loaded. Pages continue from the last row of the
previous page (keyset, `page_before`), not from an offset: rows arriving live at 100 per second
would otherwise shift every offset. A request can reach the model both live and in a page (it
is in the database by the time the page is read); rows are kept unique by request id.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor

from desktop_proxy.gui import qt_fixes
from desktop_proxy.gui.facade import DayCost, HistoryFilter, HistorySource
from desktop_proxy.gui.sqlite_history import without_bodies
from desktop_proxy.gui.tasks import TaskRunner
from desktop_proxy.history import query
from desktop_proxy.history.record import RequestRecord

PAGE_SIZE = 200
# Rows kept: live rows arriving at 100 per second into a window left open would otherwise grow
# without end (memory, and the garbage collector's pauses). Beyond this the oldest loaded rows are
# dropped; scrolling down loads them again from the source.
MAX_ROWS = 20_000
qt_fixes.install()  # before any signal is emitted: see qt_fixes
LIVE_FLUSH_MS = 250
AnyIndex = QModelIndex | QPersistentModelIndex


def _tokens(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


def _cost(c: float | None) -> str:
    if c is None:
        return ""
    return f"${c:.4f}" if c < 1 else f"${c:,.2f}"


def _duration(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{ms:,.0f} ms" if ms < 10_000 else f"{ms / 1000:,.1f} s"


def _status(rec: RequestRecord) -> str:
    if rec.ok:
        return str(rec.status)
    return f"{rec.status} ✕" if rec.status else "✕"


COLUMNS: tuple[tuple[str, Callable[[RequestRecord], str]], ...] = (
    ("Time", lambda r: datetime.fromtimestamp(r.time).strftime("%Y-%m-%d %H:%M:%S")),
    ("Status", _status),
    ("API", lambda r: r.client_api),
    ("Model", lambda r: r.model or r.requested_model or ""),
    ("Provider", lambda r: r.provider or ""),
    ("Input", lambda r: _tokens(r.input_tokens)),
    ("Output", lambda r: _tokens(r.output_tokens)),
    ("Cost", lambda r: _cost(r.cost_usd)),
    ("Duration", lambda r: _duration(r.duration_ms)),
    ("Client", lambda r: r.client or ""),
)
NUMERIC_COLUMNS = {5, 6, 7, 8}
ERROR_COLOUR = QColor("#c62828")


class HistoryTableModel(QAbstractTableModel):
    total_changed = Signal(int)
    load_failed = Signal(str)

    def __init__(
        self,
        source: HistorySource | None,
        runner: TaskRunner,
        *,
        page_size: int = PAGE_SIZE,
        max_rows: int = MAX_ROWS,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._source = source
        self._runner = runner
        self._page_size = page_size
        self._max_rows = max(max_rows, 2 * page_size)
        self._rows: list[RequestRecord] = []
        self._ids: set[str] = set()
        self._filters = HistoryFilter()
        self._generation = 0
        self._loading = False
        self._exhausted = source is None
        self._live: list[RequestRecord] = []
        self._recent: list[RequestRecord] = []
        # Live rows wait until the count and first page are in: shown before, a row stored by
        # the time the count ran would be counted twice.
        self._first_pending = False
        # The last row of the last page loaded: where the next page starts.
        self._cursor: RequestRecord | None = None
        self.total: int | None = None
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.setInterval(LIVE_FLUSH_MS)
        self._flush.timeout.connect(self.flush_live)

    # --- Qt model API -----------------------------------------------------------------------

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section][0]
            if role == Qt.ItemDataRole.TextAlignmentRole and section in NUMERIC_COLUMNS:
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        rec = self._rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[column][1](rec)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in NUMERIC_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and column == 1 and not rec.ok:
            return ERROR_COLOUR
        if role == Qt.ItemDataRole.ToolTipRole and rec.error:
            return rec.error
        if role == Qt.ItemDataRole.UserRole:
            return rec
        return None

    def canFetchMore(self, parent: AnyIndex = QModelIndex()) -> bool:  # noqa: B008
        return not parent.isValid() and not self._loading and not self._exhausted

    def fetchMore(self, parent: AnyIndex = QModelIndex()) -> None:  # noqa: B008
        if not self.canFetchMore(parent) or self._source is None:
            return
        self._loading = True
        source, filters, before = self._source, self._filters, self._cursor
        generation, limit = self._generation, self._page_size
        self._runner.call(
            lambda: source.page_before(filters, before, limit),
            lambda records: self._page_loaded(generation, records, limit),
            lambda exc: self._page_failed(generation, exc),
        )

    # --- ours -------------------------------------------------------------------------------

    @property
    def filters(self) -> HistoryFilter:
        return self._filters

    @property
    def loading(self) -> bool:
        return self._loading

    def record_at(self, row: int) -> RequestRecord | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def set_source(self, source: HistorySource | None) -> None:
        self._source = source
        self.set_filters(self._filters)

    def set_filters(self, filters: HistoryFilter, recent: Sequence[RequestRecord] = ()) -> None:
        """Start over with new filters: count in the background, then the first page.

        `recent` are requests that finished while nobody was watching (the window was closed)
        and may not be stored yet: once the first page is in, those it does not have and that
        are not older than its last row are shown as live rows (older ones, if stored, come
        with later pages)."""
        self.beginResetModel()
        self._generation += 1
        self._filters = filters
        # Live rows not shown yet stay (they may not be stored yet, so pages may miss them).
        self._rows, self._ids = [], set()
        self._live = [r for r in self._live if filters.matches(r)]
        self._recent = [r for r in recent if filters.matches(r)]
        self._cursor = None
        self._loading = False
        self._exhausted = self._source is None
        self.total = None
        self._first_pending = self._source is not None
        self.endResetModel()
        if self._source is None:
            return
        # The count, then the first page, in one worker call: a request stored in between is
        # then in the page (and so never added again live), not counted twice.
        source, generation, limit = self._source, self._generation, self._page_size
        self._loading = True

        def first() -> tuple[int, list[RequestRecord]]:
            return source.count(filters), source.page_before(filters, None, limit)

        def loaded(result: tuple[int, list[RequestRecord]]) -> None:
            self._counted(generation, result[0])
            self._page_loaded(generation, result[1], limit)

        self._runner.call(first, loaded, lambda exc: self._page_failed(generation, exc))

    def refresh(self) -> None:
        self.set_filters(self._filters)

    def _counted(self, generation: int, n: int) -> None:
        if generation == self._generation:
            self.total = n
            self.total_changed.emit(self.total)

    def _page_loaded(self, generation: int, records: Sequence[RequestRecord], limit: int) -> None:
        if generation != self._generation:
            return
        self._loading = False
        first_page = self._cursor is None
        self._first_pending = False
        if records:
            self._cursor = records[-1]
        fresh = [r for r in records if r.id not in self._ids]
        if len(records) < limit:
            self._exhausted = True
        if fresh:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(fresh) - 1)
            self._rows.extend(fresh)
            self._ids.update(r.id for r in fresh)
            self.endInsertRows()
        if first_page and self._recent:
            oldest = records[-1].time if len(records) >= limit else float("-inf")
            listed = {r.id for r in records}
            for rec in self._recent:
                if rec.id not in listed and rec.time >= oldest:
                    self.add_live(rec)
            self._recent = []

    def _page_failed(self, generation: int, exc: BaseException) -> None:
        if generation == self._generation:
            self._loading = False
            self._exhausted = True
            self._first_pending = False
            self.load_failed.emit(str(exc))

    def add_live(self, rec: RequestRecord) -> None:
        """A request just finished: show it on top (batched, so 100 req/s stay cheap).

        Its bodies are left out (the detail pane reads them from the source, like for rows
        from pages), so a window left open does not hold every body in memory."""
        if not self._filters.matches(rec) or rec.id in self._ids:
            return
        self._live.append(without_bodies(rec))
        if not self._flush.isActive():
            self._flush.start()

    def flush_live(self) -> None:
        if not self._live:
            return
        if self._first_pending:
            self._flush.start()  # after the first page (see _first_pending)
            return
        batch: list[RequestRecord] = []
        taken: set[str] = set()
        for rec in reversed(self._live):
            if rec.id not in self._ids and rec.id not in taken:
                taken.add(rec.id)
                batch.append(rec)
        self._live = []
        if not batch:
            return
        self.beginInsertRows(QModelIndex(), 0, len(batch) - 1)
        self._rows[:0] = batch
        self._ids.update(r.id for r in batch)
        self.endInsertRows()
        if self.total is not None:
            self.total += len(batch)
            self.total_changed.emit(self.total)
        if len(self._rows) > self._max_rows + self._page_size and not self._loading:
            self._trim()

    def _trim(self) -> None:
        """Drop the oldest rows beyond max_rows; the next fetchMore continues after the new
        last row (not after the last page, which is gone)."""
        keep = self._max_rows
        self.beginRemoveRows(QModelIndex(), keep, len(self._rows) - 1)
        dropped = self._rows[keep:]
        del self._rows[keep:]
        self._ids.difference_update(r.id for r in dropped)
        self.endRemoveRows()
        self._cursor = self._rows[-1]
        self._exhausted = self._source is None


# --- the per-day chart's data ---------------------------------------------------------------


def chart_days(days: Sequence[DayCost], today: date, span: int = 30) -> list[DayCost]:
    """The last `span` days ending today, oldest first, with empty days filled in."""
    by_day = {d.day: d for d in days}
    start = today - timedelta(days=span - 1)
    return [
        by_day.get(start + timedelta(days=i), DayCost(start + timedelta(days=i), 0, 0.0))
        for i in range(span)
    ]


# --- detail, curl, CSV ----------------------------------------------------------------------


def pretty_body(body: bytes | None) -> str:
    if not body:
        return "(not stored)"
    text = body.decode("utf-8", "replace")
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text  # an SSE stream or plain text: shown as it was


def curl_command(rec: RequestRecord, base_url: str, *, needs_key: bool) -> str:
    """The request again, as a curl command against the gateway. Never contains a key."""
    url = base_url.rstrip("/") + (rec.path or "/v1/chat/completions")
    parts = ["curl", shlex.quote(url), "-H", shlex.quote("Content-Type: application/json")]
    key = "$DESKTOP_PROXY_KEY" if needs_key else "local"
    if rec.client_api == "anthropic":
        parts += ["-H", f'"x-api-key: {key}"', "-H", shlex.quote("anthropic-version: 2023-06-01")]
    else:
        parts += ["-H", f'"Authorization: Bearer {key}"']
    if rec.request_body:
        parts += ["--data-binary", shlex.quote(rec.request_body.decode("utf-8", "replace"))]
    return " \\\n  ".join(_pair(parts))


def _pair(parts: list[str]) -> list[str]:
    """Keep each option next to its value, one per line."""
    lines = [" ".join(parts[:2])]
    for i in range(2, len(parts), 2):
        lines.append(" ".join(parts[i : i + 2]))
    return lines


def export_csv(source: HistorySource, filters: HistoryFilter, path: Path, chunk: int = 5000) -> int:
    """Write every record matching `filters` to `path` (blocking); returns how many. The same
    columns and formats as `desktop-proxy history export --format csv`.

    Pages by keyset, so requests arriving during the export neither repeat nor push rows out."""
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        written = query.export_csv(_matching(source, filters, chunk), f)
    tmp.replace(path)
    return written


def _matching(source: HistorySource, filters: HistoryFilter, chunk: int) -> Iterator[RequestRecord]:
    last: RequestRecord | None = None
    while True:
        page = source.page_before(filters, last, chunk)
        yield from page
        if len(page) < chunk:
            return
        last = page[-1]
