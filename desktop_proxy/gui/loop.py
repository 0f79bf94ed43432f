"""The app's event loop: qasync's, with asyncio's own handling of delayed callbacks.

qasync gives every `call_later` / `call_at` a Qt timer of its own, and a cancelled one stays
registered (with its handle and context) until its time comes. aiohttp and asyncio arm a dozen
timeouts per request and cancel nearly all of them at once; at 100 requests per second tens of
thousands of dead timers pile up for the minutes those timeouts last, and every full garbage
collection walks them: UI stalls of 50-130 ms measured by bench/ui_stall.py, growing with time.

`GatewayEventLoop` keeps delayed callbacks the way asyncio's own loops do: `TimerHandle`s in one
heap behind a single Qt timer armed for the earliest, cancelled ones dropped when they reach the
top, and the heap compacted when more than half of it is cancelled. Callbacks due now
(`call_soon`, a delay of 0) still go through qasync unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
from collections.abc import Callable
from typing import Any

import qasync
from PySide6.QtCore import QObject, Qt, QTimer

# As asyncio.base_events: compact the heap when it holds at least this many timers and more than
# this fraction of them are cancelled.
_MIN_SCHEDULED = 100
_MIN_CANCELLED_FRACTION = 0.5
# Qt timers take milliseconds; a timer that fires up to this early still runs its callbacks.
_RESOLUTION = 0.001
_MAX_WAIT_MS = 24 * 3600 * 1000


class TimerQueue(QObject):
    """Delayed callbacks of one loop: a heap of TimerHandles, one Qt timer for the earliest."""

    def __init__(self, clock: Callable[[], float], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._clock = clock
        self._heap: list[asyncio.TimerHandle] = []
        self._cancelled = 0
        self._armed_for: float | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._run_due)

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def cancelled_count(self) -> int:
        return self._cancelled

    def push(self, handle: asyncio.TimerHandle) -> None:
        heapq.heappush(self._heap, handle)
        handle._scheduled = True  # type: ignore[attr-defined]
        if self._heap[0] is handle:
            self._arm()

    def cancelled(self, handle: asyncio.TimerHandle) -> None:
        """A scheduled handle was cancelled (loop._timer_handle_cancelled)."""
        if not getattr(handle, "_scheduled", False):
            return
        self._cancelled += 1
        if (
            len(self._heap) > _MIN_SCHEDULED
            and self._cancelled > len(self._heap) * _MIN_CANCELLED_FRACTION
        ):
            self._compact()

    def clear(self) -> None:
        self._timer.stop()
        self._armed_for = None
        for handle in self._heap:
            handle._scheduled = False  # type: ignore[attr-defined]
        self._heap.clear()
        self._cancelled = 0

    def _compact(self) -> None:
        keep = []
        for handle in self._heap:
            if handle.cancelled():
                handle._scheduled = False  # type: ignore[attr-defined]
            else:
                keep.append(handle)
        heapq.heapify(keep)
        self._heap = keep
        self._cancelled = 0
        self._arm()

    def _pop(self) -> asyncio.TimerHandle:
        handle = heapq.heappop(self._heap)
        handle._scheduled = False  # type: ignore[attr-defined]
        if handle.cancelled():
            self._cancelled = max(0, self._cancelled - 1)
        return handle

    def _arm(self) -> None:
        while self._heap and self._heap[0].cancelled():
            self._pop()
        if not self._heap:
            self._timer.stop()
            self._armed_for = None
            return
        when = self._heap[0].when()
        if self._timer.isActive() and self._armed_for is not None and self._armed_for <= when:
            return  # already armed for this one, or for an earlier one
        wait_ms = math.ceil(max(0.0, when - self._clock()) * 1000)
        self._armed_for = when
        self._timer.start(min(wait_ms, _MAX_WAIT_MS))

    def _run_due(self) -> None:
        self._armed_for = None
        now = self._clock() + _RESOLUTION
        ready = []
        while self._heap:
            top = self._heap[0]
            if not top.cancelled() and top.when() > now:
                break
            handle = self._pop()
            if not handle.cancelled():
                ready.append(handle)
        for handle in ready:
            if not handle.cancelled():  # an earlier one may have cancelled it
                handle._run()
        self._arm()


class GatewayEventLoop(qasync.QEventLoop):  # type: ignore[misc]
    """qasync's loop with asyncio-style timers (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timers = TimerQueue(self.time)

    def call_later(
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if delay <= 0:
            return super().call_later(0, callback, *args, context=context)  # type: ignore[no-any-return]
        return self.call_at(self.time() + delay, callback, *args, context=context)

    def call_at(
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if asyncio.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with call_at")
        self._check_closed()
        handle = asyncio.TimerHandle(when, callback, args, self, context=context)
        self._timers.push(handle)
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        self._timers.cancelled(handle)

    def close(self) -> None:
        if not self.is_running():
            self._timers.clear()
        super().close()

    @property
    def scheduled_timers(self) -> int:
        """Timers waiting (cancelled ones not yet dropped included): for tests and the bench."""
        return len(self._timers)
