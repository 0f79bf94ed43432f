"""What differs between upstreams that all claim to speak OpenAI Chat Completions.

`UpstreamTraits` tells the OpenAI codec what one upstream accepts; `traits_for` builds it from
the provider preset kind and the model. The quirks themselves are small pure functions, each
tested on its own: Gemini's schema subset, Groq's unsupported fields, Mistral's tool-id format,
per-model output limits, and folding mid-conversation system messages into user text.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from desktop_proxy.protocols.internal import JSONObject, Message, Part, TextPart

__all__ = [
    "MODEL_OUTPUT_LIMITS",
    "UpstreamTraits",
    "clamp_max_tokens",
    "fix_mistral_tool_ids",
    "inline_system_messages",
    "mistral_tool_id",
    "output_limit_for",
    "sanitize_gemini_schema",
    "strip_groq_unsupported",
    "traits_for",
]

BASIC_EFFORTS: frozenset[str] = frozenset({"low", "medium", "high"})
OPENAI_EFFORTS: frozenset[str] = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})


@dataclass(frozen=True, slots=True)
class UpstreamTraits:
    """What an OpenAI-compatible upstream accepts. The defaults suit a generic server."""

    # Output-token ceiling for the model; requests above it are clamped (None: no clamp).
    max_output_tokens: int | None = None
    # Send the limit as `max_completion_tokens` (OpenAI, required by o-series) not `max_tokens`.
    use_max_completion_tokens: bool = False
    supports_reasoning_effort: bool = False
    # reasoning_effort values the upstream knows; others are mapped to the nearest of these.
    reasoning_efforts: frozenset[str] = BASIC_EFFORTS
    # Echo reasoning back as `reasoning_content` on assistant messages (DeepSeek requires it).
    send_reasoning_content: bool = False
    # Accepts `{"type":"file"}` content parts (PDF documents).
    accepts_files: bool = False
    # Only one system message, at the start: mid-conversation ones become user text.
    single_leading_system: bool = False
    supports_stream_options: bool = True
    supports_top_k: bool = False
    # Top-level request fields removed before sending.
    drop_fields: frozenset[str] = frozenset()
    # Rewrites each tool's parameter schema into the subset the upstream accepts.
    sanitize_schema: Callable[[JSONObject], JSONObject] | None = None
    # Last fix-up of the whole request body (e.g. Groq's unsupported fields).
    fix_body: Callable[[JSONObject], JSONObject] | None = None


# --- output limits -------------------------------------------------------------------------

# Model-name prefix → maximum output tokens, matched on the longest prefix of the lower-cased
# name without any "provider/" part. Deliberately conservative: a too-low clamp shortens an
# answer, a too-high one makes the upstream reject the request (P14: DeepSeek's "valid range of
# max_tokens is [1, 8192]"). `ProviderConfig.max_output_tokens` (model → limit) overrides it.
MODEL_OUTPUT_LIMITS: dict[str, int] = {
    "gpt-3.5-turbo": 4096,
    "gpt-4": 8192,
    "gpt-4-turbo": 4096,
    "gpt-4o": 16384,
    "gpt-4o-mini": 16384,
    "chatgpt-4o": 16384,
    "gpt-4.1": 32768,
    "gpt-5": 128000,
    "o1": 100000,
    "o1-mini": 65536,
    "o3": 100000,
    "o4-mini": 100000,
    "gpt-oss": 32768,
    "deepseek-chat": 8192,
    "deepseek-reasoner": 65536,
    "gemini-1.5": 8192,
    "gemini-2.0": 8192,
    "gemini-2.5": 65536,
    "gemini-3": 65536,
    "llama": 8192,
    "llama-3.3-70b": 32768,
    "mistral": 32768,
    "codestral": 32768,
    "magistral": 32768,
    "command-r": 4000,
    "command-a": 8000,
    "claude-3-haiku": 4096,
    "claude-3-opus": 4096,
    "claude-3-5": 8192,
    "claude-3-7-sonnet": 64000,
    "claude-sonnet-4": 64000,
    "claude-haiku-4": 64000,
    "claude-opus-4": 64000,
    "claude-opus-4-1": 32000,
    "claude-opus-4-2025": 32000,
}


def _bare_model(model: str) -> str:
    return model.rsplit("/", 1)[-1].lower()


def output_limit_for(model: str, overrides: dict[str, int] | None = None) -> int | None:
    """The output-token limit for a model: per-provider override first, then the table."""
    if overrides and model in overrides:
        return overrides[model]
    name = _bare_model(model)
    best: str | None = None
    for prefix in MODEL_OUTPUT_LIMITS:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return MODEL_OUTPUT_LIMITS[best] if best is not None else None


def clamp_max_tokens(requested: int, model: str, overrides: dict[str, int] | None = None) -> int:
    """`requested` lowered to the model's output limit (and raised to at least 1)."""
    limit = output_limit_for(model, overrides)
    value = requested if limit is None else min(requested, limit)
    return max(1, value)


# --- per-kind traits ------------------------------------------------------------------------

_OPENAI_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
# Local and open-weight models that understand reasoning_effort; others (e.g. llama) can fail
# with "model does not support thinking", so it is only sent to these.
_OPEN_REASONING_MARKERS = ("gpt-oss", "qwen3", "qwq", "deepseek-r1", "magistral", "reasoning")
_GEMINI_THINKING_PREFIXES = ("gemini-2.5", "gemini-3")


def _is_openai_reasoning(model: str) -> bool:
    return _bare_model(model).startswith(_OPENAI_REASONING_PREFIXES)


def _is_open_reasoning(model: str) -> bool:
    name = _bare_model(model)
    return any(marker in name for marker in _OPEN_REASONING_MARKERS)


def traits_for(kind: str, model: str, overrides: dict[str, int] | None = None) -> UpstreamTraits:
    """Traits for a provider preset kind and model; unknown kinds get a generic
    OpenAI-compatible profile (single leading system message, no extras)."""
    limit = output_limit_for(model, overrides)
    base = UpstreamTraits(max_output_tokens=limit)
    builder = _KIND_TRAITS.get(kind.lower(), _generic_traits)
    return builder(base, model)


def _openai_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    reasoning = _is_openai_reasoning(model)
    # Reasoning models reject sampling parameters ("Unsupported parameter: 'temperature'").
    dropped = frozenset({"temperature", "top_p", "stop"}) if reasoning else frozenset()
    return replace(
        base,
        use_max_completion_tokens=True,
        supports_reasoning_effort=reasoning,
        reasoning_efforts=OPENAI_EFFORTS,
        accepts_files=True,
        drop_fields=dropped,
    )


def _anthropic_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    return base


def _gemini_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    return replace(
        base,
        supports_reasoning_effort=_bare_model(model).startswith(_GEMINI_THINKING_PREFIXES),
        single_leading_system=True,
        drop_fields=frozenset({"prompt_cache_key", "store", "user"}),
        sanitize_schema=sanitize_gemini_schema,
    )


def _openrouter_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    return replace(
        base,
        supports_reasoning_effort=True,
        reasoning_efforts=OPENAI_EFFORTS,
        accepts_files=True,
        supports_top_k=True,
    )


def _groq_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    return replace(
        base,
        supports_reasoning_effort=_is_open_reasoning(model),
        fix_body=strip_groq_unsupported,
    )


def _together_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    return replace(
        base,
        supports_reasoning_effort=_is_open_reasoning(model),
        single_leading_system=True,
        supports_top_k=True,
    )


def _cohere_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    return replace(
        base,
        supports_reasoning_effort="reasoning" in _bare_model(model),
        single_leading_system=True,
        drop_fields=frozenset({"user", "parallel_tool_calls"}),
    )


def _deepseek_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    return replace(base, send_reasoning_content=True)


def _mistral_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    # Mistral validates strictly (422 "Extra inputs are not permitted") and wants 9-character
    # alphanumeric tool-call ids.
    return replace(
        base,
        supports_stream_options=False,
        drop_fields=frozenset({"user"}),
        fix_body=fix_mistral_tool_ids,
    )


def _ollama_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    return replace(base, supports_reasoning_effort=_is_open_reasoning(model))


def _lmstudio_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    # Many chat templates raise "System message must be at the beginning".
    return replace(
        base,
        supports_reasoning_effort=_is_open_reasoning(model),
        single_leading_system=True,
    )


def _generic_traits(base: UpstreamTraits, model: str) -> UpstreamTraits:
    return replace(base, single_leading_system=True)


_KIND_TRAITS: dict[str, Callable[[UpstreamTraits, str], UpstreamTraits]] = {
    "openai": _openai_traits,
    "azure": _openai_traits,
    "anthropic": _anthropic_traits,
    "gemini": _gemini_traits,
    "openrouter": _openrouter_traits,
    "groq": _groq_traits,
    "together": _together_traits,
    "cohere": _cohere_traits,
    "deepseek": _deepseek_traits,
    "mistral": _mistral_traits,
    "ollama": _ollama_traits,
    "lmstudio": _lmstudio_traits,
}


# --- Gemini schema subset -------------------------------------------------------------------

# Gemini converts tool parameters to its own Schema type and rejects any other key with
# 'Unknown name "<key>" ... Cannot find field' (P11). This is that type's field list.
_GEMINI_SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
        "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
        "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
        "maximum",
    }
)  # fmt: skip
_GEMINI_FORMATS = {
    "string": frozenset({"enum", "date-time"}),
    "integer": frozenset({"int32", "int64"}),
    "number": frozenset({"float", "double"}),
}
_MAX_REF_DEPTH = 8


def sanitize_gemini_schema(schema: JSONObject) -> JSONObject:
    """A copy of a JSON schema reduced to what Gemini's OpenAI endpoint accepts.

    Local `$ref`s are inlined; `const` becomes a one-value enum; type arrays and null members of
    `anyOf`/`oneOf` become `nullable`; `oneOf` becomes `anyOf`; `allOf` is merged; unknown keys,
    unsupported `format`s and non-string enums are dropped; empty `properties` are removed and
    `required` only names properties that exist; arrays get `items`.
    """
    definitions: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        defs = schema.get(key)
        if isinstance(defs, dict):
            definitions.update({f"#/{key}/{name}": value for name, value in defs.items()})
    return _gemini_node(schema, definitions, depth=0)


def _gemini_node(node: Any, definitions: dict[str, Any], depth: int) -> JSONObject:
    if not isinstance(node, dict):
        return {}
    node = _resolve_ref(node, definitions, depth)
    node = _merge_all_of(node)
    out: JSONObject = {}
    _gemini_type(node, out, definitions, depth)
    for key, value in node.items():
        if key not in _GEMINI_SCHEMA_KEYS or key in ("type", "anyOf", "nullable"):
            continue
        if key == "properties":
            props = _gemini_properties(value, definitions, depth)
            if props:
                out["properties"] = props
        elif key == "items":
            out["items"] = _gemini_node(value, definitions, depth + 1)
        else:
            out[key] = copy.deepcopy(value)
    _gemini_const(node, out)
    _gemini_fix_enum_and_format(out)
    _gemini_fix_required(out)
    if out.get("type") == "array" and "items" not in out:
        out["items"] = {"type": "string"}
    return out


def _resolve_ref(node: JSONObject, definitions: dict[str, Any], depth: int) -> JSONObject:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    target = definitions.get(ref)
    if not isinstance(target, dict) or depth > _MAX_REF_DEPTH:
        return {"type": "object", "description": node.get("description", "")}
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return merged


def _merge_all_of(node: JSONObject) -> JSONObject:
    parts = node.get("allOf")
    if not isinstance(parts, list):
        return node
    merged: JSONObject = {k: v for k, v in node.items() if k != "allOf"}
    for part in parts:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _gemini_type(
    node: JSONObject, out: JSONObject, definitions: dict[str, Any], depth: int
) -> None:
    nullable = node.get("nullable") is True
    raw_type = node.get("type")
    if isinstance(raw_type, list):
        types = [t for t in raw_type if isinstance(t, str) and t != "null"]
        nullable = nullable or "null" in raw_type
        if len(types) == 1:
            out["type"] = types[0]
        elif types:
            out["anyOf"] = [{"type": t} for t in types]
    elif isinstance(raw_type, str) and raw_type != "null":
        out["type"] = raw_type
    variants = node.get("anyOf", node.get("oneOf"))
    if isinstance(variants, list):
        kept = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        nullable = nullable or len(kept) < len(variants)
        cleaned = [_gemini_node(v, definitions, depth + 1) for v in kept]
        if len(cleaned) == 1:
            out.update({k: v for k, v in cleaned[0].items() if k not in out})
        elif cleaned:
            out["anyOf"] = cleaned
    if nullable:
        out["nullable"] = True


def _gemini_properties(value: Any, definitions: dict[str, Any], depth: int) -> JSONObject:
    if not isinstance(value, dict):
        return {}
    # Keys here are property names, not schema keywords: keep every one.
    return {name: _gemini_node(sub, definitions, depth + 1) for name, sub in value.items()}


def _gemini_const(node: JSONObject, out: JSONObject) -> None:
    const = node.get("const")
    if isinstance(const, str):
        out["type"] = "string"
        out["enum"] = [const]


def _gemini_fix_enum_and_format(out: JSONObject) -> None:
    enum = out.get("enum")
    if enum is not None:
        if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
            out.setdefault("type", "string")
        if out.get("type") != "string" or not isinstance(enum, list):
            del out["enum"]
    fmt = out.get("format")
    if fmt is not None:
        allowed = _GEMINI_FORMATS.get(str(out.get("type")), frozenset())
        if not isinstance(fmt, str) or fmt not in allowed:
            del out["format"]


def _gemini_fix_required(out: JSONObject) -> None:
    required = out.get("required")
    if required is None:
        return
    props = out.get("properties", {})
    kept = (
        [name for name in required if isinstance(name, str) and name in props]
        if isinstance(required, list)
        else []
    )
    if kept:
        out["required"] = list(dict.fromkeys(kept))
    else:
        del out["required"]


# --- Groq -----------------------------------------------------------------------------------

_GROQ_TOP_LEVEL = ("store", "prompt_cache_key", "service_tier", "metadata")


def strip_groq_unsupported(body: JSONObject) -> JSONObject:
    """A copy of a chat request without what Groq rejects with "property 'x' is unsupported":
    `store`, `prompt_cache_key`, assistant `reasoning_content`, `cache_control` anywhere in
    messages, and `$schema` in tool parameters."""
    out = {k: v for k, v in body.items() if k not in _GROQ_TOP_LEVEL}
    if isinstance(body.get("messages"), list):
        out["messages"] = [_groq_message(m) for m in body["messages"]]
    if isinstance(body.get("tools"), list):
        out["tools"] = [_groq_tool(t) for t in body["tools"]]
    return out


def _groq_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    return _without_key(
        {k: v for k, v in message.items() if k != "reasoning_content"}, "cache_control"
    )


def _groq_tool(tool: Any) -> Any:
    if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
        return tool
    function = dict(tool["function"])
    if isinstance(function.get("parameters"), dict):
        function["parameters"] = _without_key(function["parameters"], "$schema")
    return {**tool, "function": function}


def _without_key(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _without_key(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [_without_key(v, key) for v in value]
    return value


# --- Mistral --------------------------------------------------------------------------------

_MISTRAL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mistral_tool_id(tool_call_id: str) -> str:
    """A 9-character alphanumeric id for Mistral, derived deterministically so that a call and
    its result keep matching; ids already in that form are kept."""
    if _MISTRAL_ID.match(tool_call_id):
        return tool_call_id
    number = int.from_bytes(hashlib.sha256(tool_call_id.encode()).digest()[:8], "big")
    chars = []
    for _ in range(9):
        number, digit = divmod(number, len(_ALNUM))
        chars.append(_ALNUM[digit])
    return "".join(chars)


def fix_mistral_tool_ids(body: JSONObject) -> JSONObject:
    """A copy of a chat request with every tool-call id rewritten by `mistral_tool_id`."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    return {**body, "messages": [_mistral_message(m) for m in messages]}


def _mistral_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    out = dict(message)
    if isinstance(out.get("tool_call_id"), str):
        out["tool_call_id"] = mistral_tool_id(out["tool_call_id"])
    if isinstance(out.get("tool_calls"), list):
        out["tool_calls"] = [
            {**call, "id": mistral_tool_id(call["id"])}
            if isinstance(call, dict) and isinstance(call.get("id"), str)
            else call
            for call in out["tool_calls"]
        ]
    return out


# --- mid-conversation system messages --------------------------------------------------------


def inline_system_messages(messages: Iterable[Message]) -> list[Message]:
    """Messages with every `role:"system"` message folded into user text (P31).

    For upstreams that accept only one leading system message. The text is wrapped in
    `<system>` tags and joins the preceding user message, or the following one when the
    preceding message is not a user message, so roles keep alternating.
    """
    out: list[Message] = []
    pending: list[Part] = []
    for message in messages:
        if message.role != "system":
            if message.role == "user" and pending:
                message = Message(role="user", parts=[*pending, *message.parts])
                pending = []
            out.append(message)
            continue
        parts = _system_as_user_parts(message)
        if out and out[-1].role == "user":
            out[-1] = Message(role="user", parts=[*out[-1].parts, *parts])
        else:
            pending.extend(parts)
    if pending:
        out.append(Message(role="user", parts=pending))
    return out


def _system_as_user_parts(message: Message) -> list[Part]:
    text = "\n\n".join(p.text for p in message.parts if isinstance(p, TextPart) and p.text)
    return [TextPart(text=f"<system>\n{text}\n</system>")] if text else []
