"""Anthropic Messages codec: requests, responses and SSE streams to and from the internal form.

Decoding reads what Claude Code and the Anthropic SDKs send (protocols.md §1); encoding writes
what the Anthropic API and its SDK stream accumulator accept. Anthropic-only request fields
(cache_control on non-text blocks, context_management, betas, container, service_tier) are not
carried: same-protocol traffic takes the passthrough path and never comes here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast

from desktop_proxy.protocols.errors import (
    ProtocolError,
    anthropic_error_body,
    as_object,
    optional_bool,
    optional_dict,
    optional_int,
    optional_list,
    optional_number,
    optional_str,
    require_dict,
    require_int,
    require_list,
    require_str,
    status_for_anthropic_error_type,
)
from desktop_proxy.protocols.internal import (
    DocumentPart,
    ImagePart,
    JSONObject,
    Message,
    Part,
    ReasoningDelta,
    ReasoningPart,
    Request,
    Response,
    Role,
    StopReason,
    StreamError,
    StreamEvent,
    StreamFinish,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolChoice,
    ToolDef,
    ToolResultPart,
    Usage,
    UsageUpdate,
)
from desktop_proxy.protocols.quirks import UpstreamTraits, inline_system_messages
from desktop_proxy.protocols.sse import SSEEvent, encode_sse

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "StreamDecoder",
    "StreamEncoder",
    "anthropic_tool_id",
    "decode_request",
    "decode_response",
    "effort_for_budget",
    "encode_request",
    "encode_response",
    "parse_tool_arguments",
]

# Anthropic requires max_tokens; OpenAI clients often omit it (protocols.md §4.4, as KE does).
DEFAULT_MAX_TOKENS = 4096

# Thinking budget ↔ effort, LiteLLM's constants (§4.1/§4.4) so a round trip is stable.
_BUDGET_FOR_EFFORT: dict[str, int] = {
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}
_MIN_THINKING_BUDGET = 1024

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# History blocks of Anthropic server tools: meaningless to other upstreams, dropped.
_SERVER_TOOL_BLOCKS = frozenset(
    {
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "container_upload",
        "tool_reference",
    }
)

# Claude Code's first system block is a billing line for Anthropic, not an instruction; its
# version suffix changes between releases and would defeat other upstreams' prefix caching.
_BILLING_HEADER = "x-anthropic-billing-header:"

ToolChoiceType = Literal["auto", "any", "none", "tool"]

_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


# --- shared helpers -------------------------------------------------------------------------


def anthropic_tool_id(tool_call_id: str) -> str:
    """A tool-use id matching Anthropic's `^[a-zA-Z0-9_-]+$`.

    Deterministic, because the client sends the id back with the tool result and both must be
    rewritten the same way (§4.9); a hash suffix keeps rewritten ids distinct.
    """
    if _TOOL_ID.match(tool_call_id):
        return tool_call_id
    digest = hashlib.sha256(tool_call_id.encode()).hexdigest()[:8]
    cleaned = _TOOL_ID_BAD_CHARS.sub("_", tool_call_id)
    return f"{cleaned}_{digest}" if cleaned else f"toolu_{digest}"


# A tool call's provider extras (Gemini's thought signature, P12) must come back with the call
# in the next request, but Claude Code keeps only a tool_use's id, name and input. So the extras
# ride in the id, after this marker, as base64url JSON: the id stays within Anthropic's
# `^[a-zA-Z0-9_-]+$`, survives a gateway restart, and tool_use and tool_result decode alike.
_EXTRA_MARK = "__dpx_"


def tool_id_with_extra(tool_id: str, extra: JSONObject | None) -> str:
    if not extra:
        return tool_id
    packed = json.dumps(extra, separators=(",", ":"), ensure_ascii=False).encode()
    return tool_id + _EXTRA_MARK + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def split_tool_id(tool_id: str) -> tuple[str, JSONObject | None]:
    """The id the upstream gave the call, and its extras (see `tool_id_with_extra`)."""
    head, mark, packed = tool_id.partition(_EXTRA_MARK)
    if not mark or not head:
        return tool_id, None
    try:
        extra = json.loads(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
    except (binascii.Error, ValueError):
        return tool_id, None  # not ours after all: an id that happens to contain the marker
    return (head, extra) if isinstance(extra, dict) else (tool_id, None)


def parse_tool_arguments(arguments: str) -> JSONObject:
    """The input object of a tool call from its JSON text (P6: weak models send bad JSON).

    Empty text is `{}`; text with trailing garbage keeps its leading JSON object; anything else
    that is not a JSON object is kept as `{"raw_arguments": text}` so nothing is lost and the
    tool reports the problem to the model.
    """
    text = arguments.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value, _ = json.JSONDecoder().raw_decode(text)
        except ValueError:
            return {"raw_arguments": arguments}
    return value if isinstance(value, dict) else {"raw_arguments": arguments}


def effort_for_budget(budget: int) -> str:
    """The reasoning effort a thinking budget stands for (LiteLLM's buckets, §4.1)."""
    if budget >= _BUDGET_FOR_EFFORT["high"]:
        return "high"
    if budget >= _BUDGET_FOR_EFFORT["medium"]:
        return "medium"
    return "low"


def _dump_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _message_id(upstream_id: str) -> str:
    if upstream_id.startswith("msg_"):
        return upstream_id
    return f"msg_{upstream_id}" if upstream_id else _new_id("msg_")


_STOP_TO_WIRE: dict[StopReason, str] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
    "context_window_exceeded": "model_context_window_exceeded",
}
_STOP_FROM_WIRE: dict[str, StopReason] = {wire: stop for stop, wire in _STOP_TO_WIRE.items()}


def _stop_from_wire(value: object) -> StopReason:
    return _STOP_FROM_WIRE.get(value, "end_turn") if isinstance(value, str) else "end_turn"


# --- request: decode -------------------------------------------------------------------------


def decode_request(body: object, *, require_max_tokens: bool = True) -> Request:
    """Reads an Anthropic Messages request (or, with `require_max_tokens=False`, a
    count_tokens request).

    Raises:
        ProtocolError: a field is missing, mistyped or unknown, with its path in the message.
    """
    obj = as_object(body, "")
    max_tokens = require_int(obj, "max_tokens") if require_max_tokens else None
    if max_tokens is None:
        max_tokens = optional_int(obj, "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise ProtocolError("max_tokens: must be at least 1", "max_tokens")
    output_config = optional_dict(obj, "output_config") or {}
    effort, budget = _decode_thinking(optional_dict(obj, "thinking"), output_config)
    tool_choice, parallel = _decode_tool_choice(optional_dict(obj, "tool_choice"))
    metadata = optional_dict(obj, "metadata") or {}
    return Request(
        model=require_str(obj, "model"),
        messages=[
            _decode_message(raw, f"messages[{i}]")
            for i, raw in enumerate(require_list(obj, "messages"))
        ],
        system=_decode_system(obj.get("system")),
        max_tokens=max_tokens,
        temperature=optional_number(obj, "temperature"),
        top_p=optional_number(obj, "top_p"),
        top_k=optional_int(obj, "top_k"),
        stop=_decode_str_list(obj, "stop_sequences"),
        stream=bool(optional_bool(obj, "stream")),
        tools=_decode_tools(optional_list(obj, "tools")),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        reasoning_effort=effort,
        thinking_budget=budget,
        response_format=_decode_output_format(output_config),
        user=optional_str(metadata, "user_id", "metadata"),
    )


def _decode_str_list(obj: JSONObject, key: str) -> list[str]:
    values = optional_list(obj, key)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ProtocolError(f"{key}[{i}]: must be a string", f"{key}[{i}]")
    return list(values)


def _decode_system(raw: object) -> list[TextPart]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [TextPart(text=raw)] if raw else []
    if not isinstance(raw, list):
        raise ProtocolError("system: must be a string or a list of text blocks", "system")
    parts: list[TextPart] = []
    for i, block in enumerate(raw):
        path = f"system[{i}]"
        obj = as_object(block, path)
        if obj.get("type") != "text":
            raise ProtocolError(f"{path}: system blocks must be text blocks", path)
        part = _decode_text_block(obj, path)
        if not part.text.startswith(_BILLING_HEADER):
            parts.append(part)
    return parts


def _decode_text_block(obj: JSONObject, path: str) -> TextPart:
    return TextPart(
        text=require_str(obj, "text", path),
        cache_control=optional_dict(obj, "cache_control", path),
    )


def _decode_message(raw: object, path: str) -> Message:
    obj = as_object(raw, path)
    role = require_str(obj, "role", path)
    if role not in ("user", "assistant", "system"):
        raise ProtocolError(
            f"{path}.role: must be 'user', 'assistant' or 'system', got '{role}'", f"{path}.role"
        )
    checked_role = cast(Role, role)
    content = obj.get("content")
    if isinstance(content, str):
        return Message(role=checked_role, parts=[TextPart(text=content)] if content else [])
    if not isinstance(content, list):
        raise ProtocolError(
            f"{path}.content: must be a string or a list of blocks", f"{path}.content"
        )
    parts: list[Part] = []
    for j, block in enumerate(content):
        part = _decode_block(block, f"{path}.content[{j}]", checked_role)
        if part is not None:
            parts.append(part)
    return Message(role=checked_role, parts=parts)


def _decode_block(raw: object, path: str, role: Role) -> Part | None:
    obj = as_object(raw, path)
    block_type = require_str(obj, "type", path)
    if role == "system" and block_type != "text":
        raise ProtocolError(f"{path}: system messages may only hold text blocks", path)
    if block_type == "text":
        return _decode_text_block(obj, path)
    if block_type == "image":
        return _decode_image(require_dict(obj, "source", path), f"{path}.source")
    if block_type == "document":
        return _decode_document(obj, path)
    if block_type == "tool_use":
        tool_id, extra = split_tool_id(require_str(obj, "id", path))
        return ToolCallPart(
            id=tool_id,
            name=require_str(obj, "name", path),
            arguments=_dump_json(require_dict(obj, "input", path)),
            extra=extra,
        )
    if block_type == "tool_result":
        return _decode_tool_result(obj, path)
    if block_type == "thinking":
        return ReasoningPart(
            text=require_str(obj, "thinking", path),
            signature=optional_str(obj, "signature", path),
        )
    if block_type == "redacted_thinking":
        return ReasoningPart(redacted=require_str(obj, "data", path))
    if block_type == "search_result":
        return _decode_search_result(obj, path)
    if block_type in _SERVER_TOOL_BLOCKS:
        return None
    raise ProtocolError(f"{path}: unknown block type '{block_type}'", path)


def _decode_image(source: JSONObject, path: str) -> ImagePart:
    kind = require_str(source, "type", path)
    if kind == "base64":
        return ImagePart(
            media_type=require_str(source, "media_type", path),
            data=require_str(source, "data", path),
        )
    if kind == "url":
        return ImagePart(url=require_str(source, "url", path))
    raise ProtocolError(
        f"{path}.type: image source '{kind}' cannot be translated (use base64 or url)",
        f"{path}.type",
    )


def _decode_document(obj: JSONObject, path: str) -> DocumentPart:
    source_path = f"{path}.source"
    source = require_dict(obj, "source", path)
    title = optional_str(obj, "title", path)
    kind = require_str(source, "type", source_path)
    if kind == "base64":
        return DocumentPart(
            media_type=require_str(source, "media_type", source_path),
            data=require_str(source, "data", source_path),
            title=title,
        )
    if kind == "text":
        return DocumentPart(
            media_type="text/plain", text=require_str(source, "data", source_path), title=title
        )
    if kind == "content":
        return DocumentPart(
            media_type="text/plain", text=_content_text(source, source_path), title=title
        )
    if kind == "url":
        return DocumentPart(url=require_str(source, "url", source_path), title=title)
    raise ProtocolError(
        f"{source_path}.type: document source '{kind}' cannot be translated",
        f"{source_path}.type",
    )


def _content_text(source: JSONObject, path: str) -> str:
    content = source.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ProtocolError(f"{path}.content: must be a string or a list of blocks", path)
    texts = []
    for i, block in enumerate(content):
        obj = as_object(block, f"{path}.content[{i}]")
        if obj.get("type") == "text":
            texts.append(require_str(obj, "text", f"{path}.content[{i}]"))
    return "\n\n".join(texts)


def _decode_search_result(obj: JSONObject, path: str) -> TextPart:
    title = optional_str(obj, "title", path) or ""
    source = optional_str(obj, "source", path) or ""
    header = " — ".join(x for x in (title, source) if x)
    body = _content_text(obj, path)
    return TextPart(text=f"{header}\n{body}" if header else body)


def _decode_tool_result(obj: JSONObject, path: str) -> ToolResultPart:
    content = obj.get("content")
    parts: list[TextPart | ImagePart | DocumentPart] = []
    if isinstance(content, str):
        if content:
            parts.append(TextPart(text=content))
    elif isinstance(content, list):
        for i, block in enumerate(content):
            part = _decode_block(block, f"{path}.content[{i}]", "user")
            if isinstance(part, TextPart | ImagePart | DocumentPart):
                parts.append(part)
            elif part is not None:
                raise ProtocolError(
                    f"{path}.content[{i}]: not allowed inside a tool_result",
                    f"{path}.content[{i}]",
                )
    elif content is not None:
        raise ProtocolError(
            f"{path}.content: must be a string or a list of blocks", f"{path}.content"
        )
    return ToolResultPart(
        tool_call_id=split_tool_id(require_str(obj, "tool_use_id", path))[0],
        content=parts,
        is_error=bool(optional_bool(obj, "is_error", path)),
    )


def _decode_tools(raw: list[Any]) -> list[ToolDef]:
    tools: list[ToolDef] = []
    for i, item in enumerate(raw):
        path = f"tools[{i}]"
        obj = as_object(item, path)
        tool_type = obj.get("type")
        if "input_schema" not in obj and tool_type not in (None, "custom"):
            continue  # a server tool (web_search_*, bash_*, ...): nothing to translate
        tools.append(
            ToolDef(
                name=require_str(obj, "name", path),
                description=optional_str(obj, "description", path),
                parameters=require_dict(obj, "input_schema", path),
            )
        )
    return tools


def _decode_tool_choice(raw: JSONObject | None) -> tuple[ToolChoice | None, bool | None]:
    if raw is None:
        return None, None
    kind = require_str(raw, "type", "tool_choice")
    if kind not in ("auto", "any", "tool", "none"):
        raise ProtocolError(
            f"tool_choice.type: must be 'auto', 'any', 'tool' or 'none', got '{kind}'",
            "tool_choice.type",
        )
    name = require_str(raw, "name", "tool_choice") if kind == "tool" else None
    disable_parallel = optional_bool(raw, "disable_parallel_tool_use", "tool_choice")
    choice = ToolChoice(type=cast(ToolChoiceType, kind), name=name)
    return choice, (False if disable_parallel else None)


def _decode_thinking(
    thinking: JSONObject | None, output_config: JSONObject
) -> tuple[str | None, int | None]:
    effort = optional_str(output_config, "effort", "output_config")
    if thinking is None:
        return effort, None
    kind = require_str(thinking, "type", "thinking")
    if kind == "enabled":
        budget = require_int(thinking, "budget_tokens", "thinking")
        return effort or effort_for_budget(budget), budget
    if kind == "adaptive":
        return effort or "high", None
    if kind == "disabled":
        return None, None
    raise ProtocolError(
        f"thinking.type: must be 'enabled', 'adaptive' or 'disabled', got '{kind}'",
        "thinking.type",
    )


def _decode_output_format(output_config: JSONObject) -> JSONObject | None:
    fmt = optional_dict(output_config, "format", "output_config")
    if fmt is None or fmt.get("type") != "json_schema":
        return None
    schema = require_dict(fmt, "schema", "output_config.format")
    return {"type": "json_schema", "json_schema": {"name": "structured_output", "schema": schema}}


# --- request: encode -------------------------------------------------------------------------


def encode_request(req: Request, model: str, *, traits: UpstreamTraits | None = None) -> JSONObject:
    """An Anthropic Messages request for `model` (§4.4), e.g. for an OpenAI client.

    Mid-conversation system messages become user text (the upstream gets no beta header),
    consecutive tool results share one user message, reasoning without an Anthropic signature
    is dropped (P21), empty text blocks are never sent (P5), and a forced tool choice becomes
    `auto` when thinking is on (P22).

    Raises:
        ProtocolError: content Anthropic cannot take (e.g. an SVG image).
    """
    max_tokens = req.max_tokens or DEFAULT_MAX_TOKENS
    if traits is not None and traits.max_output_tokens is not None:
        max_tokens = min(max_tokens, traits.max_output_tokens)
    body: JSONObject = {"model": model, "max_tokens": max_tokens}
    system = [_encode_text(p, keep_cache=True) for p in req.system if p.text.strip()]
    if system:
        body["system"] = system
    body["messages"] = _encode_messages(req.messages)
    budget = _thinking_budget(req, max_tokens)
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    else:
        # Thinking only allows the default sampling settings.
        _encode_sampling(req, body)
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.tools:
        body["tools"] = [_encode_tool(t) for t in req.tools]
        choice = _encode_tool_choice(req, thinking=budget is not None)
        if choice is not None:
            body["tool_choice"] = choice
    output_format = _encode_output_format(req.response_format)
    if output_format is not None:
        body["output_config"] = {"format": output_format}
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    return body


def _encode_sampling(req: Request, body: JSONObject) -> None:
    if req.temperature is not None:
        body["temperature"] = min(max(req.temperature, 0.0), 1.0)
    elif req.top_p is not None:
        # Recent Claude models reject temperature and top_p together; OpenAI clients often
        # send both, so temperature wins.
        body["top_p"] = req.top_p
    if req.top_k is not None:
        body["top_k"] = req.top_k


def _thinking_budget(req: Request, max_tokens: int) -> int | None:
    budget = req.thinking_budget
    if budget is None:
        if req.reasoning_effort is None:
            return None
        budget = _BUDGET_FOR_EFFORT.get(req.reasoning_effort)
        if budget is None:  # "none", "minimal"
            return None
    # The budget must stay below max_tokens and at or above Anthropic's minimum.
    budget = min(budget, max_tokens - 1)
    return budget if budget >= _MIN_THINKING_BUDGET else None


def _encode_tool(tool: ToolDef) -> JSONObject:
    schema = dict(tool.parameters) if tool.parameters else {}
    schema.setdefault("type", "object")
    if schema["type"] == "object":
        schema.setdefault("properties", {})
    out: JSONObject = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["input_schema"] = schema
    return out


def _encode_tool_choice(req: Request, *, thinking: bool) -> JSONObject | None:
    choice = req.tool_choice
    kind = choice.type if choice is not None else None
    if thinking and kind in ("any", "tool"):
        kind = "auto"
    if kind == "none":
        return {"type": "none"}
    out: JSONObject | None = None
    if kind == "tool" and choice is not None and choice.name:
        out = {"type": "tool", "name": choice.name}
    elif kind == "any":
        out = {"type": "any"}
    elif kind == "auto":
        out = {"type": "auto"}
    if req.parallel_tool_calls is False:
        out = out or {"type": "auto"}
        out["disable_parallel_tool_use"] = True
    return out


def _encode_output_format(response_format: JSONObject | None) -> JSONObject | None:
    if not response_format or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return None
    return {"type": "json_schema", "schema": schema}


def _encode_messages(messages: list[Message]) -> list[JSONObject]:
    out: list[JSONObject] = []
    for index, message in enumerate(inline_system_messages(messages)):
        blocks = _encode_blocks(message, f"messages[{index}]")
        if not blocks:
            continue
        if out and out[-1]["role"] == message.role:
            # One user turn may hold many tool results; Anthropic wants them together.
            merged = [*out[-1]["content"], *blocks]
            out[-1]["content"] = _ordered_blocks(message.role, merged)
        else:
            out.append({"role": message.role, "content": blocks})
    return out


def _encode_blocks(message: Message, path: str) -> list[JSONObject]:
    blocks = []
    for part in message.parts:
        block = _encode_part(part, path)
        if block is not None:
            blocks.append(block)
    return _ordered_blocks(message.role, blocks)


def _ordered_blocks(role: str, blocks: list[JSONObject]) -> list[JSONObject]:
    # Tool results first in a user turn; thinking, then text, then tool_use in an assistant turn
    # (a recorded 400 exists for [tool_use, text]).
    if role == "user":
        rank = {"tool_result": 0}
    else:
        rank = {"thinking": 0, "redacted_thinking": 0, "tool_use": 2}
    return sorted(blocks, key=lambda b: rank.get(b["type"], 1))


def _encode_part(part: Part, path: str) -> JSONObject | None:
    if isinstance(part, TextPart):
        return _encode_text(part, keep_cache=True) if part.text.strip() else None
    if isinstance(part, ImagePart):
        return _encode_image(part, path)
    if isinstance(part, DocumentPart):
        return _encode_document(part, path)
    if isinstance(part, ToolCallPart):
        return {
            "type": "tool_use",
            "id": anthropic_tool_id(part.id),
            "name": part.name,
            "input": parse_tool_arguments(part.arguments),
        }
    if isinstance(part, ToolResultPart):
        return _encode_tool_result(part, path)
    return _encode_reasoning(part)


def _encode_text(part: TextPart, *, keep_cache: bool) -> JSONObject:
    block: JSONObject = {"type": "text", "text": part.text}
    if keep_cache and part.cache_control:
        block["cache_control"] = part.cache_control
    return block


def _normalized_image_type(media_type: str | None) -> str | None:
    if media_type is None:
        return None
    lowered = media_type.lower()
    return "image/jpeg" if lowered == "image/jpg" else lowered


def _encode_image(part: ImagePart, path: str) -> JSONObject:
    if part.data is not None:
        media_type = _normalized_image_type(part.media_type)
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise ProtocolError(
                f"{path}: image type '{part.media_type}' is not supported by Anthropic "
                "(use JPEG, PNG, GIF or WebP)",
                path,
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": part.data},
        }
    if part.url is None:
        raise ProtocolError(f"{path}: image without data or url", path)
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _encode_document(part: DocumentPart, path: str) -> JSONObject:
    if part.text is not None:
        source: JSONObject = {"type": "text", "media_type": "text/plain", "data": part.text}
    elif part.data is not None:
        if part.media_type != "application/pdf":
            raise ProtocolError(
                f"{path}: document type '{part.media_type}' is not supported by Anthropic "
                "(PDF or plain text only)",
                path,
            )
        source = {"type": "base64", "media_type": "application/pdf", "data": part.data}
    elif part.url is not None:
        source = {"type": "url", "url": part.url}
    else:
        raise ProtocolError(f"{path}: document without content", path)
    block: JSONObject = {"type": "document", "source": source}
    if part.title:
        block["title"] = part.title
    return block


def _encode_tool_result(part: ToolResultPart, path: str) -> JSONObject:
    block: JSONObject = {"type": "tool_result", "tool_use_id": anthropic_tool_id(part.tool_call_id)}
    content: list[JSONObject] = []
    for inner in part.content:
        if isinstance(inner, TextPart):
            if inner.text.strip():
                # cache_control is not allowed inside tool_result.content (§6.8).
                content.append(_encode_text(inner, keep_cache=False))
        elif isinstance(inner, ImagePart):
            content.append(_encode_image(inner, path))
        else:
            content.append(_encode_document(inner, path))
    if content:
        block["content"] = content
    if part.is_error:
        block["is_error"] = True
    return block


def _encode_reasoning(part: ReasoningPart) -> JSONObject | None:
    if part.redacted is not None:
        return {"type": "redacted_thinking", "data": part.redacted}
    if not part.signature:
        return None  # foreign reasoning: Anthropic rejects unsigned thinking blocks (P21)
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


# --- response --------------------------------------------------------------------------------


def decode_response(body: object) -> Response:
    """Reads an Anthropic Messages response from an upstream.

    Raises:
        ProtocolError: (status 502) the body is not a readable message.
    """
    path = "upstream"
    obj = as_object(body, path)
    parts: list[Part] = []
    for i, raw in enumerate(require_list(obj, "content", path)):
        part = _decode_response_block(as_object(raw, f"{path}.content[{i}]"), f"{path}.content")
        if part is not None:
            parts.append(part)
    usage = optional_dict(obj, "usage", path)
    return Response(
        id=optional_str(obj, "id", path) or "",
        model=optional_str(obj, "model", path) or "",
        parts=parts,
        stop_reason=_stop_from_wire(obj.get("stop_reason")),
        stop_sequence=optional_str(obj, "stop_sequence", path),
        usage=decode_usage(usage or {}, Usage()),
    )


def _decode_response_block(obj: JSONObject, path: str) -> Part | None:
    kind = obj.get("type")
    if kind == "text":
        return TextPart(text=require_str(obj, "text", path))
    if kind == "thinking":
        return ReasoningPart(
            text=require_str(obj, "thinking", path), signature=optional_str(obj, "signature", path)
        )
    if kind == "redacted_thinking":
        return ReasoningPart(redacted=require_str(obj, "data", path))
    if kind == "tool_use":
        return ToolCallPart(
            id=require_str(obj, "id", path),
            name=require_str(obj, "name", path),
            arguments=_dump_json(obj.get("input") or {}),
        )
    return None  # server-tool blocks and future types carry nothing we can translate


def decode_usage(raw: JSONObject, base: Usage) -> Usage:
    """`base` updated with the fields present in an Anthropic usage object (they are
    cumulative, so present values replace earlier ones)."""

    def pick(key: str, current: int) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else current

    details = raw.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=pick("input_tokens", base.input_tokens),
        output_tokens=pick("output_tokens", base.output_tokens),
        cache_read_tokens=pick("cache_read_input_tokens", base.cache_read_tokens),
        cache_write_tokens=pick("cache_creation_input_tokens", base.cache_write_tokens),
        reasoning_tokens=thinking if isinstance(thinking, int) else base.reasoning_tokens,
    )


def _usage_json(usage: Usage) -> JSONObject:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }


def encode_response(resp: Response, model: str) -> JSONObject:
    """An Anthropic Messages response to a client that asked for `model`.

    `content` may be empty: an empty text block would be rejected ("text content blocks must
    be non-empty") when the client later sends this turn back to a real Anthropic upstream
    (P5), while an empty list is valid and what Anthropic itself returns for an empty turn.
    """
    content = [block for block in map(_encode_response_part, resp.parts) if block is not None]
    has_tool = any(block["type"] == "tool_use" for block in content)
    stop = resp.stop_reason
    if has_tool and stop in ("end_turn", "stop_sequence", "pause_turn"):
        stop = "tool_use"
    return {
        "id": _message_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _STOP_TO_WIRE[stop],
        "stop_sequence": resp.stop_sequence if stop == "stop_sequence" else None,
        "usage": _usage_json(resp.usage),
    }


def _encode_response_part(part: Part) -> JSONObject | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text.strip() else None
    if isinstance(part, ToolCallPart):
        tool_id = anthropic_tool_id(part.id) if part.id else _new_id("toolu_")
        return {
            "type": "tool_use",
            "id": tool_id_with_extra(tool_id, part.extra),
            "name": part.name,
            "input": parse_tool_arguments(part.arguments),
        }
    if isinstance(part, ReasoningPart):
        if part.redacted is not None:
            return {"type": "redacted_thinking", "data": part.redacted}
        if not part.text and not part.signature:
            return None
        return {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
    return None


# --- stream: decode (Anthropic upstream → internal events) ----------------------------------

_BlockKind = Literal["text", "thinking", "tool", "other"]


class StreamDecoder:
    """Turns an Anthropic upstream's SSE events into internal stream events.

    Usage comes from `message_start` and the cumulative `message_delta`; `StreamFinish` is
    emitted at `message_stop` (or at `close()` if a stop reason was seen before EOF).
    """

    def __init__(self) -> None:
        self._blocks: dict[int, tuple[_BlockKind, int]] = {}
        self._tool_count = 0
        self._usage = Usage()
        self._stop: StopReason | None = None
        self._stop_sequence: str | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        """Whether the stream ended properly (a StreamFinish or StreamError was emitted)."""
        return self._finished

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if self._finished:
            return []
        try:
            data = json.loads(event.data)
        except ValueError:
            self._finished = True
            return [StreamError(502, f"upstream sent an unreadable stream event: {event.data!r}")]
        if not isinstance(data, dict):
            return []
        kind = event.event or data.get("type")
        handler = self._HANDLERS.get(kind) if isinstance(kind, str) else None
        return handler(self, data) if handler is not None else []

    def close(self) -> list[StreamEvent]:
        if self._finished or self._stop is None:
            return []
        return self._finish()

    def _on_message_start(self, data: JSONObject) -> list[StreamEvent]:
        message = data.get("message")
        message = message if isinstance(message, dict) else {}
        usage = message.get("usage")
        self._usage = decode_usage(usage if isinstance(usage, dict) else {}, self._usage)
        return [
            StreamStart(
                id=str(message.get("id") or ""),
                model=str(message.get("model") or ""),
                usage=Usage(**_usage_fields(self._usage)),
            )
        ]

    def _on_block_start(self, data: JSONObject) -> list[StreamEvent]:
        index = data.get("index")
        block = data.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return []
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = ("text", -1)
            text = block.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind == "thinking":
            self._blocks[index] = ("thinking", -1)
            text = block.get("thinking")
            return [ReasoningDelta(text=text)] if isinstance(text, str) and text else []
        if kind == "redacted_thinking":
            self._blocks[index] = ("other", -1)
            return [ReasoningDelta(redacted=str(block.get("data") or ""))]
        if kind == "tool_use":
            return self._start_tool(index, block)
        self._blocks[index] = ("other", -1)
        return []

    def _start_tool(self, index: int, block: JSONObject) -> list[StreamEvent]:
        tool_index = self._tool_count
        self._tool_count += 1
        self._blocks[index] = ("tool", tool_index)
        events: list[StreamEvent] = [
            ToolCallStart(
                index=tool_index, id=str(block.get("id") or ""), name=str(block.get("name") or "")
            )
        ]
        initial = block.get("input")
        if isinstance(initial, dict) and initial:
            events.append(ToolCallDelta(index=tool_index, arguments=_dump_json(initial)))
        return events

    def _on_block_delta(self, data: JSONObject) -> list[StreamEvent]:
        index = data.get("index")
        delta = data.get("delta")
        if not isinstance(index, int) or not isinstance(delta, dict):
            return []
        kind, tool_index = self._blocks.get(index, ("other", -1))
        delta_type = delta.get("type")
        if delta_type == "text_delta" and kind == "text":
            text = delta.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if delta_type == "thinking_delta" and kind == "thinking":
            text = delta.get("thinking")
            return [ReasoningDelta(text=text)] if isinstance(text, str) and text else []
        if delta_type == "signature_delta" and kind == "thinking":
            signature = delta.get("signature")
            return [ReasoningDelta(signature=signature)] if isinstance(signature, str) else []
        if delta_type == "input_json_delta" and kind == "tool":
            fragment = delta.get("partial_json")
            if isinstance(fragment, str) and fragment:
                return [ToolCallDelta(index=tool_index, arguments=fragment)]
        return []

    def _on_message_delta(self, data: JSONObject) -> list[StreamEvent]:
        delta = data.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            self._stop = _stop_from_wire(delta["stop_reason"])
            sequence = delta.get("stop_sequence")
            self._stop_sequence = sequence if isinstance(sequence, str) else None
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._usage = decode_usage(usage, self._usage)
            return [UsageUpdate(Usage(**_usage_fields(self._usage)))]
        return []

    def _on_message_stop(self, data: JSONObject) -> list[StreamEvent]:
        return self._finish()

    def _on_error(self, data: JSONObject) -> list[StreamEvent]:
        self._finished = True
        error = data.get("error")
        error = error if isinstance(error, dict) else {}
        error_type = error.get("type") if isinstance(error.get("type"), str) else None
        message = error.get("message")
        return [
            StreamError(
                status=status_for_anthropic_error_type(error_type),
                message=message if isinstance(message, str) else "upstream stream error",
                type=error_type,
            )
        ]

    def _finish(self) -> list[StreamEvent]:
        self._finished = True
        stop = self._stop or ("tool_use" if self._tool_count else "end_turn")
        return [
            StreamFinish(
                stop_reason=stop,
                stop_sequence=self._stop_sequence,
                usage=Usage(**_usage_fields(self._usage)),
            )
        ]

    _HANDLERS: ClassVar[dict[str, Callable[[StreamDecoder, JSONObject], list[StreamEvent]]]] = {
        "message_start": _on_message_start,
        "content_block_start": _on_block_start,
        "content_block_delta": _on_block_delta,
        "message_delta": _on_message_delta,
        "message_stop": _on_message_stop,
        "error": _on_error,
    }


def _usage_fields(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


# --- stream: encode (internal events → Anthropic SSE for the client) ------------------------


@dataclass(slots=True)
class _ToolState:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    closed: bool = False

    def json_complete(self) -> bool:
        text = "".join(self.arguments)
        if not text.strip():
            return False
        try:
            json.loads(text)
        except ValueError:
            return False
        return True


@dataclass(slots=True)
class _OpenBlock:
    kind: Literal["text", "thinking", "tool"]
    index: int
    tool: int = -1


class StreamEncoder:
    """Writes internal stream events as the Anthropic SSE grammar Claude Code needs (§4.3).

    `message_start` comes first (with the input-token estimate until real usage is known),
    exactly one content block is open at a time, blocks are numbered 0, 1, 2, ... in start
    order and opened lazily (never an empty or whitespace-only text block), and the stream ends
    with `message_delta` (final stop reason and usage) and `message_stop`. A `StreamError`
    becomes `event: error` with a valid Anthropic error type and no `message_stop`.

    Parallel tool calls whose argument fragments interleave are kept valid: a tool block stays
    open until its arguments form complete JSON, and calls that start meanwhile are buffered
    and written as whole blocks after it.
    """

    def __init__(self, model: str, input_tokens_estimate: int, message_id: str | None = None):
        self._model = model
        self._input_estimate = input_tokens_estimate
        self._message_id = message_id
        self._started = False
        self._done = False
        self._finish_seen = False
        self._next_index = 0
        self._open: _OpenBlock | None = None
        self._tools: dict[int, _ToolState] = {}
        self._queue: list[int] = []
        self._pending_space = ""
        self._usage: Usage | None = None
        self._output_chars = 0

    @property
    def finish_seen(self) -> bool:
        """Whether a StreamFinish arrived (False at `close()` means the upstream ended early)."""
        return self._finish_seen

    @property
    def done(self) -> bool:
        """Whether the stream is complete (`message_stop` or `error` written)."""
        return self._done

    def ping(self) -> bytes:
        """A keepalive event for long upstream silences (P18)."""
        return encode_sse({"type": "ping"}, "ping")

    def feed(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, StreamError):
            self._done = True
            body = anthropic_error_body(event.status, event.message, event.type)
            return encode_sse(body, "error")
        out = bytearray()
        if not self._started:
            start = event if isinstance(event, StreamStart) else None
            out += self._message_start(start)
        if isinstance(event, TextDelta):
            out += self._on_text(event.text)
        elif isinstance(event, ReasoningDelta):
            out += self._on_reasoning(event)
        elif isinstance(event, ToolCallStart):
            out += self._on_tool_start(event)
        elif isinstance(event, ToolCallDelta):
            out += self._on_tool_delta(event)
        elif isinstance(event, UsageUpdate):
            self._usage = event.usage
        elif isinstance(event, StreamFinish):
            self._finish_seen = True
            if event.usage is not None:
                self._usage = event.usage
            out += self._finish(event.stop_reason, event.stop_sequence)
        return bytes(out)

    def close(self) -> bytes:
        """Ends the stream if it is not ended yet (upstream EOF without a finish)."""
        if self._done:
            return b""
        out = bytearray()
        if not self._started:
            out += self._message_start(None)
        out += self._finish("end_turn", None)
        return bytes(out)

    # -- events

    def _message_start(self, start: StreamStart | None) -> bytes:
        self._started = True
        message_id = self._message_id or _message_id(start.id if start else "")
        input_tokens = self._input_estimate
        cache_read = cache_write = 0
        if start is not None and start.usage is not None and start.usage.input_tokens:
            input_tokens = start.usage.input_tokens
            cache_read = start.usage.cache_read_tokens
            cache_write = start.usage.cache_write_tokens
        message: JSONObject = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": 1,
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read,
            },
        }
        return encode_sse({"type": "message_start", "message": message}, "message_start")

    def _on_text(self, text: str) -> bytes:
        if not text:
            return b""
        self._output_chars += len(text)
        if self._open is None or self._open.kind != "text":
            if not text.strip():
                # Leading whitespace alone would make an empty-looking block (P5).
                self._pending_space += text
                return b""
            text, self._pending_space = self._pending_space + text, ""
            out = self._close_all() + self._start_block("text", {"type": "text", "text": ""})
        else:
            out = b""
        return out + self._delta({"type": "text_delta", "text": text})

    def _on_reasoning(self, event: ReasoningDelta) -> bytes:
        if event.redacted is not None:
            block = {"type": "redacted_thinking", "data": event.redacted}
            out = self._close_all() + self._start_block("thinking", block)
            return out + self._close_open()
        out = b""
        in_thinking = self._open is not None and self._open.kind == "thinking"
        if (event.text or event.signature) and not in_thinking:
            block = {"type": "thinking", "thinking": "", "signature": ""}
            out += self._close_all() + self._start_block("thinking", block)
        if event.text:
            self._output_chars += len(event.text)
            out += self._delta({"type": "thinking_delta", "thinking": event.text})
        if event.signature:
            out += self._delta({"type": "signature_delta", "signature": event.signature})
        return out

    def _on_tool_start(self, event: ToolCallStart) -> bytes:
        if event.index in self._tools:
            return b""
        tool_id = anthropic_tool_id(event.id) if event.id else _new_id("toolu_")
        tool_id = tool_id_with_extra(tool_id, event.extra)
        self._tools[event.index] = _ToolState(id=tool_id, name=event.name)
        self._pending_space = ""
        current = self._open_tool()
        if current is not None and not current.json_complete():
            self._queue.append(event.index)
            return b""
        return self._close_all() + self._start_tool(event.index)

    def _on_tool_delta(self, event: ToolCallDelta) -> bytes:
        tool = self._tools.get(event.index)
        if tool is None or not event.arguments or tool.closed:
            # No start, or a late fragment for a block already closed with complete JSON.
            return b""
        tool.arguments.append(event.arguments)
        self._output_chars += len(event.arguments)
        if self._open is None or self._open.tool != event.index:
            return b""  # queued: written whole when its block opens
        out = self._delta({"type": "input_json_delta", "partial_json": event.arguments})
        if self._queue and tool.json_complete():
            out += self._close_open()
        return out

    def _finish(self, stop: StopReason, stop_sequence: str | None) -> bytes:
        out = self._close_all()
        self._done = True
        if self._tools and stop in ("end_turn", "stop_sequence", "pause_turn"):
            stop = "tool_use"
        delta = {
            "stop_reason": _STOP_TO_WIRE[stop],
            "stop_sequence": stop_sequence if stop == "stop_sequence" else None,
        }
        usage = {"type": "message_delta", "delta": delta, "usage": self._final_usage()}
        return (
            out
            + encode_sse(usage, "message_delta")
            + encode_sse({"type": "message_stop"}, "message_stop")
        )

    def _final_usage(self) -> JSONObject:
        usage = self._usage
        if usage is None:
            usage = Usage(
                input_tokens=self._input_estimate,
                output_tokens=max(1, round(self._output_chars / 4)),
            )
        elif not (usage.input_tokens or usage.cache_read_tokens or usage.cache_write_tokens):
            usage = Usage(**{**_usage_fields(usage), "input_tokens": self._input_estimate})
        return _usage_json(usage)

    # -- blocks

    def _open_tool(self) -> _ToolState | None:
        if self._open is None or self._open.kind != "tool":
            return None
        return self._tools[self._open.tool]

    def _start_block(
        self, kind: Literal["text", "thinking", "tool"], block: JSONObject, tool: int = -1
    ) -> bytes:
        self._open = _OpenBlock(kind=kind, index=self._next_index, tool=tool)
        self._next_index += 1
        start = {"type": "content_block_start", "index": self._open.index, "content_block": block}
        return encode_sse(start, "content_block_start")

    def _start_tool(self, tool_index: int) -> bytes:
        tool = self._tools[tool_index]
        block = {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}
        out = self._start_block("tool", block, tool=tool_index)
        buffered = "".join(tool.arguments)
        if buffered:
            out += self._delta({"type": "input_json_delta", "partial_json": buffered})
        return out

    def _delta(self, delta: JSONObject) -> bytes:
        assert self._open is not None
        body = {"type": "content_block_delta", "index": self._open.index, "delta": delta}
        return encode_sse(body, "content_block_delta")

    def _close_open(self) -> bytes:
        """Closes the open block. After a tool block the next queued tool opens with its
        buffered arguments; it stays open unless its JSON is complete and more are queued."""
        if self._open is None:
            return b""
        closing = self._open
        self._open = None
        if closing.kind == "tool":
            self._tools[closing.tool].closed = True
        stop = {"type": "content_block_stop", "index": closing.index}
        out = encode_sse(stop, "content_block_stop")
        if closing.kind == "tool" and self._queue:
            next_tool = self._queue.pop(0)
            out += self._start_tool(next_tool)
            if self._queue and self._tools[next_tool].json_complete():
                out += self._close_open()
        return out

    def _close_all(self) -> bytes:
        out = b""
        while self._open is not None:
            out += self._close_open()
        return out
