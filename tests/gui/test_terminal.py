"""Terminal selection per OS (pure): which terminal, and how the environment reaches the child."""

from __future__ import annotations

import base64
import shlex
from pathlib import Path, PureWindowsPath

import pytest

from desktop_proxy.launch.terminal import (
    NoTerminalError,
    child_environ,
    open_terminal,
    powershell_script,
    terminal_command,
)

ENV = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:6789", "ANTHROPIC_AUTH_TOKEN": "dp-it's"}
CWD = Path("/home/me/my project")


def only(*names: str):  # type: ignore[no-untyped-def]
    return lambda name: name in names


def test_linux_prefers_dollar_terminal() -> None:
    cmd = terminal_command(
        "linux", ["/usr/bin/claude"], CWD, ENV, only("foot", "xterm"), {"TERMINAL": "foot"}
    )
    assert cmd == [
        "foot",
        "-e",
        "env",
        "ANTHROPIC_BASE_URL=http://127.0.0.1:6789",
        "ANTHROPIC_AUTH_TOKEN=dp-it's",
        "/usr/bin/claude",
    ]


@pytest.mark.parametrize(
    ("installed", "expected_head"),
    [
        ("x-terminal-emulator", ["x-terminal-emulator", "-e"]),
        ("gnome-terminal", ["gnome-terminal", f"--working-directory={CWD}", "--"]),
        ("konsole", ["konsole", "--workdir", str(CWD), "-e"]),
        ("xfce4-terminal", ["xfce4-terminal", f"--working-directory={CWD}", "-x"]),
        ("kitty", ["kitty", "--directory", str(CWD)]),
        ("alacritty", ["alacritty", "--working-directory", str(CWD), "-e"]),
        ("xterm", ["xterm", "-e"]),
    ],
)
def test_linux_terminals(installed: str, expected_head: list[str]) -> None:
    cmd = terminal_command("linux", ["claude"], CWD, ENV, only(installed), {})
    assert cmd is not None
    assert cmd[: len(expected_head)] == expected_head
    assert cmd[len(expected_head)] == "env"
    assert cmd[-1] == "claude"


def test_linux_order_and_none() -> None:
    cmd = terminal_command(
        "linux", ["claude"], CWD, {}, only("konsole", "xterm", "gnome-terminal"), {}
    )
    assert cmd is not None and cmd[0] == "gnome-terminal"
    assert terminal_command("linux", ["claude"], CWD, {}, only(), {}) is None


def test_unset_variables_are_removed_for_the_child() -> None:
    cmd = terminal_command(
        "linux", ["claude"], CWD, {"A": "1"}, only("xterm"), {}, ["ANTHROPIC_API_KEY"]
    )
    assert cmd == ["xterm", "-e", "env", "-u", "ANTHROPIC_API_KEY", "A=1", "claude"]


def test_macos_terminal_via_osascript() -> None:
    cmd = terminal_command("darwin", ["/opt/homebrew/bin/claude"], CWD, ENV, only(), {})
    assert cmd is not None and cmd[0] == "osascript"
    script = [cmd[i + 1] for i in range(1, len(cmd), 2)]
    assert script[0] == 'tell application "Terminal"'
    line = script[2]
    assert line.startswith('do script "') and line.endswith('"')
    shell = line[len('do script "') : -1].replace('\\"', '"').replace("\\\\", "\\")
    words = shlex.split(shell)
    assert words[:3] == ["cd", str(CWD), "&&"]
    assert words[3:] == [
        "env",
        "ANTHROPIC_BASE_URL=http://127.0.0.1:6789",
        "ANTHROPIC_AUTH_TOKEN=dp-it's",
        "/opt/homebrew/bin/claude",
    ]


def test_macos_iterm_when_present() -> None:
    cmd = terminal_command("darwin", ["claude"], CWD, ENV, only("iTerm.app"), {})
    assert cmd is not None
    assert 'tell application "iTerm"' in cmd
    assert any(part.startswith("tell current session of newWindow to write text") for part in cmd)


def _decode(cmd: list[str]) -> str:
    encoded = cmd[cmd.index("-EncodedCommand") + 1]
    return base64.b64decode(encoded).decode("utf-16-le")


def test_windows_terminal_carries_the_env_inside() -> None:
    cwd = Path("C:/Users/me/my project")
    cmd = terminal_command(
        "win32", ["C:/npm/claude.cmd"], cwd, ENV, only("wt.exe", "powershell.exe"), {}
    )
    assert cmd is not None
    assert cmd[:4] == ["wt.exe", "-d", str(cwd), "powershell.exe"]
    script = _decode(cmd)
    assert "$env:ANTHROPIC_AUTH_TOKEN = 'dp-it''s'" in script
    assert f"Set-Location -LiteralPath '{cwd}'" in script
    assert script.endswith("& 'C:/npm/claude.cmd'")


def test_windows_fallbacks() -> None:
    ps = terminal_command("windows", ["claude"], CWD, ENV, only("powershell.exe"), {})
    assert ps is not None and ps[:2] == ["powershell.exe", "-NoExit"]
    pwsh = terminal_command("windows", ["claude"], CWD, ENV, only("pwsh.exe"), {})
    assert pwsh is not None and pwsh[0] == "pwsh.exe"
    cmd = terminal_command("windows", ["claude"], CWD, ENV, only("cmd.exe"), {})
    assert cmd == ["cmd.exe", "/k", "claude"]
    assert terminal_command("windows", ["claude"], CWD, ENV, only(), {}) is None


def test_powershell_unset() -> None:
    script = powershell_script(["claude"], PureWindowsPath("C:/x"), {}, ["ANTHROPIC_API_KEY"])
    assert script.startswith("Remove-Item -LiteralPath 'Env:ANTHROPIC_API_KEY' -ErrorAction Ignore")


def test_frozen_child_gets_its_library_path_back() -> None:
    env = child_environ(
        {"LD_LIBRARY_PATH": "/tmp/_MEI/lib", "LD_LIBRARY_PATH_ORIG": "/usr/lib", "X": "1"},
        frozen=True,
    )
    assert env == {"LD_LIBRARY_PATH": "/usr/lib", "X": "1"}
    assert "LD_LIBRARY_PATH" not in child_environ({"LD_LIBRARY_PATH": "/tmp/_MEI"}, frozen=True)


def test_open_terminal_without_any_terminal_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NoTerminalError, match="TERMINAL"):
        open_terminal(["claude"], tmp_path, {}, os_name="linux", available=only(), environ={})
