"""The request history window: filters, a lazily paged table, details, totals and a cost chart."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from PySide6.QtCore import QModelIndex, QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QColor, QFontDatabase, QGuiApplication, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from desktop_proxy.gui.bridge import GatewayBridge
from desktop_proxy.gui.facade import (
    DayCost,
    HistoryFacets,
    HistoryFilter,
    HistoryStats,
    StatusFilter,
    start_of_today,
)
from desktop_proxy.gui.history_model import (
    HistoryTableModel,
    chart_days,
    curl_command,
    export_csv,
    pretty_body,
)
from desktop_proxy.gui.tray import format_cost, history_warning
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.writer import WriterStatus

RANGES: tuple[tuple[str, float | None], ...] = (
    ("Last hour", 3600.0),
    ("Today", -1.0),
    ("Last 7 days", 7 * 86400.0),
    ("Last 30 days", 30 * 86400.0),
    ("All time", None),
)
STATUSES: tuple[tuple[str, StatusFilter], ...] = (
    ("Any status", "any"),
    ("Succeeded", "ok"),
    ("Failed", "error"),
)


STATS_MIN_INTERVAL_MS = 1000
# The summary is read from the database, which the history writer fills in batches, up to a
# second behind (services.py). A read soon after a request can miss it, so the summary is read
# once more this long after the last live request (found by scripts/walkthrough.py).
STATS_SETTLE_MS = 2500
# Requests that finished while the window was hidden, kept to be offered when it is shown:
# the last ones may not be stored yet when the list is read (the writer batches).
BACKLOG = 1000
# The summary query may use at most this share of a CPU while requests stream in.
STATS_BUDGET = 0.1


def stats_interval_ms(took: float) -> int:
    """How long to wait before re-reading the summary after a query that took `took` s."""
    return max(STATS_MIN_INTERVAL_MS, round(took / STATS_BUDGET * 1000))


def range_since(span: float | None, now: float) -> float | None:
    if span is None:
        return None
    if span < 0:
        return start_of_today(now)
    return now - span


def compact_number(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    return f"{n:,}"


def summary_text(stats: HistoryStats) -> str:
    parts = [
        f"{stats.requests:,} request{'s' if stats.requests != 1 else ''}",
        f"{compact_number(stats.input_tokens)} tokens in",
        f"{compact_number(stats.output_tokens)} out",
        format_cost(stats.cost_usd),
    ]
    if stats.errors:
        parts.append(f"{stats.errors:,} failed")
    return "  ·  ".join(parts)


class DailyCostChart(QWidget):
    """Cost per day for the last 30 days, as bars; no charting library needed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.days: list[DayCost] = []
        self.setMinimumSize(QSize(240, 44))
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setFixedSize(QSize(270, 48))

    def set_days(self, days: Sequence[DayCost], today: date | None = None, span: int = 30) -> None:
        self.days = chart_days(days, today or date.today(), span)
        peak = max((d.cost_usd for d in self.days), default=0.0)
        total = sum(d.cost_usd for d in self.days)
        self.setToolTip(
            f"Cost per day, last {len(self.days)} days: {format_cost(total)} "
            f"(busiest day {format_cost(peak)})"
        )
        self.update()

    def paintEvent(self, event: object) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        text = palette.color(palette.ColorRole.WindowText)
        grid = QColor(text)
        grid.setAlpha(50)
        bar = palette.color(palette.ColorRole.Highlight)
        w, h = float(self.width()), float(self.height())
        label_h = 12.0
        chart_h = h - label_h - 2
        p.setPen(QPen(grid, 1))
        p.drawLine(0, int(chart_h) + 1, int(w), int(chart_h) + 1)
        peak = max((d.cost_usd for d in self.days), default=0.0)
        n = max(1, len(self.days))
        step = w / n
        if peak > 0:
            p.setPen(Qt.PenStyle.NoPen)
            for i, day in enumerate(self.days):
                height = max(1.0, chart_h * day.cost_usd / peak) if day.cost_usd > 0 else 0.0
                colour = QColor(bar)
                if i != n - 1:
                    colour.setAlpha(170)
                p.setBrush(colour)
                p.drawRoundedRect(
                    QRectF(i * step + 1, chart_h - height + 1, max(1.0, step - 2), height), 1, 1
                )
        font = p.font()
        font.setPointSizeF(max(6.5, font.pointSizeF() * 0.75))
        p.setFont(font)
        muted = QColor(text)
        muted.setAlpha(150)
        p.setPen(muted)
        p.drawText(
            QRectF(0, h - label_h, w / 2, label_h),
            Qt.AlignmentFlag.AlignLeft,
            f"{len(self.days)} days",
        )
        p.drawText(
            QRectF(w / 2, h - label_h, w / 2, label_h),
            Qt.AlignmentFlag.AlignRight,
            f"max {format_cost(peak)}/day",
        )
        p.end()


class HistoryWindow(QWidget):
    def __init__(self, bridge: GatewayBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.setWindowTitle("Request history — Desktop Proxy")
        self.resize(1100, 700)
        self.model = HistoryTableModel(bridge.facade.history, bridge.runner, parent=self)
        self._build()
        self.model.total_changed.connect(self._update_count)
        self.model.load_failed.connect(lambda msg: self.count_label.setText(f"Error: {msg}"))
        bridge.record_added.connect(self._on_record)
        bridge.history_status_changed.connect(lambda _s: self.update_notice())
        # Hidden (not shown yet, or closed), the window neither queries nor follows live
        # requests; shown, it (re)loads. So the app can build it ahead of time, hidden.
        self._stale = True
        self._backlog: deque[RequestRecord] = deque(maxlen=BACKLOG)
        self._prerendering = False
        # While requests arrive, the summary and chart are re-read at most once a second, and
        # no more often than STATS_BUDGET allows: an "All time" query over 100k+ rows takes a
        # few hundred ms of CPU, which the gateway shares on a small machine.
        self._stats_timer = QTimer(self)
        self._stats_timer.setSingleShot(True)
        self._stats_timer.setInterval(STATS_MIN_INTERVAL_MS)
        self._stats_timer.timeout.connect(self.refresh_stats)
        self._settle_timer = QTimer(self)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.setInterval(STATS_SETTLE_MS)
        self._settle_timer.timeout.connect(self.refresh_stats)
        self._stats_busy = False
        self.update_notice()

    # --- layout -----------------------------------------------------------------------------

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(8)

        bar = QHBoxLayout()
        bar.setSpacing(6)
        self.range_box = QComboBox()
        for label, _span in RANGES:
            self.range_box.addItem(label)
        self.range_box.setCurrentIndex(2)
        self.provider_box = QComboBox()
        self.provider_box.addItem("All providers", None)
        self.model_box = QComboBox()
        self.model_box.addItem("All models", None)
        self.model_box.setMinimumContentsLength(14)
        self.status_box = QComboBox()
        for label, value in STATUSES:
            self.status_box.addItem(label, value)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search model, provider, error, request id…")
        self.search.setClearButtonEnabled(True)
        self.export_button = QPushButton("Export CSV…")
        for w in (self.range_box, self.provider_box, self.model_box, self.status_box):
            bar.addWidget(w)
            w.currentIndexChanged.connect(lambda _index: self.apply_filters())
        bar.addWidget(self.search, 1)
        bar.addWidget(self.export_button)
        layout.addLayout(bar)
        # Says why the list is incomplete: history off, database unreadable or not written.
        self.notice_label = QLabel("")
        self.notice_label.setWordWrap(True)
        self.notice_label.setStyleSheet(
            "QLabel { background: palette(alternate-base); border: 1px solid #e0a800;"
            " border-radius: 4px; padding: 6px; }"
        )
        self.notice_label.hide()
        layout.addWidget(self.notice_label)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(250)
        self._search_timer.timeout.connect(lambda: self.apply_filters())
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        self.export_button.clicked.connect(self.export)

        strip = QFrame()
        strip.setFrameShape(QFrame.Shape.StyledPanel)
        strip_layout = QHBoxLayout(strip)
        strip_layout.setContentsMargins(10, 6, 10, 6)
        texts = QVBoxLayout()
        texts.setSpacing(2)
        self.summary_label = QLabel("")
        font = self.summary_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.1)
        font.setBold(True)
        self.summary_label.setFont(font)
        self.count_label = QLabel("")
        self.count_label.setStyleSheet("color: palette(placeholder-text);")
        texts.addWidget(self.summary_label)
        texts.addWidget(self.count_label)
        strip_layout.addLayout(texts, 1)
        self.chart = DailyCostChart()
        strip_layout.addWidget(self.chart)
        layout.addWidget(strip)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(24)
        # Fixed widths: ResizeToContents would measure every row, which is slow at 100k rows.
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        widths = (150, 70, 110, 210, 100, 80, 80, 80, 80, 120)
        for column, width in enumerate(widths):
            self.table.setColumnWidth(column, width)
        self.table.selectionModel().currentRowChanged.connect(self._row_changed)

        detail = QWidget()
        detail_layout = QVBoxLayout(detail)
        detail_layout.setContentsMargins(0, 4, 0, 0)
        head = QHBoxLayout()
        self.detail_title = QLabel("Select a request to see its details.")
        self.detail_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.curl_button = QPushButton("Copy as curl")
        self.curl_button.setEnabled(False)
        self.curl_button.clicked.connect(self.copy_curl)
        head.addWidget(self.detail_title, 1)
        head.addWidget(self.curl_button)
        detail_layout.addLayout(head)
        self.detail_tabs = QTabWidget()
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.overview_text = QPlainTextEdit()
        self.request_text = QPlainTextEdit()
        self.response_text = QPlainTextEdit()
        for name, editor in (
            ("Overview", self.overview_text),
            ("Request", self.request_text),
            ("Response", self.response_text),
        ):
            editor.setReadOnly(True)
            editor.setFont(mono)
            editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
            self.detail_tabs.addTab(editor, name)
        detail_layout.addWidget(self.detail_tabs)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout.addWidget(splitter, 1)
        self.current: RequestRecord | None = None

    # --- filters ----------------------------------------------------------------------------

    def current_filters(self, now: float | None = None) -> HistoryFilter:
        span = RANGES[self.range_box.currentIndex()][1]
        return HistoryFilter(
            since=range_since(span, time.time() if now is None else now),
            provider=self.provider_box.currentData(),
            model=self.model_box.currentData(),
            status=self.status_box.currentData() or "any",
            text=self.search.text().strip(),
        )

    def apply_filters(self, recent: Sequence[RequestRecord] = ()) -> None:
        if self._stale:
            return  # hidden: loaded when shown
        self.model.set_filters(self.current_filters(), recent)
        self.refresh_stats()
        self._show_record(None)

    def refresh_stats(self) -> None:
        history = self.bridge.facade.history
        if history is None:
            self.summary_label.setText("History is not available.")
            self.update_notice()
            return
        if self._stats_busy:
            return
        filters = self.model.filters
        self._stats_busy = True

        def read() -> tuple[HistoryStats, float]:
            started = time.perf_counter()
            return history.stats(filters), time.perf_counter() - started

        def done(result: tuple[HistoryStats, float]) -> None:
            stats, took = result
            self._stats_busy = False
            self._stats_timer.setInterval(stats_interval_ms(took))
            self._stats_loaded(filters, stats)

        def failed(exc: BaseException) -> None:
            self._stats_busy = False
            self.summary_label.setText(f"History could not be read: {exc}")

        self.bridge.runner.call(read, done, failed)

    def notice_text(self) -> str | None:
        history = self.bridge.facade.history
        parts = []
        if history is None:
            parts.append("History is not available: only requests arriving now are shown.")
        elif history.notice:
            parts.append(history.notice)
        warning = history_warning(self.bridge.history_status)
        if warning is not None:
            parts.append(warning + ". Requests are kept in memory until it can be written.")
        return "\n".join(parts) or None

    def update_notice(self, _status: WriterStatus | None = None) -> None:
        text = self.notice_text()
        self.notice_label.setText(text or "")
        self.notice_label.setVisible(text is not None)

    def _stats_loaded(self, filters: HistoryFilter, stats: HistoryStats) -> None:
        self.update_notice()  # the source knows by now whether its database could be read
        if filters != self.model.filters:
            return
        if self.model.total is not None and self.model.total < stats.requests:
            # A request in flight when the list was read, counted neither way: the stored
            # figures know better.
            self.model.total = stats.requests
            self._update_count(stats.requests)
        self.stats = stats
        self.summary_label.setText(summary_text(stats))
        span = 7 if RANGES[self.range_box.currentIndex()][1] == 7 * 86400.0 else 30
        self.chart.set_days(stats.days, span=span)

    def refresh_facets(self) -> None:
        history = self.bridge.facade.history
        if history is not None:
            self.bridge.runner.call(history.facets, self._facets_loaded)

    def _facets_loaded(self, facets: HistoryFacets) -> None:
        config = self.bridge.facade.config
        providers = sorted({*facets.providers, *(p.name for p in config.providers)})
        models = sorted(set(facets.models))
        for box, values in ((self.provider_box, providers), (self.model_box, models)):
            current = box.currentData()
            box.blockSignals(True)
            while box.count() > 1:
                box.removeItem(1)
            for value in values:
                box.addItem(value, value)
            index = box.findData(current)
            box.setCurrentIndex(max(0, index))
            box.blockSignals(False)

    def _update_count(self, total: int) -> None:
        self.count_label.setText(
            f"{total:,} matching request{'s' if total != 1 else ''} · newest first"
        )

    # --- live -------------------------------------------------------------------------------

    def _on_record(self, rec: RequestRecord) -> None:
        if not self.isVisible():
            self._stale = True
            self._backlog.append(rec)
            return
        self.model.add_live(rec)
        if not self._stats_timer.isActive():
            self._stats_timer.start()
        self._settle_timer.start()  # restarted: fires once the requests stop

    # --- details ----------------------------------------------------------------------------

    def _row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        rec = self.model.record_at(current.row())
        self._show_record(rec)
        history = self.bridge.facade.history
        if rec is not None and history is not None and rec.request_body is None:
            record_id = rec.id
            self.bridge.runner.call(
                lambda: history.get(record_id),
                lambda full: self._show_record(full) if full and self.current is rec else None,
            )

    def _show_record(self, rec: RequestRecord | None) -> None:
        self.current = rec
        self.curl_button.setEnabled(rec is not None and rec.request_body is not None)
        if rec is None:
            self.detail_title.setText("Select a request to see its details.")
            for editor in (self.overview_text, self.request_text, self.response_text):
                editor.setPlainText("")
            return
        model = rec.model or rec.requested_model or "?"
        self.detail_title.setText(
            f"<b>{rec.status or '—'}</b>  {rec.client_api}  {model} via {rec.provider or '—'}"
        )
        self.overview_text.setPlainText(overview(rec))
        self.request_text.setPlainText(pretty_body(rec.request_body))
        self.response_text.setPlainText(pretty_body(rec.response_body))

    def copy_curl(self) -> None:
        if self.current is None:
            return
        status = self.bridge.status()
        text = curl_command(self.current, status.url, needs_key=not status.open_access)
        QGuiApplication.clipboard().setText(text)

    # --- export -----------------------------------------------------------------------------

    def export(self) -> None:
        name, _ = QFileDialog.getSaveFileName(
            self, "Export history", str(Path.home() / "desktop-proxy-history.csv"), "CSV (*.csv)"
        )
        if name:
            self.export_to(Path(name))

    def export_to(self, path: Path) -> None:
        history = self.bridge.facade.history
        if history is None:
            return
        filters = self.model.filters
        self.export_button.setEnabled(False)

        def done(n: int) -> None:
            self.export_button.setEnabled(True)
            self.count_label.setText(f"Exported {n:,} requests to {path}")

        def failed(exc: BaseException) -> None:
            self.export_button.setEnabled(True)
            self.count_label.setText(f"Export failed: {exc}")

        self.bridge.runner.call(lambda: export_csv(history, filters, path), done, failed)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._stats_timer.stop()
        self._settle_timer.stop()
        self._stale = True
        event.accept()

    def prerender(self) -> None:
        """Lay out, polish and paint the window once, off screen and without querying, so that
        its first real show under load costs a few milliseconds instead of 10-60."""
        if self.isVisible():
            return
        self._prerendering = True
        self.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
        try:
            self.show()  # layout and polish, synchronously
            self.grab()  # and one paint, into a pixmap that is thrown away
            self.hide()
        finally:
            self.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, False)
            self._prerendering = False

    def showEvent(self, event: object) -> None:
        if self._prerendering:
            return
        if self._stale:
            # First shown, or requests arrived while closed: read the list again (time ranges
            # move on too). Rows stay unique by id even where a live row and a page overlap.
            self._stale = False
            backlog = list(self._backlog)
            self.apply_filters(backlog)  # the last ones may not be stored yet
            self._backlog.clear()
            self.refresh_facets()
            if backlog:
                self._settle_timer.start()  # nor counted in the summary: read it again
        else:
            self.refresh_stats()


def overview(rec: RequestRecord) -> str:
    rows = [
        ("Request id", rec.id),
        ("Path", rec.path),
        ("Client API", rec.client_api),
        ("Client", rec.client or ""),
        ("Session", rec.session_id or ""),
        ("Access key", rec.access_key or ""),
        ("Requested model", rec.requested_model or ""),
        ("Model", rec.model or ""),
        ("Provider", rec.provider or ""),
        ("Upstream key", f"…{rec.upstream_key_id}" if rec.upstream_key_id else ""),
        ("Status", f"{rec.status} {'ok' if rec.ok else 'failed'}"),
        ("Error", rec.error or ""),
        ("Streamed", "yes" if rec.stream else "no"),
        ("First byte", f"{rec.ttfb_ms:.0f} ms" if rec.ttfb_ms is not None else ""),
        ("Duration", f"{rec.duration_ms:.0f} ms" if rec.duration_ms is not None else ""),
        ("Input tokens", _n(rec.input_tokens)),
        ("Output tokens", _n(rec.output_tokens)),
        ("Cache read / write", f"{_n(rec.cache_read_tokens)} / {_n(rec.cache_write_tokens)}"),
        ("Reasoning tokens", _n(rec.reasoning_tokens)),
        ("Usage estimated", "yes" if rec.usage_estimated else "no"),
        ("Cost", f"${rec.cost_usd:.6f}" if rec.cost_usd is not None else ""),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows if v not in ("", " / "))


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"
