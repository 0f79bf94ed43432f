"""A `HistorySource` held in memory: this session's requests until the SQLite store is wired in,
and the fake behind the history window's tests and screenshots."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import date

from desktop_proxy.gui.facade import (
    DayCost,
    HistoryFacets,
    HistoryFilter,
    HistoryStats,
    local_day,
)
from desktop_proxy.history.record import RequestRecord


class MemoryHistory:
    """Thread-safe; keeps at most `capacity` records (oldest dropped first)."""

    def __init__(self, records: Iterable[RequestRecord] = (), capacity: int = 1_000_000) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = sorted(records, key=lambda r: r.time)
        self._capacity = capacity
        self.page_calls: list[tuple[int, int]] = []

    def add(self, rec: RequestRecord) -> None:
        with self._lock:
            self._records.append(rec)
            if len(self._records) > self._capacity:
                del self._records[: len(self._records) - self._capacity]

    def _newest_first(self, filters: HistoryFilter) -> Iterator[RequestRecord]:
        with self._lock:
            snapshot = list(self._records)
        unfiltered = filters == HistoryFilter()
        for rec in reversed(snapshot):
            if unfiltered or filters.matches(rec):
                yield rec

    def count(self, filters: HistoryFilter) -> int:
        if filters == HistoryFilter():
            with self._lock:
                return len(self._records)
        return sum(1 for _ in self._newest_first(filters))

    def page(self, filters: HistoryFilter, offset: int, limit: int) -> list[RequestRecord]:
        self.page_calls.append((offset, limit))
        if filters == HistoryFilter():
            with self._lock:
                end = len(self._records) - offset
                start = max(0, end - limit)
                return list(reversed(self._records[start : max(0, end)]))
        out: list[RequestRecord] = []
        for i, rec in enumerate(self._newest_first(filters)):
            if i >= offset + limit:
                break
            if i >= offset:
                out.append(rec)
        return out

    def stats(self, filters: HistoryFilter) -> HistoryStats:
        requests = input_tokens = output_tokens = errors = 0
        cost = 0.0
        days: dict[date, list[float]] = defaultdict(lambda: [0, 0.0])
        for rec in self._newest_first(filters):
            requests += 1
            input_tokens += rec.input_tokens or 0
            output_tokens += rec.output_tokens or 0
            cost += rec.cost_usd or 0.0
            errors += 0 if rec.ok else 1
            day = days[local_day(rec.time)]
            day[0] += 1
            day[1] += rec.cost_usd or 0.0
        return HistoryStats(
            requests=requests,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            errors=errors,
            days=tuple(DayCost(d, int(v[0]), v[1]) for d, v in sorted(days.items())),
        )

    def get(self, record_id: str) -> RequestRecord | None:
        with self._lock:
            for rec in reversed(self._records):
                if rec.id == record_id:
                    return rec
        return None

    def facets(self) -> HistoryFacets:
        with self._lock:
            snapshot = list(self._records)
        providers = sorted({r.provider for r in snapshot if r.provider})
        models = sorted({r.model for r in snapshot if r.model})
        return HistoryFacets(tuple(providers), tuple(models))
