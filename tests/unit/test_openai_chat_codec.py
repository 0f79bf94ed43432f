from __future__ import annotations

import json
from typing import Any

import httpx2
import openai as openai_sdk
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from desktop_proxy.protocols import openai_chat
from desktop_proxy.protocols.errors import (
    ProtocolError,
    extract_error_message,
    openai_error_body,
    openai_status_for_upstream,
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
from desktop_proxy.protocols.quirks import UpstreamTraits, traits_for
from desktop_proxy.protocols.sse import SSEDecoder, SSEEvent

# --- helpers ---------------------------------------------------------------------------------


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> str:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    chunk.update(extra)
    return json.dumps(chunk)


def _decode(datas: list[str], close: bool = True) -> list[StreamEvent]:
    decoder = openai_chat.StreamDecoder()
    events: list[StreamEvent] = []
    for data in datas:
        events.extend(decoder.feed(SSEEvent(None, data)))
    if close:
        events.extend(decoder.close())
    return events


def _chunks(raw: bytes) -> list[Any]:
    decoder = SSEDecoder()
    out: list[Any] = []
    for event in [*decoder.feed(raw), *decoder.close()]:
        assert event.event is None
        out.append(event.data if event.data == "[DONE]" else json.loads(event.data))
    return out


def _openai_stream_state(raw: bytes) -> ChatCompletionStreamState[Any]:
    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    client = openai_sdk.OpenAI(
        api_key="k",
        base_url="http://gateway.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(reply)),
    )
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    ):
        state.handle_chunk(chunk)
    return state


def _internal(**fields: Any) -> Request:
    base: dict[str, Any] = {"model": "claude", "messages": [Message("user", [TextPart("hi")])]}
    base.update(fields)
    return Request(**base)


# --- decode_request --------------------------------------------------------------------------


def test_leading_system_and_developer_messages_become_the_system_prompt() -> None:
    """Leading system/developer messages form Request.system; later ones stay in place."""
    req = openai_chat.decode_request(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "a"},
                {"role": "developer", "content": [{"type": "text", "text": "b"}]},
                {"role": "user", "content": "q"},
                {"role": "system", "content": "late"},
            ],
        }
    )
    assert req.system == [TextPart("a"), TextPart("b")]
    assert [m.role for m in req.messages] == ["user", "system"]


def test_user_parts_images_and_files_are_decoded() -> None:
    """Text, data-URL and http images, and PDF file parts become internal parts."""
    req = openai_chat.decode_request(
        {
            "model": "gpt-4o",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/y.jpg", "detail": "low"},
                        },
                        {
                            "type": "file",
                            "file": {
                                "filename": "a.pdf",
                                "file_data": "data:application/pdf;base64,JVBE",
                            },
                        },
                    ],
                }
            ],
        }
    )
    assert req.messages[0].parts == [
        TextPart("look", cache_control={"type": "ephemeral"}),
        ImagePart(media_type="image/png", data="AAAA"),
        ImagePart(url="https://x/y.jpg"),
        DocumentPart(media_type="application/pdf", data="JVBE", title="a.pdf"),
    ]


def test_assistant_turn_and_tool_messages_are_decoded() -> None:
    """Assistant text, reasoning_content and tool_calls form one turn; consecutive tool
    messages become tool results in one user message."""
    req = openai_chat.decode_request(
        {
            "model": "deepseek-reasoner",
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "why",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "g", "arguments": "{}"},
                            "extra_content": {"google": {"thought_signature": "sig"}},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "r1"},
                {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r2"}]},
                {"role": "user", "content": "next"},
            ],
        }
    )
    assistant, results, follow_up = req.messages[1:]
    assert assistant.parts == [
        ReasoningPart("why"),
        ToolCallPart("c1", "f", '{"a":1}'),
        ToolCallPart(
            "c2", "g", "{}", extra={"extra_content": {"google": {"thought_signature": "sig"}}}
        ),
    ]
    assert results.parts == [
        ToolResultPart("c1", [TextPart("r1")]),
        ToolResultPart("c2", [TextPart("r2")]),
    ]
    assert follow_up.parts == [TextPart("next")]


def test_request_options_are_decoded() -> None:
    """Limits, stop, sampling, tools, tool choice, effort, format, stream and user are read."""
    req = openai_chat.decode_request(
        {
            "model": "o3",
            "messages": [{"role": "user", "content": "q"}],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stop": "END",
            "temperature": 1.5,
            "top_p": 0.5,
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "reasoning_effort": "low",
            "response_format": {"type": "json_object"},
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "u",
        }
    )
    assert req.max_tokens == 20
    assert req.stop == ["END"]
    assert (req.temperature, req.top_p) == (1.5, 0.5)
    assert req.tools == [ToolDef("f", None, {"type": "object"})]
    assert req.tool_choice == ToolChoice("any")
    assert req.parallel_tool_calls is False
    assert req.reasoning_effort == "low"
    assert req.response_format == {"type": "json_object"}
    assert (req.stream, req.include_usage, req.user) == (True, True, "u")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "model: required string"),
        ({"model": "m"}, "messages: required array"),
        (
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role: must be",
        ),
        ({"model": "m", "messages": [], "n": 2}, "n: only one choice (n=1) can be translated"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0]: unknown content part type 'video'",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0]: audio input cannot be translated",
        ),
        (
            {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id: required string",
        ),
        (
            {"model": "m", "messages": [], "max_tokens": 1.5},
            "max_tokens: must be an integer, got number",
        ),
        ({"model": "m", "messages": [], "stop": 5}, "stop: must be a string or a list of strings"),
        ({"model": "m", "messages": [], "tool_choice": "sometimes"}, "tool_choice: must be"),
    ],
)
def test_malformed_requests_say_exactly_what_is_wrong(body: dict[str, Any], message: str) -> None:
    """A malformed request raises a 400 ProtocolError naming the field and the problem."""
    with pytest.raises(ProtocolError) as raised:
        openai_chat.decode_request(body)
    assert raised.value.message.startswith(message)
    assert raised.value.status == 400


# --- encode_request --------------------------------------------------------------------------


def test_system_blocks_join_into_one_leading_system_message() -> None:
    """All system parts become one leading system message; mid-conversation ones stay put."""
    req = _internal(
        system=[TextPart("a"), TextPart("b")],
        messages=[Message("user", [TextPart("q")]), Message("system", [TextPart("late")])],
    )
    messages = openai_chat.encode_request(req, "gpt-4o")["messages"]
    assert messages == [
        {"role": "system", "content": "a\n\nb"},
        {"role": "user", "content": "q"},
        {"role": "system", "content": "late"},
    ]


def test_single_leading_system_upstreams_get_late_system_text_in_user_turns() -> None:
    """Upstreams that allow one leading system message get later ones folded into user text."""
    req = _internal(
        messages=[
            Message("user", [TextPart("q")]),
            Message("system", [TextPart("late")]),
            Message("assistant", [TextPart("a")]),
        ]
    )
    traits = UpstreamTraits(single_leading_system=True)
    messages = openai_chat.encode_request(req, "m", traits=traits)["messages"]
    assert messages[0] == {"role": "user", "content": "q\n\n<system>\nlate\n</system>"}
    assert [m["role"] for m in messages] == ["user", "assistant"]


def test_tool_results_come_before_the_rest_of_their_user_turn() -> None:
    """Tool messages precede the user's text of the same turn; errors are prefixed."""
    req = _internal(
        messages=[
            Message(
                "assistant",
                [
                    TextPart("calling"),
                    ToolCallPart("c1", "f", ""),
                    ToolCallPart("c2", "g", '{"a":1}'),
                ],
            ),
            Message(
                "user",
                [
                    TextPart("why?"),
                    ToolResultPart("c1", [TextPart("boom")], is_error=True),
                    ToolResultPart("c2", []),
                ],
            ),
        ]
    )
    messages = openai_chat.encode_request(req, "m")["messages"]
    assert messages == [
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": '{"a":1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Error: boom"},
        {"role": "tool", "tool_call_id": "c2", "content": ""},
        {"role": "user", "content": "why?"},
    ]


def test_assistant_with_only_tool_calls_has_null_content() -> None:
    """Tool calls without text go out with `content: null`, never an empty string."""
    req = _internal(messages=[Message("assistant", [ToolCallPart("c", "f", "{}")])])
    message = openai_chat.encode_request(req, "m")["messages"][0]
    assert message["content"] is None


def test_images_in_tool_results_move_to_a_following_user_message() -> None:
    """Tool messages are text-only, so a returned image follows in a user message (P23)."""
    req = _internal(
        messages=[
            Message("assistant", [ToolCallPart("c", "screenshot", "{}")]),
            Message(
                "user", [ToolResultPart("c", [TextPart("done"), ImagePart("image/png", "AAAA")])]
            ),
        ]
    )
    messages = openai_chat.encode_request(req, "m")["messages"]
    assert messages[1] == {
        "role": "tool",
        "tool_call_id": "c",
        "content": "done\n[1 attachment returned; see the next user message]",
    }
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Attachments returned by tool call c:"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    }


def test_pdf_is_a_file_part_only_where_files_are_accepted() -> None:
    """A PDF becomes a file part for upstreams that take files, else a clear 400."""
    req = _internal(
        messages=[Message("user", [DocumentPart("application/pdf", "JVBE", title="a.pdf")])]
    )
    accepted = openai_chat.encode_request(req, "m", traits=UpstreamTraits(accepts_files=True))
    assert accepted["messages"][0]["content"] == [
        {
            "type": "file",
            "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
        }
    ]
    with pytest.raises(ProtocolError) as raised:
        openai_chat.encode_request(req, "m", traits=UpstreamTraits(accepts_files=False))
    assert raised.value.status == 400
    assert "messages[0]: this upstream does not accept application/pdf documents" in str(
        raised.value
    )


def test_text_documents_are_inlined_as_text() -> None:
    """A plain-text document is sent as text, titled."""
    req = _internal(messages=[Message("user", [DocumentPart(text="body", title="notes.txt")])])
    assert openai_chat.encode_request(req, "m")["messages"][0]["content"] == "notes.txt\n\nbody"


def test_reasoning_goes_back_only_to_upstreams_that_want_it() -> None:
    """reasoning_content is echoed for DeepSeek (even empty on tool turns) and never for others."""
    req = _internal(
        messages=[
            Message("assistant", [ReasoningPart("why"), TextPart("a")]),
            Message("assistant", [ToolCallPart("c", "f", "{}")]),
            Message("user", [ToolResultPart("c", [TextPart("r")])]),
        ]
    )
    deepseek = openai_chat.encode_request(
        req, "deepseek-reasoner", traits=traits_for("deepseek", "deepseek-reasoner")
    )
    assert deepseek["messages"][0]["reasoning_content"] == "why"
    assert deepseek["messages"][1]["reasoning_content"] == ""
    plain = openai_chat.encode_request(req, "gpt-4o", traits=traits_for("openai", "gpt-4o"))
    assert all("reasoning_content" not in m for m in plain["messages"])


def test_tools_choice_limits_and_stream_options_follow_the_traits() -> None:
    """Tool choice maps (any → required), max tokens are clamped and named per upstream,
    reasoning effort is sent only where supported, and streams always ask for usage."""
    tools = [ToolDef("f", "does f", {"type": "object", "properties": {}})]
    req = _internal(
        tools=tools,
        tool_choice=ToolChoice("any"),
        parallel_tool_calls=False,
        max_tokens=64000,
        reasoning_effort="max",
        stop=["a", "b", "c", "d", "e"],
        top_k=3,
        stream=True,
    )
    openai = openai_chat.encode_request(req, "o3", traits=traits_for("openai", "o3"))
    assert openai["tool_choice"] == "required"
    assert openai["parallel_tool_calls"] is False
    assert openai["max_completion_tokens"] == 64000
    assert openai["reasoning_effort"] == "xhigh"
    assert "stop" not in openai and "top_k" not in openai
    assert openai["stream_options"] == {"include_usage": True}
    deepseek = openai_chat.encode_request(
        req, "deepseek-chat", traits=traits_for("deepseek", "deepseek-chat")
    )
    assert deepseek["max_tokens"] == 8192
    assert "reasoning_effort" not in deepseek
    assert deepseek["stop"] == ["a", "b", "c", "d"]
    assert deepseek["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "does f",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    named = openai_chat.encode_request(
        _internal(tools=tools, tool_choice=ToolChoice("tool", "f")), "m"
    )
    assert named["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    none = openai_chat.encode_request(_internal(tools=tools, tool_choice=ToolChoice("none")), "m")
    assert none["tool_choice"] == "none"


def test_long_user_ids_are_hashed_to_fit() -> None:
    """Claude Code's long metadata.user_id is shortened deterministically to 64 characters."""
    long_id = json.dumps({"device_id": "f" * 64, "session_id": "x"})
    first = openai_chat.encode_request(_internal(user=long_id), "m")["user"]
    assert first == openai_chat.encode_request(_internal(user=long_id), "m")["user"]
    assert len(first) <= 64
    assert openai_chat.encode_request(_internal(user="short"), "m")["user"] == "short"


def test_unanswered_calls_and_orphan_results_are_repaired() -> None:
    """A call without result gets a placeholder; a result without call becomes user text (P9)."""
    req = _internal(
        messages=[
            Message("assistant", [ToolCallPart("c1", "f", "{}")]),
            Message("user", [TextPart("never mind")]),
            Message("user", [ToolResultPart("ghost", [TextPart("r")])]),
        ]
    )
    messages = openai_chat.encode_request(req, "m")["messages"]
    assert messages[1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "Error: no result was recorded.",
    }
    assert messages[2] == {"role": "user", "content": "never mind"}
    assert messages[3] == {"role": "user", "content": "Result of tool call ghost:\nr"}


# --- responses -------------------------------------------------------------------------------


def _completion(
    message: dict[str, Any], finish: str, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def test_decode_response_reads_reasoning_text_tools_and_cached_usage() -> None:
    """Reasoning, text and tool calls become parts; cached tokens leave the input count."""
    resp = openai_chat.decode_response(
        _completion(
            {
                "role": "assistant",
                "content": "hi",
                "reasoning": "hmm",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}
                ],
            },
            "stop",
            {
                "prompt_tokens": 100,
                "completion_tokens": 9,
                "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
        )
    )
    assert resp.parts == [ReasoningPart("hmm"), TextPart("hi"), ToolCallPart("c", "f", "{bad")]
    assert resp.stop_reason == "tool_use"
    assert resp.usage == Usage(40, 9, 60, 0, 4)


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("tool_calls", "tool_use"),
        ("weird", "end_turn"),
        (None, "end_turn"),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish: str | None, stop: str) -> None:
    """finish_reason maps per §4.6, unknown values to end_turn."""
    resp = openai_chat.decode_response(_completion({"role": "assistant", "content": "x"}, finish))
    assert resp.stop_reason == stop


def test_error_body_with_status_200_is_a_bad_gateway() -> None:
    """An upstream that answers 200 with an error body is reported as 502 with its message."""
    with pytest.raises(ProtocolError) as raised:
        openai_chat.decode_response({"error": {"message": "quota exceeded"}})
    assert (raised.value.status, raised.value.message) == (502, "quota exceeded")


def test_encode_response_is_a_chat_completion_the_sdk_parses() -> None:
    """Our chat.completion has the client's model, joined text, tool calls and usage, and the
    OpenAI SDK reads it."""
    resp = Response(
        "msg_1",
        "claude",
        [ReasoningPart("r"), TextPart("a"), ToolCallPart("toolu_1", "f", '{"x":1}')],
        stop_reason="tool_use",
        usage=Usage(10, 5, 100, 20, 2),
    )
    body = openai_chat.encode_response(resp, "gpt-4o", created=7)
    assert body["id"] == "chatcmpl-msg_1"
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"]["prompt_tokens"] == 130
    assert body["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 100,
        "cache_write_tokens": 20,
    }

    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=body)

    client = openai_sdk.OpenAI(
        api_key="k",
        base_url="http://gateway.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(reply)),
    )
    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    message = completion.choices[0].message
    assert message.content == "a"
    assert message.tool_calls is not None and message.tool_calls[0].function.arguments == '{"x":1}'


# --- stream decoder --------------------------------------------------------------------------


def test_stream_waits_for_the_usage_chunk_after_finish_reason() -> None:
    """finish_reason does not end the stream: the following usage chunk is captured (P7)."""
    events = _decode(
        [
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"content": "Hi"}),
            _chunk({}, "stop"),
            json.dumps(
                {
                    "id": "chatcmpl-1",
                    "choices": [],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 2},
                }
            ),
            "[DONE]",
        ]
    )
    assert events[0] == StreamStart("chatcmpl-1", "gpt-4o")
    assert TextDelta("Hi") in events
    assert events[-1] == StreamFinish("end_turn", usage=Usage(10, 2))


def test_tool_call_deltas_are_keyed_by_index_and_arguments_bundled_with_start() -> None:
    """Parallel tool calls are tracked by index; arguments in the first delta are kept."""
    events = _decode(
        [
            _chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "a",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x"'},
                        }
                    ]
                }
            ),
            _chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "b",
                            "type": "function",
                            "function": {"name": "g", "arguments": ""},
                        }
                    ]
                }
            ),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            _chunk({}, "tool_calls"),
            "[DONE]",
        ]
    )
    assert [e for e in events if isinstance(e, ToolCallStart | ToolCallDelta)] == [
        ToolCallStart(0, "a", "f"),
        ToolCallDelta(0, '{"x"'),
        ToolCallStart(1, "b", "g"),
        ToolCallDelta(0, ":1}"),
    ]
    assert events[-1] == StreamFinish("tool_use")


def test_gemini_tool_calls_without_index_are_told_apart_by_id() -> None:
    """Deltas without `index` are keyed by id, and a stop finish becomes tool_use (P10)."""
    events = _decode(
        [
            _chunk(
                {
                    "tool_calls": [
                        {
                            "id": "fc1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                            "extra_content": {"google": {"thought_signature": "s"}},
                        },
                        {
                            "id": "fc2",
                            "type": "function",
                            "function": {"name": "g", "arguments": '{"a":2}'},
                        },
                    ]
                }
            ),
            _chunk({}, "stop"),
        ]
    )
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [
        ToolCallStart(0, "fc1", "f", {"extra_content": {"google": {"thought_signature": "s"}}}),
        ToolCallStart(1, "fc2", "g"),
    ]
    assert events[-1] == StreamFinish("tool_use")


def test_same_index_with_a_new_id_is_a_new_call() -> None:
    """Servers that number every call 0 still give separate calls when the id changes."""
    events = _decode(
        [
            _chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}
                    ]
                }
            ),
            _chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "b", "function": {"name": "g", "arguments": ""}}
                    ]
                }
            ),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"z":0}'}}]}),
            _chunk({}, "tool_calls"),
        ]
    )
    assert [e for e in events if isinstance(e, ToolCallStart | ToolCallDelta)] == [
        ToolCallStart(0, "a", "f"),
        ToolCallDelta(0, "{}"),
        ToolCallStart(1, "b", "g"),
        ToolCallDelta(1, '{"z":0}'),
    ]


def test_tool_call_without_id_gets_a_generated_one() -> None:
    """A call that never gets an id is still started, with a stable generated id."""
    events = _decode([_chunk({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}), "[DONE]"])
    start = next(e for e in events if isinstance(e, ToolCallStart))
    assert start.id.startswith("call_") and len(start.id) > 10


def test_ollama_tool_stream_ending_with_stop_is_tool_use() -> None:
    """Ollama ends tool-call streams with finish_reason stop; the stop reason is tool_use (P29)."""
    events = _decode(
        [
            _chunk({"role": "assistant", "content": ""}),
            _chunk(
                {
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "index": 0,
                            "type": "function",
                            "function": {"name": "Bash", "arguments": '{"command":"ls"}'},
                        }
                    ]
                }
            ),
            _chunk({}, "stop"),
            "[DONE]",
        ]
    )
    assert events[-1] == StreamFinish("tool_use")


def test_reasoning_deltas_and_only_the_first_choice_are_read() -> None:
    """reasoning_content and reasoning become reasoning deltas; other choices are ignored."""
    second = {"index": 1, "delta": {"content": "other"}, "finish_reason": None}
    events = _decode(
        [
            _chunk({"reasoning_content": "a"}),
            _chunk({"reasoning": "b"}),
            json.dumps({"id": "x", "choices": [{"index": 0, "delta": {"content": "c"}}, second]}),
            "[DONE]",
        ]
    )
    deltas = [e for e in events if isinstance(e, ReasoningDelta | TextDelta)]
    assert deltas == [ReasoningDelta(text="a"), ReasoningDelta(text="b"), TextDelta("c")]


def test_error_chunks_become_stream_errors_with_a_status() -> None:
    """`{"error":...}` chunks and OpenRouter error finishes end the stream as StreamError."""
    rate = _decode(
        [
            _chunk({"content": "x"}),
            json.dumps({"error": {"message": "slow down", "code": "rate_limit_exceeded"}}),
        ]
    )
    assert rate[-1] == StreamError(429, "slow down")
    numeric = _decode([json.dumps({"error": {"message": "bad", "code": 400}})])
    assert numeric[-1] == StreamError(400, "bad")
    openrouter = _decode(
        [
            json.dumps(
                {
                    "id": "g",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {},
                            "finish_reason": "error",
                            "error": {"message": "provider died"},
                        }
                    ],
                }
            )
        ]
    )
    assert openrouter[-1] == StreamError(500, "provider died")
    garbage = _decode(["{not json"])
    assert isinstance(garbage[0], StreamError) and garbage[0].status == 502


def test_eof_without_finish_reason_leaves_the_decision_to_the_caller() -> None:
    """A stream cut off mid-answer emits no StreamFinish and reports finished=False."""
    decoder = openai_chat.StreamDecoder()
    decoder.feed(SSEEvent(None, _chunk({"content": "half"})))
    assert decoder.close() == []
    assert decoder.finished is False


# --- stream encoder --------------------------------------------------------------------------


def test_stream_encoder_writes_role_chunk_deltas_finish_usage_and_done() -> None:
    """The client gets role first, content and tool deltas, finish, usage, then [DONE]."""
    encoder = openai_chat.StreamEncoder(
        "gpt-4o", include_usage=True, completion_id="chatcmpl-x", created=5
    )
    raw = (
        b"".join(
            encoder.feed(e)
            for e in [
                StreamStart("msg_1", "claude", Usage(input_tokens=30)),
                ReasoningDelta(text="think"),
                TextDelta("Hi"),
                ToolCallStart(3, "toolu_1", "f"),
                ToolCallDelta(3, '{"a":1}'),
                StreamFinish("tool_use", usage=Usage(30, 7, 5, 0)),
            ]
        )
        + encoder.close()
    )
    chunks = _chunks(raw)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "think"}
    assert chunks[3]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["prompt_tokens"] == 35
    assert chunks[-1] == "[DONE]"
    assert {c["id"] for c in chunks[:-1]} == {"chatcmpl-x"}
    state = _openai_stream_state(raw)
    final = state.get_final_completion()
    assert final.choices[0].message.content == "Hi"
    assert final.usage is not None and final.usage.completion_tokens == 7


def test_stream_encoder_without_include_usage_has_no_usage_chunk() -> None:
    """Without include_usage the finish chunk is followed directly by [DONE]."""
    encoder = openai_chat.StreamEncoder("m", include_usage=False)
    chunks = _chunks(encoder.feed(TextDelta("x")) + encoder.feed(StreamFinish("max_tokens")))
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1] == "[DONE]"
    assert all("usage" not in c for c in chunks[:-1])


def test_stream_error_becomes_an_error_chunk_that_the_sdk_raises() -> None:
    """A StreamError becomes `data: {"error":...}` and the OpenAI SDK raises it."""
    encoder = openai_chat.StreamEncoder("m", include_usage=True)
    raw = encoder.feed(TextDelta("x")) + encoder.feed(
        StreamError(529, "Overloaded", "overloaded_error")
    )
    raw += encoder.close()
    chunks = _chunks(raw)
    assert chunks[-1] == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}
    }
    assert encoder.done and not encoder.finish_seen
    with pytest.raises(openai_sdk.APIError, match="Overloaded"):
        _openai_stream_state(raw)


def test_close_without_finish_still_ends_with_done() -> None:
    """Upstream EOF without a finish still gives the client a finish chunk and [DONE]."""
    encoder = openai_chat.StreamEncoder("m", include_usage=True, input_tokens_estimate=12)
    chunks = _chunks(encoder.feed(ToolCallStart(0, "c", "f")) + encoder.close())
    assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-2]["usage"]["prompt_tokens"] == 12
    assert chunks[-1] == "[DONE]"
    assert encoder.finish_seen is False


def test_usage_update_is_used_when_finish_has_none() -> None:
    """Usage reported mid-stream reaches the usage chunk when the finish carries none."""
    encoder = openai_chat.StreamEncoder("m", include_usage=True)
    raw = encoder.feed(UsageUpdate(Usage(3, 4))) + encoder.feed(StreamFinish("end_turn"))
    assert _chunks(raw)[-2]["usage"]["total_tokens"] == 7


# --- error bodies for OpenAI clients ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (400, "invalid_request_error", None),
        (401, "invalid_request_error", "invalid_api_key"),
        (404, "invalid_request_error", "model_not_found"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "server_error", None),
        (503, "server_error", None),
    ],
)
def test_openai_error_body_follows_the_status(
    status: int, error_type: str, code: str | None
) -> None:
    """Error bodies have message/type/param/code with OpenAI's conventional values."""
    assert openai_error_body(status, "m") == {
        "error": {"message": "m", "type": error_type, "param": None, "code": code}
    }
    explicit = openai_error_body(400, "m", type="t", code="c", param="messages[0]")
    assert explicit["error"] == {"message": "m", "type": "t", "param": "messages[0]", "code": "c"}


def test_overloaded_upstream_is_503_for_openai_clients() -> None:
    """Anthropic's 529 becomes 503, which OpenAI clients retry like any 5xx."""
    assert openai_status_for_upstream(529) == 503
    assert openai_status_for_upstream(429) == 429


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "openai style", "type": "x"}}, "openai style"),
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "anthropic style"}},
            "anthropic style",
        ),
        ({"detail": "fastapi style"}, "fastapi style"),
        ({"detail": [{"loc": ["body"], "msg": "validation style"}]}, "validation style"),
        ({"detail": {"message": "bedrock style"}}, "bedrock style"),
        ({"message": "generic"}, "generic"),
        ({"Message": "aws"}, "aws"),
        ({"error": "plain error string"}, "plain error string"),
        ([{"error": {"code": 400, "message": "gemini list"}}], "gemini list"),
        ("  upstream exploded  ", "upstream exploded"),
        (b'{"error": {"message": "bytes json"}}', "bytes json"),
        ("{not json", "{not json"),
        ({"error": {"code": 500}}, "fallback"),
        (None, "fallback"),
        ("", "fallback"),
    ],
)
def test_error_messages_are_found_in_any_upstream_shape(body: object, message: str) -> None:
    """The readable message is extracted from every common error-body shape."""
    assert extract_error_message(body, "fallback") == message
