"""One record per request, filled in by the gateway as the request moves along its path."""

from __future__ import annotations

import itertools
import operator
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from time import perf_counter
from time import time as wall_clock
from typing import Any, NamedTuple, Protocol

# A random prefix per process and a counter: unique across restarts like a UUID, without the
# system call uuid4 makes (it showed up in the gateway's per-request profile).
_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(int.from_bytes(secrets.token_bytes(3), "big"))


def new_request_id() -> str:
    return f"req_{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}"


@dataclass(slots=True)
class RequestRecord:
    id: str = field(default_factory=new_request_id)
    time: float = field(default_factory=wall_clock)
    client_api: str = ""  # anthropic | openai-chat | openai-embeddings | openai-responses
    path: str = ""
    client: str | None = None  # user agent / x-app
    session_id: str | None = None  # Claude Code's X-Claude-Code-Session-Id
    access_key: str | None = None  # the access key's *name*, never its value
    requested_model: str | None = None
    provider: str | None = None
    model: str | None = None  # the model that actually ran
    upstream_key_id: str | None = None  # last four characters only
    status: int = 0
    ok: bool = False
    error: str | None = None
    stream: bool = False
    ttfb_ms: float | None = None
    duration_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    usage_estimated: bool = False
    cost_usd: float | None = None
    # Set by history.pricing (Pricer.apply, or the history writer): True when the request had
    # usage but no known price (cost_usd stays None, never a silent 0); where the price came from.
    unpriced: bool = False
    price_source: str | None = None
    request_body: bytes | None = None
    response_body: bytes | None = None
    _start: float = field(default_factory=perf_counter, repr=False)

    def mark_first_byte(self) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = (perf_counter() - self._start) * 1000

    def finish(self, status: int, error: str | None = None) -> None:
        self.status = status
        self.ok = 200 <= status < 400 and error is None
        if error is not None:
            self.error = error
        self.duration_ms = (perf_counter() - self._start) * 1000

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_start", None)
        return data


class RecordValues(NamedTuple):
    """A finished record as a tuple, RequestRecord's fields in the same order.

    This is what crosses the pipe to the history writer's process and what rows are prepared
    from: taking it from a record is one C call (`values_of`), and so is rebuilding it on the
    other side, where constructing RequestRecords again cost more than preparing their rows.
    """

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
    request_body: bytes | None
    response_body: bytes | None


_RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord) if not f.name.startswith("_"))
if RecordValues._fields != _RECORD_FIELDS:  # pragma: no cover - caught by any test run
    raise RuntimeError("RecordValues must list RequestRecord's fields, in the same order")

# A record's values as a plain tuple: what the gateway's event loop pays per request.
plain_values: Callable[[RequestRecord], tuple[Any, ...]] = operator.attrgetter(*_RECORD_FIELDS)
as_record_values: Callable[[tuple[Any, ...]], RecordValues] = RecordValues._make


def values_of(rec: RequestRecord | RecordValues) -> RecordValues:
    return rec if isinstance(rec, RecordValues) else RecordValues._make(plain_values(rec))


# A record's plain values end with its two bodies (checked in store.py).
def raw_body_size(values: tuple[Any, ...]) -> int:
    """Bytes held by a record's raw bodies."""
    return len(values[-2] or b"") + len(values[-1] or b"")


def without_raw_bodies(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The same record's values with its bodies dropped."""
    return (*values[:-2], None, None)


class Recorder(Protocol):
    def record(self, rec: RequestRecord) -> None:
        """Accept a finished record. Must never block or raise."""


class NullRecorder:
    def record(self, rec: RequestRecord) -> None:
        return None


@dataclass
class CallbackRecorder:
    """Forwards records to listeners (tests, the GUI's live view)."""

    callbacks: list[Callable[[RequestRecord], None]] = field(default_factory=list)

    def record(self, rec: RequestRecord) -> None:
        for cb in self.callbacks:
            cb(rec)
