"""The small internal form every wire codec decodes into and encodes from.

Each wire protocol (Anthropic Messages, OpenAI Chat Completions, later OpenAI Responses) has
one codec that maps its requests, responses and stream events to and from these types. A
translation is then `decode(client protocol)` followed by `encode(upstream protocol)`, never a
pairwise translator. Same-protocol traffic never comes here: it takes the passthrough path.

The types are plain dataclasses: no I/O, no validation beyond what the codecs do at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

JSONObject = dict[str, Any]

Role = Literal["system", "user", "assistant"]

StopReason = Literal[
    "end_turn",  # natural stop
    "max_tokens",  # output limit reached
    "stop_sequence",  # a stop sequence fired
    "tool_use",  # the model called a tool
    "refusal",  # content filter / refusal
    "pause_turn",
    "context_window_exceeded",
]


# --- content parts -------------------------------------------------------------------------


@dataclass(slots=True)
class TextPart:
    text: str
    # Opaque per-protocol extras kept for a round trip to the same protocol (e.g. cache_control).
    cache_control: JSONObject | None = None


@dataclass(slots=True)
class ImagePart:
    """An image, either inline (base64 `data` + `media_type`) or by `url`."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


@dataclass(slots=True)
class DocumentPart:
    """A document: plain text (`text`) or binary (`data` base64 + `media_type`, e.g. a PDF)."""

    media_type: str | None = None
    data: str | None = None
    text: str | None = None
    url: str | None = None
    title: str | None = None


@dataclass(slots=True)
class ToolCallPart:
    """A call the assistant made. `arguments` is the JSON text of the input object."""

    id: str
    name: str
    arguments: str
    # Provider-specific data that must be echoed back with the call (Gemini thought signatures).
    extra: JSONObject | None = None


@dataclass(slots=True)
class ToolResultPart:
    tool_call_id: str
    content: list[TextPart | ImagePart | DocumentPart] = field(default_factory=list)
    is_error: bool = False


@dataclass(slots=True)
class ReasoningPart:
    """Model reasoning. `signature` is Anthropic's opaque signature; only Anthropic can verify it.

    `redacted` holds the opaque payload of an Anthropic `redacted_thinking` block.
    """

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


Part = TextPart | ImagePart | DocumentPart | ToolCallPart | ToolResultPart | ReasoningPart


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part] = field(default_factory=list)


# --- tools -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ToolDef:
    name: str
    description: str | None
    parameters: JSONObject  # JSON schema of the input object


@dataclass(slots=True)
class ToolChoice:
    """`auto`, `any` (must call some tool), `none`, or `tool` (must call `name`)."""

    type: Literal["auto", "any", "none", "tool"] = "auto"
    name: str | None = None


# --- request -------------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    model: str
    messages: list[Message]
    # The leading system prompt as parts; mid-conversation system messages stay in `messages`.
    system: list[TextPart] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    tools: list[ToolDef] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # "low" | "medium" | "high" | ...; from Anthropic thinking/effort or OpenAI reasoning_effort.
    reasoning_effort: str | None = None
    # Anthropic thinking budget when the client gave one explicitly.
    thinking_budget: int | None = None
    # OpenAI-style response_format object (json_object / json_schema), if any.
    response_format: JSONObject | None = None
    user: str | None = None
    # Whether the client wants streamed usage (OpenAI stream_options.include_usage).
    include_usage: bool = False


# --- response ------------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """Token usage with non-overlapping buckets.

    `input_tokens` excludes cached tokens (Anthropic semantics); `output_tokens` includes
    reasoning tokens. OpenAI's prompt_tokens = input + cache_read + cache_write.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(slots=True)
class Response:
    id: str
    model: str
    parts: list[Part]
    stop_reason: StopReason = "end_turn"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)


# --- stream events -------------------------------------------------------------------------


@dataclass(slots=True)
class StreamStart:
    id: str
    model: str
    usage: Usage | None = None


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str = ""
    signature: str | None = None
    redacted: str | None = None


@dataclass(slots=True)
class ToolCallStart:
    """A new tool call. `index` counts tool calls in this response: 0, 1, 2, ..."""

    index: int
    id: str
    name: str
    extra: JSONObject | None = None


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    arguments: str


@dataclass(slots=True)
class UsageUpdate:
    usage: Usage


@dataclass(slots=True)
class StreamFinish:
    stop_reason: StopReason
    stop_sequence: str | None = None
    usage: Usage | None = None


@dataclass(slots=True)
class StreamError:
    """An error after the stream began. `status` is the HTTP status it would have had."""

    status: int
    message: str
    type: str | None = None


StreamEvent = (
    StreamStart
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | UsageUpdate
    | StreamFinish
    | StreamError
)
