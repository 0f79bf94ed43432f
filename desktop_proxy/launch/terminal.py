"""Open a program in a new terminal window, per OS, with a process-scoped environment.

`terminal_command` is pure: it picks a terminal from what is installed and builds the argv that
opens it in `cwd` running `argv` with `env_overrides` set for that one process (nothing is
exported to the user's shell profile or written to disk). `open_terminal` runs it.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath

Available = Callable[[str], bool]

MAC_TERMINAL = "Terminal.app"
MAC_ITERM = "iTerm.app"

# Linux terminals in the order we try them after $TERMINAL and x-terminal-emulator.
LINUX_TERMINALS = (
    "gnome-terminal",
    "konsole",
    "xfce4-terminal",
    "kitty",
    "alacritty",
    "ptyxis",
    "wezterm",
    "xterm",
)


class NoTerminalError(RuntimeError):
    """No usable terminal emulator was found; the message says what to install."""


def normalise_os(os_name: str) -> str:
    """'darwin' | 'windows' | 'linux' from sys.platform-style or platform.system()-style names."""
    name = os_name.lower()
    if name.startswith("darwin") or name in ("macos", "mac"):
        return "darwin"
    if name.startswith("win") or name.startswith("cygwin"):
        return "windows"
    return "linux"


def terminal_command(
    os_name: str,
    argv: Sequence[str],
    cwd: Path,
    env_overrides: Mapping[str, str],
    available: Available,
    environ: Mapping[str, str],
    unset: Sequence[str] = (),
) -> list[str] | None:
    """The command that opens a terminal in `cwd` running `argv` with `env_overrides`.

    Args:
        os_name: `sys.platform` or `platform.system()` style name.
        argv: the program and its arguments, e.g. `["/usr/bin/claude"]`.
        cwd: the folder the terminal starts in.
        env_overrides: variables set for the launched program only.
        available: whether a program (or, on macOS, an `X.app` bundle) is installed.
        environ: the current environment (for `$TERMINAL`).
        unset: variables removed for the launched program (e.g. a competing API key).

    Returns:
        The argv to spawn (the spawn should also use `cwd` as its working directory), or None
        when no terminal is available.
    """
    system = normalise_os(os_name)
    if system == "darwin":
        return _mac_command(argv, cwd, env_overrides, unset, available)
    if system == "windows":
        return _windows_command(argv, cwd, env_overrides, unset, available)
    return _linux_command(argv, cwd, env_overrides, unset, available, environ)


# --- macOS ----------------------------------------------------------------------------------


def env_prefix(env: Mapping[str, str], unset: Sequence[str]) -> list[str]:
    """`env -u NAME K=V`: both GNU and BSD env understand it, no shell involved."""
    removed = [part for name in unset for part in ("-u", name)]
    return ["env", *removed, *(f"{k}={v}" for k, v in env.items())]


def posix_shell_line(
    argv: Sequence[str], cwd: PurePath, env: Mapping[str, str], unset: Sequence[str] = ()
) -> str:
    """`cd DIR && env K=V prog args`, quoted for any POSIX-ish login shell (zsh, bash, fish)."""
    command = " ".join(shlex.quote(a) for a in [*env_prefix(env, unset), *argv])
    return f"cd {shlex.quote(str(cwd))} && {command}"


def applescript_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mac_command(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    unset: Sequence[str],
    available: Available,
) -> list[str]:
    line = applescript_string(posix_shell_line(argv, cwd, env, unset))
    if available(MAC_ITERM):
        script = [
            'tell application "iTerm"',
            "activate",
            "set newWindow to (create window with default profile)",
            f"tell current session of newWindow to write text {line}",
            "end tell",
        ]
    else:
        script = [
            'tell application "Terminal"',
            "activate",
            f"do script {line}",
            "end tell",
        ]
    command = ["osascript"]
    for statement in script:
        command += ["-e", statement]
    return command


# --- Windows --------------------------------------------------------------------------------


def powershell_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def powershell_script(
    argv: Sequence[str], cwd: PurePath, env: Mapping[str, str], unset: Sequence[str] = ()
) -> str:
    lines = [
        f"Remove-Item -LiteralPath {powershell_quote('Env:' + name)} -ErrorAction Ignore"
        for name in unset
    ]
    lines += [f"$env:{name} = {powershell_quote(value)}" for name, value in env.items()]
    lines.append(f"Set-Location -LiteralPath {powershell_quote(str(cwd))}")
    lines.append("& " + " ".join(powershell_quote(a) for a in argv))
    return "; ".join(lines)


def powershell_encoded(script: str) -> str:
    """-EncodedCommand form: no quoting layer between us, wt.exe and PowerShell to get wrong."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def _windows_command(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    unset: Sequence[str],
    available: Available,
) -> list[str] | None:
    encoded = powershell_encoded(powershell_script(argv, cwd, env, unset))
    shell = "pwsh.exe" if available("pwsh.exe") else "powershell.exe"
    if available("wt.exe"):
        # A running Windows Terminal opens the tab in its own process, which does not inherit
        # our environment: the variables travel inside the encoded script instead.
        return ["wt.exe", "-d", str(cwd), shell, "-NoExit", "-EncodedCommand", encoded]
    if available("pwsh.exe") or available("powershell.exe"):
        return [shell, "-NoExit", "-EncodedCommand", encoded]
    if available("cmd.exe"):
        # cmd gets the variables and the folder from the spawn itself (see open_terminal).
        return ["cmd.exe", "/k", *argv]
    return None


# --- Linux and other Unix -------------------------------------------------------------------


def _linux_exec(terminal: str, program: Sequence[str], cwd: Path) -> list[str]:
    """How each terminal is told to run a program in a folder."""
    base = os.path.basename(terminal)
    d = str(cwd)
    if base == "gnome-terminal":
        return [terminal, f"--working-directory={d}", "--", *program]
    if base == "ptyxis":
        return [terminal, "--new-window", f"--working-directory={d}", "--", *program]
    if base == "konsole":
        return [terminal, "--workdir", d, "-e", *program]
    if base == "xfce4-terminal":
        return [terminal, f"--working-directory={d}", "-x", *program]
    if base == "kitty":
        return [terminal, "--directory", d, *program]
    if base == "alacritty":
        return [terminal, "--working-directory", d, "-e", *program]
    if base == "wezterm":
        return [terminal, "start", "--cwd", d, "--", *program]
    # xterm, x-terminal-emulator (Debian requires `-e prog args`) and unknown $TERMINALs start
    # in the spawn's working directory.
    return [terminal, "-e", *program]


def _linux_command(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    unset: Sequence[str],
    available: Available,
    environ: Mapping[str, str],
) -> list[str] | None:
    # `env` sets the variables for the program alone: some terminals (gnome-terminal) start
    # the window in a long-lived server process that never saw our environment.
    program = [*env_prefix(env, unset), *argv]
    preferred = environ.get("TERMINAL", "").strip()
    candidates = [*([preferred] if preferred else []), "x-terminal-emulator", *LINUX_TERMINALS]
    for terminal in candidates:
        if available(terminal):
            return _linux_exec(terminal, program, cwd)
    return None


# --- running it -----------------------------------------------------------------------------


def child_environ(environ: Mapping[str, str], *, frozen: bool) -> dict[str, str]:
    """The environment for programs we spawn: a frozen app's library path is not theirs."""
    env = dict(environ)
    if frozen:
        for var in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
            original = env.pop(f"{var}_ORIG", None)
            if original is not None:
                env[var] = original
            else:
                env.pop(var, None)
    return env


def default_available(os_name: str) -> Available:
    system = normalise_os(os_name)

    def available(name: str) -> bool:
        if system == "darwin" and name.endswith(".app"):
            roots = [Path("/Applications"), Path("/System/Applications/Utilities")]
            roots.append(Path.home() / "Applications")
            return any((root / name).exists() for root in roots)
        return shutil.which(name) is not None

    return available


def no_terminal_message(os_name: str) -> str:
    system = normalise_os(os_name)
    if system == "linux":
        return (
            "No terminal emulator was found. Install one (for example gnome-terminal, konsole "
            "or xterm), or set the TERMINAL environment variable to your terminal's command."
        )
    if system == "windows":
        return "Neither Windows Terminal, PowerShell nor cmd.exe was found on PATH."
    return "Terminal.app could not be started with osascript."


def open_terminal(
    argv: Sequence[str],
    cwd: Path,
    env_overrides: Mapping[str, str],
    *,
    unset: Sequence[str] = (),
    os_name: str = sys.platform,
    available: Available | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Open a terminal window running `argv` in `cwd`; returns the command it spawned.

    Raises:
        NoTerminalError: no terminal is available.
        OSError: spawning failed.
    """
    env_now = os.environ if environ is None else environ
    command = terminal_command(
        os_name,
        argv,
        cwd,
        env_overrides,
        available or default_available(os_name),
        env_now,
        unset,
    )
    if command is None:
        raise NoTerminalError(no_terminal_message(os_name))
    env = child_environ(env_now, frozen=bool(getattr(sys, "frozen", False)))
    for name in unset:
        env.pop(name, None)
    env.update(env_overrides)
    windows = normalise_os(os_name) == "windows"
    subprocess.Popen(
        command,
        cwd=str(cwd),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        creationflags=getattr(subprocess, "CREATE_NEW_CONSOLE", 0) if windows else 0,
        start_new_session=not windows,
    )
    return command
