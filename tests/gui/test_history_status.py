"""History writer warnings: called on the writer's thread, shown on the UI thread, notified once
per episode, and visible in the tray's status line and tooltip while they last."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QThread
from PySide6.QtWidgets import QApplication

from desktop_proxy.gui.bridge import GatewayBridge
from desktop_proxy.gui.facade import ServicesFacade
from desktop_proxy.gui.notifications import Notifier
from desktop_proxy.gui.tasks import InlineRunner
from desktop_proxy.gui.tray import TrayController, history_warning, tooltip_text
from desktop_proxy.history.writer import WriterStatus
from desktop_proxy.paths import AppPaths
from desktop_proxy.services import Services
from tests.gui.fakes import FakeFacade, FakeHost

pytestmark = pytest.mark.gui

DISK_FULL = WriterStatus("degraded", "cannot write to the history database: disk is full")
LOCKED = WriterStatus("degraded", "cannot write to the history database: database is locked")
OK = WriterStatus("ok")


def test_status_from_another_thread_arrives_on_the_ui_thread(
    qtbot: object, bridge: GatewayBridge, facade: FakeFacade
) -> None:
    ran_on: list[tuple[int, bool]] = []

    def slot(status: WriterStatus) -> None:
        ran_on.append((threading.get_ident(), QThread.currentThread() is qapp_thread()))

    bridge.history_status_changed.connect(slot)
    writer_thread = threading.Thread(target=facade.emit_history_status, args=(DISK_FULL,))
    writer_thread.start()
    writer_thread.join()
    assert ran_on == []  # queued: nothing ran on the writer's thread
    qtbot.waitUntil(lambda: bool(ran_on), timeout=3000)  # type: ignore[attr-defined]
    assert ran_on == [(threading.main_thread().ident, True)]
    assert bridge.history_status == DISK_FULL and bridge.history_degraded


def qapp_thread() -> QThread:
    app = QApplication.instance()
    assert app is not None
    return app.thread()


def test_real_writer_thread_reaches_the_ui_thread(qtbot: object, tmp_path: Path) -> None:
    """Services' history writer failing to open its database (the path is a folder) reports
    'degraded' from its thread; the bridge gets it on the UI thread."""
    paths = AppPaths.for_root(tmp_path / "home")
    services = Services(paths)
    config = services.load_config()
    paths.history_db.mkdir(parents=True)  # cannot be opened as a database
    bridge = GatewayBridge(ServicesFacade(services), InlineRunner())
    threads: list[int] = []
    bridge.history_status_changed.connect(lambda _s: threads.append(threading.get_ident()))
    services._open_history(config)
    writer = services.history_writer
    assert writer is not None
    try:
        qtbot.waitUntil(lambda: bridge.history_degraded, timeout=5000)  # type: ignore[attr-defined]
    finally:
        writer.close(timeout=1)
    assert "cannot open the history database" in (bridge.history_status.message or "")  # type: ignore[union-attr]
    assert threads and set(threads) == {threading.main_thread().ident}


def test_one_notification_per_episode(bridge: GatewayBridge, facade: FakeFacade) -> None:
    shown: list[str] = []
    notifier = Notifier(bridge, lambda title, body, icon: shown.append(title))
    for status in (DISK_FULL, LOCKED, DISK_FULL):  # the reason changes: still one episode
        facade.emit_history_status(status)
    assert shown == ["Request history is not being saved"]
    facade.emit_history_status(OK)
    assert shown[-1] == "Request history is saved again"
    facade.emit_history_status(OK)
    facade.emit_history_status(LOCKED)  # a new episode
    assert shown == [
        "Request history is not being saved",
        "Request history is saved again",
        "Request history is not being saved",
    ]
    facade.emit_history_status(WriterStatus("closed"))  # the gateway stopped: quietly
    assert len(shown) == 3
    moved = WriterStatus("ok", "moved it", moved_aside=Path("/d/history.sqlite3.corrupt-1"))
    facade.emit_history_status(moved)
    facade.emit_history_status(moved)
    assert shown[3:] == ["The history database was damaged"]
    assert notifier is not None


def test_tray_shows_the_warning_while_it_lasts(
    bridge: GatewayBridge, facade: FakeFacade, host: FakeHost
) -> None:
    tray = TrayController(bridge, host)
    bridge.start_gateway()
    assert tray.current_state == "running"
    facade.emit_history_status(DISK_FULL)
    assert tray.current_state == "degraded"
    assert "History is not being saved: cannot write to the history database: disk is full" in (
        tray.tray.toolTip()
    )
    tray.menu.aboutToShow.emit()
    texts = tray.action_texts()
    assert texts[0].startswith("Running on")
    assert texts[1].startswith("⚠ History is not being saved")
    facade.emit_history_status(OK)
    assert tray.current_state == "running"
    assert "History" not in tray.tray.toolTip()
    tray.menu.aboutToShow.emit()
    assert not any("History is not" in t for t in tray.action_texts())


def test_history_warning_text() -> None:
    assert history_warning(None) is None
    assert history_warning(OK) is None
    lost = WriterStatus("degraded", "disk is full", dropped=1200)
    assert history_warning(lost) == "History is not being saved: disk is full (1,200 requests lost)"
    from datetime import date

    from desktop_proxy.gui.bridge import UsageToday
    from desktop_proxy.gui.facade import GatewayStatus

    stopped = GatewayStatus("stopped", "127.0.0.1", 6789)
    assert tooltip_text(stopped, UsageToday(date.today()), lost).endswith("requests lost)")
