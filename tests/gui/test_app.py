"""Notifications, single instance, icons, preferences and the no-display fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QSystemTrayIcon

from desktop_proxy.gui import app as gui_app
from desktop_proxy.gui.bridge import GatewayBridge
from desktop_proxy.gui.icons import STATES, draw_icon, tray_icon
from desktop_proxy.gui.notifications import (
    Notifier,
    health_message,
    port_in_use_message,
)
from desktop_proxy.gui.prefs import GuiPrefs, load_prefs, save_prefs
from desktop_proxy.gui.single_instance import SingleInstance, server_name
from desktop_proxy.paths import AppPaths
from tests.gui.fakes import FakeFacade, make_record

pytestmark = pytest.mark.gui


def test_cooldown_and_recovery_notifications(bridge: GatewayBridge, facade: FakeFacade) -> None:
    shown: list[tuple[str, str]] = []
    notifier = Notifier(bridge, lambda title, body, icon: shown.append((title, body)))
    facade.emit_health("groq", False, "HTTP 429")
    facade.emit_health("groq", True, "recovered")
    assert notifier is not None
    assert shown == [health_message("groq", False, "HTTP 429"), health_message("groq", True, "")]
    assert shown[0][0] == "groq is cooling down"
    assert shown[1][0] == "groq is back"


def test_rejected_key_is_reported_once_in_a_while(
    bridge: GatewayBridge, facade: FakeFacade
) -> None:
    now = [1000.0]
    shown: list[str] = []
    notifier = Notifier(bridge, lambda title, body, icon: shown.append(title), clock=lambda: now[0])
    rec = make_record(1, provider="openai")
    rec.status, rec.ok, rec.error = 401, False, "Incorrect API key provided"
    facade.emit_record(rec)
    facade.emit_record(rec)
    assert notifier is not None
    assert shown == ["openai rejected its API key"]
    now[0] += 601
    facade.emit_record(rec)
    assert len(shown) == 2
    own = make_record(2, provider="")
    own.provider, own.status = None, 401  # the gateway's own access-key check: not a provider
    facade.emit_record(own)
    assert len(shown) == 2


def test_port_in_use_message() -> None:
    title, body = port_in_use_message(6789, 6790)
    assert title == "The gateway could not start"
    assert "Port 6789 is already in use" in body and "Port 6790 is free" in body


def test_free_port_near() -> None:
    port = gui_app.free_port_near("127.0.0.1", 20000)
    assert port is not None and 20000 < port <= 20020


def test_second_instance_wakes_the_first(qtbot: object, tmp_path: Path) -> None:
    name = server_name(AppPaths.for_root(tmp_path))
    first = SingleInstance(name)
    assert first.claim()
    second = SingleInstance(name)
    with qtbot.waitSignal(first.message_received, timeout=3000) as blocker:  # type: ignore[attr-defined]
        assert not second.claim()
    assert blocker.args == ["show"]
    first.close()
    third = SingleInstance(name)
    assert third.claim()
    third.close()


def test_instance_names_differ_per_home(tmp_path: Path) -> None:
    a = server_name(AppPaths.for_root(tmp_path / "a"))
    b = server_name(AppPaths.for_root(tmp_path / "b"))
    assert a != b and a.startswith("desktop-proxy-") and len(a) < 40


def test_icons_for_every_state(qapp: object) -> None:
    for state in STATES:
        assert not tray_icon(state).isNull()
        image = draw_icon(state, 22, template=True)
        assert image.width() == 22 and image.pixelColor(11, 8).alpha() > 0
    assert tray_icon("running", template=True).isMask()


def test_prefs_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "gui.json"
    assert load_prefs(path) == GuiPrefs()
    prefs = GuiPrefs(start_gateway_on_launch=False)
    for i in range(10):
        prefs.remember_folder(tmp_path / str(i))
    prefs.remember_folder(tmp_path / "3")
    save_prefs(prefs, path)
    loaded = load_prefs(path)
    assert loaded.start_gateway_on_launch is False
    assert loaded.recent_folders[0] == str(tmp_path / "3")
    assert len(loaded.recent_folders) == 6
    path.write_text("{broken")
    assert load_prefs(path) == GuiPrefs()


def test_no_display_runs_headless(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over SSH: one line, then the same as `desktop-proxy serve` (its exit code included)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(gui_app, "has_display", lambda environ: False)
    from desktop_proxy import cli

    monkeypatch.setattr(cli, "main", lambda argv: calls.append(list(argv)) or 7)
    assert gui_app.run(["--config", "/x.json"]) == 7
    assert calls == [["serve", "--config", "/x.json"]]
    out = capsys.readouterr().out
    assert out == "desktop-proxy: no display; running headless (like `desktop-proxy serve`).\n"


def test_has_display() -> None:
    assert not gui_app.has_display({}, "linux")
    assert gui_app.has_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert gui_app.has_display({}, "darwin")
    assert QSystemTrayIcon.MessageIcon.Warning is not None


def _tray_app(facade: FakeFacade) -> gui_app.TrayApp:
    from PySide6.QtWidgets import QApplication

    from desktop_proxy.gui.tasks import InlineRunner

    app = QApplication.instance()
    assert isinstance(app, QApplication)
    return gui_app.TrayApp(app, facade, InlineRunner(), GuiPrefs())


def test_open_logs_spawns_the_opener_itself(
    qapp: object, facade: FakeFacade, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux: xdg-open with a cleaned environment (desktop_open); Qt only when that fails or
    on systems where Qt opens folders in-process."""
    opened: list[Path] = []
    qt: list[str] = []
    monkeypatch.setattr(
        gui_app.QDesktopServices, "openUrl", lambda url: qt.append(url.toLocalFile()) or True
    )
    monkeypatch.setattr(
        gui_app, "open_folder", lambda folder: opened.append(folder) or ["xdg-open", str(folder)]
    )
    tray_app = _tray_app(facade)
    tray_app.open_logs()
    assert opened == [facade.paths.log_dir] and qt == []
    assert facade.paths.log_dir.is_dir()

    def missing(folder: Path) -> list[str]:
        raise FileNotFoundError(2, "No such file or directory", "xdg-open")

    monkeypatch.setattr(gui_app, "open_folder", missing)
    tray_app.open_logs()
    assert qt == [str(facade.paths.log_dir)]
    monkeypatch.setattr(gui_app, "open_folder", lambda folder: None)  # macOS, Windows
    tray_app.open_logs()
    assert qt == [str(facade.paths.log_dir)] * 2


def test_app_history_follows_the_config(tmp_path: Path) -> None:
    """The app reads the SQLite history while history is on, this session's requests when it
    is switched off (and says so)."""
    from desktop_proxy.gui.facade import HistoryFilter
    from desktop_proxy.gui.sqlite_history import HISTORY_OFF_NOTICE, TrayHistory
    from desktop_proxy.services import Services

    services = Services(AppPaths.for_root(tmp_path))
    config = services.load_config()
    history = gui_app.build_history(services)
    assert isinstance(history, TrayHistory)
    assert history.add in services.record_listeners
    assert gui_app.history_enabled(services) and history.notice is None
    assert history.count(HistoryFilter()) == 0
    assert not services.paths.history_db.exists()  # reading does not create it
    services.record_listeners[0](make_record(1))
    config.history.enabled = False
    assert not gui_app.history_enabled(services)
    assert history.notice == HISTORY_OFF_NOTICE
    assert history.count(HistoryFilter()) == 1
    config.history.enabled = True
    services.history_forced_off = True  # started with --no-history
    assert history.notice == HISTORY_OFF_NOTICE
