"""Qt signals over the facade's plain callbacks, and the gateway actions the widgets trigger.

Everything runs on the one qasync thread, so the listeners re-emit directly. Should the loop
move to a worker thread, only this file changes (queued connections).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from desktop_proxy.errors import PortInUseError
from desktop_proxy.gui.facade import (
    GatewayStatus,
    GuiFacade,
    HistoryFilter,
    HistoryStats,
    LaunchSpec,
    local_day,
    start_of_today,
)
from desktop_proxy.gui.tasks import TaskRunner
from desktop_proxy.history.record import RequestRecord

log = logging.getLogger(__name__)


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

    def __init__(self, facade: GuiFacade, runner: TaskRunner, parent: QObject | None = None):
        super().__init__(parent)
        self.facade = facade
        self.runner = runner
        self.usage = UsageToday(local_day(start_of_today()))
        self._last_status = facade.status()
        facade.add_record_listener(self._on_record)
        facade.add_health_listener(self._on_health)

    # --- state ------------------------------------------------------------------------------

    def status(self) -> GatewayStatus:
        return self.facade.status()

    def publish_status(self) -> None:
        status = self.facade.status()
        self._last_status = status
        self.gateway_state_changed.emit(status)

    def _on_record(self, rec: RequestRecord) -> None:
        self.usage = self.usage.plus(rec)
        self.record_added.emit(rec)
        self.usage_changed.emit(self.usage)
        if rec.provider and rec.status in (401, 403):
            self.key_rejected.emit(rec.provider, rec.error or f"HTTP {rec.status}")

    def _on_health(self, provider: str, healthy: bool, reason: str) -> None:
        self.provider_health_changed.emit(provider, healthy, reason)
        self.publish_status()

    def refresh_usage(self) -> None:
        """Re-read today's totals from the history (off the UI thread)."""
        history = self.facade.history
        if history is None:
            return
        since = start_of_today()
        today = HistoryFilter(since=since)

        def done(stats: HistoryStats) -> None:
            self.usage = UsageToday(local_day(since), stats.requests, stats.cost_usd)
            self.usage_changed.emit(self.usage)

        self.runner.call(lambda: history.stats(today), done, lambda e: log.warning("%s", e))

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
