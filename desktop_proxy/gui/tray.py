"""The tray icon and its menu, rebuilt with fresh state every time it opens."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QObject, QTimer
from PySide6.QtGui import QAction, QGuiApplication, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from desktop_proxy.gui.bridge import GatewayBridge, UsageToday
from desktop_proxy.gui.facade import GatewayStatus
from desktop_proxy.gui.icons import IconState, tray_icon
from desktop_proxy.history.writer import WriterStatus

# Tooltip updates from live requests are coalesced: at 100 requests per second, once per this.
TOOLTIP_REFRESH_MS = 500


class TrayHost(Protocol):
    """What the menu asks of the application around it."""

    def show_settings(self) -> None: ...

    def show_history(self) -> None: ...

    def choose_claude_folder(self) -> None: ...

    def launch_claude(self, folder: Path) -> None: ...

    def recent_folders(self) -> list[str]: ...

    def open_logs(self) -> None: ...

    def autostart_enabled(self) -> bool: ...

    def set_autostart(self, enabled: bool) -> None: ...

    def quit(self) -> None: ...


def format_cost(cost: float) -> str:
    if cost <= 0:
        return "$0.00"
    if cost < 0.01:
        return "<$0.01"
    return f"${cost:,.2f}"


def format_requests(n: int) -> str:
    return f"{n:,} request{'s' if n != 1 else ''} today"


def icon_state(status: GatewayStatus, history: WriterStatus | None = None) -> IconState:
    if status.phase == "error":
        return "error"
    if status.degraded or (status.running and history_warning(history) is not None):
        return "degraded"
    return "running" if status.running else "stopped"


def history_warning(history: WriterStatus | None) -> str | None:
    """One line about the history writer when requests are not being saved, else None."""
    if history is None or history.state != "degraded":
        return None
    text = "History is not being saved: " + first_line(history.message or "database error", 90)
    if history.dropped:
        text += f" ({history.dropped:,} requests lost)"
    return text


def status_line(status: GatewayStatus, usage: UsageToday) -> str:
    """`Running on http://127.0.0.1:6789 · 42 requests today · $0.31`, or why it is not."""
    if status.running:
        return (
            f"Running on {status.url} · {format_requests(usage.requests)} · "
            f"{format_cost(usage.cost_usd)}"
        )
    if status.phase == "starting":
        return f"Starting on {status.url}…"
    if status.phase == "stopping":
        return "Stopping…"
    if status.phase == "error":
        return "Not running: " + first_line(status.error or "the gateway failed", 70)
    return "Gateway stopped"


def first_line(text: str, limit: int) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def tooltip_text(
    status: GatewayStatus, usage: UsageToday, history: WriterStatus | None = None
) -> str:
    lines = ["Desktop Proxy"]
    if status.running:
        lines.append(status.openai_url)
        lines.append(f"{format_requests(usage.requests)} · {format_cost(usage.cost_usd)}")
        for provider, reason in sorted(status.cooling.items()):
            lines.append(f"{provider}: cooling down ({reason})")
    else:
        lines.append(status_line(status, usage))
    warning = history_warning(history)
    if warning is not None:
        lines.append(warning)
    return "\n".join(lines)


class TrayController(QObject):
    def __init__(self, bridge: GatewayBridge, host: TrayHost, parent: QObject | None = None):
        super().__init__(parent)
        self.bridge = bridge
        self.host = host
        self.tray = QSystemTrayIcon(self)
        self.menu = QMenu()
        self.menu.aboutToShow.connect(self.rebuild_menu)
        self.tray.setContextMenu(self.menu)
        self.tray.activated.connect(self._activated)
        self._icons: dict[IconState, QIcon] = {}
        # Live requests change the figures up to 100 times a second: refresh at most twice.
        self._soon = QTimer(self)
        self._soon.setSingleShot(True)
        self._soon.setInterval(TOOLTIP_REFRESH_MS)
        self._soon.timeout.connect(self.refresh)
        bridge.gateway_state_changed.connect(lambda _s: self.refresh())
        bridge.history_status_changed.connect(lambda _s: self.refresh())
        bridge.usage_changed.connect(self._usage_changed)
        self.rebuild_menu()
        self.refresh()

    def _usage_changed(self, usage: UsageToday) -> None:
        if self.menu.isVisible():
            self.status_action.setText(status_line(self.bridge.status(), usage))
        if not self._soon.isActive():
            self._soon.start()

    def icon_for(self, state: IconState) -> QIcon:
        if state not in self._icons:
            self._icons[state] = tray_icon(state)
        return self._icons[state]

    def refresh(self) -> None:
        status = self.bridge.status()
        history = self.bridge.history_status
        state = icon_state(status, history)
        if state != getattr(self, "current_state", None):
            self.current_state = state
            self.tray.setIcon(self.icon_for(state))
        tooltip = tooltip_text(status, self.bridge.usage, history)
        if tooltip != self.tray.toolTip():
            self.tray.setToolTip(tooltip)

    def show(self) -> None:
        self.tray.show()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        # A left click shows the menu too: on Linux panels without a context-menu convention
        # (and on Windows) users expect a click to do something.
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.rebuild_menu()
            self.menu.popup(self.tray.geometry().center())

    # --- the menu ---------------------------------------------------------------------------

    def _action(self, text: str, slot: object = None, *, enabled: bool = True) -> QAction:
        action = QAction(text, self.menu)
        action.setEnabled(enabled)
        if callable(slot):
            action.triggered.connect(lambda _checked=False, f=slot: f())
        return action

    def rebuild_menu(self) -> None:
        # The figures shown are the last ones read; fresher ones are read in the background and
        # update the status line if they arrive while the menu is open.
        self.bridge.refresh_usage()
        self.refresh()
        menu = self.menu
        menu.clear()
        status = self.bridge.status()
        usage = self.bridge.usage

        self.status_action = self._action(status_line(status, usage), enabled=False)
        menu.addAction(self.status_action)
        for provider, reason in sorted(status.cooling.items()):
            menu.addAction(self._action(f"⚠ {provider} is cooling down ({reason})", enabled=False))
        history_line = history_warning(self.bridge.history_status)
        if history_line is not None:
            self.history_action = self._action("⚠ " + history_line, enabled=False)
            menu.addAction(self.history_action)
        if status.running and not status.loopback and status.open_access:
            menu.addAction(
                self._action("⚠ Open on the network without an access key", enabled=False)
            )
        menu.addSeparator()

        busy = status.phase in ("starting", "stopping")
        if status.running:
            self.toggle_action = self._action("Stop gateway", self.bridge.stop_gateway)
        else:
            self.toggle_action = self._action(
                "Start gateway", self.bridge.start_gateway, enabled=not busy
            )
        self.toggle_action.setEnabled(not busy)
        menu.addAction(self.toggle_action)

        copy_menu = menu.addMenu("Copy base URL")
        copy_menu.setToolTipsVisible(True)
        self.copy_openai = self._action(
            f"OpenAI  —  {status.openai_url}", lambda: self.copy(status.openai_url)
        )
        self.copy_anthropic = self._action(
            f"Anthropic  —  {status.anthropic_url}", lambda: self.copy(status.anthropic_url)
        )
        copy_menu.addAction(self.copy_openai)
        copy_menu.addAction(self.copy_anthropic)
        self.copy_menu = copy_menu

        keys = self.bridge.facade.config.access_keys
        if not keys:
            self.copy_key_action = self._action(
                "Copy access key (none needed on loopback)"
                if status.loopback
                else "Copy access key (none configured)",
                enabled=False,
            )
            menu.addAction(self.copy_key_action)
        elif len(keys) == 1:
            ref = keys[0].key
            self.copy_key_action = self._action("Copy access key", lambda: self.copy_secret(ref))
            menu.addAction(self.copy_key_action)
        else:
            key_menu = menu.addMenu("Copy access key")
            for entry in keys:
                key_menu.addAction(
                    self._action(entry.name, lambda ref=entry.key: self.copy_secret(ref))
                )
            self.copy_key_action = key_menu.menuAction()
        menu.addSeparator()

        launch = menu.addMenu("Launch Claude Code")
        launch.addAction(self._action("Choose folder…", self.host.choose_claude_folder))
        recent = self.host.recent_folders()
        if recent:
            launch.addSeparator()
            for folder in recent:
                launch.addAction(
                    self._action(folder, lambda f=folder: self.host.launch_claude(Path(f)))
                )
        self.launch_menu = launch
        menu.addSeparator()

        menu.addAction(self._action("Settings…", self.host.show_settings))
        menu.addAction(self._action("History…", self.host.show_history))
        menu.addAction(self._action("Open logs folder", self.host.open_logs))
        menu.addSeparator()

        self.autostart_action = self._action("Start at login")
        self.autostart_action.setCheckable(True)
        self.autostart_action.setChecked(self.host.autostart_enabled())
        self.autostart_action.toggled.connect(self.host.set_autostart)
        menu.addAction(self.autostart_action)
        menu.addSeparator()
        self.quit_action = self._action("Quit Desktop Proxy", self.host.quit)
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        menu.addAction(self.quit_action)

    def action_texts(self) -> list[str]:
        return [a.text() for a in self.menu.actions() if not a.isSeparator()]

    # --- clipboard --------------------------------------------------------------------------

    def copy(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
        if self.tray.isVisible() and QSystemTrayIcon.supportsMessages():
            self.tray.showMessage("Copied", text, QSystemTrayIcon.MessageIcon.Information, 2000)

    def copy_secret(self, ref: str) -> None:
        def done(value: str) -> None:
            QGuiApplication.clipboard().setText(value)
            if self.tray.isVisible():
                self.tray.showMessage(
                    "Access key copied",
                    "Paste it as your client's API key.",
                    QSystemTrayIcon.MessageIcon.Information,
                    2000,
                )

        self.bridge.runner.run(
            self.bridge.facade.resolve_secret(ref),
            done,
            lambda exc: self.bridge.error.emit("The access key could not be read", str(exc)),
        )
