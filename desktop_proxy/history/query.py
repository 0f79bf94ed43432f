"""Reading the history: filters, paging, aggregates, export.

Everything here blocks (SQLite); callers on the event loop use the `a…` wrappers, which run the
same calls in a worker thread. Readers work while a gateway writes (WAL): each query sees the
database as of its start.

Paging is newest first (`time DESC, rid DESC`), by offset (`page`) or by keyset (`page_before`,
constant time however deep the page); both and `count` are served by the indexes on time, model,
provider, ok and status.

At the JSON/CSV edge, fields are camelCase (`clientApi`, `costUsd`, …) and times ISO 8601 (UTC).
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.store import (
    BOOL_COLUMNS,
    RECORD_COLUMNS,
    ConnectionFactory,
    clear_all,
    default_connect,
    open_db,
    unpack_body,
)

GroupBy = Literal["day", "model", "provider"]
GROUP_BY: tuple[GroupBy, ...] = ("day", "model", "provider")
ExportFormat = Literal["csv", "jsonl"]

_TEXT_COLUMNS = (
    "id",
    "client_api",
    "path",
    "client",
    "session_id",
    "access_key",
    "requested_model",
    "provider",
    "model",
    "error",
)


# --- time parsing ----------------------------------------------------------------------------

_RELATIVE = re.compile(
    r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|wks)",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, *, now: float | None = None) -> float:
    """A point in time as Unix seconds.

    Accepts relative ages (`90s`, `30m`, `24h`, `7d`, `2w`: that long before now), `now`,
    `today`, `yesterday` (local midnight), and ISO 8601 dates or times (`2025-06-01`,
    `2025-06-01T14:30`, `2025-06-01T14:30:00Z`); times without an offset are local.

    Raises:
        ValueError: with a message saying what is accepted.
    """
    now = time.time() if now is None else now
    value = text.strip()
    low = value.lower()
    if low == "now":
        return now
    if low in ("today", "yesterday"):
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        if low == "yesterday":
            midnight -= timedelta(days=1)
        return midnight.timestamp()
    m = _RELATIVE.fullmatch(value)
    if m:
        unit = m.group("unit").lower()[0]
        return now - float(m.group("n")) * _UNIT_SECONDS[unit]
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: use an age like 24h, 7d, 30m, or an ISO date/time "
            "like 2025-06-01 or 2025-06-01T14:30"
        ) from None
    return dt.timestamp()


def iso_time(ts: float) -> str:
    """Unix seconds → ISO 8601 in UTC with milliseconds, e.g. 2025-06-01T12:00:00.000Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


# --- filters ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Which requests to look at. Empty fields do not filter.

    `models` match the model that ran or the requested one; `text` is a case-insensitive
    substring of the id, client, session, access key name, models, provider, path or error.
    """

    since: float | None = None
    until: float | None = None
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    errors_only: bool = False
    ok_only: bool = False
    status: int | None = None
    client_api: str | None = None
    text: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL WHERE clause (without the keyword; "1" when empty) and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            parts.append("time >= ?")
            params.append(self.since)
        if self.until is not None:
            parts.append("time < ?")
            params.append(self.until)
        if self.providers:
            parts.append(f"provider IN ({_marks(self.providers)})")
            params.extend(self.providers)
        if self.models:
            marks = _marks(self.models)
            parts.append(f"(model IN ({marks}) OR requested_model IN ({marks}))")
            params.extend(self.models)
            params.extend(self.models)
        if self.errors_only:
            parts.append("ok = 0")
        if self.ok_only:
            parts.append("ok = 1")
        if self.status is not None:
            parts.append("status = ?")
            params.append(self.status)
            if not 200 <= self.status < 400:
                parts.append("ok = 0")  # true anyway; lets SQLite use the errors index
        if self.client_api:
            parts.append("client_api = ?")
            params.append(self.client_api)
        if self.text:
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", self.text) + "%"
            parts.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in _TEXT_COLUMNS) + ")")
            params.extend([pattern] * len(_TEXT_COLUMNS))
        return (" AND ".join(parts) or "1"), params


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" for _ in values)


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One stored request. Field names follow RequestRecord (plus the pricing outcome)."""

    rid: int
    id: str
    time: float
    client_api: str
    path: str
    client: str | None
    session_id: str | None
    access_key: str | None
    requested_model: str | None
    provider: str | None
    model: str | None
    upstream_key_id: str | None
    status: int
    ok: bool
    error: str | None
    stream: bool
    ttfb_ms: float | None
    duration_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    usage_estimated: bool
    cost_usd: float | None
    unpriced: bool
    price_source: str | None
    request_body: str | None = None
    response_body: str | None = None

    @property
    def cursor(self) -> PageCursor:
        return PageCursor(self.time, self.rid)

    def to_record(self) -> RequestRecord:
        """The stored request as a RequestRecord (bodies as UTF-8 bytes when loaded), for
        views that show live and stored requests alike."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rid"}
        for name in ("request_body", "response_body"):
            body = values[name]
            values[name] = body.encode("utf-8") if body is not None else None
        return RequestRecord(**values)

    def to_json(self, *, bodies: bool = False) -> dict[str, Any]:
        """The camelCase form used by `history --json` and JSONL export."""
        out: dict[str, Any] = {}
        for name in JSON_FIELDS:
            value = getattr(self, name)
            if name == "time":
                value = iso_time(value)
            elif isinstance(value, float):
                value = _round(value, name)
            out[camel(name)] = value
        if bodies:
            out["requestBody"] = self.request_body
            out["responseBody"] = self.response_body
        return out


# Fields in JSON/CSV output, in order: the stored columns, bodies aside.
JSON_FIELDS: tuple[str, ...] = RECORD_COLUMNS


def _round(value: float, name: str) -> float:
    if not math.isfinite(value):
        return value
    return round(value, 10) if name == "cost_usd" else round(value, 1)


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a newest-first page ended: pass it to `page_before` for the next one."""

    time: float
    rid: int


@dataclass(frozen=True, slots=True)
class AggregateRow:
    """Totals for one group (a day, a provider's model, or a provider).

    `cost_usd` sums the priced requests only; `unpriced_requests` had usage but no known price.
    """

    key: str | None
    provider: str | None = None
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    priced_requests: int = 0
    unpriced_requests: int = 0
    estimated_requests: int = 0
    first_time: float | None = None
    last_time: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        out = {camel(k): v for k, v in data.items()}
        out["costUsd"] = round(self.cost_usd, 10)
        for key in ("firstTime", "lastTime"):
            out[key] = iso_time(out[key]) if out[key] is not None else None
        return out


_SELECT = "rid, " + ", ".join(RECORD_COLUMNS)
_SELECT_BODIES = (
    _SELECT + ", (SELECT request_body FROM bodies b WHERE b.rid = requests.rid), "
    "(SELECT response_body FROM bodies b WHERE b.rid = requests.rid)"
)
_ORDER = "ORDER BY time DESC, rid DESC"


def _entry(row: Sequence[Any]) -> HistoryEntry:
    values: list[Any] = list(row)
    for i, name in enumerate(RECORD_COLUMNS, start=1):
        if name in BOOL_COLUMNS:
            values[i] = bool(values[i])
    return HistoryEntry(*values)


def _aggregate_sql(by: GroupBy | None, where: str, *, utc: bool) -> str:
    """Totals grouped `by` (None: one row over everything)."""
    tail = ""
    key, provider = "NULL", "NULL"
    if by == "day":
        key = "date(time, 'unixepoch')" if utc else "date(time, 'unixepoch', 'localtime')"
        tail = "GROUP BY 1 ORDER BY 1"
    elif by == "model":
        key, provider = "model", "provider"
        tail = (
            "GROUP BY provider, model "
            "ORDER BY coalesce(sum(cost_usd), 0) DESC, count(*) DESC, provider, model"
        )
    elif by == "provider":
        key = "provider"
        tail = "GROUP BY provider ORDER BY coalesce(sum(cost_usd), 0) DESC, count(*) DESC, provider"
    return (
        f"SELECT {key}, {provider}, count(*), sum(ok = 0), "
        "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
        "coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_write_tokens), 0), "
        "coalesce(sum(reasoning_tokens), 0), coalesce(sum(cost_usd), 0), "
        "count(cost_usd), sum(unpriced), sum(usage_estimated), min(time), max(time) "
        f"FROM requests WHERE {where} {tail}"
    )


def _agg_row(row: Sequence[Any]) -> AggregateRow:
    return AggregateRow(
        key=row[0],
        provider=row[1],
        requests=int(row[2]),
        errors=int(row[3] or 0),
        input_tokens=int(row[4]),
        output_tokens=int(row[5]),
        cache_read_tokens=int(row[6]),
        cache_write_tokens=int(row[7]),
        reasoning_tokens=int(row[8]),
        cost_usd=float(row[9]),
        priced_requests=int(row[10]),
        unpriced_requests=int(row[11] or 0),
        estimated_requests=int(row[12] or 0),
        first_time=row[13],
        last_time=row[14],
    )


# --- the reader ------------------------------------------------------------------------------


class HistoryReader:
    """Queries over the history database. Thread-safe (one connection behind a lock).

    A missing database reads as empty and is not created. Errors are sqlite3.Error (damaged or
    unreadable file) or store.SchemaTooNewError.
    """

    def __init__(self, path: Path, *, connect: ConnectionFactory = default_connect) -> None:
        self.path = path
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> HistoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> sqlite3.Connection | None:
        """The shared connection (call with the lock held); None while no database exists."""
        if self._conn is None:
            if not self.path.exists():
                return None
            self._conn = open_db(self.path, connect=self._connect)
        return self._conn

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            if conn is None:
                return []
            return list(conn.execute(sql, params).fetchall())

    # --- queries ------------------------------------------------------------------------------

    def count(self, flt: HistoryFilter | None = None) -> int:
        where, params = (flt or HistoryFilter()).where()
        rows = self._fetch(f"SELECT count(*) FROM requests WHERE {where}", params)
        return int(rows[0][0]) if rows else 0

    def page(
        self,
        flt: HistoryFilter | None = None,
        offset: int = 0,
        limit: int = 100,
        *,
        bodies: bool = False,
    ) -> list[HistoryEntry]:
        """`limit` entries, newest first, skipping the `offset` newest."""
        where, params = (flt or HistoryFilter()).where()
        sql = f"SELECT {_SELECT} FROM requests WHERE {where} {_ORDER} LIMIT ? OFFSET ?"
        entries = [_entry(r) for r in self._fetch(sql, [*params, max(0, limit), max(0, offset)])]
        return self._with_bodies(entries) if bodies else entries

    def page_before(
        self,
        flt: HistoryFilter | None = None,
        cursor: PageCursor | None = None,
        limit: int = 100,
        *,
        bodies: bool = False,
    ) -> list[HistoryEntry]:
        """Keyset paging: `limit` entries older than `cursor` (the newest when None)."""
        where, params = (flt or HistoryFilter()).where()
        if cursor is not None:
            where = f"({where}) AND (time < ? OR (time = ? AND rid < ?))"
            params = [*params, cursor.time, cursor.time, cursor.rid]
        sql = f"SELECT {_SELECT} FROM requests WHERE {where} {_ORDER} LIMIT ?"
        entries = [_entry(r) for r in self._fetch(sql, [*params, max(0, limit)])]
        return self._with_bodies(entries) if bodies else entries

    def get(self, request_id: str, *, bodies: bool = True) -> HistoryEntry | None:
        """One request by its id (with bodies by default)."""
        rows = self._fetch(f"SELECT {_SELECT} FROM requests WHERE id = ?", [request_id])
        if not rows:
            return None
        entry = _entry(rows[0])
        return self._with_bodies([entry])[0] if bodies else entry

    def _with_bodies(self, entries: list[HistoryEntry]) -> list[HistoryEntry]:
        if not entries:
            return entries
        rids = [e.rid for e in entries]
        rows = self._fetch(
            f"SELECT rid, request_body, response_body FROM bodies WHERE rid IN ({_marks(rids)})",
            rids,
        )
        found = {r[0]: (r[1], r[2]) for r in rows}
        out = []
        for e in entries:
            req, resp = found.get(e.rid, (None, None))
            out.append(_replace_bodies(e, req, resp))
        return out

    def aggregate(
        self, flt: HistoryFilter | None = None, by: GroupBy = "model", *, utc: bool = False
    ) -> list[AggregateRow]:
        """Totals per day (local unless `utc`; oldest first), per provider+model, or per
        provider (most expensive first)."""
        if by not in GROUP_BY:
            raise ValueError(f"cannot group by {by!r}; use one of {', '.join(GROUP_BY)}")
        where, params = (flt or HistoryFilter()).where()
        return [_agg_row(r) for r in self._fetch(_aggregate_sql(by, where, utc=utc), params)]

    def totals(self, flt: HistoryFilter | None = None) -> AggregateRow:
        """Totals over everything the filter matches."""
        where, params = (flt or HistoryFilter()).where()
        rows = self._fetch(_aggregate_sql(None, where, utc=True), params)
        if not rows or not rows[0][2]:
            return AggregateRow(key=None)
        return _agg_row(rows[0])

    def facets(self, flt: HistoryFilter | None = None) -> tuple[list[str], list[str]]:
        """The providers and the models (that ran) seen, sorted: for filter pickers."""
        where, params = (flt or HistoryFilter()).where()
        providers = self._fetch(
            f"SELECT DISTINCT provider FROM requests WHERE provider IS NOT NULL AND ({where})",
            params,
        )
        models = self._fetch(
            f"SELECT DISTINCT model FROM requests WHERE model IS NOT NULL AND ({where})", params
        )
        return sorted(r[0] for r in providers), sorted(r[0] for r in models)

    def iter_entries(
        self,
        flt: HistoryFilter | None = None,
        *,
        bodies: bool = False,
        limit: int | None = None,
        batch: int = 500,
    ) -> Iterator[HistoryEntry]:
        """Stream matching entries newest first, `batch` rows at a time, on a connection of its
        own (one consistent snapshot; the shared connection stays free meanwhile)."""
        if not self.path.exists():
            return
        where, params = (flt or HistoryFilter()).where()
        columns = _SELECT_BODIES if bodies else _SELECT
        sql = f"SELECT {columns} FROM requests WHERE {where} {_ORDER}"
        if limit is not None:
            sql += " LIMIT ?"
            params = [*params, max(0, limit)]
        conn = open_db(self.path, connect=self._connect)
        try:
            conn.execute("BEGIN")  # one snapshot for the whole export
            cur = conn.execute(sql, params)
            while True:
                rows = cur.fetchmany(batch)
                if not rows:
                    break
                for row in rows:
                    entry = _entry(row[: len(RECORD_COLUMNS) + 1])
                    if bodies:
                        entry = _replace_bodies(entry, row[-2], row[-1])
                    yield entry
            conn.execute("COMMIT")
        finally:
            conn.close()

    def export(
        self,
        out: TextIO,
        fmt: ExportFormat,
        flt: HistoryFilter | None = None,
        *,
        bodies: bool = False,
        limit: int | None = None,
    ) -> int:
        """Write matching entries to `out` as CSV (with a header) or JSON Lines, streaming.
        Returns the number of entries written."""
        if fmt == "csv":
            return export_csv(self.iter_entries(flt, bodies=bodies, limit=limit), out, bodies)
        if fmt == "jsonl":
            return export_jsonl(self.iter_entries(flt, bodies=bodies, limit=limit), out, bodies)
        raise ValueError(f"unknown export format {fmt!r}; use csv or jsonl")

    def clear(self) -> int:
        """Delete every stored request (and body), then VACUUM. Returns how many were deleted."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                return 0
            return clear_all(conn)

    # --- async wrappers -----------------------------------------------------------------------

    async def acount(self, flt: HistoryFilter | None = None) -> int:
        return await asyncio.to_thread(self.count, flt)

    async def apage(
        self,
        flt: HistoryFilter | None = None,
        offset: int = 0,
        limit: int = 100,
        *,
        bodies: bool = False,
    ) -> list[HistoryEntry]:
        return await asyncio.to_thread(self.page, flt, offset, limit, bodies=bodies)

    async def apage_before(
        self,
        flt: HistoryFilter | None = None,
        cursor: PageCursor | None = None,
        limit: int = 100,
        *,
        bodies: bool = False,
    ) -> list[HistoryEntry]:
        return await asyncio.to_thread(self.page_before, flt, cursor, limit, bodies=bodies)

    async def aget(self, request_id: str, *, bodies: bool = True) -> HistoryEntry | None:
        return await asyncio.to_thread(self.get, request_id, bodies=bodies)

    async def aaggregate(
        self, flt: HistoryFilter | None = None, by: GroupBy = "model", *, utc: bool = False
    ) -> list[AggregateRow]:
        return await asyncio.to_thread(self.aggregate, flt, by, utc=utc)

    async def atotals(self, flt: HistoryFilter | None = None) -> AggregateRow:
        return await asyncio.to_thread(self.totals, flt)

    async def aexport(
        self,
        out: TextIO,
        fmt: ExportFormat,
        flt: HistoryFilter | None = None,
        *,
        bodies: bool = False,
    ) -> int:
        return await asyncio.to_thread(self.export, out, fmt, flt, bodies=bodies)

    async def afacets(self, flt: HistoryFilter | None = None) -> tuple[list[str], list[str]]:
        return await asyncio.to_thread(self.facets, flt)

    async def aclear(self) -> int:
        return await asyncio.to_thread(self.clear)


def _replace_bodies(entry: HistoryEntry, request: object, response: object) -> HistoryEntry:
    """`entry` with its bodies, as read from the `bodies` table (text, or compressed)."""
    values = {f.name: getattr(entry, f.name) for f in fields(entry)}
    values["request_body"] = unpack_body(request)
    values["response_body"] = unpack_body(response)
    return HistoryEntry(**values)


# --- export ----------------------------------------------------------------------------------


def _csv_value(value: object, name: str) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if name == "cost_usd":
            return f"{value:.10f}".rstrip("0").rstrip(".") or "0"
        return _round(value, name)
    return value


def export_csv(
    entries: Iterable[HistoryEntry | RequestRecord], out: TextIO, bodies: bool = False
) -> int:
    """CSV with a camelCase header row; times ISO 8601 (UTC), booleans true/false. Takes
    stored entries (the CLI) or records (the History window reads those)."""
    writer = csv.writer(out, lineterminator="\n")
    header = [camel(n) for n in JSON_FIELDS]
    if bodies:
        header += ["requestBody", "responseBody"]
    writer.writerow(header)
    n = 0
    for e in entries:
        row = [
            iso_time(e.time) if name == "time" else _csv_value(getattr(e, name), name)
            for name in JSON_FIELDS
        ]
        if bodies:
            row += [_body_text(e.request_body), _body_text(e.response_body)]
        writer.writerow(row)
        n += 1
    return n


def _body_text(body: str | bytes | None) -> str:
    if isinstance(body, bytes):  # a RequestRecord's (stored entries hold text)
        return body.decode("utf-8", "replace")
    return body or ""


def export_jsonl(entries: Iterator[HistoryEntry], out: TextIO, bodies: bool = False) -> int:
    """One JSON object per line, the same fields as `history --json`."""
    n = 0
    for e in entries:
        out.write(json.dumps(e.to_json(bodies=bodies), ensure_ascii=False) + "\n")
        n += 1
    return n
