"""The PySide6 reference work-around: void calls and signal emits from Python must not bring
None's or True's reference count to zero (CPython 3.11 aborts with "none_dealloc" /
"bool_dealloc" when they do, minutes into a session at 100 requests per second)."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QObject, QTimer, Signal

from desktop_proxy.gui import qt_fixes

pytestmark = pytest.mark.gui


class Emitter(QObject):
    plain = Signal()
    carrying = Signal(object)


def test_many_void_calls_and_emits_are_survived(qapp: object) -> None:
    applied = qt_fixes.install()
    emitter = Emitter()
    timer = QTimer()
    got: list[object] = []
    emitter.carrying.connect(got.append)
    # More calls than None and True have references in a process without the work-around.
    for i in range(200_000):
        emitter.plain.emit()
        emitter.carrying.emit(i)
        timer.setInterval(10)  # void: returns None
    assert len(got) == 200_000
    connection = emitter.plain.connect(lambda: None)
    assert emitter.plain.disconnect(connection) is True
    if applied:  # the binding has the defect: the counts have the reserve
        for obj in (None, True, False):
            assert sys.getrefcount(obj) > qt_fixes.RESERVE // 2


def test_install_is_idempotent(qapp: object) -> None:
    first = qt_fixes.install()
    before = sys.getrefcount(None)
    assert qt_fixes.install() is first
    assert abs(sys.getrefcount(None) - before) < 1000  # no second reserve
    assert set(qt_fixes.lost_references()) == {"None", "True"}
