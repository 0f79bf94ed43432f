"""The history table's model: lazy pages from a `HistorySource`, live rows on top.

Pages are loaded through the TaskRunner (a worker thread in the app), so scrolling through
100k rows never runs a query on the UI thread; the view asks for more with canFetchMore /
fetchMore as it nears the end of what is loaded.
"""

from __future__ import annotations

import csv
import json
import shlex
from collections.abc import Callable, Sequence
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

from desktop_proxy.gui.facade import DayCost, HistoryFilter, HistorySource
from desktop_proxy.gui.tasks import TaskRunner
from desktop_proxy.history.record import RequestRecord

PAGE_SIZE = 200
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
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._source = source
        self._runner = runner
        self._page_size = page_size
        self._rows: list[RequestRecord] = []
        self._ids: set[str] = set()
        self._filters = HistoryFilter()
        self._generation = 0
        self._loading = False
        self._exhausted = source is None
        self._live: list[RequestRecord] = []
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
        source, filters, offset = self._source, self._filters, len(self._rows)
        generation, limit = self._generation, self._page_size
        self._runner.call(
            lambda: source.page(filters, offset, limit),
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

    def set_filters(self, filters: HistoryFilter) -> None:
        """Start over with new filters: count in the background, then the first page."""
        self.beginResetModel()
        self._generation += 1
        self._filters = filters
        self._rows, self._ids, self._live = [], set(), []
        self._loading = False
        self._exhausted = self._source is None
        self.total = None
        self.endResetModel()
        if self._source is None:
            return
        source, generation = self._source, self._generation
        self._runner.call(
            lambda: source.count(filters),
            lambda n: self._counted(generation, n),
            lambda exc: self._page_failed(generation, exc),
        )
        self.fetchMore()

    def refresh(self) -> None:
        self.set_filters(self._filters)

    def _counted(self, generation: int, n: int) -> None:
        if generation == self._generation:
            self.total = n + len(self._live)
            self.total_changed.emit(self.total)

    def _page_loaded(self, generation: int, records: Sequence[RequestRecord], limit: int) -> None:
        if generation != self._generation:
            return
        self._loading = False
        fresh = [r for r in records if r.id not in self._ids]
        if len(records) < limit:
            self._exhausted = True
        if fresh:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(fresh) - 1)
            self._rows.extend(fresh)
            self._ids.update(r.id for r in fresh)
            self.endInsertRows()

    def _page_failed(self, generation: int, exc: BaseException) -> None:
        if generation == self._generation:
            self._loading = False
            self._exhausted = True
            self.load_failed.emit(str(exc))

    def add_live(self, rec: RequestRecord) -> None:
        """A request just finished: show it on top (batched, so 100 req/s stay cheap)."""
        if not self._filters.matches(rec) or rec.id in self._ids:
            return
        self._live.append(rec)
        if not self._flush.isActive():
            self._flush.start()

    def flush_live(self) -> None:
        if not self._live:
            return
        batch = [r for r in reversed(self._live) if r.id not in self._ids]
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


CSV_FIELDS = (
    "id",
    "time",
    "client_api",
    "path",
    "requested_model",
    "model",
    "provider",
    "status",
    "ok",
    "error",
    "stream",
    "ttfb_ms",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "client",
    "access_key",
)


def export_csv(source: HistorySource, filters: HistoryFilter, path: Path, chunk: int = 5000) -> int:
    """Write every record matching `filters` to `path` (blocking); returns how many."""
    written = 0
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        while True:
            page = source.page(filters, written, chunk)
            for rec in page:
                row = []
                for name in CSV_FIELDS:
                    value = getattr(rec, name)
                    if name == "time":
                        value = datetime.fromtimestamp(value).isoformat(timespec="seconds")
                    row.append("" if value is None else value)
                writer.writerow(row)
            written += len(page)
            if len(page) < chunk:
                break
    tmp.replace(path)
    return written
