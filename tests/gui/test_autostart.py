"""Start at login, per OS, against a temporary HOME (and a dict for the Windows registry)."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from desktop_proxy.launch import autostart

ARGV = ["/opt/Desktop Proxy/desktop-proxy", "--config", "/home/me/100% sure/config.json"]


class DictRunKey:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, value: str) -> None:
        self.values[name] = value

    def delete(self, name: str) -> None:
        self.values.pop(name, None)


def test_linux_xdg_entry(tmp_path: Path) -> None:
    home = tmp_path / "home"
    kw = {"os_name": "linux", "home": home, "environ": {}}
    assert not autostart.is_enabled(**kw)  # type: ignore[arg-type]
    path = autostart.enable(ARGV, **kw)  # type: ignore[arg-type]
    assert path == home / ".config" / "autostart" / "desktop-proxy.desktop"
    text = path.read_text()
    assert "[Desktop Entry]\nType=Application\n" in text
    assert (
        'Exec="/opt/Desktop Proxy/desktop-proxy" --config "/home/me/100%% sure/config.json"\n'
        in text
    )
    assert autostart.is_enabled(**kw)  # type: ignore[arg-type]
    autostart.disable(**kw)  # type: ignore[arg-type]
    assert not path.exists()
    assert not autostart.is_enabled(**kw)  # type: ignore[arg-type]
    autostart.disable(**kw)  # type: ignore[arg-type]  # idempotent


def test_linux_respects_xdg_config_home(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    path = autostart.autostart_path("linux", tmp_path, {"XDG_CONFIG_HOME": str(xdg)})
    assert path == xdg / "autostart" / "desktop-proxy.desktop"
    relative = autostart.autostart_path("linux", tmp_path, {"XDG_CONFIG_HOME": "rel"})
    assert relative == tmp_path / ".config" / "autostart" / "desktop-proxy.desktop"


def test_desktop_exec_escapes() -> None:
    assert autostart.desktop_exec(["/usr/bin/app"]) == "/usr/bin/app"
    assert autostart.desktop_exec(['a"b$c']) == '"a\\\\"b\\\\$c"'
    assert autostart.desktop_exec(["back\\slash"]) == '"back\\\\\\\\slash"'


def test_macos_launch_agent(tmp_path: Path) -> None:
    kw = {"os_name": "darwin", "home": tmp_path, "environ": {}}
    path = autostart.enable(ARGV, **kw)  # type: ignore[arg-type]
    assert path == tmp_path / "Library" / "LaunchAgents" / "io.github.desktop-proxy.plist"
    data = plistlib.loads(path.read_bytes())
    assert data["ProgramArguments"] == ARGV
    assert data["RunAtLoad"] is True
    assert data["Label"] == "io.github.desktop-proxy"
    autostart.disable(**kw)  # type: ignore[arg-type]
    assert not path.exists()


def test_windows_run_key(tmp_path: Path) -> None:
    key = DictRunKey()
    kw = {"os_name": "win32", "home": tmp_path, "environ": {}, "run_key": key}
    assert autostart.enable([r"C:\Program Files\Desktop Proxy\DesktopProxy.exe"], **kw) is None  # type: ignore[arg-type]
    assert key.values == {"desktop-proxy": r'"C:\Program Files\Desktop Proxy\DesktopProxy.exe"'}
    assert autostart.is_enabled(**kw)  # type: ignore[arg-type]
    autostart.disable(**kw)  # type: ignore[arg-type]
    assert key.values == {}
    assert list(tmp_path.iterdir()) == []


def test_app_command_prefers_the_console_script(tmp_path: Path) -> None:
    (tmp_path / "desktop-proxy").write_text("")
    python = str(tmp_path / "python")
    assert autostart.app_command(frozen=False, executable=python) == [
        str(tmp_path / "desktop-proxy")
    ]
    assert autostart.app_command(frozen=True, executable=python) == [python]
    (tmp_path / "desktop-proxy").unlink()
    assert autostart.app_command(frozen=False, executable=python) == [python, "-m", "desktop_proxy"]


def test_appimage_starts_from_the_image_not_its_mount_point() -> None:
    """In an AppImage, sys.executable is under /tmp/.mount_XXXX, gone after a reboot."""
    mounted = "/tmp/.mount_DeskPrAbCd/usr/bin/desktop-proxy"
    image = "/home/me/Apps/Desktop Proxy-x86_64.AppImage"
    env = {"APPIMAGE": image, "APPDIR": "/tmp/.mount_DeskPrAbCd"}
    assert autostart.app_command(frozen=True, executable=mounted, environ=env) == [image]
    # Not an AppImage (or a relative, meaningless value): the executable itself.
    assert autostart.app_command(frozen=True, executable=mounted, environ={}) == [mounted]
    assert autostart.app_command(
        frozen=True, executable=mounted, environ={"APPIMAGE": "x.AppImage"}
    ) == [mounted]
    # Running from source with APPIMAGE inherited from a terminal the AppImage opened: ignored.
    assert autostart.app_command(frozen=False, executable=mounted, environ=env)[1:] == [
        "-m",
        "desktop_proxy",
    ]


def test_enable_writes_the_appimage_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    image = "/home/me/Apps/DesktopProxy.AppImage"
    env = {"APPIMAGE": image}
    path = autostart.enable(os_name="linux", home=tmp_path, environ=env)
    assert path is not None
    assert f"Exec={image}\n" in path.read_text()
