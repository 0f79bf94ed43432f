from __future__ import annotations

import json
from typing import Any

import pytest

from desktop_proxy.protocols import openai_chat
from desktop_proxy.protocols.internal import (
    Message,
    ReasoningPart,
    Request,
    StreamFinish,
    TextPart,
    ToolCallPart,
    ToolDef,
    ToolResultPart,
)
from desktop_proxy.protocols.quirks import (
    MODEL_OUTPUT_LIMITS,
    UpstreamTraits,
    clamp_max_tokens,
    fix_mistral_tool_ids,
    inline_system_messages,
    mistral_tool_id,
    output_limit_for,
    sanitize_gemini_schema,
    strip_groq_unsupported,
    traits_for,
)
from desktop_proxy.protocols.sse import SSEEvent

# --- Gemini schema ---------------------------------------------------------------------------


def test_gemini_schema_drops_keys_gemini_rejects() -> None:
    """$schema, additionalProperties, propertyNames, exclusiveMinimum etc. are removed (P11)."""
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "propertyNames": {"pattern": "^[a-z]+$"},
        "properties": {
            "n": {"type": "integer", "exclusiveMinimum": 0, "multipleOf": 2, "minimum": 1},
            "s": {"type": "string", "examples": ["x"], "default": "y", "title": "S"},
        },
    }
    assert sanitize_gemini_schema(schema) == {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1},
            "s": {"type": "string", "default": "y", "title": "S"},
        },
    }


def test_gemini_schema_property_names_are_never_filtered() -> None:
    """Keys under `properties` are names: a property called "format" or "$schema" survives."""
    schema = {
        "type": "object",
        "properties": {"format": {"type": "string"}, "additionalProperties": {"type": "boolean"}},
        "required": ["format", "additionalProperties"],
    }
    out = sanitize_gemini_schema(schema)
    assert list(out["properties"]) == ["format", "additionalProperties"]
    assert out["required"] == ["format", "additionalProperties"]


def test_gemini_schema_const_becomes_a_one_value_enum() -> None:
    """A string const becomes `enum: [value]`; a non-string const is dropped."""
    out = sanitize_gemini_schema(
        {"type": "object", "properties": {"a": {"const": "x"}, "b": {"const": 3}}}
    )
    assert out["properties"] == {"a": {"type": "string", "enum": ["x"]}, "b": {}}


def test_gemini_schema_string_formats_other_than_enum_and_date_time_are_dropped() -> None:
    """Only enum/date-time formats stay on strings (uri, email... are dropped)."""
    out = sanitize_gemini_schema(
        {
            "type": "object",
            "properties": {
                "u": {"type": "string", "format": "uri"},
                "d": {"type": "string", "format": "date-time"},
                "i": {"type": "integer", "format": "int64"},
            },
        }
    )
    assert out["properties"] == {
        "u": {"type": "string"},
        "d": {"type": "string", "format": "date-time"},
        "i": {"type": "integer", "format": "int64"},
    }


def test_gemini_schema_type_arrays_and_null_variants_become_nullable() -> None:
    """["string","null"] and anyOf with a null member become a nullable single type."""
    out = sanitize_gemini_schema(
        {
            "type": "object",
            "properties": {
                "a": {"type": ["string", "null"]},
                "b": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "B"},
                "c": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                "d": {"type": ["string", "number"]},
            },
        }
    )
    assert out["properties"] == {
        "a": {"type": "string", "nullable": True},
        "b": {"type": "integer", "nullable": True, "description": "B"},
        "c": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        "d": {"anyOf": [{"type": "string"}, {"type": "number"}]},
    }


def test_gemini_schema_empty_properties_and_dangling_required_are_fixed() -> None:
    """Empty `properties` are removed and `required` only names existing properties."""
    out = sanitize_gemini_schema(
        {
            "type": "object",
            "properties": {"opts": {"type": "object", "properties": {}, "required": ["x"]}},
            "required": ["opts", "ghost"],
        }
    )
    assert out == {
        "type": "object",
        "properties": {"opts": {"type": "object"}},
        "required": ["opts"],
    }


def test_gemini_schema_refs_are_inlined_and_arrays_get_items() -> None:
    """Local $refs ($defs / definitions) are inlined; arrays without items get string items."""
    schema = {
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
        "properties": {
            "p": {"$ref": "#/$defs/Point", "description": "a point"},
            "tags": {"type": "array"},
            "both": {"allOf": [{"properties": {"a": {"type": "string"}}}, {"required": ["a"]}]},
        },
    }
    out = sanitize_gemini_schema(schema)
    assert out["properties"]["p"] == {
        "type": "object",
        "properties": {"x": {"type": "number"}},
        "description": "a point",
    }
    assert out["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert out["properties"]["both"] == {"properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert "$defs" not in out


def test_gemini_schema_recursive_refs_terminate() -> None:
    """A self-referencing schema is cut off at a fixed depth instead of looping forever."""
    schema = {
        "type": "object",
        "definitions": {
            "Node": {"type": "object", "properties": {"next": {"$ref": "#/definitions/Node"}}}
        },
        "properties": {"root": {"$ref": "#/definitions/Node"}},
    }
    assert "properties" in sanitize_gemini_schema(schema)


def test_gemini_schema_leaves_the_input_unchanged() -> None:
    """Sanitizing returns a copy; the client's schema object is not mutated."""
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}
    before = json.dumps(schema)
    sanitize_gemini_schema(schema)
    assert json.dumps(schema) == before


# --- Groq and Mistral --------------------------------------------------------------------------


def test_groq_unsupported_fields_are_stripped() -> None:
    """store, prompt_cache_key, reasoning_content, cache_control and $schema are removed."""
    body = {
        "model": "llama",
        "store": False,
        "prompt_cache_key": "k",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "q", "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "assistant", "content": "a", "reasoning_content": "r"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"$schema": "x", "type": "object"}},
            }
        ],
    }
    assert strip_groq_unsupported(body) == {
        "model": "llama",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {"role": "assistant", "content": "a"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
    }
    assert body["store"] is False  # the input is not mutated


def test_mistral_tool_ids_are_nine_alphanumerics_and_stay_paired() -> None:
    """Tool-call ids become 9-character alphanumerics, the same for a call and its result."""
    assert mistral_tool_id("abcDEF123") == "abcDEF123"
    new_id = mistral_tool_id("toolu_01A09q90qw90lq917835lq9")
    assert len(new_id) == 9 and new_id.isalnum()
    body = fix_mistral_tool_ids(
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "toolu_x", "type": "function"}],
                },
                {"role": "tool", "tool_call_id": "toolu_x", "content": "r"},
            ]
        }
    )
    assert body["messages"][0]["tool_calls"][0]["id"] == body["messages"][1]["tool_call_id"]
    assert body["messages"][1]["tool_call_id"] == mistral_tool_id("toolu_x")


# --- output limits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "limit"),
    [
        ("gpt-4o", 16384),
        ("gpt-4o-mini-2024-07-18", 16384),
        ("gpt-4.1-nano", 32768),
        ("o3-mini", 100000),
        ("deepseek-chat", 8192),
        ("deepseek-reasoner", 65536),
        ("models/gemini-2.5-flash", 65536),
        ("meta-llama/llama-3.3-70b-versatile", 32768),
        ("claude-opus-4-1-20250805", 32000),
        ("claude-sonnet-4-5", 64000),
        ("my-local-model", None),
    ],
)
def test_output_limits_match_on_the_longest_model_prefix(model: str, limit: int | None) -> None:
    """The table matches the longest prefix, ignoring any provider/ part of the name."""
    assert output_limit_for(model) == limit


def test_per_model_override_wins_and_clamp_never_goes_below_one() -> None:
    """ProviderConfig.max_output_tokens overrides the table; clamping keeps at least 1."""
    assert clamp_max_tokens(32000, "deepseek-chat") == 8192
    assert clamp_max_tokens(32000, "deepseek-chat", {"deepseek-chat": 4000}) == 4000
    assert clamp_max_tokens(100, "deepseek-chat") == 100
    assert clamp_max_tokens(50000, "unknown-model") == 50000
    assert clamp_max_tokens(0, "gpt-4o") == 1
    assert all(limit > 0 for limit in MODEL_OUTPUT_LIMITS.values())


# --- traits per provider kind ------------------------------------------------------------------


def test_traits_reflect_each_provider_kind() -> None:
    """Each preset kind gets the traits its API needs; unknown kinds get a generic profile."""
    openai = traits_for("openai", "o4-mini")
    assert openai.use_max_completion_tokens and openai.supports_reasoning_effort
    assert "temperature" in openai.drop_fields and openai.accepts_files
    assert not traits_for("azure", "gpt-4o").supports_reasoning_effort
    assert traits_for("deepseek", "deepseek-chat").send_reasoning_content
    assert traits_for("gemini", "gemini-2.5-pro").sanitize_schema is sanitize_gemini_schema
    assert traits_for("groq", "llama-3.3-70b").fix_body is strip_groq_unsupported
    assert traits_for("mistral", "mistral-large").fix_body is fix_mistral_tool_ids
    assert traits_for("ollama", "qwen3:8b").supports_reasoning_effort
    assert not traits_for("ollama", "llama3.2").supports_reasoning_effort
    assert traits_for("lmstudio", "x").single_leading_system
    assert traits_for("openrouter", "anthropic/claude-sonnet-4").supports_top_k
    generic = traits_for("vllm-custom", "whatever")
    assert generic == UpstreamTraits(single_leading_system=True)
    assert (
        traits_for("DeepSeek", "deepseek-chat", {"deepseek-chat": 1000}).max_output_tokens == 1000
    )


def test_deepseek_reasoning_round_trips_through_the_request() -> None:
    """DeepSeek's reasoning_content read from a response is sent back on the next request."""
    first = openai_chat.decode_response(
        {
            "id": "r1",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": "need the file",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "read", "arguments": "{}"},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
        }
    )
    follow_up = Request(
        model="deepseek-reasoner",
        messages=[
            Message("user", [TextPart("q")]),
            Message("assistant", first.parts),
            Message("user", [ToolResultPart("c1", [TextPart("data")])]),
        ],
    )
    traits = traits_for("deepseek", "deepseek-reasoner")
    body = openai_chat.encode_request(follow_up, "deepseek-reasoner", traits=traits)
    assert body["messages"][1]["reasoning_content"] == "need the file"
    groq = openai_chat.encode_request(
        follow_up, "qwen3-32b", traits=traits_for("groq", "qwen3-32b")
    )
    assert "reasoning_content" not in groq["messages"][1]


def test_ollama_tool_call_stream_that_ends_with_stop_is_a_tool_use() -> None:
    """Ollama's `finish_reason: "stop"` after streamed tool calls still means tool_use (P29)."""
    decoder = openai_chat.StreamDecoder()
    chunks = [
        {
            "id": "c",
            "model": "llama3.1",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
        },
        {
            "id": "c",
            "model": "llama3.1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "index": 0,
                                "type": "function",
                                "function": {"name": "Bash", "arguments": '{"command":"ls"}'},
                            }
                        ]
                    },
                }
            ],
        },
        {
            "id": "c",
            "model": "llama3.1",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        },
    ]
    events = [e for c in chunks for e in decoder.feed(SSEEvent(None, json.dumps(c)))]
    events += decoder.feed(SSEEvent(None, "[DONE]"))
    finish = events[-1]
    assert isinstance(finish, StreamFinish) and finish.stop_reason == "tool_use"


def test_gemini_traits_sanitize_tool_schemas_in_requests() -> None:
    """A request to Gemini carries sanitized tool schemas and no `user` field."""
    req = Request(
        model="m",
        messages=[Message("user", [TextPart("q")])],
        tools=[ToolDef("f", None, {"type": "object", "$schema": "x", "properties": {}})],
        user="u",
    )
    body = openai_chat.encode_request(
        req, "gemini-2.5-flash", traits=traits_for("gemini", "gemini-2.5-flash")
    )
    assert body["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert "user" not in body


# --- mid-conversation system messages ----------------------------------------------------------


def test_system_messages_fold_into_the_neighbouring_user_turn() -> None:
    """A system message joins the previous user turn, or the next one after an assistant turn."""
    messages = [
        Message("user", [TextPart("q1")]),
        Message("system", [TextPart("s1")]),
        Message("assistant", [TextPart("a"), ReasoningPart("r"), ToolCallPart("c", "f", "{}")]),
        Message("system", [TextPart("s2")]),
        Message("user", [TextPart("q2")]),
        Message("system", [TextPart("")]),
    ]
    out = inline_system_messages(messages)
    assert [m.role for m in out] == ["user", "assistant", "user"]
    assert out[0].parts == [TextPart("q1"), TextPart("<system>\ns1\n</system>")]
    assert out[2].parts == [TextPart("<system>\ns2\n</system>"), TextPart("q2")]


def test_trailing_system_message_after_assistant_becomes_its_own_user_turn() -> None:
    """A system message with no user turn around it is still delivered, as user text."""
    out = inline_system_messages(
        [Message("assistant", [TextPart("a")]), Message("system", [TextPart("s")])]
    )
    assert out[-1] == Message("user", [TextPart("<system>\ns\n</system>")])
