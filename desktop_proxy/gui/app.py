"""`desktop-proxy` with no command: the tray app on a qasync loop (Qt's loop is asyncio's).

Where there is no display or no system tray, it says so in one line and runs headless, like
`desktop-proxy serve`, so the same command works over SSH.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox, QSystemTrayIcon

from desktop_proxy.errors import ConfigError
from desktop_proxy.gui import qt_fixes
from desktop_proxy.gui.bridge import GatewayBridge
from desktop_proxy.gui.desktop_open import open_folder
from desktop_proxy.gui.facade import GuiFacade, LaunchSpec, ServicesFacade
from desktop_proxy.gui.icons import app_icon
from desktop_proxy.gui.notifications import Notifier, port_in_use_message
from desktop_proxy.gui.prefs import GuiPrefs, load_prefs, prefs_path, save_prefs
from desktop_proxy.gui.single_instance import SingleInstance, server_name
from desktop_proxy.gui.sqlite_history import SqliteHistory, TrayHistory
from desktop_proxy.gui.tasks import LoopRunner, TaskRunner
from desktop_proxy.gui.tray import TrayController
from desktop_proxy.heap import SETTLE_DELAY_SECONDS, settle_heap
from desktop_proxy.launch import autostart
from desktop_proxy.launch.terminal import NoTerminalError, open_terminal
from desktop_proxy.logs import configure_logging
from desktop_proxy.paths import AppPaths
from desktop_proxy.services import Services

log = logging.getLogger(__name__)
qt_fixes.install()  # before any signal is emitted: see qt_fixes

TRAY_WAIT_SECONDS = 10.0
# Shortly after start-up, the History window is built (hidden) ahead of its first use.
PREPARE_WINDOWS_MS = 1500
SHUTDOWN_TIMEOUT = 8.0
# Requests of this session kept in memory (without bodies) for the History window, shown when
# history is off or its database cannot be read.
SESSION_HISTORY = 10_000


def has_display(environ: dict[str, str] | os._Environ[str], platform: str = sys.platform) -> bool:
    if platform in ("darwin", "win32"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")) or environ.get(
        "QT_QPA_PLATFORM", ""
    ) in ("offscreen", "minimal")


def free_port_near(host: str, port: int, tries: int = 20) -> int | None:
    for candidate in range(port + 1, min(65535, port + tries) + 1):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, candidate))
            except OSError:
                continue
            return candidate
    return None


class TrayApp(QObject):
    """The application around the tray: windows, dialogs, preferences, shutdown."""

    def __init__(
        self,
        app: QApplication,
        facade: GuiFacade,
        runner: TaskRunner,
        prefs: GuiPrefs,
        *,
        first_run: bool = False,
    ) -> None:
        super().__init__()
        self.app = app
        self.facade = facade
        self.runner = runner
        self.prefs = prefs
        self.first_run = first_run
        self.bridge = GatewayBridge(facade, runner, self)
        self.tray = TrayController(self.bridge, self, self)
        self.notifier = Notifier(self.bridge, self.notify, parent=self)
        self._settings: Any = None
        self._history: Any = None
        self._quit = asyncio.Event()
        self._heap_settled = False
        self.bridge.gateway_state_changed.connect(self._gateway_state_changed)
        self.bridge.error.connect(self.show_error)
        self.bridge.port_in_use.connect(self.offer_other_port)
        self.bridge.launch_ready.connect(self.open_claude_terminal)

    # --- TrayHost ---------------------------------------------------------------------------

    def show_settings(self) -> None:
        from desktop_proxy.gui.settings_window import SettingsHooks, SettingsWindow

        if self._settings is None:
            hooks = SettingsHooks(
                prefs=self.prefs,
                save_prefs=self.save_prefs,
                autostart_enabled=self.autostart_enabled,
                set_autostart=self.set_autostart,
            )
            self._settings = SettingsWindow(self.bridge, hooks)
        elif not self._settings.isVisible():
            self._settings.reset()
        self._raise(self._settings)

    def prepare_history(self) -> None:
        """Build the History window, hidden (it queries nothing until shown): done at start-up,
        so that opening it later under load costs a show, not an import and a widget tree."""
        from desktop_proxy.gui.history_window import HistoryWindow

        if self._history is None:
            self._history = HistoryWindow(self.bridge)
            self._history.prerender()

    def show_history(self) -> None:
        self.prepare_history()
        self._raise(self._history)  # shown, it loads (or reloads) the list

    @staticmethod
    def _raise(window: Any) -> None:
        window.show()
        window.raise_()
        window.activateWindow()

    def choose_claude_folder(self) -> None:
        start = self.prefs.recent_folders[0] if self.prefs.recent_folders else str(Path.home())
        folder = QFileDialog.getExistingDirectory(None, "Launch Claude Code in…", start)
        if folder:
            self.launch_claude(Path(folder))

    def launch_claude(self, folder: Path) -> None:
        if not folder.is_dir():
            self.show_error("Claude Code could not be launched", f"{folder} is not a folder.")
            return
        self.prefs.remember_folder(folder)
        self.save_prefs(self.prefs)
        self.bridge.launch_claude(folder)

    def recent_folders(self) -> list[str]:
        return list(self.prefs.recent_folders)

    def open_logs(self) -> None:
        log_dir = self.facade.paths.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)

        def with_qt(_exc: BaseException | None = None) -> None:
            if _exc is not None:
                log.info("xdg-open failed (%s); asking Qt to open %s", _exc, log_dir)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_dir)))

        # Linux: xdg-open with a clean environment (desktop_open), spawned off the UI thread;
        # elsewhere open_folder returns None and Qt opens it.
        self.runner.call(
            lambda: open_folder(log_dir),
            lambda command: with_qt() if command is None else None,
            with_qt,
        )

    def autostart_enabled(self) -> bool:
        try:
            return autostart.is_enabled()
        except OSError:
            return False

    def set_autostart(self, enabled: bool) -> None:
        def failed(exc: BaseException) -> None:
            self.show_error("Start at login could not be changed", str(exc))

        self.runner.call(autostart.enable if enabled else autostart.disable, None, failed)

    def quit(self) -> None:
        self._quit.set()

    # --- the rest ---------------------------------------------------------------------------

    def _gateway_state_changed(self, status: object) -> None:
        if not self._heap_settled and getattr(status, "running", False):
            self._heap_settled = True
            # No collection here: requests may be arriving already; freezing itself is cheap.
            QTimer.singleShot(int(SETTLE_DELAY_SECONDS * 1000), lambda: settle_heap(collect=False))

    def save_prefs(self, prefs: GuiPrefs) -> None:
        path = prefs_path(self.facade.paths.config_dir)
        self.runner.call(lambda: save_prefs(prefs, path), None, lambda e: log.warning("%s", e))

    def notify(
        self,
        title: str,
        body: str,
        icon: QSystemTrayIcon.MessageIcon = QSystemTrayIcon.MessageIcon.Information,
    ) -> None:
        if self.tray.tray.isVisible():
            self.tray.tray.showMessage(title, body, icon, 8000)

    def show_error(self, title: str, message: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, title, QMessageBox.StandardButton.Ok)
        box.setInformativeText(message)
        box.setWindowIcon(app_icon())
        box.open()
        self._error_box = box

    def offer_other_port(self, port: int) -> None:
        host = self.facade.config.server.host
        alternative = free_port_near(host, port)
        title, body = port_in_use_message(port, alternative)
        self.notify(title, body, QSystemTrayIcon.MessageIcon.Critical)
        box = QMessageBox(QMessageBox.Icon.Warning, title, body)
        use = None
        if alternative is not None:
            use = box.addButton(f"Use port {alternative}", QMessageBox.ButtonRole.AcceptRole)
        settings = box.addButton("Settings…", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)

        def clicked(button: object) -> None:
            if use is not None and button is use and alternative is not None:
                self.move_to_port(alternative)
            elif button is settings:
                self.show_settings()

        box.buttonClicked.connect(clicked)
        box.open()
        self._port_box = box

    def move_to_port(self, port: int) -> None:
        import copy

        config = copy.deepcopy(self.facade.config)
        config.server.port = port
        self.runner.run(
            self.facade.apply_config(config, {}, []),
            lambda _r: self.bridge.start_gateway(),
            lambda exc: self.show_error("The new port could not be saved", str(exc)),
        )

    def open_claude_terminal(self, spec: LaunchSpec) -> None:
        def failed(exc: BaseException) -> None:
            if isinstance(exc, NoTerminalError):
                self.show_error("No terminal found", str(exc))
            else:
                self.show_error("Claude Code could not be launched", str(exc))

        self.runner.call(
            lambda: open_terminal(spec.argv, spec.cwd, spec.env, unset=spec.unset), None, failed
        )

    def on_second_launch(self, _message: str) -> None:
        self.show_settings()

    def start(self) -> None:
        """Show the tray, start the gateway (if set to), and get ready in the background."""
        self.tray.show()
        if self.prefs.start_gateway_on_launch:
            self.bridge.start_gateway()
        self.bridge.start_usage_refresh()
        QTimer.singleShot(PREPARE_WINDOWS_MS, self.prepare_history)
        if self.first_run:
            self.notify(
                "Desktop Proxy is in your tray",
                "Open Settings to add a provider and its key.",
            )
            self.show_settings()

    async def main(self) -> int:
        self.start()
        await self._quit.wait()
        self.tray.tray.hide()
        try:
            await asyncio.wait_for(self.facade.shutdown(), SHUTDOWN_TIMEOUT)
        except TimeoutError:
            log.warning("the gateway did not stop within %.0f s", SHUTDOWN_TIMEOUT)
        if isinstance(self.runner, LoopRunner):
            await self.runner.drain()
        history = self.facade.history
        if isinstance(history, TrayHistory):
            await asyncio.to_thread(history.close)
        return 0


def history_enabled(services: Services) -> bool:
    """Whether requests are being saved: the config switch (read anew, so Settings can flip it
    while the app runs), unless `serve --no-history` style forced it off."""
    config = services.config
    return config is not None and config.history.enabled and not services.history_forced_off


def build_history(services: Services) -> TrayHistory:
    """The History window's source: the SQLite history, this session's requests as fallback.

    Nothing is opened here (no blocking on the UI thread): the first query does, in a worker."""
    history = TrayHistory(
        SqliteHistory(services.paths.history_db),
        enabled=lambda: history_enabled(services),
        session_capacity=SESSION_HISTORY,
    )
    services.record_listeners.append(history.add)  # before the facade's: pages include it
    return history


def build_tray_app(
    app: QApplication,
    services: Services,
    loop: asyncio.AbstractEventLoop,
    prefs: GuiPrefs,
    *,
    first_run: bool = False,
) -> TrayApp:
    """Everything around the tray on `loop` (qasync's): the bench (bench/ui_stall.py) builds
    the same thing this way."""
    facade = ServicesFacade(services, build_history(services))
    tray_app = TrayApp(app, facade, LoopRunner(loop), prefs, first_run=first_run)
    settle_heap()  # start-up: nothing shown or served yet
    return tray_app


def _config_arg(args: list[str]) -> Path | None:
    if len(args) == 2 and args[0] == "--config":
        return Path(args[1])
    return None


def _wait_for_tray(app: QApplication, seconds: float) -> bool:
    """At login the panel may come up after us (QTBUG-61898); give it a moment."""
    deadline = time.monotonic() + seconds
    while not QSystemTrayIcon.isSystemTrayAvailable():
        if time.monotonic() >= deadline:
            return False
        app.processEvents()
        time.sleep(0.25)
    return True


def _headless(args: list[str], why: str) -> int:
    from desktop_proxy import cli

    print(f"desktop-proxy: {why}; running headless (like `desktop-proxy serve`).", flush=True)
    return cli.main(["serve", *args])


def run(args: list[str]) -> int:
    from desktop_proxy.gui.loop import GatewayEventLoop

    if not has_display(os.environ):
        return _headless(args, "no display")
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "desktop-proxy"])
    assert isinstance(app, QApplication)
    app.setApplicationName("Desktop Proxy")
    app.setApplicationDisplayName("Desktop Proxy")
    app.setOrganizationName("desktop-proxy")
    app.setDesktopFileName("desktop-proxy")
    app.setQuitOnLastWindowClosed(False)
    app.setWindowIcon(app_icon())

    paths = AppPaths.from_environment()
    single = SingleInstance(server_name(paths))
    if not single.claim():
        print("desktop-proxy is already running; asked it to show itself.", flush=True)
        return 0
    if not _wait_for_tray(app, TRAY_WAIT_SECONDS):
        single.close()
        return _headless(args, "no system tray is available")

    configure_logging(paths.log_file, "INFO", stderr=True)
    services = Services(paths, config_file=_config_arg(args))
    try:
        services.load_config()
    except ConfigError as exc:
        QMessageBox.critical(None, "Desktop Proxy cannot start", str(exc))
        return 1
    prefs = load_prefs(prefs_path(paths.config_dir))

    loop = GatewayEventLoop(app)
    asyncio.set_event_loop(loop)
    tray_app = build_tray_app(app, services, loop, prefs, first_run=services.created_config)
    single.message_received.connect(tray_app.on_second_launch)

    # Python only sees SIGINT between Qt events: a no-op timer gives it regular chances
    # (qasync#127). The handler asks for the same orderly shutdown as Quit.
    signal.signal(signal.SIGINT, lambda *_: loop.call_soon_threadsafe(tray_app.quit))
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    app.aboutToQuit.connect(tray_app.quit)

    try:
        with loop:
            return int(loop.run_until_complete(tray_app.main()))
    except RuntimeError as exc:
        # The session is ending and Qt quit underneath us; nothing left to wait for.
        log.info("event loop ended early: %s", exc)
        return 0
    finally:
        wake.stop()
        single.close()
        QGuiApplication.processEvents()
