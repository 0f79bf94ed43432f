"""Fixtures for end-to-end tests with real clients (see tests/e2e/clients.py)."""

from __future__ import annotations

import pytest

from tests.e2e.clients import ClaudeCli, install_claude


@pytest.fixture(scope="session")
def claude_cli(tmp_path_factory: pytest.TempPathFactory) -> ClaudeCli:
    """The pinned Claude Code CLI (installed on first use; skipped where npm is absent)."""
    cli = install_claude(tmp_path_factory.mktemp("claude-version-home"))
    if cli.install_seconds:
        print(f"\ninstalled Claude Code {cli.version} in {cli.install_seconds:.1f} s")
    return cli
