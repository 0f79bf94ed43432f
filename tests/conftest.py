"""Test isolation: a fresh in-memory keyring and a throw-away DESKTOP_PROXY_HOME per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.core
import pytest

from tests.memory_keyring import MemoryKeyring


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    """Every unit test runs against an empty in-memory keyring, never the OS one."""
    # Read the private slot rather than get_keyring(): that would initialise the real backend.
    previous = keyring.core._keyring_backend
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.core._keyring_backend = previous


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point DESKTOP_PROXY_HOME at a temporary directory so nothing reaches the user's files."""
    home = tmp_path / "home"
    monkeypatch.setenv("DESKTOP_PROXY_HOME", str(home))
    return home


pytest_plugins = ["tests.fakes.fixtures"]
