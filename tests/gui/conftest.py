"""GUI tests run offscreen against a fake facade; no gateway, network or real keyring."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Iterator
from pathlib import Path

import pytest

from desktop_proxy.gui import qt_fixes
from desktop_proxy.gui.tasks import InlineRunner
from tests.gui.fakes import FakeFacade, FakeHost

qt_fixes.install()  # before the first signal: see desktop_proxy/gui/qt_fixes.py


@pytest.fixture
def runner() -> InlineRunner:
    return InlineRunner()


@pytest.fixture
def facade(tmp_path: Path) -> FakeFacade:
    return FakeFacade(tmp_path / "home")


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def bridge(qapp: object, facade: FakeFacade, runner: InlineRunner) -> Iterator[object]:
    from desktop_proxy.gui.bridge import GatewayBridge

    bridge = GatewayBridge(facade, runner)
    yield bridge
    assert runner.errors == [], runner.errors
