"""Running coroutines and blocking calls from widget code without making widgets async.

Widgets hand work to a `TaskRunner` with callbacks. In the app the runner schedules coroutines
on the qasync loop and blocking calls in worker threads; in tests `InlineRunner` does both at
once, so pytest-qt tests stay synchronous (pytest-qt does not drive qasync).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

Done = Callable[[Any], None]
Failed = Callable[[BaseException], None]


class TaskRunner(Protocol):
    def run(
        self,
        coro: Coroutine[Any, Any, Any],
        on_done: Done | None = None,
        on_error: Failed | None = None,
    ) -> None: ...

    def call(
        self,
        fn: Callable[[], Any],
        on_done: Done | None = None,
        on_error: Failed | None = None,
    ) -> None:
        """Run blocking `fn` off the UI thread; callbacks come back on the UI thread."""
        ...


def _report(exc: BaseException) -> None:
    log.error("background task failed", exc_info=exc)


class LoopRunner:
    """Schedules on the (qasync) event loop; blocking calls go to its default executor."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_unhandled: Failed = _report) -> None:
        self._loop = loop
        self._on_unhandled = on_unhandled
        self._tasks: set[asyncio.Future[Any]] = set()

    def run(
        self,
        coro: Coroutine[Any, Any, Any],
        on_done: Done | None = None,
        on_error: Failed | None = None,
    ) -> None:
        task = self._loop.create_task(coro)
        self._track(task, on_done, on_error)

    def call(
        self,
        fn: Callable[[], Any],
        on_done: Done | None = None,
        on_error: Failed | None = None,
    ) -> None:
        self._track(self._loop.run_in_executor(None, fn), on_done, on_error)

    def _track(
        self, future: asyncio.Future[Any], on_done: Done | None, on_error: Failed | None
    ) -> None:
        self._tasks.add(future)

        def finished(f: asyncio.Future[Any]) -> None:
            self._tasks.discard(f)
            if f.cancelled():
                return
            exc = f.exception()
            try:
                if exc is not None:
                    (on_error or self._on_unhandled)(exc)
                elif on_done is not None:
                    on_done(f.result())
            except Exception as callback_exc:
                self._on_unhandled(callback_exc)

        future.add_done_callback(finished)

    async def drain(self, seconds: float = 5.0) -> None:
        """Wait for outstanding work (at shutdown)."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=seconds)


class InlineRunner:
    """Runs everything to completion before returning (tests, scripts)."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def run(
        self,
        coro: Coroutine[Any, Any, Any],
        on_done: Done | None = None,
        on_error: Failed | None = None,
    ) -> None:
        loop = asyncio.new_event_loop()
        try:
            result = loop.run_until_complete(coro)
        except Exception as exc:
            self._fail(exc, on_error)
            return
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
        if on_done is not None:
            on_done(result)

    def call(
        self,
        fn: Callable[[], Any],
        on_done: Done | None = None,
        on_error: Failed | None = None,
    ) -> None:
        try:
            result = fn()
        except Exception as exc:
            self._fail(exc, on_error)
            return
        if on_done is not None:
            on_done(result)

    def _fail(self, exc: BaseException, on_error: Failed | None) -> None:
        if on_error is None:
            self.errors.append(exc)
        else:
            on_error(exc)
