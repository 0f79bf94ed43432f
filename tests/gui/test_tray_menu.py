"""The tray menu: fresh state on every open, and each action doing what it says."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import keyring
import pytest
from PySide6.QtGui import QGuiApplication

from desktop_proxy.config.models import AccessKey
from desktop_proxy.gui.bridge import GatewayBridge, UsageToday
from desktop_proxy.gui.facade import GatewayStatus
from desktop_proxy.gui.tray import TrayController, format_cost, status_line, tooltip_text
from tests.gui.fakes import FakeFacade, FakeHost, make_record

pytestmark = pytest.mark.gui


def texts(tray: TrayController) -> list[str]:
    return tray.action_texts()


def test_status_line_reads_like_the_spec() -> None:
    """Running: address, today's requests and cost, separated by middle dots."""
    status = GatewayStatus("running", "127.0.0.1", 6789)
    usage = UsageToday(date.today(), 42, 0.3149)
    assert status_line(status, usage) == (
        "Running on http://127.0.0.1:6789 · 42 requests today · $0.31"
    )
    assert status_line(GatewayStatus("stopped", "127.0.0.1", 6789), usage) == "Gateway stopped"
    failed = GatewayStatus("error", "127.0.0.1", 6789, error="Port 6789 is in use.\nmore")
    assert status_line(failed, usage) == "Not running: Port 6789 is in use."
    assert status_line(status, UsageToday(date.today(), 1, 0.0)).endswith("1 request today · $0.00")


def test_cost_format() -> None:
    assert format_cost(0) == "$0.00"
    assert format_cost(0.004) == "<$0.01"
    assert format_cost(1234.5) == "$1,234.50"


def test_menu_has_every_entry(bridge: GatewayBridge, host: FakeHost) -> None:
    """The menu lists the actions in order, rebuilt from the current state."""
    tray = TrayController(bridge, host)
    assert texts(tray) == [
        "Gateway stopped",
        "Start gateway",
        "Copy base URL",
        "Copy access key (none needed on loopback)",
        "Launch Claude Code",
        "Settings…",
        "History…",
        "Open logs folder",
        "Start at login",
        "Quit Desktop Proxy",
    ]
    assert not tray.status_action.isEnabled()


def test_start_and_stop_from_the_menu(
    bridge: GatewayBridge, facade: FakeFacade, host: FakeHost
) -> None:
    tray = TrayController(bridge, host)
    tray.toggle_action.trigger()
    assert facade.phase == "running"
    assert tray.current_state == "running"
    tray.menu.aboutToShow.emit()
    assert texts(tray)[0] == "Running on http://127.0.0.1:6789 · 0 requests today · $0.00"
    assert tray.toggle_action.text() == "Stop gateway"
    tray.toggle_action.trigger()
    assert facade.phase == "stopped"
    assert tray.current_state == "stopped"


def test_requests_and_cost_update_the_status_line(
    bridge: GatewayBridge, facade: FakeFacade, host: FakeHost
) -> None:
    tray = TrayController(bridge, host)
    bridge.start_gateway()
    for i in range(42):
        rec = make_record(i, cost=0.0075)
        rec.time = __import__("time").time()
        facade.emit_record(rec)
    tray.menu.aboutToShow.emit()
    assert tray.status_action.text() == (
        "Running on http://127.0.0.1:6789 · 42 requests today · $0.32"
    )
    assert "42 requests today · $0.32" in tray.tray.toolTip()
    assert "http://127.0.0.1:6789/v1" in tray.tray.toolTip()


def test_copy_base_urls(bridge: GatewayBridge, host: FakeHost) -> None:
    tray = TrayController(bridge, host)
    tray.copy_openai.trigger()
    assert QGuiApplication.clipboard().text() == "http://127.0.0.1:6789/v1"
    tray.copy_anthropic.trigger()
    assert QGuiApplication.clipboard().text() == "http://127.0.0.1:6789"


def test_copy_access_key_reads_the_keyring(
    bridge: GatewayBridge, facade: FakeFacade, host: FakeHost
) -> None:
    keyring.set_password("desktop-proxy", "access-default", "dp-secret-value-123456")
    facade.config.access_keys.append(AccessKey("default", "keyring:access-default"))
    tray = TrayController(bridge, host)
    assert tray.copy_key_action.text() == "Copy access key"
    tray.copy_key_action.trigger()
    assert QGuiApplication.clipboard().text() == "dp-secret-value-123456"


def test_degraded_and_error_icons(
    bridge: GatewayBridge, facade: FakeFacade, host: FakeHost, qtbot: object
) -> None:
    tray = TrayController(bridge, host)
    bridge.start_gateway()
    facade.emit_health("openai", False, "HTTP 429")
    assert tray.current_state == "degraded"
    tray.menu.aboutToShow.emit()
    assert "⚠ openai is cooling down (HTTP 429)" in texts(tray)
    facade.emit_health("openai", True, "recovered")
    assert tray.current_state == "running"
    bridge.stop_gateway()
    facade.taken_ports.add(6789)
    ports: list[int] = []
    bridge.port_in_use.connect(ports.append)
    bridge.start_gateway()
    assert ports == [6789]
    assert tray.current_state == "error"
    tray.menu.aboutToShow.emit()
    assert texts(tray)[0].startswith("Not running: Port 6789")


def test_host_actions(bridge: GatewayBridge, host: FakeHost, tmp_path: Path) -> None:
    host.folders = [str(tmp_path)]
    tray = TrayController(bridge, host)
    by_text = {a.text(): a for a in tray.menu.actions()}
    by_text["Settings…"].trigger()
    by_text["History…"].trigger()
    by_text["Open logs folder"].trigger()
    tray.autostart_action.trigger()
    tray.quit_action.trigger()
    assert host.calls == ["settings", "history", "logs", "autostart=True", "quit"]
    launch = [a for a in tray.launch_menu.actions() if not a.isSeparator()]
    assert [a.text() for a in launch] == ["Choose folder…", str(tmp_path)]
    launch[1].trigger()
    assert host.launched == [tmp_path]
    tray.menu.aboutToShow.emit()
    assert tray.autostart_action.isChecked()


def test_tooltip_when_stopped() -> None:
    status = GatewayStatus("stopped", "127.0.0.1", 6789)
    assert tooltip_text(status, UsageToday(date.today())) == "Desktop Proxy\nGateway stopped"
