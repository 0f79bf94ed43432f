"""Start at login, per OS: a LaunchAgent (macOS), the HKCU Run key (Windows), an XDG autostart
entry (Linux and other free desktops).

The paths and file contents are built by pure functions; `enable`, `disable` and `is_enabled`
touch the file system (or the registry) and take the home folder, environment and registry as
arguments so tests can point them at a temporary HOME.
"""

from __future__ import annotations

import contextlib
import os
import plistlib
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from desktop_proxy.launch.terminal import normalise_os

APP_ID = "desktop-proxy"
MAC_LABEL = "io.github.desktop-proxy"
APP_DISPLAY_NAME = "Desktop Proxy"
WINDOWS_RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


class RunKey(Protocol):
    """The slice of HKCU\\...\\Run we use (winreg in production, a dict in tests)."""

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None: ...


def app_command(
    *,
    frozen: bool | None = None,
    executable: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """How to start the tray app again: the AppImage, the frozen executable, the console
    script, or -m.

    Run from an AppImage, `sys.executable` lives under the image's temporary mount point
    (/tmp/.mount_XXXX), which is gone after a reboot; the AppImage runtime puts the path of
    the image itself in $APPIMAGE, and that is what must start at login.
    """
    exe = executable or sys.executable
    env = os.environ if environ is None else environ
    if frozen if frozen is not None else getattr(sys, "frozen", False):
        appimage = env.get("APPIMAGE", "").strip()
        if appimage and os.path.isabs(appimage):
            return [appimage]
        return [exe]
    scripts = Path(exe).parent
    for name in ("desktop-proxy", "desktop-proxy.exe"):
        if (scripts / name).is_file():
            return [str(scripts / name)]
    pythonw = scripts / "pythonw.exe"
    if pythonw.is_file():  # no console window on Windows
        exe = str(pythonw)
    return [exe, "-m", "desktop_proxy"]


# --- pure builders --------------------------------------------------------------------------


def autostart_path(os_name: str, home: Path, environ: Mapping[str, str]) -> Path | None:
    """Where the entry lives; None on Windows (a registry value, not a file)."""
    system = normalise_os(os_name)
    if system == "darwin":
        return home / "Library" / "LaunchAgents" / f"{MAC_LABEL}.plist"
    if system == "windows":
        return None
    config_home = environ.get("XDG_CONFIG_HOME", "").strip()
    base = Path(config_home) if config_home and os.path.isabs(config_home) else home / ".config"
    return base / "autostart" / f"{APP_ID}.desktop"


def launch_agent_plist(argv: Sequence[str]) -> bytes:
    return plistlib.dumps(
        {
            "Label": MAC_LABEL,
            "ProgramArguments": list(argv),
            "RunAtLoad": True,
            "ProcessType": "Interactive",
            "LimitLoadToSessionType": "Aqua",
        }
    )


_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def desktop_exec(argv: Sequence[str]) -> str:
    """An Exec= value per the Desktop Entry spec (quoting, then the string-value escapes)."""
    parts = []
    for arg in argv:
        arg = arg.replace("%", "%%")
        if any(c in _EXEC_RESERVED for c in arg) or not arg:
            escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
            arg = f'"{escaped}"'
        parts.append(arg)
    return " ".join(parts).replace("\\", "\\\\")


def xdg_desktop_entry(argv: Sequence[str]) -> str:
    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            f"Name={APP_DISPLAY_NAME}",
            "Comment=Local LLM gateway in the system tray",
            f"Exec={desktop_exec(argv)}",
            "Icon=desktop-proxy",
            "Terminal=false",
            "X-GNOME-Autostart-enabled=true",
            "X-GNOME-Autostart-Delay=3",
            "",
        ]
    )


def windows_run_value(argv: Sequence[str]) -> str:
    return subprocess.list2cmdline(list(argv))


# --- effects --------------------------------------------------------------------------------


if sys.platform == "win32":
    import winreg

    class WinregRunKey:
        """HKCU\\...\\Run through winreg."""

        def get(self, name: str) -> str | None:
            with winreg.CreateKey(winreg.HKEY_CURRENT_USER, WINDOWS_RUN_KEY) as key:
                try:
                    value, _kind = winreg.QueryValueEx(key, name)
                except FileNotFoundError:
                    return None
            return str(value)

        def set(self, name: str, value: str) -> None:
            with winreg.CreateKey(winreg.HKEY_CURRENT_USER, WINDOWS_RUN_KEY) as key:
                winreg.SetValueEx(key, name, 0, winreg.REG_SZ, value)

        def delete(self, name: str) -> None:
            with (
                winreg.CreateKey(winreg.HKEY_CURRENT_USER, WINDOWS_RUN_KEY) as key,
                contextlib.suppress(FileNotFoundError),
            ):
                winreg.DeleteValue(key, name)

else:

    class WinregRunKey:
        """Only exists on Windows; elsewhere autostart is a file."""

        def _unsupported(self) -> OSError:
            return OSError("the Windows registry is only available on Windows")

        def get(self, name: str) -> str | None:
            raise self._unsupported()

        def set(self, name: str, value: str) -> None:
            raise self._unsupported()

        def delete(self, name: str) -> None:
            raise self._unsupported()


def _defaults(
    os_name: str | None, home: Path | None, environ: Mapping[str, str] | None
) -> tuple[str, Path, Mapping[str, str]]:
    return (
        os_name or sys.platform,
        home or Path.home(),
        os.environ if environ is None else environ,
    )


def is_enabled(
    *,
    os_name: str | None = None,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    run_key: RunKey | None = None,
) -> bool:
    system, home_dir, env = _defaults(os_name, home, environ)
    path = autostart_path(system, home_dir, env)
    if path is None:
        return (run_key or WinregRunKey()).get(APP_ID) is not None
    return path.is_file()


def enable(
    argv: Sequence[str] | None = None,
    *,
    os_name: str | None = None,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    run_key: RunKey | None = None,
) -> Path | None:
    """Create (or refresh) the entry; returns the file written, None for the registry."""
    system, home_dir, env = _defaults(os_name, home, environ)
    command = list(argv) if argv is not None else app_command(environ=env)
    path = autostart_path(system, home_dir, env)
    if path is None:
        (run_key or WinregRunKey()).set(APP_ID, windows_run_value(command))
        return None
    if normalise_os(system) == "darwin":
        content = launch_agent_plist(command)
    else:
        content = xdg_desktop_entry(command).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    return path


def disable(
    *,
    os_name: str | None = None,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
    run_key: RunKey | None = None,
) -> None:
    """Remove the entry; nothing else is left behind (the folders were not ours to create)."""
    system, home_dir, env = _defaults(os_name, home, environ)
    path = autostart_path(system, home_dir, env)
    if path is None:
        (run_key or WinregRunKey()).delete(APP_ID)
        return
    path.unlink(missing_ok=True)
