"""Tray messages for what the user must know, and nothing else."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_proxy.gui.bridge import GatewayBridge
from desktop_proxy.history.writer import WriterStatus

# The same provider's rejected key is reported at most this often.
KEY_REJECTED_INTERVAL = 600.0

Show = Callable[[str, str, QSystemTrayIcon.MessageIcon], None]


def health_message(provider: str, healthy: bool, reason: str) -> tuple[str, str]:
    if healthy:
        return f"{provider} is back", f"Requests are going to {provider} again."
    return (
        f"{provider} is cooling down",
        f"{provider} failed ({reason}); requests go to other providers for now.",
    )


def key_rejected_message(provider: str, detail: str) -> tuple[str, str]:
    return (
        f"{provider} rejected its API key",
        f"{detail.strip()[:160]}\nCheck the key in Settings → Providers.",
    )


def history_degraded_message(status: WriterStatus) -> tuple[str, str]:
    reason = (status.message or "the database cannot be written").strip()
    return (
        "Request history is not being saved",
        f"{reason[:200]}\nRequests are kept in memory and saved when the database is writable "
        "again; the gateway keeps serving.",
    )


def history_recovered_message(status: WriterStatus) -> tuple[str, str]:
    body = "The history database is writable again; the requests kept meanwhile were saved."
    if status.dropped:
        body = (
            f"The history database is writable again. {status.dropped:,} requests could not "
            "be kept while it was not and are missing from the history."
        )
    return "Request history is saved again", body


def history_replaced_message(status: WriterStatus) -> tuple[str, str]:
    where = f" The damaged file was moved to {status.moved_aside}." if status.moved_aside else ""
    return "The history database was damaged", f"A new one was started.{where}"


def port_in_use_message(port: int, alternative: int | None) -> tuple[str, str]:
    body = f"Port {port} is already in use, so the gateway could not start."
    if alternative is not None:
        body += f" Port {alternative} is free."
    return "The gateway could not start", body


class Notifier(QObject):
    def __init__(
        self,
        bridge: GatewayBridge,
        show: Show,
        clock: Callable[[], float] = time.monotonic,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._show = show
        self._clock = clock
        self._key_reported: dict[str, float] = {}
        self._history_degraded = False
        self._moved_reported: object = None
        bridge.provider_health_changed.connect(self.on_health)
        bridge.key_rejected.connect(self.on_key_rejected)
        bridge.history_status_changed.connect(self.on_history_status)

    def on_health(self, provider: str, healthy: bool, reason: str) -> None:
        title, body = health_message(provider, healthy, reason)
        icon = QSystemTrayIcon.MessageIcon
        self._show(title, body, icon.Information if healthy else icon.Warning)

    def on_key_rejected(self, provider: str, detail: str) -> None:
        now = self._clock()
        last = self._key_reported.get(provider)
        if last is not None and now - last < KEY_REJECTED_INTERVAL:
            return
        self._key_reported[provider] = now
        title, body = key_rejected_message(provider, detail)
        self._show(title, body, QSystemTrayIcon.MessageIcon.Critical)

    def on_history_status(self, status: WriterStatus) -> None:
        """Once when the history stops being saved (however often its reason changes), once
        when it recovers, and once per damaged file moved aside."""
        icon = QSystemTrayIcon.MessageIcon
        if status.state == "degraded":
            if not self._history_degraded:
                self._history_degraded = True
                self._show(*history_degraded_message(status), icon.Warning)
            return
        if status.state == "ok" and self._history_degraded:
            self._history_degraded = False
            self._show(*history_recovered_message(status), icon.Information)
        elif status.state == "closed":
            self._history_degraded = False  # the gateway stopped; nothing more to report
        if status.moved_aside is not None and status.moved_aside != self._moved_reported:
            self._moved_reported = status.moved_aside
            self._show(*history_replaced_message(status), icon.Warning)
