from __future__ import annotations

import json
from typing import Any

import anthropic as anthropic_sdk
import httpx2
import pytest

from desktop_proxy.protocols import anthropic
from desktop_proxy.protocols.errors import (
    ProtocolError,
    anthropic_error_body,
    anthropic_status_for_upstream,
)
from desktop_proxy.protocols.internal import (
    DocumentPart,
    ImagePart,
    Message,
    ReasoningDelta,
    ReasoningPart,
    Request,
    Response,
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
from desktop_proxy.protocols.quirks import traits_for
from desktop_proxy.protocols.sse import SSEDecoder, SSEEvent

# --- helpers ---------------------------------------------------------------------------------


def _request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(fields)
    return body


def _events(raw: bytes) -> list[dict[str, Any]]:
    """Parsed (event name, data) of an encoded Anthropic stream."""
    decoder = SSEDecoder()
    out = []
    for event in [*decoder.feed(raw), *decoder.close()]:
        data = json.loads(event.data)
        assert event.event == data["type"], "every frame needs a matching event: line (P2)"
        out.append(data)
    return out


def _encode_stream(events: list[StreamEvent], close: bool = True) -> bytes:
    encoder = anthropic.StreamEncoder("claude-test", 321, message_id="msg_fixed")
    raw = b"".join(encoder.feed(e) for e in events)
    return raw + (encoder.close() if close else b"")


def _sdk_message(raw: bytes) -> Any:
    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    client = anthropic_sdk.Anthropic(
        api_key="k",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(reply)),
    )
    with client.messages.stream(
        model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        return stream.get_final_message()


def _decode_stream(events: list[dict[str, Any]], close: bool = True) -> list[StreamEvent]:
    decoder = anthropic.StreamDecoder()
    out: list[StreamEvent] = []
    for data in events:
        out.extend(decoder.feed(SSEEvent(data["type"], json.dumps(data))))
    if close:
        out.extend(decoder.close())
    return out


# --- decode_request --------------------------------------------------------------------------


def test_claude_code_request_keeps_mid_conversation_system_message() -> None:
    """A role:"system" message inside messages[] stays a system message in place (P31)."""
    req = anthropic.decode_request(
        _request(
            messages=[
                {"role": "user", "content": "hello"},
                {"role": "system", "content": "Available agent types: ..."},
                {"role": "assistant", "content": "hi"},
            ]
        )
    )
    assert [m.role for m in req.messages] == ["user", "system", "assistant"]
    assert req.messages[1].parts == [TextPart("Available agent types: ...")]


def test_system_blocks_keep_cache_control_and_drop_the_billing_line() -> None:
    """System text blocks keep cache_control; Claude Code's billing-header line is not carried."""
    req = anthropic.decode_request(
        _request(
            system=[
                {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197;"},
                {
                    "type": "text",
                    "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "Main prompt"},
            ]
        )
    )
    assert req.system == [
        TextPart("You are Claude Code.", cache_control={"type": "ephemeral"}),
        TextPart("Main prompt"),
    ]


def test_adaptive_thinking_with_effort_becomes_reasoning_effort() -> None:
    """thinking adaptive + output_config.effort maps to that reasoning effort, no budget."""
    req = anthropic.decode_request(
        _request(thinking={"type": "adaptive"}, output_config={"effort": "medium"})
    )
    assert (req.reasoning_effort, req.thinking_budget) == ("medium", None)
    adaptive_default = anthropic.decode_request(_request(thinking={"type": "adaptive"}))
    assert adaptive_default.reasoning_effort == "high"


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (2048, "medium"), (4095, "medium"), (31999, "high")]
)
def test_thinking_budget_maps_to_effort_bucket(budget: int, effort: str) -> None:
    """An explicit thinking budget is kept and bucketed into an effort level (§4.1)."""
    req = anthropic.decode_request(_request(thinking={"type": "enabled", "budget_tokens": budget}))
    assert (req.reasoning_effort, req.thinking_budget) == (effort, budget)


def test_disabled_thinking_means_no_reasoning() -> None:
    """thinking disabled gives no reasoning effort even if an effort is configured."""
    req = anthropic.decode_request(
        _request(thinking={"type": "disabled"}, output_config={"effort": "high"})
    )
    assert req.reasoning_effort is None


def test_sampling_metadata_and_stream_fields_are_read() -> None:
    """Sampling settings, stop sequences, stream and metadata.user_id reach the request."""
    req = anthropic.decode_request(
        _request(
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            stream=True,
            metadata={"user_id": '{"device_id":"abc"}'},
            context_management={"edits": []},
            service_tier="auto",
        )
    )
    assert (req.temperature, req.top_p, req.top_k) == (0.5, 0.9, 40)
    assert req.stop == ["END"]
    assert req.stream is True
    assert req.user == '{"device_id":"abc"}'


def test_tools_skip_server_tools_and_tool_choice_maps_parallel_flag() -> None:
    """Custom tools are read, server tools skipped; disable_parallel_tool_use → False."""
    req = anthropic.decode_request(
        _request(
            tools=[
                {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}},
                {"type": "custom", "name": "Bash", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            ],
            tool_choice={"type": "tool", "name": "Read", "disable_parallel_tool_use": True},
        )
    )
    assert [t.name for t in req.tools] == ["Read", "Bash"]
    assert req.tool_choice == ToolChoice(type="tool", name="Read")
    assert req.parallel_tool_calls is False


def test_content_blocks_of_every_kind_are_decoded() -> None:
    """Images, documents, tool use/results, thinking and redacted thinking become parts."""
    req = anthropic.decode_request(
        _request(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                        {
                            "type": "document",
                            "title": "r.pdf",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBE",
                            },
                        },
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "plain"},
                        },
                        {
                            "type": "document",
                            "source": {
                                "type": "content",
                                "content": [
                                    {"type": "text", "text": "a"},
                                    {"type": "text", "text": "b"},
                                ],
                            },
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "opaque"},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "Read",
                            "input": {"path": "é"},
                        },
                        {
                            "type": "server_tool_use",
                            "id": "srv_1",
                            "name": "web_search",
                            "input": {},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "boom"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/jpeg",
                                        "data": "BBB",
                                    },
                                },
                            ],
                        },
                        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "ok"},
                        {"type": "tool_result", "tool_use_id": "toolu_3"},
                    ],
                },
            ]
        )
    )
    user, assistant, results = req.messages
    assert user.parts == [
        ImagePart(media_type="image/png", data="AAA"),
        ImagePart(url="https://x/y.png"),
        DocumentPart(media_type="application/pdf", data="JVBE", title="r.pdf"),
        DocumentPart(media_type="text/plain", text="plain"),
        DocumentPart(media_type="text/plain", text="a\n\nb"),
    ]
    assert assistant.parts == [
        ReasoningPart(text="hmm", signature="sig"),
        ReasoningPart(redacted="opaque"),
        ToolCallPart(id="toolu_1", name="Read", arguments='{"path":"é"}'),
    ]
    assert results.parts == [
        ToolResultPart(
            "toolu_1", [TextPart("boom"), ImagePart(media_type="image/jpeg", data="BBB")], True
        ),
        ToolResultPart("toolu_2", [TextPart("ok")]),
        ToolResultPart("toolu_3", []),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "m", "messages": []}, "max_tokens: required integer"),
        (
            {"model": "m", "max_tokens": "10", "messages": []},
            "max_tokens: must be an integer, got string",
        ),
        ({"model": "m", "max_tokens": 0, "messages": []}, "max_tokens: must be at least 1"),
        ({"max_tokens": 5, "messages": []}, "model: required string"),
        ({"model": "m", "max_tokens": 5}, "messages: required array"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]},
            "messages[0].role: must be 'user', 'assistant' or 'system', got 'bot'",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "foo"}]}],
            },
            "messages[0].content[0]: unknown block type 'foo'",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text"}]}],
            },
            "messages[0].content[0].text: required string",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "a", "name": "b", "input": "x"}],
                    }
                ],
            },
            "messages[0].content[0].input: must be an object, got string",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [], "tools": [{"name": "t"}]},
            "tools[0].input_schema: required object",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [], "tool_choice": {"type": "tool"}},
            "tool_choice.name: required string",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [], "thinking": {"type": "enabled"}},
            "thinking.budget_tokens: required integer",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ],
            },
            "messages[0].content[0].source.type: image source 'file' cannot be translated",
        ),
    ],
)
def test_malformed_requests_say_exactly_what_is_wrong(body: dict[str, Any], message: str) -> None:
    """A malformed request raises a 400 ProtocolError naming the field and the problem."""
    with pytest.raises(ProtocolError) as raised:
        anthropic.decode_request(body)
    assert raised.value.message.startswith(message)
    assert raised.value.status == 400


def test_count_tokens_body_needs_no_max_tokens() -> None:
    """count_tokens requests (no max_tokens) decode when max_tokens is not required."""
    req = anthropic.decode_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, require_max_tokens=False
    )
    assert req.max_tokens is None


# --- encode_request --------------------------------------------------------------------------


def _internal(**fields: Any) -> Request:
    base: dict[str, Any] = {"model": "gpt-4o", "messages": [Message("user", [TextPart("hi")])]}
    base.update(fields)
    return Request(**base)


def test_encoded_request_defaults_max_tokens_and_clamps_temperature() -> None:
    """Anthropic needs max_tokens (default 4096) and temperature within [0, 1] (P30)."""
    body = anthropic.encode_request(_internal(temperature=1.7), "claude-sonnet-4-5")
    assert body["max_tokens"] == 4096
    assert body["temperature"] == 1.0
    clamped = anthropic.encode_request(
        _internal(max_tokens=500000),
        "claude-3-5-haiku",
        traits=traits_for("anthropic", "claude-3-5-haiku"),
    )
    assert clamped["max_tokens"] == 8192


def test_encoded_request_never_contains_empty_text_blocks() -> None:
    """Empty and whitespace-only text is dropped, and so are messages left empty (P5)."""
    req = _internal(
        system=[TextPart(""), TextPart("sys")],
        messages=[
            Message("user", [TextPart("q"), TextPart("  ")]),
            Message("assistant", [TextPart("")]),
            Message("user", [TextPart("more")]),
        ],
    )
    body = anthropic.encode_request(req, "claude")
    assert body["system"] == [{"type": "text", "text": "sys"}]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "q"}, {"type": "text", "text": "more"}],
        }
    ]


def test_tool_results_merge_into_one_user_turn_before_its_text() -> None:
    """Consecutive tool results join one user message, ahead of that turn's text."""
    req = _internal(
        messages=[
            Message("user", [TextPart("go")]),
            Message(
                "assistant",
                [ToolCallPart("c1", "f", "{}"), TextPart("calling"), ToolCallPart("c2", "f", "")],
            ),
            Message("user", [ToolResultPart("c1", [TextPart("r1")])]),
            Message(
                "user", [TextPart("and?"), ToolResultPart("c2", [TextPart("r2")], is_error=True)]
            ),
        ]
    )
    messages = anthropic.encode_request(req, "claude")["messages"]
    assert [b["type"] for b in messages[1]["content"]] == ["text", "tool_use", "tool_use"]
    assert messages[1]["content"][2]["input"] == {}
    assert messages[2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "c1",
                "content": [{"type": "text", "text": "r1"}],
            },
            {
                "type": "tool_result",
                "tool_use_id": "c2",
                "content": [{"type": "text", "text": "r2"}],
                "is_error": True,
            },
            {"type": "text", "text": "and?"},
        ],
    }


def test_mid_conversation_system_message_becomes_user_text() -> None:
    """Without the beta header upstream, a non-leading system message is sent as user text."""
    req = _internal(
        messages=[
            Message("user", [TextPart("q")]),
            Message("system", [TextPart("be short")]),
            Message("assistant", [TextPart("a")]),
        ]
    )
    messages = anthropic.encode_request(req, "claude")["messages"]
    assert messages[0]["content"][-1] == {"type": "text", "text": "<system>\nbe short\n</system>"}
    assert [m["role"] for m in messages] == ["user", "assistant"]


def test_reasoning_without_anthropic_signature_is_dropped() -> None:
    """Foreign reasoning (no signature) never reaches Anthropic; signed thinking is kept (P21)."""
    req = _internal(
        messages=[
            Message("user", [TextPart("q")]),
            Message(
                "assistant",
                [
                    ReasoningPart("mine", signature="sig"),
                    ReasoningPart("foreign"),
                    ReasoningPart(redacted="x"),
                    TextPart("a"),
                ],
            ),
        ]
    )
    content = anthropic.encode_request(req, "claude")["messages"][1]["content"]
    assert content == [
        {"type": "thinking", "thinking": "mine", "signature": "sig"},
        {"type": "redacted_thinking", "data": "x"},
        {"type": "text", "text": "a"},
    ]


def test_reasoning_effort_enables_thinking_and_relaxes_forced_tool_choice() -> None:
    """reasoning_effort becomes a thinking budget; forced tool choice becomes auto (P22) and
    sampling overrides are dropped."""
    req = _internal(
        reasoning_effort="high",
        max_tokens=10000,
        temperature=0.2,
        top_k=5,
        tools=[ToolDef("f", None, {"type": "object", "properties": {}})],
        tool_choice=ToolChoice("tool", "f"),
        parallel_tool_calls=False,
    )
    body = anthropic.encode_request(req, "claude")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "temperature" not in body and "top_k" not in body


def test_thinking_budget_stays_below_max_tokens_or_is_not_sent() -> None:
    """A budget must be below max_tokens and at least 1024, else thinking is left off."""
    tight = anthropic.encode_request(_internal(thinking_budget=5000, max_tokens=3000), "c")
    assert tight["thinking"]["budget_tokens"] == 2999
    too_small = anthropic.encode_request(_internal(reasoning_effort="low", max_tokens=800), "c")
    assert "thinking" not in too_small
    minimal = anthropic.encode_request(_internal(reasoning_effort="minimal"), "c")
    assert "thinking" not in minimal


def test_tool_choice_mapping_and_parallel_flag_without_choice() -> None:
    """Tool choices map one to one; parallel_tool_calls=False alone gives auto + disable."""
    tools = [ToolDef("f", "d", {})]
    for choice, wire in [
        (ToolChoice("auto"), {"type": "auto"}),
        (ToolChoice("any"), {"type": "any"}),
        (ToolChoice("none"), {"type": "none"}),
        (ToolChoice("tool", "f"), {"type": "tool", "name": "f"}),
    ]:
        body = anthropic.encode_request(_internal(tools=tools, tool_choice=choice), "c")
        assert body["tool_choice"] == wire
    body = anthropic.encode_request(_internal(tools=tools, parallel_tool_calls=False), "c")
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert body["tools"] == [
        {"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}
    ]
    no_tools = anthropic.encode_request(_internal(tool_choice=ToolChoice("any")), "c")
    assert "tool_choice" not in no_tools


def test_tool_ids_are_rewritten_consistently_for_anthropic() -> None:
    """Ids Anthropic rejects are rewritten the same way in the call and in its result."""
    req = _internal(
        messages=[
            Message("user", [TextPart("q")]),
            Message("assistant", [ToolCallPart("functions.Bash:0", "Bash", '{"a":1}')]),
            Message("user", [ToolResultPart("functions.Bash:0", [TextPart("ok")])]),
        ]
    )
    messages = anthropic.encode_request(req, "c")["messages"]
    call_id = messages[1]["content"][0]["id"]
    assert call_id == messages[2]["content"][0]["tool_use_id"]
    assert call_id.startswith("functions_Bash_0_")
    assert anthropic.anthropic_tool_id("toolu_ok-1") == "toolu_ok-1"


def test_a_tool_calls_extras_ride_in_its_id_and_come_back_out() -> None:
    """P12: what Gemini wants back with a call (its thought signature) survives Claude Code,
    which keeps only the tool_use's id; ids without extras are left as they are."""
    extra = {"extra_content": {"google": {"thought_signature": "CvcB+/Ad=="}}}
    tool_id = anthropic.tool_id_with_extra("function-call-1", extra)
    assert tool_id.startswith("function-call-1__dpx_")
    assert anthropic.anthropic_tool_id(tool_id) == tool_id  # a valid Anthropic id as it is
    assert anthropic.split_tool_id(tool_id) == ("function-call-1", extra)
    assert anthropic.tool_id_with_extra("toolu_1", None) == "toolu_1"
    assert anthropic.split_tool_id("toolu_1") == ("toolu_1", None)
    # Someone else's id that happens to contain the marker stays whole.
    assert anthropic.split_tool_id("call__dpx_!!") == ("call__dpx_!!", None)
    assert anthropic.split_tool_id("call__dpx_WzFd") == ("call__dpx_WzFd", None)  # "[1]"
    assert anthropic.split_tool_id("__dpx_e30") == ("__dpx_e30", None)  # no id before it


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("", {}),
        ('{"a": 1}', {"a": 1}),
        ('{"a": 1}{"b": 2}', {"a": 1}),
        ("{a: 1", {"raw_arguments": "{a: 1"}),
        ("[1, 2]", {"raw_arguments": "[1, 2]"}),
    ],
)
def test_tool_arguments_that_are_not_a_json_object_are_kept_raw(
    arguments: str, expected: dict[str, Any]
) -> None:
    """Invalid or non-object tool arguments are never lost: they land under raw_arguments."""
    assert anthropic.parse_tool_arguments(arguments) == expected


def test_images_documents_and_response_format_are_encoded() -> None:
    """Images, PDFs, text documents and a JSON schema response format take Anthropic shapes."""
    req = _internal(
        messages=[
            Message(
                "user",
                [
                    ImagePart(media_type="image/jpg", data="AAA"),
                    ImagePart(url="https://x/y.png"),
                    DocumentPart(media_type="application/pdf", data="JVBE", title="r.pdf"),
                    DocumentPart(text="notes"),
                ],
            )
        ],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": {"type": "object"}},
        },
        stop=["X"],
        user="u1",
        stream=True,
    )
    body = anthropic.encode_request(req, "c")
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
            "title": "r.pdf",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
        },
    ]
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }
    assert (body["stop_sequences"], body["metadata"], body["stream"]) == (
        ["X"],
        {"user_id": "u1"},
        True,
    )


def test_unsupported_image_type_is_a_clear_client_error() -> None:
    """An SVG image cannot go to Anthropic: the error names the message and the type."""
    req = _internal(
        messages=[Message("user", [ImagePart(media_type="image/svg+xml", data="PHN2")])]
    )
    with pytest.raises(ProtocolError) as raised:
        anthropic.encode_request(req, "c")
    assert "image type 'image/svg+xml' is not supported by Anthropic" in raised.value.message
    assert raised.value.message.startswith("messages[0]")


# --- responses -------------------------------------------------------------------------------


def test_decode_response_reads_blocks_stop_reason_and_cumulative_usage() -> None:
    """An Anthropic message becomes parts, stop reason and non-overlapping usage."""
    resp = anthropic.decode_response(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "text", "text": "hello"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}},
                {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []},
            ],
            "stop_reason": "model_context_window_exceeded",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 5,
                "output_tokens": 7,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
            },
        }
    )
    assert resp.parts == [
        ReasoningPart("t", "s"),
        TextPart("hello"),
        ToolCallPart("toolu_1", "f", '{"x":1}'),
    ]
    assert resp.stop_reason == "context_window_exceeded"
    assert resp.usage == Usage(5, 7, 100, 20)


def test_malformed_upstream_response_is_a_502() -> None:
    """An upstream body without content is reported as a bad gateway, not a client error."""
    with pytest.raises(ProtocolError) as raised:
        anthropic.decode_response({"id": "x"})
    assert raised.value.status == 502


def test_encode_response_has_usage_and_no_empty_text_next_to_tool_use() -> None:
    """The client gets usage always, no empty text block, and tool_use as stop reason."""
    resp = Response(
        id="chatcmpl-9",
        model="gpt-4o",
        parts=[TextPart(""), ToolCallPart("call_1", "f", '{"a":1}')],
        stop_reason="end_turn",
        usage=Usage(10, 3, 4, 0),
    )
    body = anthropic.encode_response(resp, "claude-sonnet-4-5")
    assert body["id"] == "msg_chatcmpl-9"
    assert body["model"] == "claude-sonnet-4-5"
    assert body["content"] == [{"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}]
    assert body["stop_reason"] == "tool_use"
    assert body["usage"] == {
        "input_tokens": 10,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
    }


def test_encode_response_without_content_has_an_empty_list() -> None:
    """An empty answer is `content: []`, never an empty text block the API would reject later."""
    body = anthropic.encode_response(Response("msg_1", "m", [TextPart("  ")]), "claude")
    assert body["content"] == []
    assert body["stop_reason"] == "end_turn"


def test_encoded_response_is_accepted_by_the_sdk_types() -> None:
    """The Anthropic SDK parses our non-streaming body into its Message type."""
    resp = Response(
        "msg_1", "m", [ReasoningPart("why"), TextPart("hi"), ToolCallPart("c", "f", "{}")]
    )
    body = anthropic.encode_response(resp, "claude")

    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=body)

    client = anthropic_sdk.Anthropic(
        api_key="k",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(reply)),
    )
    message = client.messages.create(
        model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.stop_reason == "tool_use"


# --- stream decoder --------------------------------------------------------------------------

_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 565, "cache_read_input_tokens": 10, "output_tokens": 1},
    },
}


def test_stream_decoder_turns_blocks_into_internal_events() -> None:
    """Text, thinking (with signature) and tool_use blocks become internal deltas in order."""
    events = _decode_stream(
        [
            _START,
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hm"},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig"},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "text", "text": ""},
            },
            {"type": "ping"},
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "text_delta", "text": "ok"},
            },
            {"type": "content_block_stop", "index": 1},
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
            {
                "type": "content_block_delta",
                "index": 2,
                "delta": {"type": "input_json_delta", "partial_json": '{"a":1}'},
            },
            {"type": "content_block_stop", "index": 2},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 48},
            },
            {"type": "message_stop"},
        ]
    )
    assert events[0] == StreamStart("msg_1", "claude", Usage(565, 1, 10, 0))
    assert events[1:6] == [
        ReasoningDelta(text="hm"),
        ReasoningDelta(signature="sig"),
        TextDelta("ok"),
        ToolCallStart(0, "toolu_1", "f"),
        ToolCallDelta(0, '{"a":1}'),
    ]
    assert events[-1] == StreamFinish("tool_use", None, Usage(565, 48, 10, 0))


def test_stream_decoder_error_event_becomes_stream_error_with_status() -> None:
    """`event: error` becomes a StreamError whose status matches the error type (529)."""
    events = _decode_stream(
        [_START, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    )
    assert events[-1] == StreamError(529, "Overloaded", "overloaded_error")


def test_stream_decoder_finishes_at_eof_only_after_a_stop_reason() -> None:
    """EOF after message_delta still finishes; EOF mid-answer does not pretend to."""
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 3},
    }
    finished = _decode_stream([_START, delta])
    assert isinstance(finished[-1], StreamFinish)
    decoder = anthropic.StreamDecoder()
    decoder.feed(SSEEvent("message_start", json.dumps(_START)))
    assert decoder.close() == []
    assert decoder.finished is False


def test_stream_decoder_reports_unreadable_json_as_bad_gateway() -> None:
    """Garbage in an upstream event ends the stream with a 502 StreamError."""
    events = anthropic.StreamDecoder().feed(SSEEvent("content_block_delta", "{oops"))
    assert isinstance(events[0], StreamError) and events[0].status == 502


# --- stream encoder --------------------------------------------------------------------------


def test_stream_starts_with_message_start_carrying_the_input_estimate() -> None:
    """message_start comes first, with the estimate, output_tokens 1 and zero cache fields."""
    events = _events(_encode_stream([TextDelta("hi"), StreamFinish("end_turn")]))
    start = events[0]
    assert start["type"] == "message_start"
    assert start["message"]["id"] == "msg_fixed"
    assert start["message"]["model"] == "claude-test"
    assert start["message"]["usage"] == {
        "input_tokens": 321,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_tool_only_answer_has_no_text_block_and_stops_with_tool_use() -> None:
    """Leading whitespace and a tool call give one tool_use block at index 0 (P5, P8)."""
    raw = _encode_stream(
        [
            StreamStart("chatcmpl-1", "gpt"),
            TextDelta("\n\n"),
            ToolCallStart(0, "call_1", "Read"),
            ToolCallDelta(0, '{"file_path":'),
            ToolCallDelta(0, '"/a"}'),
            StreamFinish("end_turn", usage=Usage(40, 9, 60, 0)),
        ]
    )
    events = _events(raw)
    assert events[1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "Read",
        "input": {},
    }
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {
        "input_tokens": 40,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }
    message = _sdk_message(raw)
    assert [b.type for b in message.content] == ["tool_use"]
    assert message.content[0].input == {"file_path": "/a"}


def test_block_indices_count_up_in_start_order_with_one_open_block() -> None:
    """Thinking, text and tool blocks are numbered 0, 1, 2 and each is closed before the next."""
    raw = _encode_stream(
        [
            ReasoningDelta(text="think"),
            ReasoningDelta(signature="sig"),
            TextDelta("answer"),
            ToolCallStart(0, "c", "f"),
            StreamFinish("tool_use"),
        ]
    )
    events = _events(raw)
    opened: list[int] = []
    open_now: int | None = None
    for event in events:
        if event["type"] == "content_block_start":
            assert open_now is None
            open_now = event["index"]
            opened.append(event["index"])
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_now
            open_now = None
    assert opened == [0, 1, 2]
    message = _sdk_message(raw)
    assert message.content[0].thinking == "think" and message.content[0].signature == "sig"


def test_interleaved_parallel_tool_arguments_still_give_valid_blocks() -> None:
    """Fragments for a tool whose block is not open are held and written with that block."""
    raw = _encode_stream(
        [
            ToolCallStart(0, "a", "f"),
            ToolCallStart(1, "b", "g"),
            ToolCallDelta(1, '{"y":'),
            ToolCallDelta(0, '{"x":1}'),
            ToolCallDelta(1, "2}"),
            StreamFinish("tool_use"),
        ]
    )
    message = _sdk_message(raw)
    assert [(b.id, b.input) for b in message.content] == [("a", {"x": 1}), ("b", {"y": 2})]


def test_error_event_has_valid_type_and_no_message_stop() -> None:
    """A StreamError becomes `event: error` with an Anthropic type and ends the stream."""
    encoder = anthropic.StreamEncoder("m", 10)
    raw = encoder.feed(TextDelta("part")) + encoder.feed(StreamError(503, "upstream down"))
    raw += encoder.close() + encoder.feed(TextDelta("late"))
    events = _events(raw)
    assert events[-1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "upstream down"},
    }
    assert "message_stop" not in [e["type"] for e in events]
    assert encoder.done and not encoder.finish_seen


def test_close_without_finish_ends_cleanly_and_reports_it() -> None:
    """Upstream EOF without a finish still ends the grammar; finish_seen tells the caller."""
    encoder = anthropic.StreamEncoder("m", 50, "msg_x")
    raw = encoder.feed(TextDelta("abcdefgh")) + encoder.close()
    assert encoder.finish_seen is False
    events = _events(raw)
    assert events[-1]["type"] == "message_stop"
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["usage"]["input_tokens"] == 50
    assert events[-2]["usage"]["output_tokens"] == 2
    assert _events(anthropic.StreamEncoder("m", 5).close())[0]["type"] == "message_start"


def test_usage_updates_and_start_usage_reach_the_client() -> None:
    """Upstream usage from StreamStart and UsageUpdate is reported; missing input uses the
    estimate."""
    raw = _encode_stream(
        [
            StreamStart("msg_up", "claude", Usage(input_tokens=900, cache_read_tokens=50)),
            TextDelta("x"),
            UsageUpdate(Usage(0, 12)),
            StreamFinish("max_tokens"),
        ]
    )
    events = _events(raw)
    assert events[0]["message"]["usage"]["input_tokens"] == 900
    assert events[0]["message"]["usage"]["cache_read_input_tokens"] == 50
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2]["usage"]["input_tokens"] == 321
    assert events[-2]["usage"]["output_tokens"] == 12


def test_redacted_thinking_is_a_complete_block_and_ping_is_an_event() -> None:
    """Redacted thinking opens and closes at once; ping() is a named ping event."""
    events = _events(_encode_stream([ReasoningDelta(redacted="opaque"), TextDelta("a")]))
    assert events[1]["content_block"] == {"type": "redacted_thinking", "data": "opaque"}
    assert events[2] == {"type": "content_block_stop", "index": 0}
    assert anthropic.StreamEncoder("m", 1).ping() == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_temperature_wins_over_top_p_when_both_are_given() -> None:
    """Recent Claude models reject temperature with top_p, so only temperature is sent."""
    both = anthropic.encode_request(_internal(temperature=0.7, top_p=0.9), "c")
    assert (both.get("temperature"), "top_p" in both) == (0.7, False)
    only_top_p = anthropic.encode_request(_internal(top_p=0.9), "c")
    assert only_top_p["top_p"] == 0.9


# --- error bodies for Anthropic clients ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (409, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (599, "api_error"),
    ],
)
def test_anthropic_error_body_type_follows_the_status(status: int, error_type: str) -> None:
    """Each status gets the Anthropic error type the SDKs and Claude Code understand."""
    assert anthropic_error_body(status, "msg") == {
        "type": "error",
        "error": {"type": error_type, "message": "msg"},
    }


def test_anthropic_error_body_keeps_a_valid_explicit_type_only() -> None:
    """An explicit valid type is kept; an invalid one (e.g. "cancelled") is replaced."""
    assert anthropic_error_body(400, "m", "overloaded_error")["error"]["type"] == "overloaded_error"
    assert anthropic_error_body(500, "m", "cancelled")["error"]["type"] == "api_error"


@pytest.mark.parametrize(
    ("upstream", "client"),
    [
        (400, 400),
        (422, 400),
        (408, 504),
        (401, 401),
        (429, 429),
        (500, 500),
        (502, 502),
        (503, 529),
        (504, 504),
        (529, 529),
        (501, 500),
    ],
)
def test_upstream_statuses_map_to_statuses_anthropic_clients_handle(
    upstream: int, client: int
) -> None:
    """503 becomes 529 (overloaded, retried with backoff) and other codes follow §5.1."""
    assert anthropic_status_for_upstream(upstream) == client


def test_quota_errors_become_billing_errors_not_rate_limits() -> None:
    """An OpenAI insufficient_quota 429 becomes 402 so Claude Code does not retry it."""
    body = {"error": {"message": "You exceeded your quota", "type": "insufficient_quota"}}
    assert anthropic_status_for_upstream(429, body) == 402
    assert anthropic_status_for_upstream(429, {"error": {"code": "rate_limit_exceeded"}}) == 429
