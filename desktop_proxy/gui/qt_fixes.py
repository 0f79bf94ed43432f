"""A work-around for a defect in the Qt binding that takes the app down.

PySide6 6.12.0 on CPython 3.11 returns `None` from every void method (`setText`, `killTimer`,
`QSocketNotifier.setEnabled`, …) and the bool from `SignalInstance.emit()` / `disconnect()`
without taking a reference to it: each call from Python leaves one reference fewer on `None`,
`True` or `False`. CPython 3.12 made those objects immortal, so there it is harmless; on 3.11
they are ordinary refcounted objects, and qasync alone makes such calls for every event-loop
callback. At 100 requests per second the count reaches zero within minutes and the interpreter
aborts: "Fatal Python error: none_dealloc: deallocating None" (or bool_dealloc).

`install()` checks whether the binding in use has the defect (a few calls on a private object,
counting references) and only then does what CPython 3.12 does: gives `None`, `True` and `False`
a reference count so large that no number of lost references can bring it to zero. With a fixed
binding, on CPython 3.12+, or on another implementation, it changes nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)

_PROBES = 8
# Like CPython 3.12's immortal objects: far more references than a process could ever drop
# (at a million lost references a second, 36,000 years), and far from overflowing.
RESERVE = 1 << 60
_installed: bool | None = None


class _Probe(QObject):
    ping = Signal()


def lost_references() -> dict[str, int]:
    """How many references to None and True a few void calls and emits lose (0 when fine)."""
    probe = _Probe()
    none_before = sys.getrefcount(None)
    for _ in range(_PROBES):
        probe.setObjectName("probe")  # a void method: returns None
    none_lost = none_before - sys.getrefcount(None)
    true_before = sys.getrefcount(True)
    for _ in range(_PROBES):
        probe.ping.emit()  # returns True
    true_lost = true_before - sys.getrefcount(True)
    return {"None": max(0, none_lost), "True": max(0, true_lost)}


def _add_references(obj: object, count: int) -> bool:
    """Add `count` to obj's reference count (CPython: ob_refcnt is the object's first field)."""
    before = sys.getrefcount(obj)
    field = ctypes.c_ssize_t.from_address(id(obj))
    if field.value != before - 1:  # getrefcount counts its own argument
        return False  # not the layout we expect (a debug build): leave it alone
    field.value += count
    return True


def install() -> bool:
    """Apply the work-around if this binding needs it (once). Returns whether it is applied."""
    global _installed
    if _installed is not None:
        return _installed
    _installed = False
    if platform.python_implementation() != "CPython" or sys.version_info >= (3, 12):
        return False
    lost = lost_references()
    if not any(n >= _PROBES for n in lost.values()):
        return False
    _installed = all(_add_references(obj, RESERVE) for obj in (None, True, False))
    if _installed:
        log.debug("PySide6 reference-count work-around installed (lost per call: %s)", lost)
    else:
        log.warning(
            "PySide6 loses references to None/True (%s) and the work-around could not be "
            "applied; the app may abort after running for a while",
            lost,
        )
    return _installed
