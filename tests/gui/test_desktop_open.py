"""Opening the logs folder from a frozen build: xdg-open without the bundle's library path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from desktop_proxy.gui.desktop_open import folder_open_command, open_folder, opener_environ

BUNDLE_ENV = {
    "PATH": "/usr/bin",
    "LD_LIBRARY_PATH": "/tmp/_MEIabc:/tmp/_MEIabc/lib",
    "LD_LIBRARY_PATH_ORIG": "/opt/mine/lib",
    "DYLD_LIBRARY_PATH": "/tmp/_MEIabc",
    "DISPLAY": ":0",
}


class Spawned:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> None:
        self.calls.append((argv, kwargs))


def test_command_per_os(tmp_path: Path) -> None:
    assert folder_open_command(tmp_path, "linux") == ["xdg-open", str(tmp_path)]
    assert folder_open_command(tmp_path, "freebsd13") == ["xdg-open", str(tmp_path)]
    assert folder_open_command(tmp_path, "darwin") is None  # Qt opens it in-process
    assert folder_open_command(tmp_path, "win32") is None


def test_frozen_environment_is_cleaned() -> None:
    env = opener_environ(BUNDLE_ENV, frozen=True)
    assert env["LD_LIBRARY_PATH"] == "/opt/mine/lib"  # what the user had before the bundle
    assert "LD_LIBRARY_PATH_ORIG" not in env
    assert "DYLD_LIBRARY_PATH" not in env  # the bundle set it and there was nothing before
    assert env["DISPLAY"] == ":0" and env["PATH"] == "/usr/bin"
    assert opener_environ(BUNDLE_ENV, frozen=False) == BUNDLE_ENV  # from source: untouched


def test_open_folder_spawns_xdg_open_with_the_clean_environment(tmp_path: Path) -> None:
    spawn = Spawned()
    command = open_folder(tmp_path, os_name="linux", environ=BUNDLE_ENV, frozen=True, spawn=spawn)
    assert command == ["xdg-open", str(tmp_path)]
    [(argv, kwargs)] = spawn.calls
    assert argv == command
    assert kwargs["env"]["LD_LIBRARY_PATH"] == "/opt/mine/lib"
    assert kwargs["start_new_session"] is True


def test_open_folder_leaves_other_systems_to_qt(tmp_path: Path) -> None:
    spawn = Spawned()
    assert open_folder(tmp_path, os_name="darwin", environ=BUNDLE_ENV, spawn=spawn) is None
    assert spawn.calls == []


def test_missing_xdg_open_raises(tmp_path: Path) -> None:
    def spawn(argv: list[str], **kwargs: Any) -> None:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    with pytest.raises(OSError):
        open_folder(tmp_path, os_name="linux", environ={}, frozen=True, spawn=spawn)
