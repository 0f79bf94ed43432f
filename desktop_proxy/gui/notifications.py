"""Tray messages for what the user must know, and nothing else."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_proxy.gui.bridge import GatewayBridge

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
        bridge.provider_health_changed.connect(self.on_health)
        bridge.key_rejected.connect(self.on_key_rejected)

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
