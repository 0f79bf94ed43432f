"""OpenAI Chat Completions codec: requests, responses and SSE streams to and from the internal
form.

Encoding requests takes `UpstreamTraits` because "OpenAI-compatible" servers differ (quirks.py);
decoding upstream answers is lenient about the de-facto extensions they send
(`reasoning_content`, `reasoning`, tool calls without `index`, `finish_reason:"stop"` after
tool calls).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from desktop_proxy.protocols.errors import (
    ProtocolError,
    as_object,
    extract_error_message,
    openai_error_body,
    openai_status_for_upstream,
    optional_bool,
    optional_dict,
    optional_int,
    optional_list,
    optional_number,
    optional_str,
    require_dict,
    require_list,
    require_str,
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
    "StreamDecoder",
    "StreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
]

_FINISH_TO_STOP: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_STOP_TO_FINISH: dict[StopReason, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "context_window_exceeded": "length",
}
_EFFORT_ORDER = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_MAX_STOP_SEQUENCES = 4  # OpenAI rejects more
_MAX_USER_LENGTH = 64  # OpenAI's limit for user / safety_identifier

_DATA_URL = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.S)
_ERROR_NOTE = "Error: "


def _stop_for(finish_reason: object, has_tool_calls: bool) -> StopReason:
    stop = (
        _FINISH_TO_STOP.get(finish_reason, "end_turn")
        if isinstance(finish_reason, str)
        else ("end_turn")
    )
    # Gemini, Ollama and even OpenAI report "stop" after tool calls (P8, P29).
    if has_tool_calls and stop == "end_turn":
        return "tool_use"
    return stop


def _finish_for(stop: StopReason, has_tool_calls: bool) -> str:
    if has_tool_calls and stop in ("end_turn", "stop_sequence", "pause_turn"):
        return "tool_calls"
    return _STOP_TO_FINISH[stop]


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _completion_id(upstream_id: str) -> str:
    if upstream_id.startswith("chatcmpl"):
        return upstream_id
    return f"chatcmpl-{upstream_id}" if upstream_id else _new_id("chatcmpl-")


def _dump_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- request: decode -------------------------------------------------------------------------


def decode_request(body: object) -> Request:
    """Reads an OpenAI Chat Completions request.

    Leading system/developer messages become `Request.system`; later ones stay in place as
    system messages. Tool messages become tool results in user messages.

    Raises:
        ProtocolError: a field is missing, mistyped or cannot be translated.
    """
    obj = as_object(body, "")
    choices = optional_int(obj, "n")
    if choices is not None and choices != 1:
        raise ProtocolError("n: only one choice (n=1) can be translated", "n")
    system, messages = _decode_messages(require_list(obj, "messages"))
    max_tokens = optional_int(obj, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = optional_int(obj, "max_tokens")
    stream_options = optional_dict(obj, "stream_options") or {}
    tools = _decode_tools(optional_list(obj, "tools"), optional_list(obj, "functions"))
    tool_choice = _decode_tool_choice(obj.get("tool_choice", obj.get("function_call")))
    response_format = optional_dict(obj, "response_format")
    if response_format is not None and response_format.get("type") == "text":
        response_format = None
    return Request(
        model=require_str(obj, "model"),
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=optional_number(obj, "temperature"),
        top_p=optional_number(obj, "top_p"),
        top_k=optional_int(obj, "top_k"),
        stop=_decode_stop(obj.get("stop")),
        stream=bool(optional_bool(obj, "stream")),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=optional_bool(obj, "parallel_tool_calls"),
        reasoning_effort=_decode_effort(obj),
        response_format=response_format,
        user=optional_str(obj, "user") or optional_str(obj, "safety_identifier"),
        include_usage=bool(optional_bool(stream_options, "include_usage", "stream_options")),
    )


def _decode_stop(raw: object) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return list(raw)
    raise ProtocolError("stop: must be a string or a list of strings", "stop")


def _decode_effort(obj: JSONObject) -> str | None:
    effort = optional_str(obj, "reasoning_effort")
    if effort is None:
        reasoning = optional_dict(obj, "reasoning")  # OpenRouter style
        effort = optional_str(reasoning, "effort", "reasoning") if reasoning else None
    return effort


def _decode_messages(raw: list[Any]) -> tuple[list[TextPart], list[Message]]:
    system: list[TextPart] = []
    messages: list[Message] = []
    legacy_calls: list[str] = []
    for i, item in enumerate(raw):
        path = f"messages[{i}]"
        obj = as_object(item, path)
        role = require_str(obj, "role", path)
        if role in ("system", "developer"):
            parts = _decode_text_parts(obj.get("content"), f"{path}.content")
            if messages:
                messages.append(Message(role="system", parts=list(parts)))
            else:
                system.extend(parts)
        elif role == "user":
            messages.append(Message(role="user", parts=_decode_user_content(obj, path)))
        elif role == "assistant":
            messages.append(_decode_assistant(obj, path, legacy_calls))
        elif role in ("tool", "function"):
            _append_tool_result(messages, _decode_tool_message(obj, path, role, legacy_calls))
        else:
            raise ProtocolError(
                f"{path}.role: must be 'system', 'developer', 'user', 'assistant' or 'tool', "
                f"got '{role}'",
                f"{path}.role",
            )
    return system, messages


def _append_tool_result(messages: list[Message], result: ToolResultPart) -> None:
    last = messages[-1] if messages else None
    if last is not None and last.role == "user" and _only_tool_results(last):
        last.parts.append(result)
    else:
        messages.append(Message(role="user", parts=[result]))


def _only_tool_results(message: Message) -> bool:
    return bool(message.parts) and all(isinstance(p, ToolResultPart) for p in message.parts)


def _decode_text_parts(content: object, path: str) -> list[TextPart]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(text=content)] if content else []
    if not isinstance(content, list):
        raise ProtocolError(f"{path}: must be a string or a list of content parts", path)
    parts: list[TextPart] = []
    for j, raw in enumerate(content):
        part_path = f"{path}[{j}]"
        obj = as_object(raw, part_path)
        kind = require_str(obj, "type", part_path)
        if kind not in ("text", "refusal"):
            raise ProtocolError(f"{part_path}: expected a text part, got '{kind}'", part_path)
        text = require_str(obj, "text" if kind == "text" else "refusal", part_path)
        parts.append(TextPart(text=text, cache_control=optional_dict(obj, "cache_control")))
    return parts


def _decode_user_content(obj: JSONObject, path: str) -> list[Part]:
    content = obj.get("content")
    if isinstance(content, str):
        return [TextPart(text=content)] if content else []
    if not isinstance(content, list):
        raise ProtocolError(
            f"{path}.content: must be a string or a list of content parts", f"{path}.content"
        )
    return [_decode_user_part(raw, f"{path}.content[{j}]") for j, raw in enumerate(content)]


def _decode_user_part(raw: object, path: str) -> TextPart | ImagePart | DocumentPart:
    obj = as_object(raw, path)
    kind = require_str(obj, "type", path)
    if kind == "text":
        return TextPart(
            text=require_str(obj, "text", path),
            cache_control=optional_dict(obj, "cache_control", path),
        )
    if kind == "image_url":
        image = obj.get("image_url")
        url = (
            image
            if isinstance(image, str)
            else require_str(require_dict(obj, "image_url", path), "url", f"{path}.image_url")
        )
        return _image_from_url(url, f"{path}.image_url.url")
    if kind == "file":
        return _decode_file(require_dict(obj, "file", path), f"{path}.file")
    if kind == "input_audio":
        raise ProtocolError(f"{path}: audio input cannot be translated", path)
    raise ProtocolError(f"{path}: unknown content part type '{kind}'", path)


def _image_from_url(url: str, path: str) -> ImagePart:
    if not url.startswith("data:"):
        return ImagePart(url=url)
    media_type, data = _split_data_url(url, path)
    return ImagePart(media_type=media_type, data=data)


def _split_data_url(url: str, path: str) -> tuple[str, str]:
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match.group("params"):
        raise ProtocolError(f"{path}: only base64 data URLs are supported", path)
    return match.group("type") or "application/octet-stream", match.group("data")


def _decode_file(obj: JSONObject, path: str) -> DocumentPart:
    data = optional_str(obj, "file_data", path)
    filename = optional_str(obj, "filename", path)
    if data is None:
        raise ProtocolError(
            f"{path}.file_data: required (uploaded file ids cannot be translated)",
            f"{path}.file_data",
        )
    if data.startswith("data:"):
        media_type, payload = _split_data_url(data, f"{path}.file_data")
    else:
        media_type, payload = "application/pdf", data
    return DocumentPart(media_type=media_type, data=payload, title=filename)


def _decode_assistant(obj: JSONObject, path: str, legacy_calls: list[str]) -> Message:
    parts: list[Part] = []
    reasoning = optional_str(obj, "reasoning_content", path) or _str_or_none(obj.get("reasoning"))
    if reasoning:
        parts.append(ReasoningPart(text=reasoning))
    parts.extend(p for p in _decode_text_parts(obj.get("content"), f"{path}.content") if p.text)
    for k, raw in enumerate(optional_list(obj, "tool_calls", path)):
        parts.append(_decode_tool_call(raw, f"{path}.tool_calls[{k}]"))
    function_call = optional_dict(obj, "function_call", path)
    if function_call is not None:
        call_id = f"call_legacy_{len(legacy_calls)}"
        legacy_calls.append(call_id)
        parts.append(
            ToolCallPart(
                id=call_id,
                name=require_str(function_call, "name", f"{path}.function_call"),
                arguments=_arguments_text(function_call.get("arguments")),
            )
        )
    return Message(role="assistant", parts=parts)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _arguments_text(raw: object) -> str:
    if isinstance(raw, str):
        return raw
    return "" if raw is None else _dump_json(raw)


def _decode_tool_call(raw: object, path: str) -> ToolCallPart:
    obj = as_object(raw, path)
    function = require_dict(obj, "function", path)
    extra = optional_dict(obj, "extra_content", path)
    return ToolCallPart(
        id=require_str(obj, "id", path),
        name=require_str(function, "name", f"{path}.function"),
        arguments=_arguments_text(function.get("arguments")),
        extra={"extra_content": extra} if extra else None,
    )


def _decode_tool_message(
    obj: JSONObject, path: str, role: str, legacy_calls: list[str]
) -> ToolResultPart:
    if role == "function":
        call_id = legacy_calls[-1] if legacy_calls else "call_legacy_0"
    else:
        call_id = require_str(obj, "tool_call_id", path)
    content = obj.get("content")
    parts: list[TextPart | ImagePart | DocumentPart]
    if content is None or isinstance(content, str):
        parts = [TextPart(text=content)] if content else []
    elif isinstance(content, list):
        parts = [_decode_user_part(raw, f"{path}.content[{j}]") for j, raw in enumerate(content)]
    else:
        raise ProtocolError(
            f"{path}.content: must be a string or a list of content parts", f"{path}.content"
        )
    return ToolResultPart(tool_call_id=call_id, content=parts)


def _decode_tools(tools: list[Any], functions: list[Any]) -> list[ToolDef]:
    out: list[ToolDef] = []
    for i, raw in enumerate(tools):
        path = f"tools[{i}]"
        obj = as_object(raw, path)
        if obj.get("type", "function") != "function":
            continue  # custom / built-in tools have no chat equivalent upstream
        out.append(_decode_function(require_dict(obj, "function", path), f"{path}.function"))
    for i, raw in enumerate(functions):
        out.append(_decode_function(as_object(raw, f"functions[{i}]"), f"functions[{i}]"))
    return out


def _decode_function(obj: JSONObject, path: str) -> ToolDef:
    return ToolDef(
        name=require_str(obj, "name", path),
        description=optional_str(obj, "description", path),
        parameters=optional_dict(obj, "parameters", path) or {"type": "object", "properties": {}},
    )


def _decode_tool_choice(raw: object) -> ToolChoice | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        mapping: dict[str, Literal["auto", "none", "any"]] = {
            "auto": "auto",
            "none": "none",
            "required": "any",
        }
        if raw not in mapping:
            raise ProtocolError(
                f"tool_choice: must be 'auto', 'none', 'required' or an object, got '{raw}'",
                "tool_choice",
            )
        return ToolChoice(type=mapping[raw])
    obj = as_object(raw, "tool_choice")
    if obj.get("type") == "function":
        function = require_dict(obj, "function", "tool_choice")
        return ToolChoice(type="tool", name=require_str(function, "name", "tool_choice.function"))
    if "name" in obj:  # legacy function_call: {"name": ...}
        return ToolChoice(type="tool", name=require_str(obj, "name", "function_call"))
    return ToolChoice(type="auto")  # allowed_tools and other variants


# --- request: encode -------------------------------------------------------------------------


def encode_request(req: Request, model: str, *, traits: UpstreamTraits | None = None) -> JSONObject:
    """A Chat Completions request for `model` on an upstream with `traits` (§4.1).

    Tool results become `tool` messages placed before the rest of their user turn; images in
    tool results move to a following user message (tool messages are text-only, P23); a
    result flagged as an error is prefixed "Error: "; assistant text and tool calls share one
    message with `content: null` when there is no text; streamed requests always ask for
    usage when the upstream supports `stream_options`.

    Raises:
        ProtocolError: content the upstream cannot take (e.g. a PDF where files are not
            accepted), with a message naming the message and saying why.
    """
    traits = traits or UpstreamTraits()
    messages = (
        inline_system_messages(req.messages) if traits.single_leading_system else (req.messages)
    )
    body: JSONObject = {"model": model, "messages": _encode_messages(req.system, messages, traits)}
    if req.max_tokens is not None:
        limit = req.max_tokens
        if traits.max_output_tokens is not None:
            limit = min(limit, traits.max_output_tokens)
        key = "max_completion_tokens" if traits.use_max_completion_tokens else "max_tokens"
        body[key] = max(1, limit)
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None and traits.supports_top_k:
        body["top_k"] = req.top_k
    if req.stop:
        body["stop"] = req.stop[:_MAX_STOP_SEQUENCES]
    _encode_tools(req, traits, body)
    effort = _effort_for(req.reasoning_effort, traits)
    if effort is not None:
        body["reasoning_effort"] = effort
    if req.response_format is not None:
        body["response_format"] = req.response_format
    if req.user:
        body["user"] = _short_user(req.user)
    if req.stream:
        body["stream"] = True
        if traits.supports_stream_options:
            body["stream_options"] = {"include_usage": True}
    for name in traits.drop_fields:
        body.pop(name, None)
    return traits.fix_body(body) if traits.fix_body is not None else body


def _effort_for(effort: str | None, traits: UpstreamTraits) -> str | None:
    if effort is None or not traits.supports_reasoning_effort:
        return None
    if effort in traits.reasoning_efforts:
        return effort
    if effort == "none" or effort not in _EFFORT_ORDER:
        return None
    rank = _EFFORT_ORDER.index(effort)
    known = [e for e in _EFFORT_ORDER if e in traits.reasoning_efforts]
    return min(known, key=lambda e: abs(_EFFORT_ORDER.index(e) - rank)) if known else None


def _short_user(user: str) -> str:
    if len(user) <= _MAX_USER_LENGTH:
        return user
    # Claude Code's user_id is a ~150-character JSON string; keep it stable but short.
    return "user_" + hashlib.sha256(user.encode()).hexdigest()[:32]


def _encode_tools(req: Request, traits: UpstreamTraits, body: JSONObject) -> None:
    if not req.tools:
        return
    tools = []
    for tool in req.tools:
        function: JSONObject = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        schema = tool.parameters or {"type": "object", "properties": {}}
        function["parameters"] = (
            traits.sanitize_schema(schema) if traits.sanitize_schema else (schema)
        )
        tools.append({"type": "function", "function": function})
    body["tools"] = tools
    choice = req.tool_choice
    if choice is not None:
        if choice.type == "tool" and choice.name:
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif choice.type != "tool":
            body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls


def _encode_messages(
    system: list[TextPart], messages: list[Message], traits: UpstreamTraits
) -> list[JSONObject]:
    out: list[JSONObject] = []
    system_text = _joined_text(system)
    if system_text:
        out.append({"role": "system", "content": system_text})
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if message.role == "system":
            text = _joined_text(p for p in message.parts if isinstance(p, TextPart))
            if text:
                out.append({"role": "system", "content": text})
        elif message.role == "assistant":
            encoded = _encode_assistant(message, traits)
            if encoded is not None:
                out.append(encoded)
        else:
            out.extend(_encode_user(message, traits, path))
    return _repair_tool_pairs(out)


def _joined_text(parts: Any) -> str:
    return "\n\n".join(p.text for p in parts if p.text)


def _encode_assistant(message: Message, traits: UpstreamTraits) -> JSONObject | None:
    texts = [p.text for p in message.parts if isinstance(p, TextPart) and p.text]
    reasoning = "".join(p.text for p in message.parts if isinstance(p, ReasoningPart))
    tool_calls = [_encode_tool_call(p) for p in message.parts if isinstance(p, ToolCallPart)]
    out: JSONObject = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if tool_calls:
        out["tool_calls"] = tool_calls
    # DeepSeek's thinking mode wants reasoning_content back on tool-call turns (P15), even
    # when there was none to give.
    if traits.send_reasoning_content and (reasoning or tool_calls):
        out["reasoning_content"] = reasoning
    if out["content"] is None and not tool_calls:
        if "reasoning_content" not in out:
            return None
        out["content"] = ""
    return out


def _encode_tool_call(part: ToolCallPart) -> JSONObject:
    call: JSONObject = {
        "id": part.id,
        "type": "function",
        "function": {"name": part.name, "arguments": part.arguments or "{}"},
    }
    if part.extra:
        call.update(part.extra)  # e.g. Gemini's extra_content.google.thought_signature (P12)
    return call


def _encode_user(message: Message, traits: UpstreamTraits, path: str) -> list[JSONObject]:
    tool_messages: list[JSONObject] = []
    moved: list[JSONObject] = []  # images and files returned by tools
    content: list[JSONObject] = []
    for part in message.parts:
        if isinstance(part, ToolResultPart):
            tool_messages.append(_encode_tool_result(part, traits, path, moved))
        elif isinstance(part, TextPart | ImagePart | DocumentPart):
            encoded = _encode_content_part(part, traits, path)
            if encoded is not None:
                content.append(encoded)
    combined = moved + content
    if not combined:
        return tool_messages
    return [*tool_messages, {"role": "user", "content": _collapsed(combined)}]


def _collapsed(parts: list[JSONObject]) -> str | list[JSONObject]:
    # Plain strings are the most widely accepted form (some servers reject part arrays).
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _encode_content_part(
    part: TextPart | ImagePart | DocumentPart, traits: UpstreamTraits, path: str
) -> JSONObject | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": _image_url(part, path)}}
    return _encode_document(part, traits, path)


def _image_url(part: ImagePart, path: str) -> str:
    if part.data is not None:
        return f"data:{part.media_type or 'image/png'};base64,{part.data}"
    if part.url is None:
        raise ProtocolError(f"{path}: image without data or url", path)
    return part.url


def _encode_document(part: DocumentPart, traits: UpstreamTraits, path: str) -> JSONObject:
    if part.text is not None:
        text = f"{part.title}\n\n{part.text}" if part.title else part.text
        return {"type": "text", "text": text}
    if part.data is None:
        raise ProtocolError(
            f"{path}: a document given by URL cannot be sent to an OpenAI-compatible upstream",
            path,
        )
    if not traits.accepts_files:
        raise ProtocolError(
            f"{path}: this upstream does not accept {part.media_type or 'binary'} documents "
            "(PDF input is only forwarded to providers that support file parts); "
            "use a model that reads PDFs or send the text instead",
            path,
        )
    media_type = part.media_type or "application/pdf"
    return {
        "type": "file",
        "file": {
            "filename": part.title or "document.pdf",
            "file_data": f"data:{media_type};base64,{part.data}",
        },
    }


def _encode_tool_result(
    part: ToolResultPart, traits: UpstreamTraits, path: str, moved: list[JSONObject]
) -> JSONObject:
    texts: list[str] = []
    attachments: list[JSONObject] = []
    for inner in part.content:
        encoded = _encode_content_part(inner, traits, path)
        if encoded is None:
            continue
        if encoded["type"] == "text":
            texts.append(encoded["text"])
        else:
            attachments.append(encoded)
    if attachments:
        noun = "attachment" if len(attachments) == 1 else "attachments"
        texts.append(f"[{len(attachments)} {noun} returned; see the next user message]")
        header = f"Attachments returned by tool call {part.tool_call_id}:"
        moved.extend([{"type": "text", "text": header}, *attachments])
    content = "\n".join(texts)
    if part.is_error:
        content = _ERROR_NOTE + content if content else "Error"
    return {"role": "tool", "tool_call_id": part.tool_call_id, "content": content}


def _repair_tool_pairs(messages: list[JSONObject]) -> list[JSONObject]:
    """Enforces Chat Completions' pairing rule (P9): every assistant tool call is answered by
    a tool message right after it. Missing answers get a placeholder; tool messages that
    answer no call become user text instead of a 400."""
    out: list[JSONObject] = []
    waiting: list[str] = []
    for message in messages:
        if message["role"] == "tool":
            if message["tool_call_id"] in waiting:
                waiting.remove(message["tool_call_id"])
                out.append(message)
            else:
                text = f"Result of tool call {message['tool_call_id']}:\n{message['content']}"
                out.append({"role": "user", "content": text})
            continue
        out.extend(_placeholder_results(waiting))
        waiting = [call["id"] for call in message.get("tool_calls", [])]
        out.append(message)
    out.extend(_placeholder_results(waiting))
    return out


def _placeholder_results(waiting: list[str]) -> list[JSONObject]:
    return [
        {"role": "tool", "tool_call_id": call_id, "content": "Error: no result was recorded."}
        for call_id in waiting
    ]


# --- response --------------------------------------------------------------------------------


def decode_response(body: object) -> Response:
    """Reads a Chat Completions response from an upstream (only `choices[0]`).

    Raises:
        ProtocolError: (status 502) the body has no readable choice, or is an error body.
    """
    path = "upstream"
    obj = as_object(body, path)
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices:
        problem = extract_error_message(obj, "upstream response has no choices")
        raise ProtocolError(problem, f"{path}.choices", 502)
    choice = as_object(choices[0], f"{path}.choices[0]")
    message = require_dict(choice, "message", f"{path}.choices[0]")
    parts = _decode_response_message(message, f"{path}.choices[0].message", str(obj.get("id")))
    has_tools = any(isinstance(p, ToolCallPart) for p in parts)
    stop = _stop_for(choice.get("finish_reason"), has_tools)
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        stop = "refusal"
    usage = obj.get("usage")
    return Response(
        id=str(obj.get("id") or ""),
        model=str(obj.get("model") or ""),
        parts=parts,
        stop_reason=stop,
        usage=decode_usage(usage) if isinstance(usage, dict) else Usage(),
    )


def _decode_response_message(message: JSONObject, path: str, response_id: str) -> list[Part]:
    parts: list[Part] = []
    reasoning = _str_or_none(message.get("reasoning_content")) or _str_or_none(
        message.get("reasoning")
    )
    if reasoning:
        parts.append(ReasoningPart(text=reasoning))
    content = message.get("content")
    if isinstance(content, str):
        if content:
            parts.append(TextPart(text=content))
    elif isinstance(content, list):
        parts.extend(p for p in _decode_text_parts(content, f"{path}.content") if p.text)
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(TextPart(text=refusal))
    for k, raw in enumerate(optional_list(message, "tool_calls", path)):
        obj = as_object(raw, f"{path}.tool_calls[{k}]")
        function = require_dict(obj, "function", f"{path}.tool_calls[{k}]")
        extra = obj.get("extra_content")
        parts.append(
            ToolCallPart(
                id=_str_or_none(obj.get("id")) or _generated_call_id(response_id, k),
                name=require_str(function, "name", f"{path}.tool_calls[{k}].function"),
                arguments=_arguments_text(function.get("arguments")),
                extra={"extra_content": extra} if isinstance(extra, dict) else None,
            )
        )
    return parts


def _generated_call_id(response_id: str, index: int) -> str:
    if not response_id:
        return _new_id("call_")
    return "call_" + hashlib.sha256(f"{response_id}:{index}".encode()).hexdigest()[:24]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def decode_usage(raw: JSONObject) -> Usage:
    """Chat usage → internal usage (§4.7): cached tokens are taken out of the input count."""
    prompt = _int(raw.get("prompt_tokens"))
    details = raw.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cache_read = _int(details.get("cached_tokens")) or _int(raw.get("prompt_cache_hit_tokens"))
    cache_write = _int(details.get("cache_write_tokens")) or _int(
        details.get("cache_creation_tokens")
    )
    completion_details = raw.get("completion_tokens_details")
    reasoning = (
        _int(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else 0
    )
    return Usage(
        input_tokens=max(0, prompt - cache_read - cache_write),
        output_tokens=_int(raw.get("completion_tokens")),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


def _usage_json(usage: Usage) -> JSONObject:
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    details: JSONObject = {"cached_tokens": usage.cache_read_tokens}
    if usage.cache_write_tokens:
        details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def encode_response(resp: Response, model: str, *, created: int | None = None) -> JSONObject:
    """A `chat.completion` object for a client that asked for `model`.

    Thinking becomes the de-facto `reasoning_content` field, which OpenAI clients ignore.
    """
    texts = [p.text for p in resp.parts if isinstance(p, TextPart) and p.text]
    reasoning = "".join(p.text for p in resp.parts if isinstance(p, ReasoningPart))
    tool_calls = [
        {
            "id": p.id or _new_id("call_"),
            "type": "function",
            "function": {"name": p.name, "arguments": p.arguments or "{}"},
        }
        for p in resp.parts
        if isinstance(p, ToolCallPart)
    ]
    message: JSONObject = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return {
        "id": _completion_id(resp.id),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_for(resp.stop_reason, bool(tool_calls)),
            }
        ],
        "usage": _usage_json(resp.usage),
    }


# --- stream: decode (Chat upstream → internal events) ---------------------------------------


@dataclass(slots=True)
class _UpstreamTool:
    id: str = ""
    name: str = ""
    extra: JSONObject | None = None
    started: bool = False
    pending: list[str] = field(default_factory=list)


class StreamDecoder:
    """Turns a Chat Completions upstream's SSE events into internal stream events.

    Tool-call deltas are keyed by `index`, or by `id` / position when a provider leaves the
    index out (Gemini, P10), and a new `id` on a known index is a new call (servers that
    number every call 0). The finish reason is remembered but the stream ends only at
    `[DONE]` or EOF, so the usage chunk that follows it is not lost (P7).
    """

    def __init__(self) -> None:
        self._started = False
        self._finished = False
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self._stream_id = ""
        self._tools: list[_UpstreamTool] = []
        self._by_index: dict[int, int] = {}
        self._by_id: dict[str, int] = {}

    @property
    def finished(self) -> bool:
        """Whether the stream ended properly (a StreamFinish or StreamError was emitted)."""
        return self._finished

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if self._finished:
            return []
        data = event.data.strip()
        if data == "[DONE]":
            return self._finish()
        if not data:
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            self._finished = True
            return [StreamError(502, f"upstream sent an unreadable stream chunk: {data[:200]!r}")]
        if not isinstance(chunk, dict):
            return []
        if chunk.get("error"):
            return self._error(chunk["error"])
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            self._stream_id = str(chunk.get("id") or "")
            events.append(StreamStart(id=self._stream_id, model=str(chunk.get("model") or "")))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = decode_usage(usage)
            events.append(UsageUpdate(self._usage))
        choice = _first_choice(chunk.get("choices"))
        if choice is not None:
            if choice.get("error") or choice.get("finish_reason") == "error":
                return events + self._error(choice.get("error") or {})
            events.extend(self._on_delta(choice.get("delta")))
            if isinstance(choice.get("finish_reason"), str):
                self._finish_reason = choice["finish_reason"]
        return events

    def close(self) -> list[StreamEvent]:
        """At EOF: finishes the stream if a finish reason was seen (else the caller decides
        what a truncated stream means)."""
        if self._finished or self._finish_reason is None:
            return []
        return self._finish()

    def _on_delta(self, delta: object) -> list[StreamEvent]:
        if not isinstance(delta, dict):
            return []
        events: list[StreamEvent] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(ReasoningDelta(text=reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for position, raw in enumerate(tool_calls):
                if isinstance(raw, dict):
                    events.extend(self._on_tool_delta(raw, position))
        return events

    def _on_tool_delta(self, raw: JSONObject, position: int) -> list[StreamEvent]:
        call_id = raw.get("id") if isinstance(raw.get("id"), str) and raw.get("id") else None
        index = raw.get("index")
        if not (isinstance(index, int) and not isinstance(index, bool)):
            index = None if call_id else position
        k = self._tool_key(index, call_id)
        tool = self._tools[k]
        function = raw.get("function") if isinstance(raw.get("function"), dict) else {}
        assert isinstance(function, dict)
        if isinstance(function.get("name"), str) and function["name"] and not tool.started:
            tool.name = function["name"]
        if isinstance(raw.get("extra_content"), dict):
            tool.extra = {"extra_content": raw["extra_content"]}
        events: list[StreamEvent] = []
        if not tool.started and tool.name:
            events.extend(self._start_tool(k))
        arguments = _arguments_text(function.get("arguments"))
        if arguments:
            if tool.started:
                events.append(ToolCallDelta(index=k, arguments=arguments))
            else:
                tool.pending.append(arguments)
        return events

    def _tool_key(self, index: int | None, call_id: str | None) -> int:
        if call_id is not None and call_id in self._by_id:
            return self._by_id[call_id]
        if index is not None and index in self._by_index:
            k = self._by_index[index]
            if call_id is None or self._tools[k].id in ("", call_id):
                if call_id is not None:
                    self._tools[k].id = call_id
                    self._by_id[call_id] = k
                return k
        elif index is None and call_id is None and self._tools:
            return len(self._tools) - 1
        k = len(self._tools)
        self._tools.append(_UpstreamTool(id=call_id or ""))
        if index is not None:
            self._by_index[index] = k
        if call_id is not None:
            self._by_id[call_id] = k
        return k

    def _start_tool(self, k: int) -> list[StreamEvent]:
        tool = self._tools[k]
        tool.started = True
        if not tool.id:
            tool.id = _generated_call_id(self._stream_id, k)
        events: list[StreamEvent] = [
            ToolCallStart(index=k, id=tool.id, name=tool.name, extra=tool.extra)
        ]
        if tool.pending:
            events.append(ToolCallDelta(index=k, arguments="".join(tool.pending)))
            tool.pending = []
        return events

    def _error(self, raw: object) -> list[StreamEvent]:
        self._finished = True
        error = raw if isinstance(raw, dict) else {"message": raw}
        message = extract_error_message({"error": error}, "upstream stream error")
        return [StreamError(status=_status_of_error(error), message=message)]

    def _finish(self) -> list[StreamEvent]:
        self._finished = True
        events: list[StreamEvent] = []
        for k, tool in enumerate(self._tools):
            if not tool.started:
                events.extend(self._start_tool(k))
        stop = _stop_for(self._finish_reason, bool(self._tools))
        events.append(StreamFinish(stop_reason=stop, usage=self._usage))
        return events


def _first_choice(choices: object) -> JSONObject | None:
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


_STATUS_BY_ERROR_WORD = (
    ("insufficient_quota", 402),
    ("rate_limit", 429),
    ("overloaded", 529),
    ("unavailable", 503),
    ("timeout", 504),
    ("context_length", 400),
    ("invalid_request", 400),
    ("authentication", 401),
    ("permission", 403),
    ("not_found", 404),
)


def _status_of_error(error: JSONObject) -> int:
    for key in ("status", "code"):
        value = error.get(key)
        if isinstance(value, int) and 400 <= value < 600:
            return value
    words = " ".join(str(error.get(k) or "") for k in ("type", "code", "status")).lower()
    for word, status in _STATUS_BY_ERROR_WORD:
        if word in words:
            return status
    return 500


# --- stream: encode (internal events → Chat SSE for the client) -----------------------------


class StreamEncoder:
    """Writes internal stream events as Chat Completions chunks (`data: {chunk}`), ending with
    `data: [DONE]`.

    The first chunk carries `role: "assistant"` and `content: ""`; tool calls are numbered
    0, 1, ... among tool calls only; the finish chunk is followed by a usage chunk
    (`choices: []`) when the client asked for usage. A `StreamError` becomes an `error` chunk
    and ends the stream.
    """

    def __init__(
        self,
        model: str,
        include_usage: bool,
        completion_id: str | None = None,
        *,
        created: int | None = None,
        input_tokens_estimate: int = 0,
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._completion_id = completion_id
        self._created = int(time.time()) if created is None else created
        self._input_estimate = input_tokens_estimate
        self._started = False
        self._done = False
        self._finish_seen = False
        self._tool_numbers: dict[int, int] = {}
        self._usage: Usage | None = None

    @property
    def finish_seen(self) -> bool:
        """Whether a StreamFinish arrived (False at `close()` means the upstream ended early)."""
        return self._finish_seen

    @property
    def done(self) -> bool:
        """Whether the stream is complete (`[DONE]` or an error chunk written)."""
        return self._done

    def feed(self, event: StreamEvent) -> bytes:
        if self._done:
            return b""
        if isinstance(event, StreamError):
            self._done = True
            status = openai_status_for_upstream(event.status)
            return encode_sse(openai_error_body(status, event.message))
        out = bytearray()
        if not self._started:
            out += self._first_chunk(event if isinstance(event, StreamStart) else None)
        if isinstance(event, TextDelta) and event.text:
            out += self._chunk({"content": event.text})
        elif isinstance(event, ReasoningDelta) and event.text:
            out += self._chunk({"reasoning_content": event.text})
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
            out += self._finish(event.stop_reason)
        return bytes(out)

    def close(self) -> bytes:
        """Ends the stream if it is not ended yet (upstream EOF without a finish)."""
        if self._done:
            return b""
        out = b"" if self._started else self._first_chunk(None)
        return out + self._finish("end_turn")

    def _first_chunk(self, start: StreamStart | None) -> bytes:
        self._started = True
        if self._completion_id is None:
            self._completion_id = _completion_id(start.id if start else "")
        if start is not None and start.usage is not None:
            self._usage = start.usage
        return self._chunk({"role": "assistant", "content": ""})

    def _on_tool_start(self, event: ToolCallStart) -> bytes:
        if event.index in self._tool_numbers:
            return b""
        number = len(self._tool_numbers)
        self._tool_numbers[event.index] = number
        call: JSONObject = {
            "index": number,
            "id": event.id or _new_id("call_"),
            "type": "function",
            "function": {"name": event.name, "arguments": ""},
        }
        if event.extra:
            call.update(event.extra)
        return self._chunk({"tool_calls": [call]})

    def _on_tool_delta(self, event: ToolCallDelta) -> bytes:
        number = self._tool_numbers.get(event.index)
        if number is None or not event.arguments:
            return b""
        call = {"index": number, "function": {"arguments": event.arguments}}
        return self._chunk({"tool_calls": [call]})

    def _finish(self, stop: StopReason) -> bytes:
        self._done = True
        finish = _finish_for(stop, bool(self._tool_numbers))
        out = self._chunk({}, finish)
        if self._include_usage:
            usage = self._usage or Usage(input_tokens=self._input_estimate)
            out += self._envelope([], usage=_usage_json(usage))
        return out + encode_sse("[DONE]")

    def _chunk(self, delta: JSONObject, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope([choice])

    def _envelope(self, choices: list[JSONObject], usage: JSONObject | None = None) -> bytes:
        chunk: JSONObject = {
            "id": self._completion_id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return encode_sse(chunk)
