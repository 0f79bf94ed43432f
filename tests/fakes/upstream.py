"""A scripted fake LLM upstream (OpenAI + Anthropic + Azure wire formats) for the gateway's tests.

Start one per test on 127.0.0.1, port 0::

    async with FakeUpstream(api_key="sk-test") as fake:
        fake.script(Reply.text("Hi there", chunks=3), Reply.error(429, retry_after=2))
        ...  # point the gateway (or an SDK) at fake.openai_base / fake.anthropic_base
        assert fake.requests[0].headers["authorization"] == "Bearer sk-test"

Routes
    OpenAI     GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions, /v1/completions,
               /v1/embeddings, /v1/responses
    Anthropic  POST /v1/messages, /v1/messages/count_tokens (query strings such as ?beta=true
               are ignored), GET /v1/models (Anthropic shape when the request carries
               anthropic-version or x-api-key)
    Azure      POST /openai/deployments/{deployment}/{chat/completions,completions,embeddings}
               (requires ?api-version=), and the v1 API /openai/v1/{chat/completions,responses,
               embeddings,models} (rejects ?api-version=)
    Misc       GET/HEAD / -> 200 (Claude Code's connectivity probe); anything else -> 404 JSON.

Every request is recorded (`fake.requests`) before auth/validation, so tests can assert what the
gateway sent even when the fake rejected it.

Replies come from FIFO queues: `fake.script(reply, ..., endpoint=None)`. Generation endpoints
(chat_completions, completions, responses, messages) consume the endpoint's own queue first, then
the shared queue, then `fake.default_reply` (echo "Hello from fake <model>"). embeddings,
count_tokens and models only consume their own endpoint queue. A queued item can also be a callable
`(RecordedRequest) -> Reply`.

Usage numbers are rendered verbatim per protocol (no cache arithmetic):
    (OpenAI chat / Anthropic / Responses)
    Usage.input_tokens          -> prompt_tokens / input_tokens / input_tokens
    Usage.output_tokens         -> completion_tokens / output_tokens / output_tokens
    Usage.cached_tokens         -> prompt_tokens_details.cached_tokens / cache_read_input_tokens /
                                   input_tokens_details.cached_tokens
    Usage.cache_creation_tokens -> (Anthropic only) cache_creation_input_tokens
    Usage.reasoning_tokens      -> completion_tokens_details.reasoning_tokens /
                                   output_tokens_details.reasoning_tokens
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import secrets
import ssl
import string
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

Endpoint = Literal[
    "chat_completions",
    "completions",
    "embeddings",
    "responses",
    "messages",
    "count_tokens",
    "models",
]
Api = Literal["openai", "anthropic", "azure"]
Outcome = Literal[
    "pending",  # still being handled
    "completed",  # full response written (including error responses)
    "stream_error",  # a scripted mid-stream error was sent, then the stream was closed cleanly
    "aborted",  # the fake deliberately dropped the connection (Reply.disconnect)
    "client_disconnected",  # the peer went away before the fake finished
    "server_stopped",  # FakeUpstream.stop() interrupted the handler
]
CustomHandler = Callable[[web.Request, "RecordedRequest"], Awaitable[web.StreamResponse]]

GENERATION_ENDPOINTS: frozenset[str] = frozenset(
    {"chat_completions", "completions", "responses", "messages"}
)
DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5-20251001",
)
ANTHROPIC_VERSION_HEADER = "anthropic-version"
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_ALNUM = string.ascii_letters + string.digits


# --------------------------------------------------------------------------------------------------
# small helpers


def _rand(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_id(kind: str) -> str:
    """Realistic-looking ids: chatcmpl, cmpl, msg, toolu, call, req, resp, fc, rs, omsg."""
    if kind in ("msg", "toolu"):
        return f"{kind}_01{_rand(22)}"
    if kind in ("chatcmpl", "cmpl"):
        return f"{kind}-{_rand(29)}"
    if kind == "call":
        return f"call_{_rand(24)}"
    if kind == "req":
        return f"req_{_rand(24)}"
    if kind in ("resp", "fc", "rs"):
        return f"{kind}_{secrets.token_hex(24)}"
    if kind == "omsg":  # Responses API message item id
        return f"msg_{secrets.token_hex(24)}"
    return f"{kind}_{_rand(24)}"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def split_text(text: str, parts: int) -> list[str]:
    """Split `text` into `parts` near-equal non-empty pieces (fewer if the text is shorter)."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    out: list[str] = []
    pos = 0
    for i in range(parts):
        n = size + (1 if i < extra else 0)
        out.append(text[pos : pos + n])
        pos += n
    return out


def estimate_tokens(obj: Any) -> int:
    """Deterministic, crude token estimate (chars / 4, at least 1) used for count_tokens."""
    text = obj if isinstance(obj, str) else _dumps(obj)
    return max(1, math.ceil(len(text) / 4))


def _mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


# --------------------------------------------------------------------------------------------------
# scripting types


@dataclass(frozen=True)
class Usage:
    """Token counts, rendered verbatim into each protocol's usage object (see module docstring)."""

    input_tokens: int = 10
    output_tokens: int = 5
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0

    def openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def openai_legacy(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def anthropic(self, *, output_tokens: int | None = None) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_tokens,
            "cache_read_input_tokens": self.cached_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard",
        }

    def responses(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


@dataclass(frozen=True)
class ToolCall:
    """A tool call the fake model makes. `arguments` may be a str to send malformed/odd JSON."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return _dumps(dict(self.arguments))

    @property
    def arguments_dict(self) -> Any:
        if isinstance(self.arguments, str):
            try:
                return json.loads(self.arguments) if self.arguments else {}
            except ValueError:
                return {}
        return dict(self.arguments)


_ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_ERROR_MESSAGES: dict[int, str] = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "This request would exceed the rate limit for your organization. Please try again later.",
    500: "Internal server error",
    504: "Request timed out",
    529: "Overloaded",
}
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {  # status -> (type, code, message)
    400: ("invalid_request_error", None, "Invalid request"),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", None, "Not found"),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again in 1s.",
    ),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


@dataclass(frozen=True)
class ErrorSpec:
    """An error in the protocol's own shape. `type`/`code`/`message` default from the status.

    `openai_status` lets one spec carry a different status on OpenAI-protocol routes (Anthropic's
    529 overloaded is 503 on OpenAI). `body` overrides the JSON entirely (dict/list -> JSON, str ->
    text/plain unless `content_type` says otherwise).
    """

    status: int
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    openai_status: int | None = None
    body: Any = None
    content_type: str | None = None

    def status_for(self, api: Api) -> int:
        if api != "anthropic" and self.openai_status is not None:
            return self.openai_status
        return self.status

    def anthropic_error(self) -> dict[str, Any]:
        st = self.status
        etype = self.type or _ANTHROPIC_ERROR_TYPES.get(
            st, "api_error" if st >= 500 else "invalid_request_error"
        )
        msg = self.message or _ANTHROPIC_ERROR_MESSAGES.get(st, f"Error {st}")
        return {"type": etype, "message": msg}

    def anthropic_body(self, request_id: str) -> dict[str, Any]:
        return {"type": "error", "error": self.anthropic_error(), "request_id": request_id}

    def openai_error(self, api: Api = "openai") -> dict[str, Any]:
        st = self.status_for(api)
        dtype, dcode, dmsg = _OPENAI_ERRORS.get(
            st, ("server_error" if st >= 500 else "invalid_request_error", None, f"Error {st}")
        )
        return {
            "message": self.message or dmsg,
            "type": self.type or dtype,
            "param": self.param,
            "code": self.code if self.code is not None else dcode,
        }

    def openai_body(self, api: Api = "openai") -> dict[str, Any]:
        return {"error": self.openai_error(api)}

    def responses_failure(self) -> dict[str, Any]:
        """`response.error` for a Responses-API `response.failed` event."""
        st = self.status_for("openai")
        code = self.code or ("rate_limit_exceeded" if st == 429 else "server_error")
        return {"code": code, "message": self.openai_error()["message"]}


@dataclass(frozen=True, kw_only=True, repr=False)
class Reply:
    """What the fake answers to one request. Build with the classmethods; all fields are keywords.

    Content: `content` (None and nothing else -> echo "Hello from fake <model>"), `thinking`
    (+ `signature`, `redacted_thinking` for Anthropic), `calls` (ToolCall tuple).
    Streaming shape: `chunks` (int pieces, or explicit list of text pieces), `reasoning_chunks`,
    `arg_chunks` (argument fragments per tool call; default 3, 1 with `omit_tool_index`),
    `chunk_delay` (seconds between written frames), `delay_first_byte` (before anything, even
    headers), `stall_after` + `stall_seconds` (silence after N content frames), `pings` (Anthropic).
    Failures: `http_error` (HTTP error), `stream_error` + `error_after` (error event after N content
    frames; non-streamed requests get it as an HTTP error), `disconnect_after` (drop the TCP
    connection after N content frames; non-streamed requests: drop before answering).
    Usage/ends: `usage`, `usage_in_stream` (None = only if stream_options.include_usage, like
    OpenAI), `usage_in_finish_chunk`, `truncated`, `finish_reason`, `stop_reason`, `stop_sequence`,
    `delta_usage_output_only` (Anthropic message_delta carries only output_tokens).
    Quirks: `omit_tool_index` (Gemini), `tool_finish_reason` (e.g. "stop" like Ollama),
    `finish_in_same_chunk_as_content`, `reasoning_field` ("reasoning_content" or "reasoning").
    Escape hatches: `raw_status`/`raw_body`/`raw_chunks`/`content_type`, `handler`, `headers`.
    """

    content: str | None = None
    thinking: str | None = None
    signature: str | None = None
    redacted_thinking: str | None = None
    calls: tuple[ToolCall, ...] = ()
    chunks: int | Sequence[str] = 5
    reasoning_chunks: int = 4
    arg_chunks: int | None = None
    chunk_delay: float = 0.0
    delay_first_byte: float = 0.0
    stall_after: int | None = None
    stall_seconds: float = 0.0
    pings: bool = True
    http_error: ErrorSpec | None = None
    stream_error: ErrorSpec | None = None
    error_after: int = 1
    disconnect_after: int | None = None
    usage: Usage | None = None
    usage_in_stream: bool | None = None
    usage_in_finish_chunk: bool = False
    truncated: bool = False
    finish_reason: str | None = None
    tool_finish_reason: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    delta_usage_output_only: bool = False
    omit_tool_index: bool = False
    finish_in_same_chunk_as_content: bool = False
    reasoning_field: str = "reasoning_content"
    model: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    raw_status: int | None = None
    raw_body: bytes | str | None = None
    raw_chunks: Sequence[bytes | str] | None = None
    content_type: str | None = None
    handler: CustomHandler | None = None

    # -- factories ---------------------------------------------------------------------------------

    @classmethod
    def text(cls, content: str | Sequence[str], **options: Any) -> Reply:
        """Plain text. `content` may be a list of explicit stream pieces."""
        if isinstance(content, str):
            return cls(content=content, **options)
        pieces = list(content)
        return cls(content="".join(pieces), chunks=pieces, **options)

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        id: str | None = None,
        text: str | None = None,
        parallel: bool = False,
        **options: Any,
    ) -> Reply:
        """One tool call (`parallel=True`: two calls, the second `<name>` again with the same
        arguments and its own id), optionally preceded by assistant `text`."""
        first = ToolCall(name, {} if arguments is None else arguments, id)
        calls = (first, ToolCall(name, first.arguments)) if parallel else (first,)
        return cls(content=text, calls=calls, **options)

    @classmethod
    def tool_calls(cls, *calls: ToolCall, text: str | None = None, **options: Any) -> Reply:
        """Several tool calls (parallel), optionally preceded by assistant `text`."""
        return cls(content=text, calls=tuple(calls), **options)

    @classmethod
    def reasoning(
        cls, thinking: str, text: str = "Done.", *, signature: str | None = None, **options: Any
    ) -> Reply:
        """Reasoning then text: OpenAI `reasoning_content` deltas (DeepSeek style), Anthropic
        thinking block + signature_delta, Responses reasoning item with a summary."""
        return cls(thinking=thinking, content=text, signature=signature, **options)

    @classmethod
    def error(
        cls,
        status: int,
        message: str | None = None,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        openai_status: int | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Reply:
        """An HTTP error in the route's protocol shape; `retry_after` sets `retry-after`."""
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["retry-after"] = _fmt_seconds(retry_after)
        spec = ErrorSpec(
            status=status,
            message=message,
            type=type,
            code=code,
            param=param,
            openai_status=openai_status,
            body=body,
        )
        return cls(http_error=spec, headers=hdrs, **options)

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1, **options: Any) -> Reply:
        return cls.error(429, retry_after=retry_after, **options)

    @classmethod
    def overloaded(cls, **options: Any) -> Reply:
        """Anthropic 529 overloaded_error; 503 on OpenAI routes."""
        return cls.error(529, openai_status=503, **options)

    @classmethod
    def mid_stream_error(
        cls,
        text: str = "This answer will be cut",
        *,
        after: int = 1,
        status: int = 529,
        message: str | None = None,
        type: str | None = None,
        code: str | None = None,
        openai_status: int | None = None,
        **options: Any,
    ) -> Reply:
        """Stream starts (200, opening frames, `after` content frames) then an error event and a
        clean close: Anthropic `event: error`, OpenAI `data: {"error":...}` (no [DONE]),
        Responses `response.failed`. A non-streamed request gets the HTTP error instead."""
        if openai_status is None and status == 529:
            openai_status = 503  # Anthropic's overloaded status is 503 on OpenAI routes
        spec = ErrorSpec(
            status=status, message=message, type=type, code=code, openai_status=openai_status
        )
        return cls(content=text, stream_error=spec, error_after=after, **options)

    @classmethod
    def disconnect(
        cls, text: str = "This answer will be cut", *, after: int = 1, **options: Any
    ) -> Reply:
        """Drop the connection after `after` content frames (no terminator, broken chunked body).
        `after=0` drops it right after the opening frames; non-streamed requests get no response."""
        return cls(content=text, disconnect_after=after, **options)

    @classmethod
    def raw(
        cls,
        status: int,
        body: bytes | str | Mapping[str, Any] | list[Any] = b"",
        *,
        content_type: str | None = None,
        **options: Any,
    ) -> Reply:
        """Answer exactly this status and body (dict/list -> JSON)."""
        if isinstance(body, Mapping | list):
            return cls(
                raw_status=status,
                raw_body=_dumps(body),
                content_type=content_type or "application/json",
                **options,
            )
        return cls(raw_status=status, raw_body=body, content_type=content_type, **options)

    @classmethod
    def raw_stream(
        cls,
        chunks: Sequence[bytes | str],
        *,
        status: int = 200,
        content_type: str = "text/event-stream; charset=utf-8",
        **options: Any,
    ) -> Reply:
        """Write these byte chunks one by one (with `chunk_delay`), e.g. odd SSE from a provider."""
        return cls(raw_status=status, raw_chunks=list(chunks), content_type=content_type, **options)

    @classmethod
    def custom(cls, handler: CustomHandler, **options: Any) -> Reply:
        """Full control: `async def handler(request, recorded) -> web.StreamResponse`."""
        return cls(handler=handler, **options)

    # -- derived -----------------------------------------------------------------------------------

    def text_pieces(self, text: str) -> list[str]:
        if isinstance(self.chunks, int):
            return split_text(text, self.chunks)
        pieces = [p for p in self.chunks if p]
        return pieces if "".join(pieces) == text else split_text(text, len(pieces) or 1)

    def arg_pieces(self, arguments: str) -> list[str]:
        n = self.arg_chunks if self.arg_chunks is not None else (1 if self.omit_tool_index else 3)
        return split_text(arguments, n)

    def with_options(self, **changes: Any) -> Reply:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def gemini_tool_call(
        cls, call_id: str, name: str, arguments: Mapping[str, Any], thought_signature: str
    ) -> Reply:
        """A streamed tool call as Gemini 3's OpenAI-compatible endpoint sends it: empty
        completion id, the whole call in one chunk with the thought signature it wants back in
        `extra_content` (P12), then finish_reason and usage."""
        base = {"id": "", "object": "chat.completion.chunk", "model": "gemini-3-pro-preview"}
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": _dumps(dict(arguments))},
            "extra_content": {"google": {"thought_signature": thought_signature}},
        }
        delta = {"role": "assistant", "tool_calls": [call]}
        chunks = [
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                "usage": Usage(input_tokens=100, output_tokens=20).openai_legacy(),
            },
        ]
        sse = "".join(f"data: {_dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return cls.raw_stream([sse])

    def __repr__(self) -> str:  # only the fields that differ from the defaults
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if value != default:
                parts.append(f"{f.name}={value!r}")
        return f"Reply({', '.join(parts)})"


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------------------------------
# recorded requests


@dataclass(eq=False)
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    json: Any  # parsed body (None when empty or not JSON)
    raw: bytes
    api: str  # "openai" | "anthropic" | "azure" | "unknown"
    endpoint: str | None
    path_params: dict[str, str] = field(default_factory=dict)
    peer: Any = None  # the client's (host, port): one per connection
    received_at: float = field(default_factory=time.monotonic)
    status: int | None = None
    outcome: Outcome = "pending"
    reply: Reply | None = None
    chunk_times: list[float] = field(default_factory=list)  # monotonic time of each frame written
    finished_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def body(self) -> dict[str, Any]:
        return self.json if isinstance(self.json, dict) else {}

    @property
    def model(self) -> str | None:
        m = self.body.get("model")
        return m if isinstance(m, str) else None

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


ReplyLike = Reply | Callable[[RecordedRequest], Reply]
"""A scripted reply, or a function of the recorded request returning one."""


@dataclass
class _Frame:
    data: bytes
    kind: Literal["open", "content", "close"]


@dataclass
class _Ctx:
    request: web.Request
    rec: RecordedRequest
    api: Api
    endpoint: Endpoint
    body: dict[str, Any]
    model: str
    request_id: str = field(default_factory=lambda: new_id("req"))
    created: int = field(default_factory=lambda: int(time.time()))


# --------------------------------------------------------------------------------------------------
# the server


class FakeUpstream:
    """Scripted fake OpenAI/Anthropic/Azure upstream on 127.0.0.1 (see module docstring)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        strict: bool = True,
        reject_unknown_models: bool = False,
        reject_fields: Sequence[str] = (),
        azure_deployments: Sequence[str] | None = None,
        embedding_dimensions: int = 8,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """
        api_key: when set, OpenAI routes need `Authorization: Bearer <key>`, Anthropic routes
            `x-api-key: <key>` or Bearer, Azure routes `api-key: <key>` or Bearer; else 401.
        strict: validate requests like the real APIs (required fields, tool_use/tool_result and
            tool_calls/tool pairing, non-empty text blocks, anthropic-version header, ...) -> 400.
        reject_unknown_models: 404 (model_not_found / not_found_error) for models not in `models`.
        reject_fields: top-level body fields OpenAI-style routes reject with 400, Groq-style
            ("property 'store' is unsupported").
        azure_deployments: when set, other deployment names get Azure's DeploymentNotFound 404.
        """
        self.api_key = api_key
        self.models: list[str] = list(models)
        self.strict = strict
        self.reject_unknown_models = reject_unknown_models
        self.reject_fields: set[str] = set(reject_fields)
        self.azure_deployments: set[str] | None = (
            set(azure_deployments) if azure_deployments is not None else None
        )
        self.embedding_dimensions = embedding_dimensions
        self.host = host
        self.ssl_context = ssl_context  # serve https with it
        self._port = port
        self.requests: list[RecordedRequest] = []
        self.default_reply: ReplyLike | None = None
        self._queue: deque[ReplyLike] = deque()
        self._endpoint_queues: dict[str, deque[ReplyLike]] = {}
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._request_added = asyncio.Condition()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> Self:
        if self._runner is not None:
            return self
        self._stopping = False
        runner = web.AppRunner(
            self._build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, ssl_context=self.ssl_context)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        scheme = "https" if self.ssl_context is not None else "http"
        self._base_url = f"{scheme}://{host}:{port}"
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT (no trailing slash)."""
        if self._base_url is None:
            raise RuntimeError("FakeUpstream is not started")
        return self._base_url

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def openai_base(self) -> str:
        """For OpenAI(base_url=...): base + /v1."""
        return self.base_url + "/v1"

    @property
    def anthropic_base(self) -> str:
        """For Anthropic(base_url=...): the SDK appends /v1/messages itself."""
        return self.base_url

    @property
    def azure_endpoint(self) -> str:
        """For AzureOpenAI(azure_endpoint=...)."""
        return self.base_url

    # -- scripting ---------------------------------------------------------------------------------

    def script(self, *replies: ReplyLike, endpoint: Endpoint | None = None) -> Self:
        """Queue replies, consumed in order (see module docstring for which endpoints use which)."""
        if endpoint is None:
            self._queue.extend(replies)
        else:
            self._endpoint_queues.setdefault(endpoint, deque()).extend(replies)
        return self

    @property
    def pending_replies(self) -> int:
        return len(self._queue) + sum(len(q) for q in self._endpoint_queues.values())

    def reset(self) -> None:
        """Forget recorded requests and scripted replies."""
        self.requests.clear()
        self._queue.clear()
        self._endpoint_queues.clear()

    def _next_reply(self, ctx: _Ctx) -> Reply | None:
        q = self._endpoint_queues.get(ctx.endpoint)
        item: ReplyLike | None = None
        if q:
            item = q.popleft()
        elif ctx.endpoint in GENERATION_ENDPOINTS and self._queue:
            item = self._queue.popleft()
        elif ctx.endpoint in GENERATION_ENDPOINTS:
            item = self.default_reply
        if item is None:
            return None
        return item if isinstance(item, Reply) else item(ctx.rec)

    # -- inspection --------------------------------------------------------------------------------

    @property
    def last_request(self) -> RecordedRequest:
        if not self.requests:
            raise AssertionError("the fake upstream received no request")
        return self.requests[-1]

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    async def wait_for_requests(self, count: int = 1, wait: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least `count` requests were received (TimeoutError after `wait` s)."""
        async with asyncio.timeout(wait), self._request_added:
            await self._request_added.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    # -- app ---------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/", self._root)  # also answers HEAD
        r.add_get("/v1/models", self._models_list)
        r.add_get("/v1/models/{model_id:.+}", self._models_get)
        r.add_get("/openai/v1/models", self._models_list)
        gen: list[tuple[str, Api, Endpoint]] = [
            ("/v1/chat/completions", "openai", "chat_completions"),
            ("/v1/completions", "openai", "completions"),
            ("/v1/embeddings", "openai", "embeddings"),
            ("/v1/responses", "openai", "responses"),
            ("/v1/messages", "anthropic", "messages"),
            ("/v1/messages/count_tokens", "anthropic", "count_tokens"),
            ("/openai/deployments/{deployment}/chat/completions", "azure", "chat_completions"),
            ("/openai/deployments/{deployment}/completions", "azure", "completions"),
            ("/openai/deployments/{deployment}/embeddings", "azure", "embeddings"),
            ("/openai/v1/chat/completions", "azure", "chat_completions"),
            ("/openai/v1/completions", "azure", "completions"),
            ("/openai/v1/embeddings", "azure", "embeddings"),
            ("/openai/v1/responses", "azure", "responses"),
        ]
        for path, api, endpoint in gen:
            r.add_post(path, self._make_handler(api, endpoint))
        r.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def _make_handler(
        self, api: Api, endpoint: Endpoint
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._run(request, api, endpoint, self._serve)

        return handler

    async def _record(
        self, request: web.Request, api: str, endpoint: str | None
    ) -> RecordedRequest:
        raw = await request.read()
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
        headers: dict[str, str] = {}
        for k, v in request.headers.items():
            key = k.lower()
            headers[key] = f"{headers[key]}, {v}" if key in headers else v
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=headers,
            json=parsed,
            raw=raw,
            api=api,
            endpoint=endpoint,
            path_params=dict(request.match_info),
            peer=request.transport.get_extra_info("peername") if request.transport else None,
        )
        async with self._request_added:
            self.requests.append(rec)
            self._request_added.notify_all()
        return rec

    async def _run(
        self,
        request: web.Request,
        api: Api,
        endpoint: Endpoint,
        serve: Callable[
            [web.Request, RecordedRequest, Api, Endpoint], Awaitable[web.StreamResponse]
        ],
    ) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        rec = await self._record(request, api, endpoint)
        try:
            resp = await serve(request, rec, api, endpoint)
            if rec.outcome == "pending":
                rec.outcome = "completed"
            rec.status = resp.status
            return resp
        except asyncio.CancelledError:
            if rec.outcome in ("pending", "completed"):
                rec.outcome = "server_stopped" if self._stopping else "client_disconnected"
            raise
        finally:
            if task is not None:
                self._tasks.discard(task)
            rec.finished_at = time.monotonic()
            rec.done.set()

    # -- generic handlers --------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request, "unknown", None)
        rec.status = 404
        rec.outcome = "completed"
        rec.done.set()
        if _looks_anthropic(request):
            spec = ErrorSpec(404, message="Not Found")
            return web.json_response(spec.anthropic_body(new_id("req")), status=404)
        spec = ErrorSpec(404, message=f"Invalid URL ({request.method} {request.path})")
        body = spec.openai_body()
        body["error"]["code"] = None
        return web.json_response(body, status=404)

    async def _models_list(self, request: web.Request) -> web.StreamResponse:
        api: Api = "azure" if request.path.startswith("/openai/") else "openai"
        if _looks_anthropic(request):
            api = "anthropic"
        return await self._run(request, api, "models", self._serve_models)

    async def _models_get(self, request: web.Request) -> web.StreamResponse:
        api: Api = "anthropic" if _looks_anthropic(request) else "openai"
        return await self._run(request, api, "models", self._serve_models)

    async def _serve_models(
        self, request: web.Request, rec: RecordedRequest, api: Api, endpoint: Endpoint
    ) -> web.StreamResponse:
        ctx = _Ctx(request, rec, api, endpoint, {}, "")
        denied = self._check_auth(ctx)
        if denied is not None:
            return denied
        reply = self._next_reply(ctx)
        if reply is not None:
            special = await self._special_reply(ctx, reply)
            if special is not None:
                return special
        headers = self._base_headers(ctx, reply)
        model_id = request.match_info.get("model_id")
        if model_id is not None:
            if model_id not in self.models:
                return self._error_response(ctx, self._model_not_found(model_id), {})
            return web.json_response(self._model_obj(model_id, api), headers=headers)
        data = [self._model_obj(m, api) for m in self.models]
        if api == "anthropic":
            body: dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": self.models[0] if self.models else None,
                "last_id": self.models[-1] if self.models else None,
            }
        else:
            body = {"object": "list", "data": data}
        return web.json_response(body, headers=headers)

    @staticmethod
    def _model_obj(model_id: str, api: Api) -> dict[str, Any]:
        if api == "anthropic":
            return {
                "type": "model",
                "id": model_id,
                "display_name": model_id,
                "created_at": "2025-01-01T00:00:00Z",
            }
        return {
            "id": model_id,
            "object": "model",
            "created": 1700000000,
            "owned_by": "fake-upstream",
        }

    # -- auth / validation -------------------------------------------------------------------------

    def _check_auth(self, ctx: _Ctx) -> web.StreamResponse | None:
        key = self.api_key
        if key is None:
            return None
        h = ctx.request.headers
        auth = h.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if ctx.api == "openai":
            if bearer == key:
                return None
            if not bearer:
                msg = (
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                    "or as the password field (with blank username) if you're accessing the API "
                    "from your browser and are prompted for a username. You can obtain an API key "
                    "from https://platform.openai.com/account/api-keys."
                )
                code: str | None = None
            else:
                msg = (
                    f"Incorrect API key provided: {_mask_key(bearer)}. You can find your API key "
                    "at https://platform.openai.com/account/api-keys."
                )
                code = "invalid_api_key"
            body = {
                "error": {
                    "message": msg,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": code,
                }
            }
            return self._json(ctx, body, 401, {})
        if ctx.api == "anthropic":
            given = h.get("x-api-key")
            if given == key or bearer == key:
                return None
            msg = "invalid x-api-key" if given or bearer else "x-api-key header is required"
            return self._error_response(ctx, ErrorSpec(401, message=msg), {})
        # azure
        if h.get("api-key") == key or bearer == key:
            return None
        body = {
            "error": {
                "code": "401",
                "message": (
                    "Access denied due to invalid subscription key or wrong API endpoint. Make "
                    "sure to provide a valid key for an active subscription and use a correct "
                    "regional API endpoint for your resource."
                ),
            }
        }
        return self._json(ctx, body, 401, {})

    def _check_azure(self, ctx: _Ctx) -> web.StreamResponse | None:
        q = ctx.request.query
        deployment = ctx.request.match_info.get("deployment")
        if deployment is None:  # /openai/v1/...
            if "api-version" in q:
                body = {
                    "error": {
                        "code": "BadRequest",
                        "message": "api-version query parameter is not allowed when using /v1 path",
                    }
                }
                return self._json(ctx, body, 400, {})
            return None
        if not q.get("api-version"):
            body = {
                "error": {
                    "code": "BadRequest",
                    "message": "Missing required query parameter 'api-version'.",
                }
            }
            return self._json(ctx, body, 400, {})
        if self.azure_deployments is not None and deployment not in self.azure_deployments:
            body = {
                "error": {
                    "code": "DeploymentNotFound",
                    "message": (
                        "The API deployment for this resource does not exist. If you created the "
                        "deployment within the last 5 minutes, please wait a moment and try again."
                    ),
                }
            }
            return self._json(ctx, body, 404, {})
        return None

    def _bad_request(
        self, ctx: _Ctx, message: str, param: str | None = None, code: str | None = None
    ) -> web.StreamResponse:
        return self._error_response(
            ctx, ErrorSpec(400, message=message, param=param, code=code), {}
        )

    def _validate(self, ctx: _Ctx) -> web.StreamResponse | None:
        body = ctx.body
        if ctx.api == "anthropic":
            problem = _validate_anthropic(body, count_tokens=ctx.endpoint == "count_tokens")
            return None if problem is None else self._bad_request(ctx, problem)
        for name in sorted(self.reject_fields):
            if name in body:
                return self._bad_request(ctx, f"property '{name}' is unsupported", param=name)
        problem3 = _validate_openai(
            body, ctx.endpoint, azure_deployment=ctx.request.match_info.get("deployment")
        )
        if problem3 is not None:
            return self._bad_request(ctx, *problem3)
        return None

    def _model_not_found(self, model: str) -> ErrorSpec:
        return ErrorSpec(
            404,
            message=f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )

    # -- main dispatch -----------------------------------------------------------------------------

    async def _serve(
        self, request: web.Request, rec: RecordedRequest, api: Api, endpoint: Endpoint
    ) -> web.StreamResponse:
        ctx = _Ctx(request, rec, api, endpoint, rec.body, "")
        denied = self._check_auth(ctx)
        if denied is not None:
            return denied
        if api == "azure":
            bad = self._check_azure(ctx)
            if bad is not None:
                return bad
        if self.strict and api == "anthropic" and ANTHROPIC_VERSION_HEADER not in request.headers:
            return self._bad_request(ctx, "anthropic-version: header is required")
        if not isinstance(rec.json, dict):
            if api == "anthropic":
                msg = "There was an error parsing the body of your request: invalid JSON"
            else:
                msg = (
                    "We could not parse the JSON body of your request. (HINT: This likely means "
                    "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                    "payload, but what was sent was not valid JSON.)"
                )
            return self._bad_request(ctx, msg)
        if self.strict:
            bad = self._validate(ctx)
            if bad is not None:
                return bad
        model = rec.body.get("model")
        ctx.model = model if isinstance(model, str) else request.match_info.get("deployment", "")
        if self.reject_unknown_models and ctx.model not in self.models:
            if api == "anthropic":
                return self._error_response(ctx, ErrorSpec(404, message=f"model: {ctx.model}"), {})
            return self._error_response(ctx, self._model_not_found(ctx.model), {})

        reply = self._next_reply(ctx)
        if reply is None:
            reply = Reply()
        rec.reply = reply
        if reply.model:
            ctx.model = reply.model
        special = await self._special_reply(ctx, reply)
        if special is not None:
            return special

        if endpoint == "embeddings":
            return web.json_response(
                self._embeddings_body(ctx, reply), headers=self._base_headers(ctx, reply)
            )
        if endpoint == "count_tokens":
            n = (
                reply.usage.input_tokens
                if reply.usage
                else estimate_tokens([rec.body.get(k) for k in ("system", "messages", "tools")])
            )
            return web.json_response({"input_tokens": n}, headers=self._base_headers(ctx, reply))

        streaming = rec.body.get("stream") is True
        if not streaming:
            if reply.disconnect_after is not None:
                rec.outcome = "aborted"
                _abort(request)
                return web.Response(status=500)
            if reply.stream_error is not None:
                return self._error_response(ctx, reply.stream_error, reply.headers)
            builders: dict[str, Callable[[_Ctx, Reply], dict[str, Any]]] = {
                "chat_completions": self._chat_body,
                "completions": self._legacy_body,
                "responses": self._responses_body,
                "messages": self._anthropic_body,
            }
            return self._json(ctx, builders[endpoint](ctx, reply), 200, reply.headers)

        frame_builders: dict[
            str, Callable[[_Ctx, Reply], tuple[list[_Frame], Callable[[int], bytes]]]
        ] = {
            "chat_completions": self._chat_frames,
            "completions": self._legacy_frames,
            "responses": self._responses_frames,
            "messages": self._anthropic_frames,
        }
        frames, error_frame = frame_builders[endpoint](ctx, reply)
        return await self._write_stream(ctx, reply, frames, error_frame)

    async def _special_reply(self, ctx: _Ctx, reply: Reply) -> web.StreamResponse | None:
        """Delay, custom handler, HTTP error, raw body/stream: whatever is not protocol content."""
        if reply.delay_first_byte > 0:
            await asyncio.sleep(reply.delay_first_byte)
        if reply.handler is not None:
            return await reply.handler(ctx.request, ctx.rec)
        if reply.http_error is not None:
            return self._error_response(ctx, reply.http_error, reply.headers)
        if reply.raw_chunks is not None:
            resp = web.StreamResponse(
                status=reply.raw_status or 200,
                headers={
                    "Content-Type": reply.content_type or "text/event-stream",
                    **reply.headers,
                },
            )
            await resp.prepare(ctx.request)
            try:
                for i, chunk in enumerate(reply.raw_chunks):
                    if i and reply.chunk_delay:
                        await asyncio.sleep(reply.chunk_delay)
                    await resp.write(chunk.encode() if isinstance(chunk, str) else chunk)
                    ctx.rec.chunk_times.append(time.monotonic())
                if reply.disconnect_after is not None:
                    ctx.rec.outcome = "aborted"
                    _abort(ctx.request)
                    return resp
                await resp.write_eof()
            except ConnectionResetError:
                ctx.rec.outcome = "client_disconnected"
            return resp
        if reply.raw_status is not None:
            raw = reply.raw_body or b""
            return web.Response(
                status=reply.raw_status,
                body=raw.encode() if isinstance(raw, str) else raw,
                headers={"Content-Type": reply.content_type or "text/plain", **reply.headers},
            )
        if reply.disconnect_after is not None and ctx.endpoint not in GENERATION_ENDPOINTS:
            ctx.rec.outcome = "aborted"
            _abort(ctx.request)
            return web.Response(status=500)
        return None

    # -- response helpers --------------------------------------------------------------------------

    def _base_headers(self, ctx: _Ctx, reply: Reply | None) -> dict[str, str]:
        headers = (
            {"request-id": ctx.request_id}
            if ctx.api == "anthropic"
            else {"x-request-id": ctx.request_id}
        )
        if reply is not None:
            headers.update(reply.headers)
        return headers

    def _json(self, ctx: _Ctx, body: Any, status: int, extra: Mapping[str, str]) -> web.Response:
        headers = (
            {"request-id": ctx.request_id}
            if ctx.api == "anthropic"
            else {"x-request-id": ctx.request_id}
        )
        headers.update(extra)
        return web.Response(
            status=status, text=_dumps(body), content_type="application/json", headers=headers
        )

    def _error_response(self, ctx: _Ctx, spec: ErrorSpec, extra: Mapping[str, str]) -> web.Response:
        status = spec.status_for(ctx.api)
        if spec.body is not None:
            if isinstance(spec.body, str | bytes):
                headers = {"Content-Type": spec.content_type or "text/plain", **extra}
                raw = spec.body.encode() if isinstance(spec.body, str) else spec.body
                return web.Response(status=status, body=raw, headers=headers)
            return self._json(ctx, spec.body, status, extra)
        if ctx.api == "anthropic":
            return self._json(ctx, spec.anthropic_body(ctx.request_id), status, extra)
        return self._json(ctx, spec.openai_body(ctx.api), status, extra)

    async def _write_stream(
        self, ctx: _Ctx, reply: Reply, frames: list[_Frame], error_frame: Callable[[int], bytes]
    ) -> web.StreamResponse:
        """Write frames one by one; cut for a scripted mid-stream error / disconnect."""
        content_positions = [i for i, f in enumerate(frames) if f.kind == "content"]
        first_close = next((i for i, f in enumerate(frames) if f.kind == "close"), len(frames))

        def cut_after(n: int) -> int:
            if n <= 0:
                return content_positions[0] if content_positions else first_close
            if n > len(content_positions):
                return first_close
            return min(content_positions[n - 1] + 1, first_close)

        cut: int | None = None
        if reply.disconnect_after is not None:
            cut = cut_after(reply.disconnect_after)
        elif reply.stream_error is not None:
            cut = cut_after(reply.error_after)
        stall_at = cut_after(reply.stall_after) if reply.stall_after is not None else None

        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            **self._base_headers(ctx, reply),
        }
        resp = web.StreamResponse(status=200, headers=headers)
        rec = ctx.rec
        try:
            await resp.prepare(ctx.request)
            limit = len(frames) if cut is None else cut
            for i in range(limit):
                if stall_at == i and reply.stall_seconds > 0:
                    await asyncio.sleep(reply.stall_seconds)
                elif i and reply.chunk_delay > 0:
                    await asyncio.sleep(reply.chunk_delay)
                await resp.write(frames[i].data)
                rec.chunk_times.append(time.monotonic())
            if cut is not None and reply.disconnect_after is not None:
                if stall_at == cut and reply.stall_seconds > 0:
                    await asyncio.sleep(reply.stall_seconds)
                rec.outcome = "aborted"
                _abort(ctx.request)
                return resp
            if cut is not None and reply.stream_error is not None:
                if reply.chunk_delay > 0:
                    await asyncio.sleep(reply.chunk_delay)
                await resp.write(error_frame(cut))
                rec.chunk_times.append(time.monotonic())
                rec.outcome = "stream_error"
            await resp.write_eof()
        except ConnectionResetError:
            rec.outcome = "client_disconnected"
        return resp

    # -- OpenAI chat completions -------------------------------------------------------------------

    def _echo_text(self, ctx: _Ctx) -> str:
        return f"Hello from fake {ctx.model}"

    def _content(self, ctx: _Ctx, reply: Reply) -> str:
        """The text to send; the echo text when the reply has no content at all."""
        if reply.content is not None:
            return reply.content
        if reply.calls or reply.thinking is not None or reply.redacted_thinking is not None:
            return ""
        return self._echo_text(ctx)

    def _finish_reason(self, reply: Reply) -> str:
        if reply.finish_reason is not None:
            return reply.finish_reason
        if reply.calls:
            return reply.tool_finish_reason or "tool_calls"
        return "length" if reply.truncated else "stop"

    def _call_id(self, call: ToolCall, prefix: str) -> str:
        return call.id or new_id(prefix)

    def _chat_body(self, ctx: _Ctx, reply: Reply) -> dict[str, Any]:
        text = self._content(ctx, reply)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if (text or not reply.calls) else None,
            "refusal": None,
            "annotations": [],
        }
        if reply.thinking is not None:
            message[reply.reasoning_field] = reply.thinking
        if reply.calls:
            message["tool_calls"] = [
                {
                    "id": self._call_id(c, "call"),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json},
                }
                for c in reply.calls
            ]
        return {
            "id": new_id("chatcmpl"),
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish_reason(reply),
                }
            ],
            "usage": (reply.usage or Usage()).openai(),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _wants_stream_usage(self, ctx: _Ctx, reply: Reply) -> bool:
        if reply.usage_in_stream is not None:
            return reply.usage_in_stream
        opts = ctx.body.get("stream_options")
        return isinstance(opts, dict) and opts.get("include_usage") is True

    def _openai_error_frame(self, ctx: _Ctx, reply: Reply) -> Callable[[int], bytes]:
        spec = reply.stream_error or ErrorSpec(500)

        def build(_n: int) -> bytes:
            return _data_line(spec.openai_body(ctx.api))

        return build

    def _chat_frames(self, ctx: _Ctx, reply: Reply) -> tuple[list[_Frame], Callable[[int], bytes]]:
        text = self._content(ctx, reply)
        include_usage = self._wants_stream_usage(ctx, reply)
        cid = new_id("chatcmpl")
        usage = reply.usage or Usage()
        rf = reply.reasoning_field

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": ctx.created,
                "model": ctx.model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                obj["usage"] = None
            return obj

        text_pieces = reply.text_pieces(text)
        reasoning_pieces = (
            split_text(reply.thinking, reply.reasoning_chunks) if reply.thinking else []
        )
        calls = reply.calls
        tool_only = bool(calls) and not text_pieces and reply.thinking is None
        merge_first_call = tool_only and not reply.omit_tool_index

        first: dict[str, Any] = {"role": "assistant"}
        if reply.thinking is not None:
            first.update({"content": None, rf: ""})
        elif tool_only:
            first.update({"content": None, "refusal": None})
        else:
            first.update({"content": "", "refusal": None})
        items: list[tuple[dict[str, Any], Literal["open", "content", "close"]]] = [
            (chunk(first), "open")
        ]
        for p in reasoning_pieces:
            items.append((chunk({"content": None, rf: p}), "content"))
        for p in text_pieces:
            items.append((chunk({"content": p}), "content"))
        for i, call in enumerate(calls):
            call_id = self._call_id(call, "call")
            args = call.arguments_json
            if reply.omit_tool_index and reply.arg_chunks is None:
                whole = {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": args},
                }
                items.append((chunk({"tool_calls": [whole]}), "content"))
                continue
            header: dict[str, Any] = {
                "index": i,
                "id": call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            if reply.omit_tool_index:
                del header["index"]
            if i == 0 and merge_first_call:
                items[0][0]["choices"][0]["delta"]["tool_calls"] = [header]
            else:
                items.append((chunk({"tool_calls": [header]}), "content"))
            for frag in reply.arg_pieces(args):
                d: dict[str, Any] = {"index": i, "function": {"arguments": frag}}
                if reply.omit_tool_index:
                    del d["index"]
                items.append((chunk({"tool_calls": [d]}), "content"))

        finish = self._finish_reason(reply)
        finish_obj: dict[str, Any]
        if reply.finish_in_same_chunk_as_content and items[-1][1] == "content":
            finish_obj = items[-1][0]
            finish_obj["choices"][0]["finish_reason"] = finish
        else:
            finish_obj = chunk({}, finish)
            items.append((finish_obj, "close"))
        if reply.usage_in_finish_chunk:
            finish_obj["usage"] = usage.openai()
        elif include_usage:
            usage_chunk = chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage.openai()
            items.append((usage_chunk, "close"))
        frames = [_Frame(_data_line(obj), kind) for obj, kind in items]
        frames.append(_Frame(b"data: [DONE]\n\n", "close"))
        return frames, self._openai_error_frame(ctx, reply)

    # -- OpenAI legacy completions -----------------------------------------------------------------

    def _legacy_body(self, ctx: _Ctx, reply: Reply) -> dict[str, Any]:
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [
                {
                    "text": self._content(ctx, reply),
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason
                    or ("length" if reply.truncated else "stop"),
                }
            ],
            "usage": (reply.usage or Usage()).openai_legacy(),
            "system_fingerprint": "fp_fake",
        }

    def _legacy_frames(
        self, ctx: _Ctx, reply: Reply
    ) -> tuple[list[_Frame], Callable[[int], bytes]]:
        cid = new_id("cmpl")
        include_usage = self._wants_stream_usage(ctx, reply)

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "text_completion",
                "created": ctx.created,
                "model": ctx.model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
                "system_fingerprint": "fp_fake",
            }
            if include_usage:
                obj["usage"] = None
            return obj

        frames = [
            _Frame(_data_line(chunk(p, None)), "content")
            for p in reply.text_pieces(self._content(ctx, reply))
        ]
        finish = reply.finish_reason or ("length" if reply.truncated else "stop")
        frames.append(_Frame(_data_line(chunk("", finish)), "close"))
        if include_usage:
            u = chunk("", None)
            u["choices"] = []
            u["usage"] = (reply.usage or Usage()).openai_legacy()
            frames.append(_Frame(_data_line(u), "close"))
        frames.append(_Frame(b"data: [DONE]\n\n", "close"))
        return frames, self._openai_error_frame(ctx, reply)

    # -- OpenAI embeddings -------------------------------------------------------------------------

    def _embeddings_body(self, ctx: _Ctx, reply: Reply) -> dict[str, Any]:
        raw_input = ctx.body.get("input")
        inputs: list[Any]
        if isinstance(raw_input, str):
            inputs = [raw_input]
        elif (
            isinstance(raw_input, list) and raw_input and all(isinstance(x, int) for x in raw_input)
        ):
            inputs = [raw_input]  # one tokenised input
        elif isinstance(raw_input, list):
            inputs = raw_input
        else:
            inputs = []
        dims_val = ctx.body.get("dimensions")
        dims = dims_val if isinstance(dims_val, int) and dims_val > 0 else self.embedding_dimensions
        b64 = ctx.body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vec = fake_embedding(item if isinstance(item, str) else _dumps(item), dims)
            emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = (
            reply.usage.input_tokens
            if reply.usage
            else sum(estimate_tokens(x if isinstance(x, str) else _dumps(x)) for x in inputs)
        )
        return {
            "object": "list",
            "data": data,
            "model": ctx.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    # -- OpenAI Responses API ----------------------------------------------------------------------

    def _responses_items(self, ctx: _Ctx, reply: Reply) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        include = ctx.body.get("include") or []
        if reply.thinking is not None:
            item: dict[str, Any] = {
                "id": new_id("rs"),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": reply.thinking}],
            }
            if "reasoning.encrypted_content" in include:
                item["encrypted_content"] = reply.signature or _fake_signature()
            items.append(item)
        text = self._content(ctx, reply)
        if text or not reply.calls:
            items.append(
                {
                    "id": new_id("omsg"),
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                    ],
                }
            )
        for call in reply.calls:
            items.append(
                {
                    "id": new_id("fc"),
                    "type": "function_call",
                    "status": "completed",
                    "arguments": call.arguments_json,
                    "call_id": self._call_id(call, "call"),
                    "name": call.name,
                }
            )
        return items

    def _response_obj(
        self,
        ctx: _Ctx,
        reply: Reply,
        resp_id: str,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        b = ctx.body
        return {
            "id": resp_id,
            "object": "response",
            "created_at": ctx.created,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "instructions": b.get("instructions"),
            "max_output_tokens": b.get("max_output_tokens"),
            "model": ctx.model,
            "output": output,
            "parallel_tool_calls": b.get("parallel_tool_calls", True),
            "previous_response_id": b.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None, **(b.get("reasoning") or {})},
            "store": b.get("store", True),
            "temperature": b.get("temperature", 1.0),
            "text": b.get("text") or {"format": {"type": "text"}},
            "tool_choice": b.get("tool_choice", "auto"),
            "tools": b.get("tools", []),
            "top_p": b.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": usage,
            "metadata": b.get("metadata") or {},
        }

    def _responses_body(self, ctx: _Ctx, reply: Reply) -> dict[str, Any]:
        status = "incomplete" if reply.truncated else "completed"
        return self._response_obj(
            ctx,
            reply,
            new_id("resp"),
            status,
            self._responses_items(ctx, reply),
            (reply.usage or Usage()).responses(),
        )

    def _responses_frames(
        self, ctx: _Ctx, reply: Reply
    ) -> tuple[list[_Frame], Callable[[int], bytes]]:
        resp_id = new_id("resp")
        items = self._responses_items(ctx, reply)
        events: list[tuple[dict[str, Any], Literal["open", "content", "close"]]] = []

        def add(ev: dict[str, Any], kind: Literal["open", "content", "close"] = "open") -> None:
            events.append((ev, kind))

        start = self._response_obj(ctx, reply, resp_id, "in_progress", [], None)
        add({"type": "response.created", "response": start})
        add({"type": "response.in_progress", "response": start})
        for out_idx, item in enumerate(items):
            iid = item["id"]
            if item["type"] == "reasoning":
                add(
                    {
                        "type": "response.output_item.added",
                        "output_index": out_idx,
                        "item": {**item, "summary": []},
                    }
                )
                text = item["summary"][0]["text"]
                part = {"type": "summary_text", "text": ""}
                base = {"item_id": iid, "output_index": out_idx, "summary_index": 0}
                add({"type": "response.reasoning_summary_part.added", **base, "part": part})
                for p in split_text(text, reply.reasoning_chunks):
                    add(
                        {"type": "response.reasoning_summary_text.delta", **base, "delta": p},
                        "content",
                    )
                add({"type": "response.reasoning_summary_text.done", **base, "text": text})
                add(
                    {
                        "type": "response.reasoning_summary_part.done",
                        **base,
                        "part": {"type": "summary_text", "text": text},
                    }
                )
            elif item["type"] == "message":
                add(
                    {
                        "type": "response.output_item.added",
                        "output_index": out_idx,
                        "item": {**item, "status": "in_progress", "content": []},
                    }
                )
                text = item["content"][0]["text"]
                base = {"item_id": iid, "output_index": out_idx, "content_index": 0}
                add(
                    {
                        "type": "response.content_part.added",
                        **base,
                        "part": {
                            "type": "output_text",
                            "text": "",
                            "annotations": [],
                            "logprobs": [],
                        },
                    }
                )
                for p in reply.text_pieces(text):
                    add(
                        {"type": "response.output_text.delta", **base, "delta": p, "logprobs": []},
                        "content",
                    )
                add({"type": "response.output_text.done", **base, "text": text, "logprobs": []})
                add({"type": "response.content_part.done", **base, "part": item["content"][0]})
            else:  # function_call
                add(
                    {
                        "type": "response.output_item.added",
                        "output_index": out_idx,
                        "item": {**item, "status": "in_progress", "arguments": ""},
                    }
                )
                base = {"item_id": iid, "output_index": out_idx}
                for frag in reply.arg_pieces(item["arguments"]):
                    add(
                        {"type": "response.function_call_arguments.delta", **base, "delta": frag},
                        "content",
                    )
                add(
                    {
                        "type": "response.function_call_arguments.done",
                        **base,
                        "name": item["name"],
                        "arguments": item["arguments"],
                    }
                )
            add({"type": "response.output_item.done", "output_index": out_idx, "item": item})
        status = "incomplete" if reply.truncated else "completed"
        final = self._response_obj(
            ctx, reply, resp_id, status, items, (reply.usage or Usage()).responses()
        )
        add({"type": f"response.{status}", "response": final}, "close")

        frames: list[_Frame] = []
        for seq, (ev, kind) in enumerate(events):
            ev = {"type": ev["type"], "sequence_number": seq, **ev}
            frames.append(_Frame(_event_line(ev["type"], ev), kind))
        spec = reply.stream_error or ErrorSpec(500)

        def error_frame(seq: int) -> bytes:
            failed = self._response_obj(
                ctx, reply, resp_id, "failed", [], None, error=spec.responses_failure()
            )
            ev = {"type": "response.failed", "sequence_number": seq, "response": failed}
            return _event_line("response.failed", ev)

        return frames, error_frame

    # -- Anthropic Messages ------------------------------------------------------------------------

    def _stop_reason(self, reply: Reply) -> str:
        if reply.stop_reason is not None:
            return reply.stop_reason
        if reply.calls:
            return "tool_use"
        if reply.truncated:
            return "max_tokens"
        return "stop_sequence" if reply.stop_sequence is not None else "end_turn"

    def _anthropic_blocks(self, ctx: _Ctx, reply: Reply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.redacted_thinking is not None:
            blocks.append({"type": "redacted_thinking", "data": reply.redacted_thinking})
        if reply.thinking is not None:
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": reply.thinking,
                    "signature": reply.signature or _fake_signature(),
                }
            )
        text = self._content(ctx, reply)
        if text or not (reply.calls or blocks):
            blocks.append({"type": "text", "text": text})
        for call in reply.calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": self._call_id(call, "toolu"),
                    "name": call.name,
                    "input": call.arguments_dict,
                    # not part of the wire format: the exact JSON to stream, popped before sending
                    "_json": call.arguments_json,
                }
            )
        return blocks

    def _anthropic_body(self, ctx: _Ctx, reply: Reply) -> dict[str, Any]:
        blocks = self._anthropic_blocks(ctx, reply)
        for b in blocks:
            b.pop("_json", None)
        return {
            "id": new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": blocks,
            "stop_reason": self._stop_reason(reply),
            "stop_sequence": reply.stop_sequence,
            "usage": (reply.usage or Usage()).anthropic(),
        }

    def _anthropic_frames(
        self, ctx: _Ctx, reply: Reply
    ) -> tuple[list[_Frame], Callable[[int], bytes]]:
        usage = reply.usage or Usage()
        frames: list[_Frame] = []

        def add(
            name: str, data: dict[str, Any], kind: Literal["open", "content", "close"] = "open"
        ) -> None:
            frames.append(_Frame(_event_line(name, data), kind))

        start_usage = usage.anthropic(output_tokens=1)
        add(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": new_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "model": ctx.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
        pinged = not reply.pings
        for index, block in enumerate(self._anthropic_blocks(ctx, reply)):
            btype = block["type"]
            if btype == "text":
                start_block: dict[str, Any] = {"type": "text", "text": ""}
            elif btype == "thinking":
                start_block = {"type": "thinking", "thinking": "", "signature": ""}
            elif btype == "tool_use":
                start_block = {
                    "type": "tool_use",
                    "id": block["id"],
                    "name": block["name"],
                    "input": {},
                }
            else:  # redacted_thinking arrives complete
                start_block = dict(block)
            add(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start_block},
            )
            if not pinged:
                add("ping", {"type": "ping"})
                pinged = True

            def delta(d: dict[str, Any], index: int = index) -> None:
                add(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": d},
                    "content",
                )

            if btype == "text":
                for p in reply.text_pieces(block["text"]):
                    delta({"type": "text_delta", "text": p})
            elif btype == "thinking":
                for p in split_text(block["thinking"], reply.reasoning_chunks):
                    delta({"type": "thinking_delta", "thinking": p})
                delta({"type": "signature_delta", "signature": block["signature"]})
            elif btype == "tool_use":
                delta({"type": "input_json_delta", "partial_json": ""})
                for frag in reply.arg_pieces(block["_json"]):
                    delta({"type": "input_json_delta", "partial_json": frag})
            add("content_block_stop", {"type": "content_block_stop", "index": index})

        if reply.delta_usage_output_only:
            delta_usage: dict[str, Any] = {"output_tokens": usage.output_tokens}
        else:
            full = usage.anthropic()
            delta_usage = {
                k: full[k]
                for k in (
                    "input_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                    "output_tokens",
                )
            }
        add(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": self._stop_reason(reply),
                    "stop_sequence": reply.stop_sequence,
                },
                "usage": delta_usage,
            },
            "close",
        )
        add("message_stop", {"type": "message_stop"}, "close")
        spec = reply.stream_error or ErrorSpec(529)

        def error_frame(_n: int) -> bytes:
            return _event_line("error", {"type": "error", "error": spec.anthropic_error()})

        return frames, error_frame


# --------------------------------------------------------------------------------------------------
# module-level helpers


def _data_line(obj: Any) -> bytes:
    return f"data: {_dumps(obj)}\n\n".encode()


def _event_line(name: str, obj: Any) -> bytes:
    return f"event: {name}\ndata: {_dumps(obj)}\n\n".encode()


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _looks_anthropic(request: web.Request) -> bool:
    return ANTHROPIC_VERSION_HEADER in request.headers or "x-api-key" in request.headers


def _fake_signature() -> str:
    return "EqQBCkYIBxgCKkB" + base64.b64encode(secrets.token_bytes(96)).decode()


def fake_embedding(text: str, dims: int) -> list[float]:
    """Deterministic unit vector derived from the text."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    vec = out[:dims]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def _anthropic_text_blocks_ok(content: Any) -> bool:
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text" and block.get("text") == "":
                return False
    return True


def _validate_anthropic(body: dict[str, Any], *, count_tokens: bool) -> str | None:
    """Return the real API's 400 message for the most common request mistakes, else None."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not count_tokens:
        if "max_tokens" not in body:
            return "max_tokens: Field required"
        mt = body["max_tokens"]
        if not isinstance(mt, int) or isinstance(mt, bool):
            return "max_tokens: Input should be a valid integer"
        if mt < 1:
            return "max_tokens: Input should be greater than or equal to 1"
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        return "messages: Field required"
    temp = body.get("temperature")
    if isinstance(temp, int | float) and not isinstance(temp, bool) and not 0 <= temp <= 1:
        return "temperature: Input should be less than or equal to 1"
    tools = body.get("tools")
    if isinstance(tools, list):
        for k, tool in enumerate(tools):
            if not isinstance(tool, dict):
                return f"tools.{k}: Input should be a valid dictionary"
            custom = tool.get("type") in (None, "custom") or "input_schema" in tool
            if custom:
                if "input_schema" not in tool:
                    return f"tools.{k}.custom.input_schema: Field required"
                if not _TOOL_NAME_RE.match(str(tool.get("name", ""))):
                    return (
                        f"tools.{k}.custom.name: String should match pattern "
                        "'^[a-zA-Z0-9_-]{1,128}$'"
                    )
    if not _anthropic_text_blocks_ok(body.get("system")):
        return "system: text content blocks must be non-empty"
    last = len(msgs) - 1
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return f"messages.{i}: Input should be a valid dictionary"
        role = m.get("role")
        if role not in ("user", "assistant", "system"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = m.get("content")
        final_assistant = i == last and role == "assistant"
        if isinstance(content, str):
            if content == "" and not final_assistant:
                return (
                    f"messages.{i}: all messages must have non-empty content except for the "
                    "optional final assistant message"
                )
        elif isinstance(content, list):
            if not content and not final_assistant:
                return (
                    f"messages.{i}: all messages must have non-empty content except for the "
                    "optional final assistant message"
                )
            if not _anthropic_text_blocks_ok(content):
                return "messages: text content blocks must be non-empty"
        else:
            return f"messages.{i}.content: Input should be a valid list"
    # tool_use <-> tool_result pairing
    for i, m in enumerate(msgs):
        content = m.get("content")
        blocks = content if isinstance(content, list) else []
        if m.get("role") == "assistant":
            ids = [
                b.get("id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"
            ]
            if ids and i < last:
                nxt = msgs[i + 1]
                nxt_content = nxt.get("content")
                nblocks = nxt_content if isinstance(nxt_content, list) else []
                results = {
                    b.get("tool_use_id")
                    for b in nblocks
                    if isinstance(b, dict) and b.get("type") == "tool_result"
                }
                missing = [x for x in ids if x not in results]
                if missing:
                    return (
                        f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                        f"immediately after: {', '.join(map(str, missing))}. Each `tool_use` block "
                        "must have a corresponding `tool_result` block in the next message."
                    )
        elif m.get("role") == "user":
            prev = msgs[i - 1] if i > 0 else {}
            prev_content = prev.get("content")
            pblocks = prev_content if isinstance(prev_content, list) else []
            prev_ids = (
                {
                    b.get("id")
                    for b in pblocks
                    if isinstance(b, dict) and b.get("type") == "tool_use"
                }
                if prev.get("role") == "assistant"
                else set()
            )
            for j, b in enumerate(blocks):
                if (
                    isinstance(b, dict)
                    and b.get("type") == "tool_result"
                    and b.get("tool_use_id") not in prev_ids
                ):
                    return (
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {b.get('tool_use_id')}. Each `tool_result` block "
                        "must have a "
                        "corresponding `tool_use` block in the previous message."
                    )
    return None


_OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def _validate_openai(
    body: dict[str, Any], endpoint: str, *, azure_deployment: str | None
) -> tuple[str, str | None, str | None] | None:
    """(message, param, code) of the real API's 400 for common mistakes, else None."""
    if not isinstance(body.get("model"), str) and azure_deployment is None:
        if endpoint == "chat_completions":
            return ("you must provide a model parameter", None, None)
        return ("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if (
        body.get("stream_options") is not None
        and body.get("stream") is not True
        and endpoint
        in (
            "chat_completions",
            "completions",
        )
    ):
        return (
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    if endpoint == "embeddings" and "input" not in body:
        return ("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if endpoint != "chat_completions":
        return None
    temp = body.get("temperature")
    if isinstance(temp, int | float) and not isinstance(temp, bool) and temp > 2:
        return (
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got "
            f"{temp} instead.",
            "temperature",
            "decimal_above_max_value",
        )
    msgs = body.get("messages")
    if msgs is None:
        return ("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(msgs, list):
        return ("Invalid type for 'messages': expected an array.", "messages", "invalid_type")
    if not msgs:
        return (
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            "messages",
            "empty_array",
        )
    expected: list[str] = []  # tool_call ids still waiting for a tool message
    expected_from = -1
    after_tool_calls = False  # right after an assistant message with tool_calls (or its tools)
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return (
                f"Invalid type for 'messages[{i}]': expected an object.",
                f"messages.[{i}]",
                "invalid_type",
            )
        role = m.get("role")
        if role not in _OPENAI_ROLES:
            return (
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
        if role == "tool":
            if not after_tool_calls:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{i}].role",
                    None,
                )
            tool_call_id = m.get("tool_call_id")
            if isinstance(tool_call_id, str) and tool_call_id in expected:
                expected.remove(tool_call_id)
            continue
        if expected:
            break
        calls = m.get("tool_calls") if role == "assistant" else None
        after_tool_calls = False
        if isinstance(calls, list) and calls:
            after_tool_calls = True
            expected = [str(c.get("id")) for c in calls if isinstance(c, dict)]
            expected_from = i
    if expected:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            f"{', '.join(expected)}",
            f"messages.[{expected_from}].role",
            None,
        )
    return None


__all__ = [
    "DEFAULT_MODELS",
    "GENERATION_ENDPOINTS",
    "Api",
    "CustomHandler",
    "Endpoint",
    "ErrorSpec",
    "FakeUpstream",
    "Outcome",
    "RecordedRequest",
    "Reply",
    "ReplyLike",
    "ToolCall",
    "Usage",
    "estimate_tokens",
    "fake_embedding",
    "new_id",
    "split_text",
]
