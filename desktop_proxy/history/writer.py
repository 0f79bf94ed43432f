"""The history writer: the gateway hands it finished records; one thread writes them to SQLite.

`record()` only appends to an in-memory buffer (a lock, a deque append), so it is safe on the
event loop thread, never blocks on the disk and never raises. A single background thread
prices the records, prepares their bodies and inserts them in batches (up to `batch_size` rows,
or whatever arrived within `batch_interval` seconds of the first one).

Failures never reach the gateway. When the database is locked, full, unwritable or damaged,
records wait in a bounded buffer (`max_buffer` records; beyond that the oldest are dropped and
counted; bodies are dropped first when the buffered bodies exceed `max_buffer_body_bytes`), the
writer retries with exponential backoff, and `status` turns "degraded" with a message that the
CLI or tray can show (`listeners` are called on every change). A damaged database found at start
(or met later) is moved aside to `history.sqlite3.corrupt-YYYYmmdd-HHMMSS` and replaced; the log
and the status message say where the old one went.

`close()` / `aclose()` flush everything accepted before returning (as long as the database is
writable within the timeout), then stop the thread. Retention (age, size, then VACUUM) runs in the
same thread at start and every `retention_interval` seconds.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from desktop_proxy.config.models import HistorySettings
from desktop_proxy.history.pricing import Price, Pricer
from desktop_proxy.history.record import RecordValues, RequestRecord, values_of
from desktop_proxy.history.store import (
    BODY_LIMIT,
    BUSY_TIMEOUT_MS,
    ConnectionFactory,
    HistoryError,
    Row,
    apply_retention,
    default_connect,
    describe_error,
    insert_rows,
    is_corruption,
    move_aside,
    open_db,
    quick_check,
    record_to_row,
)

log = logging.getLogger(__name__)

_TRIM_EVERY = 256  # while writing lags, the buffered bodies are checked every this many records

StatusState = Literal["starting", "ok", "degraded", "closed"]


@dataclass(frozen=True, slots=True)
class WriterStatus:
    """What the writer is up to, for the CLI and the tray.

    `state` is "ok" while records reach the database and "degraded" while they wait in memory
    (`message` says why). `pending` records are buffered, `dropped` were lost to a full buffer.
    `moved_aside` is where a damaged database was moved, once that happened.
    """

    state: StatusState
    message: str | None = None
    pending: int = 0
    dropped: int = 0
    written: int = 0
    moved_aside: Path | None = None

    @property
    def ok(self) -> bool:
        return self.state in ("ok", "starting")


StatusListener = Callable[[WriterStatus], None]


@dataclass(slots=True)
class _Item:
    seq: int
    record: RequestRecord | RecordValues | None = None
    row: Row | None = None


def warn_bodies_trimmed(times: int, budget: int) -> None:
    """Say, less and less often, that records waiting to be written lost their bodies."""
    if times in (1, 10, 100) or times % 1000 == 0:
        log.warning(
            "history: requests waiting to be written hold over %d MB of bodies; the oldest are "
            "kept without them",
            budget // (1024 * 1024),
        )


def _body_bytes(item: _Item) -> int:
    if item.row is not None:
        return item.row.body_size
    rec = item.record
    if rec is None:
        return 0
    return len(rec.request_body or b"") + len(rec.response_body or b"")


def _drop_bodies(item: _Item) -> None:
    if item.row is not None:
        item.row = item.row.without_bodies()
    elif item.record is not None:  # not mutated: the gateway may still show the record
        item.record = values_of(item.record)._replace(request_body=None, response_body=None)


@dataclass(slots=True)
class _Config:
    settings: HistorySettings = field(default_factory=HistorySettings)
    pricer: Pricer | None = None


class HistoryWriter:
    """Batches finished RequestRecords into the history database from one background thread."""

    def __init__(
        self,
        path: Path,
        *,
        settings: HistorySettings | None = None,
        pricer: Pricer | None = None,
        connect: ConnectionFactory = default_connect,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        batch_size: int = 200,
        batch_interval: float = 0.1,
        max_buffer: int = 10_000,
        max_buffer_body_bytes: int = 64 * 1024 * 1024,
        body_limit: int = BODY_LIMIT,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        retention_interval: float = 3600.0,
        retention_every_rows: int = 20_000,
    ) -> None:
        self.path = path
        self.listeners: list[StatusListener] = []
        # Called (from the writer thread) with the seq up to which records are stored, after
        # each batch: records accepted as seq n by `record` (see `accepted`) are in the file.
        self.progress_listeners: list[Callable[[int], None]] = []
        self._connect = connect
        self._busy_timeout_ms = busy_timeout_ms
        self._batch_size = max(1, batch_size)
        self._batch_interval = max(0.0, batch_interval)
        self._max_buffer = max(1, max_buffer)
        self._max_body_bytes = max_buffer_body_bytes
        self._body_limit = body_limit
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._retention_interval = retention_interval
        self._retention_every_rows = retention_every_rows
        self._config = _Config(settings or HistorySettings(), pricer)

        self._cond = threading.Condition(threading.Lock())
        self._items: deque[_Item] = deque()  # oldest first; records, or rows already prepared
        self._seq = itertools.count(1)
        self._accepted = 0  # seq of the last accepted record
        self._done = 0  # every item with seq <= _done is written or dropped
        self._dropped = 0
        self._written = 0
        self._closing = False
        self._closing_since = 0.0
        self._closed = False
        self._abandon = False  # close() timed out: the thread gives up
        self._urgent = False  # flush() is waiting: skip the batching delay
        self._retention_due = True
        self._status = WriterStatus("starting")
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._opened_once = False
        self._rows_since_retention = 0
        self._moved_aside: Path | None = None
        self._warned_after_close = False
        self._trim_checked = 0  # `accepted` at the last check of the buffered bodies
        self._bodies_trimmed = 0

    # --- the gateway side: never blocks, never raises -----------------------------------------

    @classmethod
    def in_gateway_process(
        cls, path: Path, *, settings: HistorySettings, pricer: Pricer | None
    ) -> HistoryWriter:
        """A writer thread in the gateway's own process (when the writer process cannot run):
        fewer, larger batches, since each wake-up contends with the event loop for the GIL
        (docs/performance.md). Records reach the database within a second."""
        return cls(path, settings=settings, pricer=pricer, batch_interval=1.0, batch_size=2000)

    def record(self, rec: RequestRecord) -> None:
        """Accept a finished record for writing. Non-blocking, thread-safe, never raises."""
        self.record_many((rec,))

    def record_many(self, recs: Iterable[RequestRecord | RecordValues]) -> int:
        """Accept several records under one lock (the writer process gets them in batches).
        Returns `accepted`, the seq of the last record accepted. Never raises."""
        try:
            with self._cond:
                before = len(self._items)
                for rec in recs:
                    if self._closed:
                        self._dropped += 1
                        if not self._warned_after_close:
                            self._warned_after_close = True
                            log.warning("history writer is closed: a request was not recorded")
                        continue
                    seq = next(self._seq)
                    self._accepted = seq
                    self._items.append(_Item(seq, rec))
                if len(self._items) > self._max_buffer:
                    self._drop_oldest_locked()
                n = len(self._items)
                # Writing lags (the database is down): bound the raw bodies waiting too,
                # checked every _TRIM_EVERY records so that the check stays cheap.
                if n > 2 * self._batch_size and self._accepted - self._trim_checked >= _TRIM_EVERY:
                    self._trim_checked = self._accepted
                    self._trim_bodies_locked()
                if (before == 0 and n) or before < self._batch_size <= n:
                    self._cond.notify()
                return self._accepted
        except Exception:  # pragma: no cover - the gateway must never see an error from here
            with contextlib.suppress(Exception):
                log.exception("history: could not accept a record")
            return self._accepted

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> HistoryWriter:
        """Start the writer thread (idempotent). Returns self."""
        with self._cond:
            if self._thread is not None or self._closed:
                return self
            self._thread = threading.Thread(
                target=self._run, name="desktop-proxy-history", daemon=True
            )
            self._thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))
        return self

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record accepted so far is written (or dropped). True if it was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._accepted
            self._urgent = True
            self._cond.notify_all()
            while self._done < target:
                if self._thread is None or not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop accepting records, write everything accepted, stop the thread.

        Returns True when everything accepted was written. If the database stays unusable for
        `timeout` seconds, the records still buffered are lost; the log says how many.
        """
        with self._cond:
            if self._closed and self._thread is None:
                return True
            self._closed = True
            self._closing = True
            self._closing_since = time.monotonic()
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                with self._cond:
                    self._abandon = True
                    self._cond.notify_all()
                log.error(
                    "history: %d requests could not be written before shutdown (%s)",
                    self.pending,
                    self._status.message or "database unavailable",
                )
                return False
        with self._cond:
            self._thread = None
            lost = len(self._items)
            if lost:
                self._dropped += lost
                self._items.clear()
        if lost:
            log.error("history: %d requests could not be written before shutdown", lost)
        self._set_status(replace(self._status, state="closed", pending=0))
        return lost == 0

    async def aclose(self, grace: float | None = 10.0) -> bool:
        """`close(grace)` off the event loop."""
        return await asyncio.to_thread(self.close, grace)

    async def aflush(self, max_wait: float | None = None) -> bool:
        """`flush(max_wait)` off the event loop."""
        return await asyncio.to_thread(self.flush, max_wait)

    def configure(self, settings: HistorySettings, pricer: Pricer | None = None) -> None:
        """Apply new settings (config reload): body storage, retention, prices. Thread-safe."""
        with self._cond:
            self._config = _Config(settings, pricer if pricer is not None else self._config.pricer)
            self._retention_due = True
            self._cond.notify()

    def run_retention_soon(self) -> None:
        with self._cond:
            self._retention_due = True
            self._cond.notify()

    # --- status -------------------------------------------------------------------------------

    @property
    def status(self) -> WriterStatus:
        with self._cond:
            return replace(
                self._status, pending=len(self._items), dropped=self._dropped, written=self._written
            )

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def accepted(self) -> int:
        """The seq given to the last record accepted."""
        with self._cond:
            return self._accepted

    @property
    def dropped(self) -> int:
        with self._cond:
            return self._dropped

    def _set_status(self, status: WriterStatus) -> None:
        with self._cond:
            previous = self._status
            self._status = status
            status = replace(
                status, pending=len(self._items), dropped=self._dropped, written=self._written
            )
        if (previous.state, previous.message) == (status.state, status.message):
            return
        if status.state == "degraded":
            log.warning("history: %s; requests are kept in memory meanwhile", status.message)
        elif status.state == "ok" and previous.state == "degraded":
            log.info("history: the database is writable again")
        for listener in list(self.listeners):
            try:
                listener(status)
            except Exception:
                log.exception("history status listener failed")

    # --- buffer helpers (hold self._cond) -----------------------------------------------------

    def _drop_oldest_locked(self) -> None:
        while len(self._items) > self._max_buffer:
            item = self._items.popleft()
            self._dropped += 1
            self._done = max(self._done, item.seq)
            if self._dropped in (1, 10, 100, 1000) or self._dropped % 10_000 == 0:
                log.warning(
                    "history: buffer full (%d requests), dropped %d so far",
                    self._max_buffer,
                    self._dropped,
                )

    def _trim_bodies_locked(self) -> None:
        """Keep buffered bodies within budget by dropping the oldest ones (not the records):
        raw ones waiting to be prepared (the database could not even be opened) and prepared
        ones waiting to be written alike."""
        sizes = [_body_bytes(item) for item in self._items]
        total = sum(sizes)
        if total <= self._max_body_bytes:
            return
        for item, size in zip(self._items, sizes, strict=True):
            if total <= self._max_body_bytes:
                break
            if size:
                total -= size
                _drop_bodies(item)
        self._bodies_trimmed += 1
        warn_bodies_trimmed(self._bodies_trimmed, self._max_body_bytes)

    @property
    def buffered_body_bytes(self) -> int:
        """Bytes of bodies held by the records waiting to be written."""
        with self._cond:
            return sum(_body_bytes(item) for item in self._items)

    # --- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._retry_initial
        next_retention = time.monotonic()
        try:
            config = self._config
            if config.pricer is not None:
                config.pricer.warm_up()
            while True:
                with self._cond:
                    now = time.monotonic()
                    if (
                        not self._items
                        and not self._closing
                        and not self._retention_due
                        and now < next_retention
                    ):
                        self._cond.wait(next_retention - now)
                    # Gather a batch: linger a little for more records unless one is full.
                    start = time.monotonic()
                    while (
                        self._items
                        and len(self._items) < self._batch_size
                        and not self._closing
                        and not self._urgent
                        and (remaining := self._batch_interval - (time.monotonic() - start)) > 0
                    ):
                        self._cond.wait(remaining)
                    if (self._closing and not self._items) or self._abandon:
                        break
                    due = self._retention_due or time.monotonic() >= next_retention
                    has_items = bool(self._items)
                    self._urgent = False
                if not self._ensure_open():
                    delay = self._backoff(delay)
                    continue
                if has_items:
                    if not self._write_some():
                        delay = self._backoff(delay)
                        continue
                    delay = self._retry_initial
                if due or self._rows_since_retention >= self._retention_every_rows:
                    self._retention()
                    next_retention = time.monotonic() + self._retention_interval
        except BaseException:  # pragma: no cover - a bug; keep the gateway running regardless
            log.exception("history writer thread failed")
            self._set_status(
                WriterStatus("degraded", "the history writer stopped (internal error)")
            )
        finally:
            self._close_conn()
            with self._cond:
                self._cond.notify_all()

    def _backoff(self, delay: float) -> float:
        """Sleep before a retry; returns the next delay. New records do not cut it short (a
        failing disk must not be hammered); close() does, and then retries come every 0.2 s
        until close()'s timeout gives up."""
        deadline = time.monotonic() + delay
        with self._cond:
            while not self._abandon:
                limit = min(deadline, self._closing_since + 0.2) if self._closing else deadline
                remaining = limit - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        return min(self._retry_max, delay * 2)

    def _ensure_open(self, *, replaced: bool = False) -> bool:
        if self._conn is not None:
            return True
        try:
            conn = open_db(self.path, connect=self._connect, busy_timeout_ms=self._busy_timeout_ms)
            if not self._opened_once:
                problem = quick_check(conn)
                if problem is not None:
                    conn.close()
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {problem}")
        except Exception as exc:
            if is_corruption(exc) and not replaced and self._replace_corrupt(exc):
                return self._ensure_open(replaced=True)
            self._set_status(
                WriterStatus(
                    "degraded",
                    f"cannot open the history database {self.path}: {describe_error(exc)}",
                    moved_aside=self._moved_aside,
                )
            )
            return False
        self._conn = conn
        self._opened_once = True
        with self._cond:
            idle = not self._items
        if self._status.state == "starting" or (self._status.state == "degraded" and idle):
            self._set_status(
                WriterStatus(
                    "ok",
                    self._status.message if self._moved_aside is not None else None,
                    moved_aside=self._moved_aside,
                )
            )
        return True

    def _replace_corrupt(self, exc: BaseException) -> bool:
        self._close_conn()
        try:
            target = move_aside(self.path)
        except OSError as move_exc:
            log.error(
                "history database %s is damaged (%s) and could not be moved aside: %s",
                self.path,
                exc,
                move_exc,
            )
            return False
        self._moved_aside = target
        message = (
            f"the history database {self.path} was damaged ({exc}); it was moved to {target} "
            "and a new one was started"
        )
        log.warning(message)
        self._set_status(WriterStatus("ok", message, moved_aside=target))
        return True

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _prepare(self, item: _Item, config: _Config) -> Row:
        assert item.record is not None
        rec = values_of(item.record)
        try:
            price = config.pricer.price_record(rec) if config.pricer is not None else None
        except Exception:
            log.exception("history: pricing a record failed")
            price = None
        if price is None:
            price = Price(rec.cost_usd, False, "record" if rec.cost_usd is not None else None)
        try:
            return record_to_row(
                rec,
                price,
                store_bodies=config.settings.store_bodies,
                body_limit=self._body_limit,
            )
        except Exception:
            log.exception("history: preparing a record's bodies failed; storing it without")
            return record_to_row(rec, price, store_bodies=False)

    def _write_some(self) -> bool:
        """Prepare pending records and write them in batches. False after a failure."""
        with self._cond:
            config = self._config
            todo = [i for i in self._items if i.row is None]
        # Prepared without the lock, published under one acquisition: every lock round trip
        # and forced sleep(0) is a GIL handoff that slows the event loop thread down.
        rows = [self._prepare(item, config) for item in todo]
        with self._cond:
            for item, row in zip(todo, rows, strict=True):
                item.row = row
                item.record = None  # let the raw bodies go
            self._trim_bodies_locked()
        while True:
            with self._cond:
                batch = [i for i in itertools.islice(self._items, self._batch_size)]
                batch = [i for i in batch if i.row is not None]
            if not batch:
                return True
            conn = self._conn
            assert conn is not None
            try:
                insert_rows(conn, [i.row for i in batch if i.row is not None])
            except Exception as exc:
                self._write_failed(exc)
                return False
            last = batch[-1].seq
            with self._cond:
                while self._items and self._items[0].seq <= last:
                    self._items.popleft()
                self._done = max(self._done, last)
                self._written += len(batch)
                self._cond.notify_all()
            self._rows_since_retention += len(batch)
            for progress in list(self.progress_listeners):
                try:
                    progress(last)
                except Exception:  # pragma: no cover - a listener's bug must not stop writing
                    log.exception("history: a progress listener failed")
            if self._status.state != "ok" or self._status.message is not None:
                message = None
                if self._moved_aside is not None and self._status.state == "ok":
                    message = self._status.message  # keep telling where the old file went
                self._set_status(WriterStatus("ok", message, moved_aside=self._moved_aside))

    def _write_failed(self, exc: BaseException) -> None:
        self._close_conn()
        if is_corruption(exc) and self._replace_corrupt(exc):
            return
        if isinstance(exc, HistoryError | sqlite3.Error | OSError):
            message = f"cannot write to the history database: {describe_error(exc)}"
        else:
            log.exception("history: unexpected error while writing")
            message = f"cannot write to the history database: {type(exc).__name__}: {exc}"
        self._set_status(WriterStatus("degraded", message, moved_aside=self._moved_aside))

    def _retention(self) -> None:
        with self._cond:
            self._retention_due = False
            settings = self._config.settings
        self._rows_since_retention = 0
        conn = self._conn
        if conn is None:
            return
        try:
            apply_retention(
                conn,
                retention_days=settings.retention_days,
                max_size_mb=settings.max_size_mb,
            )
        except Exception as exc:
            log.warning("history retention failed, will retry later: %s", describe_error(exc))
            if is_corruption(exc):
                self._write_failed(exc)


def _close_at_exit(ref: weakref.ref[HistoryWriter]) -> None:
    writer = ref()
    if writer is not None:
        writer.close(timeout=5.0)
