"""The History window's source in the app: the SQLite history (HistoryReader), and what it falls
back to when history is off or its database cannot be read.

Everything here blocks (SQLite): the GUI calls it from worker threads only (TaskRunner.call).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TypeVar

from desktop_proxy.gui.facade import (
    DayCost,
    HistoryFacets,
    HistoryFilter,
    HistoryStats,
    UsageSnapshot,
)
from desktop_proxy.gui.memory_history import MemoryHistory
from desktop_proxy.history import query
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.store import HistoryError, open_db

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a damaged, locked, missing-permission or too-new database raises while reading.
DB_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, HistoryError, OSError)
# Larger than any real rowid: a cursor at a record's time that keeps every row with that time.
_MAX_RID = 2**63 - 1
_ID_CHUNK = 500

HISTORY_OFF_NOTICE = (
    "History is off (Settings → Server), so requests are not saved. "
    "Showing only the requests of this session."
)


def unavailable_notice(reason: str) -> str:
    return f"The history database cannot be read ({reason}). Showing only this session's requests."


def query_filter(filters: HistoryFilter) -> query.HistoryFilter:
    """The window's filter as the history store's."""
    return query.HistoryFilter(
        since=filters.since,
        until=filters.until,
        providers=(filters.provider,) if filters.provider else (),
        models=(filters.model,) if filters.model else (),
        ok_only=filters.status == "ok",
        errors_only=filters.status == "error",
        text=filters.text.strip() or None,
    )


def without_bodies(rec: RequestRecord) -> RequestRecord:
    if rec.request_body is None and rec.response_body is None:
        return rec
    return replace(rec, request_body=None, response_body=None)


class SqliteHistory:
    """`HistorySource` over the SQLite history file. Thread-safe; a missing file reads as empty
    (the gateway's history writer creates it). Errors: see DB_ERRORS."""

    def __init__(self, path: Path, *, reader: query.HistoryReader | None = None) -> None:
        self.path = path
        self.reader = reader or query.HistoryReader(path)
        # Where the last rows of recent pages sit (id -> keyset cursor), for page_before.
        self._cursors: OrderedDict[str, query.PageCursor] = OrderedDict()
        self._cursor_lock = threading.Lock()
        # A second connection for usage_since, which needs its own read transaction.
        self._usage_conn: sqlite3.Connection | None = None
        self._usage_lock = threading.Lock()

    @property
    def notice(self) -> str | None:
        return None

    def close(self) -> None:
        self.reader.close()
        with self._usage_lock:
            conn, self._usage_conn = self._usage_conn, None
        if conn is not None:
            conn.close()

    # --- HistorySource ------------------------------------------------------------------------

    def count(self, filters: HistoryFilter) -> int:
        return self.reader.count(query_filter(filters))

    def page(self, filters: HistoryFilter, offset: int, limit: int) -> list[RequestRecord]:
        entries = self.reader.page(query_filter(filters), offset, limit)
        self._remember(entries)
        return [e.to_record() for e in entries]

    def page_before(
        self, filters: HistoryFilter, before: RequestRecord | None, limit: int
    ) -> list[RequestRecord]:
        cursor = None if before is None else self._cursor(before)
        entries = self.reader.page_before(query_filter(filters), cursor, limit)
        self._remember(entries)
        return [e.to_record() for e in entries]

    def stats(self, filters: HistoryFilter) -> HistoryStats:
        flt = query_filter(filters)
        totals = self.reader.totals(flt)
        days = self.reader.aggregate(flt, by="day")
        return HistoryStats(
            requests=totals.requests,
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            cost_usd=totals.cost_usd,
            errors=totals.errors,
            days=tuple(
                DayCost(date.fromisoformat(row.key), row.requests, row.cost_usd)
                for row in days
                if row.key
            ),
        )

    def get(self, record_id: str) -> RequestRecord | None:
        entry = self.reader.get(record_id)
        return entry.to_record() if entry is not None else None

    def facets(self) -> HistoryFacets:
        providers, models = self.reader.facets()
        return HistoryFacets(tuple(providers), tuple(models))

    def usage_since(self, since: float, pending: Callable[[], Collection[str]]) -> UsageSnapshot:
        with self._usage_lock:
            if self._usage_conn is None:
                if not self.path.exists():
                    return UsageSnapshot()
                self._usage_conn = open_db(self.path)
            conn = self._usage_conn
            conn.execute("BEGIN")  # one snapshot for the figures and the ids
            try:
                row = conn.execute(
                    "SELECT count(*), coalesce(sum(cost_usd), 0) FROM requests WHERE time >= ?",
                    (since,),
                ).fetchone()
                ids = list(pending())  # after the snapshot began: see HistorySource
                found: set[str] = set()
                for i in range(0, len(ids), _ID_CHUNK):
                    chunk = ids[i : i + _ID_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    found.update(
                        r[0]
                        for r in conn.execute(
                            f"SELECT id FROM requests WHERE id IN ({marks}) AND time >= ?",
                            [*chunk, since],
                        )
                    )
            finally:
                conn.execute("COMMIT")
        return UsageSnapshot(int(row[0]), float(row[1]), frozenset(found))

    # --- keyset cursors -----------------------------------------------------------------------

    def _remember(self, entries: Sequence[query.HistoryEntry]) -> None:
        if not entries:
            return
        last = entries[-1]
        with self._cursor_lock:
            self._cursors[last.id] = last.cursor
            while len(self._cursors) > 64:
                self._cursors.popitem(last=False)

    def _cursor(self, rec: RequestRecord) -> query.PageCursor:
        with self._cursor_lock:
            cursor = self._cursors.get(rec.id)
        if cursor is not None:
            return cursor
        entry = self.reader.get(rec.id, bodies=False)
        if entry is not None:
            return entry.cursor
        # Not stored (yet): rows at its time are included again, and the model drops repeats.
        return query.PageCursor(rec.time, _MAX_RID)


class TrayHistory:
    """The app's `HistorySource`: the SQLite history while history is on and its database can
    be read; otherwise this session's requests, kept in memory (without bodies), and a
    `notice` saying why. After a read error the database is tried again after `retry_after`
    seconds.

    `add` is a record listener (the event loop thread); the rest runs in worker threads.
    """

    def __init__(
        self,
        db: SqliteHistory | None,
        *,
        enabled: Callable[[], bool] = lambda: True,
        session_capacity: int = 10_000,
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.session = MemoryHistory(capacity=session_capacity)
        self._enabled = enabled
        self._retry_after = retry_after
        self._clock = clock
        self._lock = threading.Lock()
        self._failure: str | None = None
        self._retry_at = 0.0

    def add(self, rec: RequestRecord) -> None:
        self.session.add(without_bodies(rec))

    @property
    def notice(self) -> str | None:
        if self.db is None or not self._enabled():
            return HISTORY_OFF_NOTICE
        with self._lock:
            failure = self._failure
        return unavailable_notice(failure) if failure is not None else None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def _use_db(self) -> SqliteHistory | None:
        if self.db is None or not self._enabled():
            return None
        with self._lock:
            if self._failure is not None and self._clock() < self._retry_at:
                return None
        return self.db

    def _call(self, on_db: Callable[[SqliteHistory], T], on_session: Callable[[], T]) -> T:
        db = self._use_db()
        if db is not None:
            try:
                result = on_db(db)
            except DB_ERRORS as exc:
                reason = str(exc) or type(exc).__name__
                with self._lock:
                    first = self._failure is None
                    self._failure = reason
                    self._retry_at = self._clock() + self._retry_after
                if first:
                    log.warning("history: cannot read %s: %s", db.path, reason)
                db.close()  # reopen on the next attempt
            else:
                with self._lock:
                    if self._failure is not None:
                        log.info("history: %s can be read again", db.path)
                    self._failure = None
                return result
        return on_session()

    # --- HistorySource ------------------------------------------------------------------------

    def count(self, filters: HistoryFilter) -> int:
        return self._call(lambda db: db.count(filters), lambda: self.session.count(filters))

    def page(self, filters: HistoryFilter, offset: int, limit: int) -> list[RequestRecord]:
        return self._call(
            lambda db: db.page(filters, offset, limit),
            lambda: self.session.page(filters, offset, limit),
        )

    def page_before(
        self, filters: HistoryFilter, before: RequestRecord | None, limit: int
    ) -> list[RequestRecord]:
        return self._call(
            lambda db: db.page_before(filters, before, limit),
            lambda: self.session.page_before(filters, before, limit),
        )

    def stats(self, filters: HistoryFilter) -> HistoryStats:
        return self._call(lambda db: db.stats(filters), lambda: self.session.stats(filters))

    def get(self, record_id: str) -> RequestRecord | None:
        return self._call(lambda db: db.get(record_id), lambda: self.session.get(record_id))

    def facets(self) -> HistoryFacets:
        return self._call(lambda db: db.facets(), self.session.facets)

    def usage_since(self, since: float, pending: Callable[[], Collection[str]]) -> UsageSnapshot:
        return self._call(
            lambda db: db.usage_since(since, pending),
            lambda: self.session.usage_since(since, pending),
        )
