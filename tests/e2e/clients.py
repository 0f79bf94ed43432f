"""Installing and running the real Claude Code CLI for end-to-end tests.

`<repo>/.cache/e2e-clients` (git-ignored) keeps the install between runs; a missing or
different version is (re)installed by the session fixture, so a fresh clone needs nothing
manual. Only the npm registry is contacted, and only for that install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("DESKTOP_PROXY_E2E_CACHE") or REPO / ".cache" / "e2e-clients")
# Pinned so a new release cannot change what the tests observe; override to try another one.
CLAUDE_CODE_VERSION = os.environ.get("DESKTOP_PROXY_E2E_CLAUDE_VERSION", "2.1.197")
CLAUDE_PACKAGE = "@anthropic-ai/claude-code"
INSTALL_TIMEOUT = 420.0
# Environment variables a child process needs to run at all (others are left out on purpose:
# the user's ANTHROPIC_*, proxy and XDG settings must not leak into a test run).
PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "TEMP", "TMP", "COMSPEC")


@dataclass(frozen=True)
class ClaudeCli:
    path: Path
    version: str
    install_seconds: float  # 0.0 when the cached install was reused

    @property
    def bin_dir(self) -> Path:
        return self.path.parent


def claude_path(prefix: Path) -> Path:
    name = "claude.cmd" if sys.platform == "win32" else "claude"
    return prefix / "node_modules" / ".bin" / name


def _version_of(binary: Path, home: Path) -> str | None:
    if not binary.exists():
        return None
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            env=base_env(home),
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout.strip() else None


def _npm(npm: str, *args: str, cwd: Path | None = None) -> None:
    done = subprocess.run(
        [npm, *args], cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
    )
    if done.returncode != 0:
        pytest.fail(
            f"`npm {' '.join(args)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )


def install_claude(tmp_home: Path) -> ClaudeCli:
    binary = claude_path(CACHE_DIR)
    if _version_of(binary, tmp_home) == CLAUDE_CODE_VERSION:
        return ClaudeCli(binary, CLAUDE_CODE_VERSION, 0.0)
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(
            "npm is not installed: the real Claude Code CLI cannot be installed for "
            "end-to-end tests"
        )
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _npm(
        npm,
        "install",
        "--prefix",
        str(CACHE_DIR),
        "--no-audit",
        "--no-fund",
        f"{CLAUDE_PACKAGE}@{CLAUDE_CODE_VERSION}",
    )
    if _version_of(binary, tmp_home) is None:
        # npm configured to skip install scripts leaves a placeholder binary: the package's
        # postinstall copies the platform's native binary over it.
        package = CACHE_DIR / "node_modules" / CLAUDE_PACKAGE
        node = shutil.which("node") or "node"
        subprocess.run([node, "install.cjs"], cwd=package, capture_output=True, timeout=120)
    version = _version_of(binary, tmp_home)
    if version != CLAUDE_CODE_VERSION:
        pytest.fail(
            f"{binary} reports version {version!r} after installing "
            f"{CLAUDE_PACKAGE}@{CLAUDE_CODE_VERSION}",
            pytrace=False,
        )
    return ClaudeCli(binary, version, time.monotonic() - started)


def base_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment with a fresh HOME: nothing of the user's Claude setup leaks in."""
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    env["USERPROFILE"] = str(home)
    env.update(extra or {})
    return env


def claude_test_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base_env` plus the switches that make Claude Code deterministic and offline, and make a
    broken stream fail instead of hiding behind the non-streaming retry."""
    return base_env(
        home,
        {
            "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            **(extra or {}),
        },
    )
