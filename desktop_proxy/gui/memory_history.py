"""A `HistorySource` held in memory: this session's requests when the SQLite history is off or
cannot be read (see sqlite_history.TrayHistory), and the fake behind the history window's tests
and screenshots."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import date

from desktop_proxy.gui.facade import (
    DayCost,
    HistoryFacets,
    HistoryFilter,
    HistoryStats,
    UsageSnapshot,
    local_day,
)
from desktop_proxy.history.record import RequestRecord


class MemoryHistory:
    """Thread-safe; keeps at most `capacity` records (oldest dropped first)."""

    def __init__(
        self,
        records: Iterable[RequestRecord] = (),
        capacity: int = 1_000_000,
        *,
        notice: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = sorted(records, key=lambda r: r.time)
        self._capacity = capacity
        self._notice = notice
        self.page_calls: list[tuple[int, int]] = []  # (offset, limit) of page() calls
        self.before_calls: list[tuple[str | None, int]] = []  # (before id, limit): page_before

    @property
    def notice(self) -> str | None:
        return self._notice

    @notice.setter
    def notice(self, value: str | None) -> None:
        self._notice = value

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

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

    def page_before(
        self, filters: HistoryFilter, before: RequestRecord | None, limit: int
    ) -> list[RequestRecord]:
        self.before_calls.append((before.id if before is not None else None, limit))
        out: list[RequestRecord] = []
        passed = before is None
        for rec in self._newest_first(filters):
            if not passed:
                passed = rec.id == before.id  # type: ignore[union-attr]
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        if not passed and before is not None:
            # `before` is gone (dropped for capacity): carry on from its time.
            return [r for r in self._newest_first(filters) if r.time < before.time][:limit]
        return out

    def usage_since(self, since: float, pending: Callable[[], Collection[str]]) -> UsageSnapshot:
        with self._lock:
            snapshot = [r for r in self._records if r.time >= since]
            ids = set(pending())
        return UsageSnapshot(
            len(snapshot),
            sum(r.cost_usd or 0.0 for r in snapshot),
            frozenset(r.id for r in snapshot if r.id in ids),
        )

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
