"""The SQLite history database: schema and migrations, row conversion, body redaction, retention.

One file, `history.sqlite3` in the data directory, in WAL mode so that readers (the CLI, the
tray's history window) never block the gateway's single writer thread and vice versa.

Schema:
- `requests`: one row per request, one column per `RequestRecord` field (snake_case), plus the
  pricing outcome (`cost_usd`, `unpriced`, `price_source`). `id` is unique, so a batch retried
  after an uncertain commit never produces duplicates.
- `bodies`: request/response bodies, only when body storage is on, keyed by the request's rowid
  (kept apart so that listing and counting never page through megabytes of text). A body of
  BODY_PACK_FROM bytes or more is stored zlib-compressed, as a BLOB (`pack_body`); smaller ones
  as TEXT. Readers go through `unpack_body`.

Nothing secret is ever stored: records carry no headers; the access key is stored by *name* and
the upstream key by a short id. As defence in depth, strings shaped like well-known API keys are
masked in bodies and error messages, and base64 payloads (data: URLs, image/document/audio
sources) are replaced by a placeholder such as "[base64 image/png, 123456 bytes]".

Versioning: `PRAGMA user_version` holds the schema version; `MIGRATIONS[i]` moves a database
from version i to i+1. A database newer than this code is refused (`SchemaTooNewError`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import re
import sqlite3
import stat
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from desktop_proxy.history.pricing import Price
from desktop_proxy.history.record import RecordValues, RequestRecord, values_of

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DB_FILENAME = "history.sqlite3"
BODY_LIMIT = 256 * 1024  # bytes kept of each request/response body
# Raw bytes of a body worth capturing for history (the gateway may stop collecting a response
# beyond this): base64 payloads are shrunk to placeholders first, then BODY_LIMIT is kept.
CAPTURE_LIMIT = 4 * 1024 * 1024
# Bodies this large are compressed: a Claude Code request (system prompt, tools, the whole
# conversation: 50–200 KB of JSON) shrinks 3–4 times at zlib's fastest level, for ~1 ms of the
# writer process's CPU per 150 KB. The same history.maxSizeMb then keeps bodies 3–4 times as
# long, and the database writes (WAL, checkpoints) shrink as much. Small bodies stay readable
# text: compressing them would cost more CPU than it saves space.
BODY_PACK_FROM = 8 * 1024
BUSY_TIMEOUT_MS = 2000

ConnectionFactory = Callable[[Path], sqlite3.Connection]

# The sqlite3 module binds int, float, str and bytearray directly; anything else, None and bool
# included, goes through its adapter lookup, which (Python 3.11) fails by formatting an
# AttributeError message before binding the value as it is. That cost about 0.2 µs per NULL,
# several µs per history row. A registered adapter is a dictionary hit instead.
_none: Callable[[None], None] = cast(Callable[[None], None], {}.get)  # a C call returning None
sqlite3.register_adapter(type(None), _none)
sqlite3.register_adapter(bool, int)


class HistoryError(Exception):
    """The history database cannot be used."""


class SchemaTooNewError(HistoryError):
    """The database was written by a newer desktop-proxy."""


# Columns of `requests`, in insert order: RequestRecord's fields but the bodies, which come last.
RECORD_COLUMNS: tuple[str, ...] = RecordValues._fields[:-2]
if RecordValues._fields[-2:] != ("request_body", "response_body"):  # pragma: no cover
    raise RuntimeError("the bodies must be RecordValues' last fields")
_PRICE_AT = RECORD_COLUMNS.index("cost_usd")  # cost_usd, unpriced, price_source: the last three
_ERROR_AT = RECORD_COLUMNS.index("error")
BOOL_COLUMNS = frozenset({"ok", "stream", "usage_estimated", "unpriced"})

_CREATE_V1: tuple[str, ...] = (
    """
    CREATE TABLE requests (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        time REAL NOT NULL,
        client_api TEXT NOT NULL DEFAULT '',
        path TEXT NOT NULL DEFAULT '',
        client TEXT,
        session_id TEXT,
        access_key TEXT,
        requested_model TEXT,
        provider TEXT,
        model TEXT,
        upstream_key_id TEXT,
        status INTEGER NOT NULL DEFAULT 0,
        ok INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        stream INTEGER NOT NULL DEFAULT 0,
        ttfb_ms REAL,
        duration_ms REAL,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cache_read_tokens INTEGER,
        cache_write_tokens INTEGER,
        reasoning_tokens INTEGER,
        usage_estimated INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL,
        unpriced INTEGER NOT NULL DEFAULT 0,
        price_source TEXT
    )
    """,
    """
    CREATE TABLE bodies (
        rid INTEGER PRIMARY KEY,
        request_body TEXT,
        response_body TEXT
    )
    """,
    # The history window: newest first, overall and filtered by model, provider or status.
    "CREATE INDEX requests_time ON requests (time)",
    "CREATE INDEX requests_model_time ON requests (model, time)",
    "CREATE INDEX requests_requested_model_time ON requests (requested_model, time)",
    "CREATE INDEX requests_provider_time ON requests (provider, time)",
    "CREATE INDEX requests_ok_time ON requests (ok, time)",
    "CREATE INDEX requests_status_time ON requests (status, time)",
)

# Version 2: an index costs every insert about 0.4 µs (docs/performance.md, "History"). Errors
# and statuses, which the window filters by, get one partial index that only failed requests
# enter; a status filter scans by time.
_ERRORS_INDEX_V2: tuple[str, ...] = (
    "DROP INDEX IF EXISTS requests_ok_time",
    "DROP INDEX IF EXISTS requests_status_time",
    "CREATE INDEX requests_errors_time ON requests (time) WHERE ok = 0",
)

# MIGRATIONS[i] upgrades schema version i to i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_CREATE_V1, _ERRORS_INDEX_V2)
SCHEMA_VERSION = len(MIGRATIONS)


# --- errors ----------------------------------------------------------------------------------

_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


def is_corruption(exc: BaseException) -> bool:
    """Whether `exc` says the database file is damaged or not a database at all."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _CORRUPT_CODES:
        return True
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def describe_error(exc: BaseException) -> str:
    """A short, user-facing description of a database error."""
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "full" in low:
        return f"the disk is full ({text})"
    if "locked" in low or "busy" in low:
        return f"the database is locked by another program ({text})"
    if is_corruption(exc):
        return f"the database file is damaged ({text})"
    return text


# --- opening ---------------------------------------------------------------------------------


def default_connect(path: Path) -> sqlite3.Connection:
    """A plain connection in autocommit mode (transactions are explicit), usable from any thread
    (callers serialise access themselves)."""
    return sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION; returns the version found.

    Raises:
        SchemaTooNewError: the database comes from a newer desktop-proxy.
    """
    version = _schema_version(conn)
    if version == SCHEMA_VERSION:
        return version
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"the history database has schema version {version}, newer than this "
            f"desktop-proxy understands ({SCHEMA_VERSION}); upgrade desktop-proxy"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _schema_version(conn)  # another process may have migrated meanwhile
        for step in MIGRATIONS[found:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return version


def open_db(
    path: Path,
    *,
    connect: ConnectionFactory = default_connect,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
) -> sqlite3.Connection:
    """Open (creating if needed) the history database at `path`, in WAL mode, migrated.

    Raises:
        sqlite3.Error: the file cannot be opened or is damaged (see `is_corruption`).
        SchemaTooNewError: the database comes from a newer desktop-proxy.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    _make_private(path)
    try:
        conn.isolation_level = None
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if _schema_version(conn) == 0:
            # Only takes effect before the first table exists: lets retention give space back.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            log.warning("history database %s is not in WAL mode (%s)", path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _make_private(path: Path) -> None:
    """Bodies hold prompts: keep the database readable by the user only (POSIX)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)


def quick_check(conn: sqlite3.Connection) -> str | None:
    """None when the database passes SQLite's quick integrity check, else the first problem."""
    rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    first = str(rows[0][0]) if rows else "no answer"
    return None if first == "ok" else first


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename a damaged database (and its -wal/-shm files) to `<name>.corrupt-YYYYmmdd-HHMMSS`.

    Returns the new path of the database file.
    """
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    path.replace(target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            try:
                side.replace(target.with_name(target.name + suffix))
            except OSError:
                side.unlink(missing_ok=True)
    return target


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


# --- bodies: base64 placeholders, secret masking, size cap -------------------------------------

# Base64 payloads are found with substring searches and `bytes.translate` (C speed, on bytes):
# bodies are prepared in the writer thread, and a regex crawling over a 20 MB image would hold
# the GIL away from the event loop for a noticeable time.
_B64_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-\\"
_NOT_B64 = re.compile(rb"[^A-Za-z0-9+/=_\\-]")
# A JSON string value: base64 of >= 64 characters under keys that carry payloads, and of
# >= 1024 characters under any key (b64_json, thinking signatures, audio, embeddings…).
_JSON_KEY = re.compile(rb'"([A-Za-z0-9_]{1,40})"\s*:\s*"')
_PAYLOAD_KEYS = frozenset(
    {b"data", b"file_data", b"b64_json", b"image_data", b"bytes", b"audio_data", b"inline_data"}
)
_MIN_PAYLOAD = 64
_MIN_ANY = 1024
_MEDIA_TYPE = re.compile(
    rb'"(?:media_type|mime_type|mimeType|mediaType|format)"\s*:\s*"([^"]{1,80})"'
)
_MIME = re.compile(rb"[A-Za-z0-9.+-]{1,60}(?:\\?/[A-Za-z0-9.+-]{1,60})?")
_BAD_PARAMS = re.compile(rb"[\s\"'<>(),]")


_SAMPLE = 256
_FULL_CHECK = 64 * 1024


def _looks_b64(data: bytes, start: int, end: int) -> bool:
    """Whether data[start:end] is base64. Runs over 64 KiB are checked on 16 evenly spread
    samples: a JSON string holds no raw quote, so a huge quote-delimited run that is base64
    wherever we look is a payload, and checking every byte of 20 MB would cost real time."""
    if end - start <= _FULL_CHECK:
        return not data[start:end].translate(None, _B64_BYTES)
    step = (end - start - _SAMPLE) // 15
    return not any(
        data[i : i + _SAMPLE].translate(None, _B64_BYTES)
        for i in range(start, end - _SAMPLE + 1, max(step, 1))
    )


def _b64_end(data: bytes, start: int) -> int:
    """Where the base64 run starting at `start` ends (a JSON string ends at its quote)."""
    quote = data.find(b'"', start)
    end = len(data) if quote < 0 else quote
    if _looks_b64(data, start, end):
        return end
    m = _NOT_B64.search(data, start, end)
    return m.start() if m else end


def _placeholder(kind: bytes, data: bytes, start: int, end: int) -> bytes:
    chars = end - start - data.count(b"\\", start, end)
    padding = 0
    while padding < 2 and end - padding > start and data[end - padding - 1] == 0x3D:  # "="
        padding += 1
    size = max(0, chars * 3 // 4 - padding)
    name = kind.replace(b"\\", b"").decode("ascii", "replace") or "data"
    return f"[base64 {name}, {size} bytes]".encode()


def _redact_data_urls(data: bytes) -> bytes:
    out: list[bytes] = []
    pos = search = 0
    while (marker := data.find(b";base64,", search)) >= 0:
        search = marker + 8
        start = data.rfind(b"data:", max(0, marker - 200), marker)
        if start < 0:
            continue
        params = data[start + 5 : marker]  # "image/png", "image\/png;name=x.png" or ""
        kind = params.split(b";", 1)[0]
        if _BAD_PARAMS.search(params) or (kind and _MIME.fullmatch(kind) is None):
            continue
        end = _b64_end(data, search)
        if end - search < 16:
            continue
        out += (data[pos:start], _placeholder(kind, data, search, end))
        pos = search = end
    if not out:
        return data
    out.append(data[pos:])
    return b"".join(out)


def _media_type_near(data: bytes, start: int, end: int) -> bytes:
    """The media type named in the JSON object around data[start:end], else b"data"."""
    left = data.rfind(b"{", max(0, start - 400), start)
    right = data.find(b"}", end, end + 400)
    found = _MEDIA_TYPE.search(data, left if left >= 0 else start, right + 1 if right >= 0 else end)
    return found.group(1) if found else b"data"


# A body shorter than _MIN_ANY can only hold a payload under one of the payload keys: one search
# in C settles most bodies before the per-value loop below.
_PAYLOAD_KEY = re.compile(rb'"(?:' + rb"|".join(sorted(_PAYLOAD_KEYS)) + rb')"')


def _redact_json_values(data: bytes) -> bytes:
    if len(data) < _MIN_ANY and _PAYLOAD_KEY.search(data) is None:
        return data
    out: list[bytes] = []
    pos = search = 0
    while (m := _JSON_KEY.search(data, search)) is not None:
        value = m.end()
        end = data.find(b'"', value)
        if end < 0:
            end = len(data)  # a body cut short in the middle of a value
        search = end + 1
        length = end - value
        if length < _MIN_PAYLOAD or (length < _MIN_ANY and m.group(1) not in _PAYLOAD_KEYS):
            continue
        if data[value : value + _SAMPLE].translate(None, _B64_BYTES):
            continue  # text, not base64 (a quick look first: values can be huge)
        if not _looks_b64(data, value, end):
            continue
        kind = _media_type_near(data, m.start(), end)
        out += (data[pos:value], _placeholder(kind, data, value, end))
        pos = end
    if not out:
        return data
    out.append(data[pos:])
    return b"".join(out)


def redact_base64_bytes(data: bytes) -> bytes:
    """Replace base64 payloads (data: URLs, JSON values) with "[base64 image/png, N bytes]"."""
    if len(data) < _MIN_PAYLOAD:
        return data
    if b";base64," in data:
        data = _redact_data_urls(data)
    return _redact_json_values(data)


def redact_base64(text: str) -> str:
    """`redact_base64_bytes` for text."""
    return redact_base64_bytes(text.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")


# Shapes of well-known API keys and bearer tokens (defence in depth: records carry no headers).
# One pattern per literal prefix, which `re` finds with a fast substring search; a match must
# not continue a word ("task-management-…" is not a key).
_KEY_PREFIXES = ("sk-", "gsk_", "xai-", "AIza", "dp-")
_BEARER_WORDS = ("Bearer", "bearer", "BEARER")
_SECRET_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    *((prefix, re.compile(re.escape(prefix) + r"[A-Za-z0-9_\-]{16,}")) for prefix in _KEY_PREFIXES),
    *(
        (word, re.compile(word + r"[ \t\n\r\f\v]+[A-Za-z0-9._~+/\-]{16,}=*"))
        for word in _BEARER_WORDS
    ),
)


def mask_secrets(text: str) -> str:
    """Mask strings shaped like API keys (`sk-…`, `AIza…`) and bearer tokens."""
    for literal, pattern in _SECRET_SHAPES:
        if literal not in text:
            continue

        def repl(m: re.Match[str], literal: str = literal, text: str = text) -> str:
            start = m.start()
            if start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
                return m.group(0)
            return literal + (" [redacted]" if literal.lower() == "bearer" else "[redacted]")

        text = pattern.sub(repl, text)
    return text


def cap_text(text: str, limit: int = BODY_LIMIT) -> str:
    """At most `limit` bytes of UTF-8 (cut at a character boundary), with a note when cut."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", "ignore")
    return kept + f"\n…[truncated: {len(data)} bytes in total, {limit} kept]"


# Bodies are searched for key shapes and base64 payloads in one pass first: every one of them
# lies in a run of at least 16 of these characters, and most bodies have few such runs (JSON
# keys like "completion_tokens"), or none. Only a body where a run could be one gets the full
# searches below, which cost microseconds per body even when they find nothing.
_RUN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-\\.~")
_RUN_TABLE = bytes(0x61 if c in _RUN_CHARS else 0x20 for c in range(256))
_RUN = b"a" * 16
_KEY_RUN = 16 + min(len(p) for p in _KEY_PREFIXES)  # a key: its prefix and 16 more
_KEY_PREFIXES_BYTES = tuple(p.encode() for p in _KEY_PREFIXES)
_BEARER_WORDS_BYTES = tuple(w.encode() for w in _BEARER_WORDS)


def _may_hold_secret_or_payload(data: bytes) -> bool:
    """False only when neither `redact_base64_bytes` nor `mask_secrets` could change `data`."""
    runs = data.translate(_RUN_TABLE)
    start = runs.find(_RUN)
    while start >= 0:
        end = runs.find(b" ", start)
        end = len(runs) if end < 0 else end
        if end - start >= _MIN_PAYLOAD:
            return True  # long enough to be a base64 value
        if data.endswith(b";base64,", 0, start):
            return True  # a data: URL's payload
        if end - start >= _KEY_RUN:
            run = data[start:end]
            if any(prefix in run for prefix in _KEY_PREFIXES_BYTES):
                return True
        before = data[max(0, start - 64) : start].rstrip()
        if before.endswith(_BEARER_WORDS_BYTES) or (not before and start > 64):
            return True  # a bearer token (or so much white space that we cannot tell)
        start = runs.find(_RUN, end)
    return False


def _unchanged(text: str) -> str:
    return text


def prepare_body(raw: bytes | str | None, limit: int = BODY_LIMIT) -> str | None:
    """A body as stored: text, base64 payloads replaced, key-shaped strings masked, size-capped."""
    if raw is None:
        return None
    data = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw).encode("utf-8", "replace")
    mask = _unchanged
    if _may_hold_secret_or_payload(data):
        data = redact_base64_bytes(data)
        mask = mask_secrets
    if len(data) <= limit:
        return mask(data.decode("utf-8", "replace"))
    # Only what is kept gets decoded and masked (with a margin, so a key cut at the limit
    # is still recognised).
    head = mask(data[: limit + 512].decode("utf-8", "ignore"))
    kept = head.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")
    return kept + f"\n…[truncated: {len(data)} bytes in total, {limit} kept]"


def pack_body(text: str | None) -> str | bytes | None:
    """A prepared body as stored: compressed when large (see BODY_PACK_FROM)."""
    if text is None or len(text) < BODY_PACK_FROM:
        return text
    return zlib.compress(text.encode("utf-8", "surrogatepass"), 1)


def unpack_body(value: object) -> str | None:
    """A stored body as text, whichever way it was stored. Never raises: a damaged one reads as
    a note saying so."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return zlib.decompress(value).decode("utf-8", "replace")
        except (zlib.error, ValueError) as exc:
            return f"[body unreadable: damaged compressed data ({exc})]"
    return str(value)


# --- rows ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """A record converted for insertion: the `requests` values (RECORD_COLUMNS order) and the
    prepared bodies (None when not stored)."""

    values: tuple[Any, ...]
    request_body: str | bytes | None = None  # as stored (`pack_body`)
    response_body: str | bytes | None = None

    @property
    def body_size(self) -> int:
        return len(self.request_body or "") + len(self.response_body or "")

    def without_bodies(self) -> Row:
        return Row(self.values)

    def sanitized(self) -> Row:
        """The same row with every value turned into what its column expects."""
        values = tuple(fix(value) for fix, value in zip(_FIXES, self.values, strict=True))
        return Row(values, _stored_body(self.request_body), _stored_body(self.response_body))


def _int_or_none(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def _float_or_none(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _stored_body(value: object) -> str | bytes | None:
    return value if isinstance(value, bytes) else _text(value)


def _time_or_now(value: object) -> float:
    return _float_or_none(value) or time.time()


def _flag(value: object) -> int:
    return 1 if value else 0


def _fix_for(column: str) -> Callable[[Any], Any]:
    if column == "time":
        return _time_or_now
    if column in ("id", "client_api", "path"):
        return lambda v: _text(v) or ""
    if column == "status":
        return lambda v: _int_or_none(v) or 0
    if column == "error":
        return lambda v: None if v is None else mask_secrets(str(v))
    if column in BOOL_COLUMNS:
        return _flag
    if column.endswith("_tokens"):
        return _int_or_none
    if column.endswith("_ms") or column == "cost_usd":
        return _float_or_none
    return _text


_FIXES: tuple[Callable[[Any], Any], ...] = tuple(_fix_for(c) for c in RECORD_COLUMNS)
# SQLite would store an infinite float as it is (and NaN as NULL, so a NaN time would lose the
# row), and JSON cannot carry one: the only odd values it does not refuse by itself.
_FLOATS_AT = tuple(i for i, fix in enumerate(_FIXES) if fix in (_float_or_none, _time_or_now))


def _odd_floats(values: tuple[Any, ...]) -> bool:
    for i in _FLOATS_AT:
        value = values[i]
        if value.__class__ is float and not math.isfinite(value):
            return True
    return False


def record_to_row(
    rec: RequestRecord | RecordValues,
    price: Price,
    *,
    store_bodies: bool,
    body_limit: int = BODY_LIMIT,
) -> Row:
    """Convert a finished record, priced. Values are taken as they are: the records come from
    our own code, and `insert_rows` falls back to `Row.sanitized` for a value SQLite refuses."""
    values = values_of(rec)
    head = values[:_PRICE_AT]
    if values.error:
        head = (*head[:_ERROR_AT], mask_secrets(str(values.error)), *head[_ERROR_AT + 1 :])
    row_values = (*head, price.cost_usd, 1 if price.unpriced else 0, price.source)
    row = Row(row_values)
    if store_bodies:
        row.request_body = pack_body(prepare_body(values.request_body, body_limit))
        row.response_body = pack_body(prepare_body(values.response_body, body_limit))
    return row.sanitized() if _odd_floats(row_values) else row


# Rows go in as multi-row INSERTs, a few statements per batch, not one executemany step per
# row: the sqlite3 module releases and retakes the GIL around every step, which costs far more
# than the insert itself when another thread wants the GIL. Statements come in a few fixed sizes
# so that SQLite compiles each once (the connection's statement cache keeps them): a statement
# for exactly N rows, N varying per batch, was compiled anew every time, and compiling thousands
# of placeholders cost more than inserting the rows (docs/performance.md, "History").
_STATEMENT_ROWS = (256, 64, 16, 4, 1)  # 256 × the columns stays under SQLite's 32766 parameters


@functools.lru_cache(maxsize=len(_STATEMENT_ROWS))
def _insert_sql(rows: int) -> str:
    one = "(" + ", ".join("?" for _ in RECORD_COLUMNS) + ")"
    return (
        f"INSERT OR IGNORE INTO requests ({', '.join(RECORD_COLUMNS)}) "
        f"VALUES {', '.join(one for _ in range(rows))}"
    )


@functools.lru_cache(maxsize=len(_STATEMENT_ROWS))
def _insert_bodies_sql(rows: int) -> str:
    return "INSERT OR REPLACE INTO bodies (rid, request_body, response_body) VALUES " + ", ".join(
        "(?, ?, ?)" for _ in range(rows)
    )


@functools.lru_cache(maxsize=len(_STATEMENT_ROWS))
def _insert_bodies_by_id_sql(rows: int) -> str:
    # Bodies attach to the request's rowid, looked up by id in the same statement.
    return (
        "INSERT OR REPLACE INTO bodies (rid, request_body, response_body) "
        "SELECT r.rid, v.column2, v.column3 FROM (VALUES "
        + ", ".join("(?, ?, ?)" for _ in range(rows))
        + ") AS v JOIN requests AS r ON r.id = v.column1"
    )


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """`items` cut into pieces of the sizes in _STATEMENT_ROWS, largest first."""
    start = 0
    for size in _STATEMENT_ROWS:
        while len(items) - start >= size:
            yield items[start : start + size]
            start += size


def _flat_values(rows: Sequence[Row]) -> list[Any]:
    return list(itertools.chain.from_iterable([row.values for row in rows]))


def _has_bodies(row: Row) -> bool:
    return row.request_body is not None or row.response_body is not None


def _max_rid(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT max(rid) FROM requests").fetchone()[0] or 0)


def _insert_new(conn: sqlite3.Connection, rows: Sequence[Row]) -> bool:
    """The common case: every row is new and SQLite takes the values as they are. The rows get
    consecutive rowids after the largest (SQLite's rule; we hold the write lock), so bodies go
    in by rowid without looking each request up by id. False, with possibly some rows inserted,
    when that did not hold: `_insert_careful` finishes the job."""
    first = _max_rid(conn) + 1
    before = conn.total_changes
    for chunk in _chunks(rows):
        conn.execute(_insert_sql(len(chunk)), _flat_values(chunk))
    if conn.total_changes - before != len(rows) or _max_rid(conn) != first + len(rows) - 1:
        return False  # some id was stored already (a batch sent again), or a row was refused
    with_bodies = [(rid, row) for rid, row in enumerate(rows, first) if _has_bodies(row)]
    for piece in _chunks(with_bodies):
        params: list[Any] = []
        for rid, row in piece:
            params += (rid, row.request_body, row.response_body)
        conn.execute(_insert_bodies_sql(len(piece)), params)
    return True


def _insert_careful(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Rows already stored are skipped (by id); bodies find their request by id."""
    for chunk in _chunks(rows):
        conn.execute(_insert_sql(len(chunk)), _flat_values(chunk))
    for chunk in _chunks([row for row in rows if _has_bodies(row)]):
        params: list[Any] = []
        for row in chunk:
            params += (row.values[0], row.request_body, row.response_body)
        conn.execute(_insert_bodies_by_id_sql(len(chunk)), params)


# What sqlite3 raises for a value it cannot bind (a type it does not know, an int beyond 64 bits).
_UNBINDABLE = (sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError)


def insert_rows(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Insert `rows` in one transaction. Rows whose id is already stored are skipped."""
    if not rows:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            done = _insert_new(conn, rows)
        except _UNBINDABLE:
            done = False
        if not done:
            _insert_careful(conn, [row.sanitized() for row in rows])
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


# --- retention -------------------------------------------------------------------------------

_DELETE_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class RetentionResult:
    deleted_by_age: int = 0
    deleted_by_size: int = 0  # whole requests deleted to fit max_size_mb
    bodies_deleted: int = 0  # requests whose bodies were dropped (kept otherwise) to fit
    vacuum: str | None = None  # None, "incremental" or "full"

    @property
    def deleted(self) -> int:
        return self.deleted_by_age + self.deleted_by_size


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database file in use (free pages not counted)."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    return (pages - free) * page_size


def row_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


def _delete_where(conn: sqlite3.Connection, where: str, params: Sequence[Any], limit: int) -> int:
    """Delete up to `limit` of the oldest rows matching `where` (and their bodies)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        rids = [
            r[0]
            for r in conn.execute(
                f"SELECT rid FROM requests WHERE {where} ORDER BY time, rid LIMIT ?",
                (*params, limit),
            )
        ]
        if rids:
            marks = ",".join("?" for _ in rids)
            conn.execute(f"DELETE FROM bodies WHERE rid IN ({marks})", rids)
            conn.execute(f"DELETE FROM requests WHERE rid IN ({marks})", rids)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return len(rids)


def delete_older_than(conn: sqlite3.Connection, cutoff: float) -> int:
    deleted = 0
    while True:
        n = _delete_where(conn, "time < ?", (cutoff,), _DELETE_CHUNK)
        deleted += n
        if n < _DELETE_CHUNK:
            return deleted


def _drop_oldest_bodies(conn: sqlite3.Connection, limit: int) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "DELETE FROM bodies WHERE rid IN (SELECT r.rid FROM requests r "
            "JOIN bodies b ON b.rid = r.rid ORDER BY r.time, r.rid LIMIT ?)",
            (limit,),
        )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return max(0, cur.rowcount)


def shrink_to(conn: sqlite3.Connection, max_bytes: int) -> tuple[int, int]:
    """Fit the data in use into 90% of `max_bytes` once it exceeds `max_bytes`: drop the oldest
    bodies first (the requests stay listed and priced), then, only if the requests alone are
    too big, the oldest requests. Returns (bodies dropped, requests deleted)."""
    target = int(max_bytes * 0.9)
    if used_bytes(conn) <= max_bytes:
        return 0, 0
    bodies = rows = 0
    for _ in range(1000):
        used = used_bytes(conn)
        if used <= target:
            break
        body_count = int(conn.execute("SELECT count(*) FROM bodies").fetchone()[0])
        count = row_count(conn)
        if body_count:
            per_body = max(1.0, (used - count * 512) / body_count)
            want = max(1, math.ceil((used - target) / per_body))
            bodies += _drop_oldest_bodies(conn, min(want, body_count, _DELETE_CHUNK))
            continue
        if count == 0:
            break
        per_row = max(1.0, used / count)
        want = max(1, min(count, math.ceil((used - target) / per_row)))
        rows += _delete_where(conn, "1", (), min(want, _DELETE_CHUNK))
    return bodies, rows


def vacuum(conn: sqlite3.Connection, *, full: bool) -> None:
    """Give free pages back to the file system (incremental), or rebuild the file (full)."""
    if full:
        conn.execute("VACUUM")
    else:
        conn.execute("PRAGMA incremental_vacuum")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def apply_retention(
    conn: sqlite3.Connection,
    *,
    retention_days: int,
    max_size_mb: int,
    now: float | None = None,
) -> RetentionResult:
    """Delete requests older than `retention_days`; beyond `max_size_mb`, drop the oldest
    bodies, then the oldest requests (see `shrink_to`); then VACUUM: incremental, or full when
    a quarter or more of the requests went. 0 disables either limit."""
    now = time.time() if now is None else now
    before = row_count(conn)
    by_age = delete_older_than(conn, now - retention_days * 86400) if retention_days > 0 else 0
    bodies, by_size = shrink_to(conn, max_size_mb * 1024 * 1024) if max_size_mb > 0 else (0, 0)
    deleted = by_age + by_size
    mode: str | None = None
    if deleted or bodies:
        full = deleted * 4 >= before > 0
        vacuum(conn, full=full)
        mode = "full" if full else "incremental"
        log.info(
            "history retention: deleted %d requests (%d by age, %d by size) and the bodies of "
            "%d more, %s vacuum",
            deleted,
            by_age,
            by_size,
            bodies,
            mode,
        )
    return RetentionResult(by_age, by_size, bodies, mode)


def clear_all(conn: sqlite3.Connection) -> int:
    """Delete every row, then rebuild the file. Returns the number of requests deleted."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = row_count(conn)
        conn.execute("DELETE FROM bodies")
        conn.execute("DELETE FROM requests")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    vacuum(conn, full=True)
    return n
