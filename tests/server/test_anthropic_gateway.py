"""The Anthropic side of the gateway: the anthropic SDK in front, either protocol behind.

- anthropic SDK → gateway → fake OpenAI upstream (translated both ways)
- openai SDK → gateway → fake Anthropic upstream (translated both ways)
- anthropic SDK → gateway → fake Anthropic upstream (passthrough)
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.fakes.upstream import FakeUpstream, Reply, Usage
from tests.server.conftest import UPSTREAM_KEY, GatewayFactory, openai_provider

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def translated_config(fake: FakeUpstream) -> dict[str, Any]:
    """Claude tier names resolve to models of an OpenAI-protocol upstream."""
    return {
        "providers": [openai_provider(fake.openai_base)],
        "tiers": {"big": "up:gpt-4o", "middle": "up:gpt-4o", "small": "up:gpt-4o-mini"},
    }


def anthropic_upstream_config(fake: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "claude",
                "kind": "anthropic",
                "baseUrl": fake.anthropic_base,
                "apiKey": UPSTREAM_KEY,
                "models": ["claude-sonnet-4-6", "claude-haiku-4-5"],
            }
        ],
        **extra,
    }


# --- anthropic SDK → OpenAI upstream -----------------------------------------------------------


async def test_messages_translated_to_openai_and_back(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """A Messages request reaches an OpenAI upstream as a chat completion and comes back as a
    Message that echoes the requested model, while the record keeps the model that ran."""
    fake = await make_fake_upstream(api_key=UPSTREAM_KEY)
    fake.script(Reply.text("Hello from GPT", usage=Usage(input_tokens=30, output_tokens=4)))
    gw = await make_gateway(translated_config(fake))
    message = await anthropic_client(gw).messages.create(
        model="claude-opus-4-8",
        max_tokens=64000,
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert message.content[0].type == "text" and message.content[0].text == "Hello from GPT"
    assert message.model == "claude-opus-4-8"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (30, 4)
    sent = fake.last_request
    assert sent is not None and sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "gpt-4o"
    assert sent.json["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent.json["messages"][1]["role"] == "user"
    # Claude Code asks for 64000 output tokens; gpt-4o accepts at most 16384.
    limit = sent.json.get("max_tokens") or sent.json.get("max_completion_tokens")
    assert limit == 16384
    assert (gw.records[-1].model, gw.records[-1].requested_model) == ("gpt-4o", "claude-opus-4-8")


async def test_streamed_messages_with_a_tool_call_from_an_openai_upstream(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """A streamed tool call from an OpenAI upstream arrives as a valid tool_use block with
    stop_reason tool_use, even when the upstream said finish_reason "stop" (Ollama)."""
    fake = await make_fake_upstream()
    fake.script(
        Reply.tool_call(
            "get_weather", {"city": "Paris"}, text="Let me check.", tool_finish_reason="stop"
        )
    )
    gw = await make_gateway(translated_config(fake))
    async with anthropic_client(gw).messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=1024,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        message = await stream.get_final_message()
    assert [b.type for b in message.content] == ["text", "tool_use"]
    tool = message.content[1]
    assert tool.type == "tool_use" and tool.name == "get_weather"
    assert tool.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    sent = fake.last_request
    assert sent is not None
    assert sent.json["tools"][0]["function"]["name"] == "get_weather"
    assert sent.json["tools"][0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]


async def test_tool_round_trip_keeps_ids_and_ordering(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """tool_use → tool_result → answer: the upstream sees the assistant tool call followed by
    a tool message with the same id, before the user's other text of that turn."""
    fake = await make_fake_upstream()
    fake.script(Reply.text("It is sunny."))
    gw = await make_gateway(translated_config(fake))
    message = await anthropic_client(gw).messages.create(
        model="claude-sonnet-4-6",
        max_tokens=512,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "call_abc",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_abc", "content": "22C sunny"},
                    {"type": "text", "text": "Thanks!"},
                ],
            },
        ],
    )
    assert message.content[0].type == "text" and message.content[0].text == "It is sunny."
    sent = fake.last_request
    assert sent is not None
    roles = [m["role"] for m in sent.json["messages"]]
    assert roles == ["user", "assistant", "tool", "user"]
    assistant = sent.json["messages"][1]
    assert assistant["tool_calls"][0]["id"] == "call_abc"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert sent.json["messages"][2]["tool_call_id"] == "call_abc"
    assert "22C sunny" in json.dumps(sent.json["messages"][2]["content"])


async def test_mid_conversation_system_message_is_carried(
    make_fake_upstream: Any, make_gateway: GatewayFactory
) -> None:
    """Claude Code's mid-conversation role:"system" message reaches the upstream, not dropped."""
    fake = await make_fake_upstream()
    gw = await make_gateway(translated_config(fake))
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 1000,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Available agent types: Explore, Plan"},
        ],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url + "/v1/messages?beta=true",
            json=body,
            headers={"anthropic-version": "2023-06-01", "x-api-key": "x"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
    sent = fake.last_request
    assert sent is not None
    assert "Available agent types: Explore, Plan" in json.dumps(sent.json["messages"])


async def test_count_tokens_is_answered_locally_for_openai_upstreams(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """count_tokens never 404s: for an OpenAI upstream it is counted locally, tools included."""
    fake = await make_fake_upstream()
    gw = await make_gateway(translated_config(fake))
    client = anthropic_client(gw)
    plain = await client.messages.count_tokens(
        model="claude-opus-4-8", messages=[{"role": "user", "content": "Hello there, world"}]
    )
    with_tools = await client.messages.count_tokens(
        model="claude-opus-4-8",
        system="You are a helpful assistant with a long system prompt. " * 20,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Hello there, world"}],
    )
    assert 0 < plain.input_tokens < with_tools.input_tokens
    assert fake.requests == []


async def test_upstream_errors_map_to_anthropic_error_types(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """An OpenAI upstream's 429 reaches an Anthropic client as rate_limit_error with Retry-After."""
    fake = await make_fake_upstream()
    fake.script(Reply.rate_limited(retry_after=3))
    gw = await make_gateway(translated_config(fake))
    with pytest.raises(anthropic.RateLimitError) as caught:
        await anthropic_client(gw).messages.create(
            model="claude-opus-4-8", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert caught.value.response.headers.get("retry-after") == "3"


async def test_mid_stream_failure_is_an_error_event(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """An upstream failure after the stream began reaches the client as `event: error`."""
    fake = await make_fake_upstream()
    fake.script(Reply.mid_stream_error("partial", after=2, status=503))
    gw = await make_gateway(translated_config(fake))
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with anthropic_client(gw).messages.stream(
            model="claude-opus-4-8", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            await stream.get_final_message()
    assert caught.value.body["error"]["type"] in (  # type: ignore[index]
        "overloaded_error",
        "api_error",
    )
    assert not gw.records[-1].ok


async def test_malformed_messages_request_is_an_anthropic_400(
    make_fake_upstream: Any, make_gateway: GatewayFactory
) -> None:
    """A Messages request with a bad block answers 400 invalid_request_error naming the field."""
    fake = await make_fake_upstream()
    gw = await make_gateway(translated_config(fake))
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "bogus"}]}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
        ) as resp,
    ):
        payload = await resp.json()
    assert resp.status == 400
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0]" in payload["error"]["message"]


async def test_unknown_model_is_an_anthropic_not_found_error(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """With no tier configured, an unknown model is not_found_error with a listing hint."""
    fake = await make_fake_upstream()
    gw = await make_gateway({"providers": [openai_provider(fake.openai_base)]})
    with pytest.raises(anthropic.NotFoundError) as caught:
        await anthropic_client(gw).messages.create(
            model="claude-opus-4-8", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert "/v1/models" in caught.value.message


async def test_anthropic_access_key_failure_is_anthropic_shaped(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """A wrong access key on /v1/messages is an Anthropic authentication_error."""
    fake = await make_fake_upstream()
    config = translated_config(fake)
    config["accessKeys"] = [{"name": "cc", "key": "dp-claude-code-key-1"}]
    gw = await make_gateway(config)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await anthropic_client(gw, key="wrong").messages.create(
            model="claude-opus-4-8", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    ok = await anthropic_client(gw, key="dp-claude-code-key-1").messages.create(
        model="claude-opus-4-8", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    assert ok.content


# --- openai SDK → Anthropic upstream -----------------------------------------------------------


async def test_openai_client_reaches_a_claude_upstream(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """The openai SDK talks to an Anthropic upstream: system hoisted, max_tokens defaulted,
    the answer and usage come back as a chat completion."""
    fake = await make_fake_upstream(api_key=UPSTREAM_KEY)
    fake.script(
        Reply.text("Hi from Claude", usage=Usage(input_tokens=20, output_tokens=5, cached_tokens=8))
    )
    gw = await make_gateway(anthropic_upstream_config(fake))
    reply = await openai_client(gw).chat.completions.create(
        model="claude-sonnet-4-6",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
    )
    assert reply.choices[0].message.content == "Hi from Claude"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    sent = fake.last_request
    assert sent is not None and sent.path == "/v1/messages"
    assert sent.header("x-api-key") == UPSTREAM_KEY
    assert sent.header("anthropic-version") == "2023-06-01"
    assert "Be brief." in json.dumps(sent.json["system"])
    assert [m["role"] for m in sent.json["messages"]] == ["user"]
    assert isinstance(sent.json["max_tokens"], int) and sent.json["max_tokens"] > 0


async def test_openai_client_streams_tool_calls_from_a_claude_upstream(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """A Claude tool_use stream becomes chat completion chunks with tool call deltas, and the
    usage chunk arrives when stream_options.include_usage asks for it."""
    fake = await make_fake_upstream()
    fake.script(Reply.tool_call("get_weather", {"city": "Oslo"}, text="Checking."))
    gw = await make_gateway(anthropic_upstream_config(fake))
    tools: Any = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]},
        }
    ]
    async with openai_client(gw).chat.completions.stream(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=tools,
        stream_options={"include_usage": True},
    ) as stream:
        completion = await stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    sent = fake.last_request
    assert sent is not None
    assert sent.json["tools"][0]["input_schema"] == WEATHER_TOOL["input_schema"]


async def test_anthropic_errors_map_to_openai_statuses(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """A Claude 529 overload reaches an OpenAI client as a retryable 5xx error."""
    fake = await make_fake_upstream()
    fake.script(Reply.overloaded())
    gw = await make_gateway(anthropic_upstream_config(fake))
    with pytest.raises(openai.APIStatusError) as caught:
        await openai_client(gw).chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code >= 500


# --- anthropic SDK → Anthropic upstream (passthrough) ------------------------------------------


async def test_passthrough_keeps_thinking_signatures_and_cache_control(
    make_fake_upstream: Any, make_gateway: GatewayFactory
) -> None:
    """Same protocol: the body is forwarded untouched except the model; betas and version are
    forwarded; thinking signatures come back byte for byte; usage is recorded on the side."""
    fake = await make_fake_upstream(api_key=UPSTREAM_KEY)
    fake.script(
        Reply.reasoning(
            "Let me think.",
            "Forty-two.",
            signature="EqQBCkYIBRgCKkDsig==",
            usage=Usage(
                input_tokens=11, output_tokens=9, cached_tokens=100, cache_creation_tokens=50
            ),
        )
    )
    gw = await make_gateway(
        anthropic_upstream_config(fake, aliases={"sonnet": "claude:claude-sonnet-4-6"})
    )
    body = {
        "model": "sonnet",
        "max_tokens": 2048,
        "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "q",
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    }
                ],
            },
        ],
    }
    headers = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "interleaved-thinking-2025-05-14,context-management-2025-06-27",
        "x-api-key": "client-key",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/v1/messages?beta=true", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        raw = (await resp.read()).decode()
    assert (
        '"signature":"EqQBCkYIBRgCKkDsig=="' in raw.replace(" ", "")
        or "EqQBCkYIBRgCKkDsig==" in raw
    )
    assert '"model":"sonnet"' in raw.replace(" ", "")  # the requested name is echoed
    sent = fake.last_request
    assert sent is not None
    expected = dict(body, model="claude-sonnet-4-6")
    assert sent.json == expected
    assert sent.header("anthropic-beta") == headers["anthropic-beta"]
    assert sent.header("x-api-key") == UPSTREAM_KEY
    record = gw.records[-1]
    assert (record.input_tokens, record.output_tokens) == (11, 9)
    assert (record.cache_read_tokens, record.cache_write_tokens) == (100, 50)


async def test_passthrough_count_tokens_is_forwarded(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """count_tokens to an Anthropic upstream is forwarded and its answer returned."""
    fake = await make_fake_upstream()
    fake.script(Reply(usage=Usage(input_tokens=728)), endpoint="count_tokens")
    gw = await make_gateway(anthropic_upstream_config(fake))
    counted = await anthropic_client(gw).messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
    )
    assert counted.input_tokens == 728
    assert fake.last_request is not None
    assert fake.last_request.path == "/v1/messages/count_tokens"


async def test_passthrough_non_streamed_with_anthropic_prefix(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """Paths under /anthropic/ reach the Messages route; the non-streamed body is passed on."""
    fake = await make_fake_upstream()
    fake.script(Reply.text("plain answer"))
    gw = await make_gateway(anthropic_upstream_config(fake))
    message = await anthropic_client(gw, base_url=gw.url + "/anthropic").messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "x"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "plain answer"


async def test_passthrough_drops_thinking_blocks_anthropic_never_signed(
    make_fake_upstream: Any, make_gateway: GatewayFactory
) -> None:
    """History from another provider (thinking with an empty signature) is stripped before it
    reaches a real Anthropic upstream, while signed thinking blocks are kept as they are."""
    fake = await make_fake_upstream()
    gw = await make_gateway(anthropic_upstream_config(fake))
    signed = {"type": "thinking", "thinking": "signed thought", "signature": "EqQBsig=="}
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "first"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "from deepseek", "signature": ""},
                    {"type": "text", "text": "answer one"},
                ],
            },
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": [signed, {"type": "text", "text": "answer two"}]},
            {"role": "user", "content": "third"},
        ],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
    sent = fake.last_request
    assert sent is not None
    assert sent.json["messages"][1]["content"] == [{"type": "text", "text": "answer one"}]
    assert sent.json["messages"][3]["content"][0] == signed


async def test_openai_upstream_overload_reaches_claude_code_as_overloaded_error(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any
) -> None:
    """An OpenAI upstream's 503 becomes Anthropic's 529 overloaded_error, which clients back
    off on."""
    fake = await make_fake_upstream()
    fake.script(Reply.error(503, "Service Unavailable"))
    gw = await make_gateway(translated_config(fake))
    with pytest.raises(anthropic.APIStatusError) as caught:
        await anthropic_client(gw).messages.create(
            model="claude-opus-4-8", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_pings_keep_a_silent_stream_alive_and_the_answer_completes(
    make_fake_upstream: Any, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the upstream goes quiet mid-stream, the client gets `event: ping`, and the answer
    still completes when the upstream resumes."""
    from desktop_proxy.server import exchange

    monkeypatch.setattr(exchange, "KEEPALIVE_SECONDS", 0.2)
    fake = await make_fake_upstream()
    fake.script(Reply.text(["Hello", " there", " again"], stall_after=1, stall_seconds=1.0))
    gw = await make_gateway(translated_config(fake))
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
        ) as resp,
    ):
        raw = (await resp.read()).decode()
    assert raw.count("event: ping") >= 2
    assert raw.index("event: ping") > raw.index("Hello")
    assert "Hello there again" in "".join(
        json.loads(line[6:])["delta"]["text"]
        for line in raw.splitlines()
        if line.startswith("data: ") and '"text_delta"' in line
    )
    assert raw.rstrip().endswith('data: {"type":"message_stop"}')


async def test_a_dead_upstream_ends_in_an_error_event_not_endless_pings(
    make_fake_upstream: Any, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pings never hide a dead upstream: past the read timeout the stream ends in an error."""
    from desktop_proxy.server import exchange

    monkeypatch.setattr(exchange, "KEEPALIVE_SECONDS", 0.2)
    fake = await make_fake_upstream()
    fake.script(Reply.text(["Hello", " world"], stall_after=1, stall_seconds=30))
    config = translated_config(fake)
    config["routing"] = {"timeouts": {"connect": 5, "read": 1.0}}
    gw = await make_gateway(config)
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
        ) as resp,
    ):
        raw = (await resp.read()).decode()
    assert "event: ping" in raw
    assert "event: error" in raw and "message_stop" not in raw
    assert "silent" in raw or "timeout" in raw
    assert not gw.records[-1].ok


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not streamed"])
async def test_gemini_thought_signatures_come_back_with_the_next_turn(
    make_fake_upstream: Any, make_gateway: GatewayFactory, anthropic_client: Any, stream: bool
) -> None:
    """Gemini 3 answers 400 "Function call is missing a thought_signature" unless each tool call
    it made comes back with its signature. Claude Code keeps only a tool_use's id, name and
    input, so the signature travels in the id, and the gateway restores it (and the upstream's
    own id) on the next turn."""
    signature = "CvcBAdHtim9+Ab/sig=="  # base64, as Gemini sends them
    fake = await make_fake_upstream()
    if stream:
        fake.script(
            Reply.gemini_tool_call("function-call-1", "get_weather", {"city": "Paris"}, signature)
        )
    else:
        fake.script(
            Reply.raw(
                200,
                {
                    "id": "",
                    "object": "chat.completion",
                    "created": 1770933892,
                    "model": "gemini-3-pro-preview",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "tool_calls": [
                                    {
                                        "id": "function-call-1",
                                        "type": "function",
                                        "function": {
                                            "name": "get_weather",
                                            "arguments": '{"city":"Paris"}',
                                        },
                                        "extra_content": {
                                            "google": {"thought_signature": signature}
                                        },
                                    }
                                ],
                            },
                            "finish_reason": "tool_calls",
                        }
                    ],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
                },
            )
        )
    gw = await make_gateway(translated_config(fake))
    client = anthropic_client(gw)
    question = {"role": "user", "content": "Weather in Paris?"}
    if stream:
        async with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=1024, tools=[WEATHER_TOOL], messages=[question]
        ) as answer:
            message = await answer.get_final_message()
    else:
        message = await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=1024, tools=[WEATHER_TOOL], messages=[question]
        )
    tool = message.content[-1]
    assert tool.type == "tool_use" and tool.input == {"city": "Paris"}
    assert tool.id.startswith("function-call-1")
    assert all(c.isalnum() or c in "_-" for c in tool.id)  # still a valid Anthropic id

    # The next turn, as Claude Code sends it: the tool_use as it got it, and the result.
    fake.script(Reply.text("It is sunny."))
    await client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=1024,
        tools=[WEATHER_TOOL],
        messages=[
            question,
            {"role": "assistant", "content": [tool.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "22C"}],
            },
        ],
    )
    sent = fake.last_request
    assert sent is not None
    call = sent.json["messages"][1]["tool_calls"][0]
    assert call["id"] == "function-call-1"
    assert call["extra_content"] == {"google": {"thought_signature": signature}}
    assert sent.json["messages"][2]["tool_call_id"] == "function-call-1"
