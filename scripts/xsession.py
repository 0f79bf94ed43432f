"""A throw-away desktop for the GUI scripts: Xvfb plus trayer as the system tray host.

`run_in_desktop(script, display, screen, env)` starts both, runs `script` again as a child
process on that display with `env` added, and stops everything afterwards. Needs the Debian
packages xvfb and trayer (`apt-get install -y xvfb trayer`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def missing_tools(*tools: str) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


def run_in_desktop(
    script: str,
    display: str,
    screen: tuple[int, int],
    env: Mapping[str, str],
    *,
    args: Sequence[str] = (),
    timeout: float = 120,
) -> int:
    """Run `python script` on a fresh Xvfb `display` with a tray; the child's exit code."""
    child_env = {**env, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "LANG": "C.UTF-8"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        size = f"{screen[0]}x{screen[1]}x24"
        processes.append(
            subprocess.Popen(["Xvfb", display, "-screen", "0", size, "-nolisten", "tcp"])
        )
        time.sleep(1.0)
        processes.append(
            subprocess.Popen(
                [
                    "trayer",
                    "--edge", "top",
                    "--align", "right",
                    "--widthtype", "percent",
                    "--width", "100",
                    "--height", "28",
                    "--SetDockType", "true",
                    "--transparent", "true",
                    "--alpha", "0",
                    "--tint", "0x3c3f45",
                ],
                env=child_env,
            )
        )  # fmt: skip
        time.sleep(1.0)
        done = subprocess.run(
            [sys.executable, script, *args], env=child_env, cwd=ROOT, timeout=timeout
        )
        return done.returncode
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
