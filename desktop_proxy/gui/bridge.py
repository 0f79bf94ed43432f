"""Qt signals over the facade's plain callbacks, and the gateway actions the widgets trigger.

The gateway runs on the one qasync thread (the UI thread), so its record and health listeners
re-emit directly. The history writer's status listener is called from the writer's own thread:
it only emits a private signal, which Qt queues to the UI thread (the bridge lives there).

Today's requests and cost (tray tooltip and status line) are the stored figures, read in a
worker thread, plus the requests seen live that those figures do not include yet.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from desktop_proxy.errors import PortInUseError
from desktop_proxy.gui import qt_fixes
from desktop_proxy.gui.facade import (
    GatewayStatus,
    GuiFacade,
    LaunchSpec,
    UsageSnapshot,
    local_day,
    start_of_today,
)
from desktop_proxy.gui.tasks import TaskRunner
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.writer import WriterStatus

log = logging.getLogger(__name__)
qt_fixes.install()  # before any signal is emitted: see qt_fixes


@dataclass(frozen=True, slots=True)
class UsageToday:
    day: date
    requests: int = 0
    cost_usd: float = 0.0

    def plus(self, rec: RequestRecord) -> UsageToday:
        day = local_day(rec.time)
        if day != self.day:
            if day < self.day:
                return self
            return UsageToday(day, 1, rec.cost_usd or 0.0)
        return UsageToday(day, self.requests + 1, self.cost_usd + (rec.cost_usd or 0.0))


class LiveTally:
    """Requests seen live that the stored figures are not known to include yet, per local day.

    Thread-safe: `add` runs on the UI thread, `ids` in the worker thread that reads the history.
    """

    LIMIT = 200_000  # ids kept at most (a history that never catches up must not grow forever)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[date, float]] = {}
        self._days: dict[date, list[float]] = {}

    def add(self, rec: RequestRecord) -> None:
        day, cost = local_day(rec.time), rec.cost_usd or 0.0
        with self._lock:
            if rec.id in self._pending or len(self._pending) >= self.LIMIT:
                return
            self._pending[rec.id] = (day, cost)
            totals = self._days.setdefault(day, [0, 0.0])
            totals[0] += 1
            totals[1] += cost

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._pending)

    def confirm(self, found: frozenset[str], today: date) -> None:
        """`found` are in the stored figures now; days before `today` no longer matter."""
        with self._lock:
            for record_id in found:
                entry = self._pending.pop(record_id, None)
                if entry is not None:
                    totals = self._days[entry[0]]
                    totals[0] -= 1
                    totals[1] -= entry[1]
            old = [i for i, (day, _cost) in self._pending.items() if day < today]
            for record_id in old:
                del self._pending[record_id]
            for day in [d for d in self._days if d < today]:
                del self._days[day]

    def on(self, day: date) -> tuple[int, float]:
        with self._lock:
            totals = self._days.get(day)
            return (int(totals[0]), max(0.0, totals[1])) if totals else (0, 0.0)


class GatewayBridge(QObject):
    gateway_state_changed = Signal(object)  # GatewayStatus
    record_added = Signal(object)  # RequestRecord
    provider_health_changed = Signal(str, bool, str)  # provider, healthy, reason
    key_rejected = Signal(str, str)  # provider, detail
    port_in_use = Signal(int)  # the port that was taken
    usage_changed = Signal(object)  # UsageToday
    error = Signal(str, str)  # title, message
    launch_ready = Signal(object)  # LaunchSpec
    config_applied = Signal(object)  # ApplyResult
    history_status_changed = Signal(object)  # WriterStatus, on the UI thread
    # Emitted on the history writer's thread; queued to _apply_history_status on the UI thread.
    _history_status_posted = Signal(object)

    USAGE_REFRESH_MS = 30_000

    def __init__(self, facade: GuiFacade, runner: TaskRunner, parent: QObject | None = None):
        super().__init__(parent)
        self.facade = facade
        self.runner = runner
        self.usage = UsageToday(local_day(start_of_today()))
        self.history_status: WriterStatus | None = None
        self._tally = LiveTally()
        self._stored: UsageToday | None = None  # today's figures as last read from the history
        self._usage_busy = False
        self._usage_timer = QTimer(self)
        self._usage_timer.setInterval(self.USAGE_REFRESH_MS)
        self._usage_timer.timeout.connect(self.refresh_usage)
        self._last_status = facade.status()
        facade.add_record_listener(self._on_record)
        facade.add_health_listener(self._on_health)
        # A bound signal's emit is safe to call from any thread; the connection to our slot
        # is queued whenever it is emitted from a thread other than ours.
        self._history_status_posted.connect(self._apply_history_status)
        facade.add_history_status_listener(self._history_status_posted.emit)

    # --- state ------------------------------------------------------------------------------

    def status(self) -> GatewayStatus:
        return self.facade.status()

    def publish_status(self) -> None:
        status = self.facade.status()
        self._last_status = status
        self.gateway_state_changed.emit(status)

    def _on_record(self, rec: RequestRecord) -> None:
        self._tally.add(rec)
        self._update_usage()
        self.record_added.emit(rec)
        if rec.provider and rec.status in (401, 403):
            self.key_rejected.emit(rec.provider, rec.error or f"HTTP {rec.status}")

    def _on_health(self, provider: str, healthy: bool, reason: str) -> None:
        self.provider_health_changed.emit(provider, healthy, reason)
        self.publish_status()

    @Slot(object)
    def _apply_history_status(self, status: WriterStatus) -> None:
        self.history_status = status
        self.history_status_changed.emit(status)

    @property
    def history_degraded(self) -> bool:
        return self.history_status is not None and self.history_status.state == "degraded"

    # --- today's usage ----------------------------------------------------------------------

    def _update_usage(self) -> None:
        today = local_day(start_of_today())
        stored = self._stored if self._stored is not None and self._stored.day == today else None
        live_requests, live_cost = self._tally.on(today)
        self.usage = UsageToday(
            today,
            (stored.requests if stored else 0) + live_requests,
            (stored.cost_usd if stored else 0.0) + live_cost,
        )
        self.usage_changed.emit(self.usage)

    def start_usage_refresh(self, interval_ms: int | None = None) -> None:
        """Re-read today's figures every `interval_ms` (and now)."""
        self._usage_timer.start(interval_ms or self.USAGE_REFRESH_MS)
        self.refresh_usage()

    def refresh_usage(self) -> None:
        """Re-read today's figures from the history in a worker thread; `usage` keeps the last
        value (plus live requests) meanwhile. Returns at once."""
        history = self.facade.history
        if history is None or self._usage_busy:
            return
        since = start_of_today()
        tally = self._tally
        self._usage_busy = True

        def done(snapshot: UsageSnapshot) -> None:
            self._usage_busy = False
            day = local_day(since)
            tally.confirm(snapshot.found, day)
            self._stored = UsageToday(day, snapshot.requests, snapshot.cost_usd)
            self._update_usage()

        def failed(exc: BaseException) -> None:
            self._usage_busy = False
            log.warning("could not read today's usage from the history: %s", exc)

        self.runner.call(lambda: history.usage_since(since, tally.ids), done, failed)

    # --- actions ----------------------------------------------------------------------------

    def start_gateway(self, port: int | None = None) -> None:
        def failed(exc: BaseException) -> None:
            self.publish_status()
            if isinstance(exc, PortInUseError):
                self.port_in_use.emit(exc.port)
            else:
                self.error.emit("The gateway could not start", str(exc))

        self.runner.run(self.facade.start_gateway(port), lambda _s: self.publish_status(), failed)
        self.publish_status()

    def stop_gateway(self) -> None:
        self.runner.run(
            self.facade.stop_gateway(),
            lambda _r: self.publish_status(),
            lambda exc: self._fail("The gateway did not stop cleanly", exc),
        )
        self.publish_status()

    def toggle_gateway(self) -> None:
        if self.facade.status().running:
            self.stop_gateway()
        else:
            self.start_gateway()

    def launch_claude(self, folder: Path) -> None:
        def ready(spec: LaunchSpec) -> None:
            self.launch_ready.emit(spec)

        self.runner.run(
            self.facade.prepare_claude_launch(folder),
            ready,
            lambda exc: self._fail("Claude Code could not be launched", exc),
        )

    def _fail(self, title: str, exc: BaseException) -> None:
        self.publish_status()
        self.error.emit(title, str(exc))
