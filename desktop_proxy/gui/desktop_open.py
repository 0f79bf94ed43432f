"""Opening a folder in the user's file manager, also from a frozen (PyInstaller/AppImage) build.

On Linux, Qt's QDesktopServices.openUrl runs xdg-open (and through it the file manager) with our
own environment, and a frozen build's LD_LIBRARY_PATH points into the bundle: the file manager
then loads our libraries instead of its own and fails, or never appears. So on Linux we spawn
xdg-open ourselves with the environment cleaned the way terminals get it
(launch.terminal.child_environ); elsewhere, or when that fails, Qt's way is used (macOS and
Windows open folders in-process, through the OS, with no child environment to fix).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from desktop_proxy.launch.terminal import child_environ, normalise_os

Spawn = Callable[..., Any]


def folder_open_command(folder: Path, os_name: str = sys.platform) -> list[str] | None:
    """The command that opens `folder` on this OS, when we spawn it ourselves (Linux and other
    free desktops); None where Qt's QDesktopServices should be used."""
    system = normalise_os(os_name)
    if system in ("darwin", "windows"):
        return None
    return ["xdg-open", str(folder)]


def opener_environ(environ: Mapping[str, str], *, frozen: bool) -> dict[str, str]:
    """The environment for the file manager: the bundle's library path is not its own."""
    return child_environ(environ, frozen=frozen)


def open_folder(
    folder: Path,
    *,
    os_name: str = sys.platform,
    environ: Mapping[str, str] | None = None,
    frozen: bool | None = None,
    spawn: Spawn = subprocess.Popen,
) -> Sequence[str] | None:
    """Open `folder` with a cleaned environment; returns the command spawned, or None where the
    caller should use QDesktopServices instead.

    Raises:
        OSError: the opener (xdg-open) is missing or could not be started.
    """
    command = folder_open_command(folder, os_name)
    if command is None:
        return None
    env = opener_environ(
        os.environ if environ is None else environ,
        frozen=bool(getattr(sys, "frozen", False)) if frozen is None else frozen,
    )
    spawn(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return command
