"""The fake upstream is only useful if it is faithful: drive it with the official SDKs.

If the OpenAI / Anthropic SDKs parse, accumulate and raise on the fake's output exactly as they do
against the real services, gateway tests built on the fake are testing the real wire formats.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest
import pytest_asyncio
from aiohttp import web

from tests.fakes.fixtures import FakeUpstreamFactory
from tests.fakes.sse import SSEEvent, iter_sse, parse_sse
from tests.fakes.upstream import FakeUpstream, RecordedRequest, Reply, ToolCall, Usage

KEY = "sk-test"
USER_HI: list[Any] = [{"role": "user", "content": "hi"}]
WEATHER_TOOL_OPENAI: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
WEATHER_TOOL_ANTHROPIC: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": KEY}


@pytest_asyncio.fixture
async def fake(make_fake_upstream: FakeUpstreamFactory) -> FakeUpstream:
    return await make_fake_upstream(api_key=KEY)


@pytest_asyncio.fixture
async def oai(fake: FakeUpstream) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.openai_base, api_key=KEY, max_retries=0) as client:
        yield client


@pytest_asyncio.fixture
async def ant(fake: FakeUpstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake.anthropic_base, api_key=KEY, max_retries=0
    ) as client:
        yield client


async def raw_post(
    url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers or {}) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def raw_sse(url: str, body: Any, headers: dict[str, str] | None = None) -> list[SSEEvent]:
    status, _, payload = await raw_post(url, body, headers)
    assert status == 200, payload
    return parse_sse(payload)


async def settled(fake: FakeUpstream) -> RecordedRequest:
    """The last request, once the fake has finished handling it."""
    rec = fake.last_request
    await asyncio.wait_for(rec.done.wait(), 5)
    return rec


def chat_chunks(events: list[SSEEvent]) -> list[dict[str, Any]]:
    assert events[-1].is_done, "an OpenAI stream ends with data: [DONE]"
    assert all(e.event is None for e in events), "OpenAI chat streams have no event: lines"
    return [e.json() for e in events[:-1]]


# --------------------------------------------------------------------------------------------------
# basics


async def test_bare_fixture_answers_echo_and_records(fake_upstream: FakeUpstream) -> None:
    async with openai.AsyncOpenAI(
        base_url=fake_upstream.openai_base, api_key="anything", max_retries=0
    ) as client:
        done = await client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    assert done.choices[0].message.content == "Hello from fake gpt-4o-mini"
    rec = fake_upstream.last_request
    assert (rec.method, rec.path, rec.endpoint, rec.api) == (
        "POST",
        "/v1/chat/completions",
        "chat_completions",
        "openai",
    )
    assert rec.json == {"model": "gpt-4o-mini", "messages": USER_HI}
    assert json.loads(rec.raw) == rec.json
    assert rec.headers["authorization"] == "Bearer anything"
    assert rec.header("Content-Type") == "application/json"
    assert rec.outcome == "completed" and rec.status == 200


async def test_base_urls_and_probe(fake_upstream: FakeUpstream) -> None:
    assert fake_upstream.base_url.startswith("http://127.0.0.1:")
    assert fake_upstream.openai_base == fake_upstream.base_url + "/v1"
    assert fake_upstream.anthropic_base == fake_upstream.base_url
    async with aiohttp.ClientSession() as session:
        async with session.head(fake_upstream.base_url + "/") as resp:
            assert resp.status == 200  # Claude Code's connectivity probe
        async with session.post(fake_upstream.base_url + "/v1/nope", json={}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"] == "Invalid URL (POST /v1/nope)"


async def test_script_queue_order_endpoint_queues_and_callables(
    fake: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake.script(
        Reply.text("one"), lambda rec: Reply.text(f"echo {rec.body['messages'][-1]['content']}")
    )
    fake.script(Reply.text("chat only"), endpoint="chat_completions")
    assert fake.pending_replies == 3
    contents = []
    for _ in range(4):
        done = await oai.chat.completions.create(model="m1", messages=USER_HI)
        contents.append(done.choices[0].message.content)
    assert contents == ["chat only", "one", "echo hi", "Hello from fake m1"]
    assert fake.pending_replies == 0
    fake.default_reply = Reply.text("new default")
    done = await oai.chat.completions.create(model="m1", messages=USER_HI)
    assert done.choices[0].message.content == "new default"


async def test_models_list_both_shapes(
    fake: FakeUpstream, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    fake.models = ["gpt-4o-mini", "claude-sonnet-4-5"]
    ids = [m.id async for m in oai.models.list()]
    assert ids == ["gpt-4o-mini", "claude-sonnet-4-5"]
    assert (await oai.models.retrieve("gpt-4o-mini")).owned_by == "fake-upstream"
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("nope")
    page = await ant.models.list()
    assert [m.id for m in page.data] == ["gpt-4o-mini", "claude-sonnet-4-5"]
    assert fake.last_request.api == "anthropic"  # answered in Anthropic's shape
    assert page.data[0].type == "model"


# --------------------------------------------------------------------------------------------------
# OpenAI chat completions


async def test_openai_non_stream_text_and_usage(
    fake: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake.script(
        Reply.text(
            "Bonjour",
            usage=Usage(input_tokens=100, output_tokens=20, cached_tokens=40, reasoning_tokens=7),
        )
    )
    done = await oai.chat.completions.create(model="gpt-4o", messages=USER_HI)
    assert done.id.startswith("chatcmpl-")
    assert done.object == "chat.completion"
    assert done.model == "gpt-4o"
    assert done.choices[0].message.role == "assistant"
    assert done.choices[0].message.content == "Bonjour"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (
        100,
        20,
        120,
    )
    assert done.usage.prompt_tokens_details is not None
    assert done.usage.prompt_tokens_details.cached_tokens == 40
    assert done.usage.completion_tokens_details is not None
    assert done.usage.completion_tokens_details.reasoning_tokens == 7


async def test_openai_stream_text_with_usage_chunk(
    fake: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake.script(Reply.text("The quick brown fox jumps", chunks=10, usage=Usage(12, 34)))
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=USER_HI, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usages, ids = "", None, [], set()
    async for chunk in stream:
        ids.add(chunk.id)
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            assert chunk.choices == []
            usages.append(chunk.usage)
            continue
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
    assert text == "The quick brown fox jumps"
    assert finish == "stop"
    assert len(ids) == 1
    assert [(u.prompt_tokens, u.completion_tokens) for u in usages] == [(12, 34)]


async def test_openai_stream_usage_chunk_only_when_requested(
    fake: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    events = await raw_sse(
        fake.openai_base + "/chat/completions",
        {"model": "m", "messages": USER_HI, "stream": True},
        {"Authorization": f"Bearer {KEY}"},
    )
    chunks = chat_chunks(events)
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    events = await raw_sse(
        fake.openai_base + "/chat/completions",
        {
            "model": "m",
            "messages": USER_HI,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        {"Authorization": f"Bearer {KEY}"},
    )
    chunks = chat_chunks(events)
    assert all(c["usage"] is None for c in chunks[:-1])  # "all other chunks ... null"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 15
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"  # finish before usage


async def test_openai_streamed_tool_call_accumulates(
    fake: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake.script(
        Reply.tool_call(
            "get_weather", {"city": "Paris", "unit": "celsius"}, id="call_abc", arg_chunks=4
        )
    )
    async with oai.chat.completions.stream(
        model="gpt-4o", messages=USER_HI, tools=WEATHER_TOOL_OPENAI
    ) as stream:
        arg_deltas = [
            ev.arguments_delta
            async for ev in stream
            if ev.type == "tool_calls.function.arguments.delta"
        ]
        final = await stream.get_final_completion()
    assert [d for d in arg_deltas if d] == ['{"city":"', 'Paris","', 'unit":"c', 'elsius"}']
    msg = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert msg.content is None
    assert msg.tool_calls is not None and len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    assert call.id == "call_abc" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}


async def test_openai_parallel_tool_calls_with_text(
    fake: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake.script(
        Reply.tool_calls(
            ToolCall("get_weather", {"city": "Paris"}),
            ToolCall("get_weather", {"city": "Rome"}),
            text="Checking both.",
        ),
        Reply.tool_call("get_weather", {"city": "Oslo"}, parallel=True),
    )
    async with oai.chat.completions.stream(
        model="gpt-4o", messages=USER_HI, tools=WEATHER_TOOL_OPENAI
    ) as stream:
        final = await stream.get_final_completion()
    msg = final.choices[0].message
    assert msg.content == "Checking both."
    assert msg.tool_calls is not None
    assert [json.loads(c.function.arguments)["city"] for c in msg.tool_calls] == ["Paris", "Rome"]
    assert len({c.id for c in msg.tool_calls}) == 2
    # non-streamed, parallel=True
    done = await oai.chat.completions.create(
        model="gpt-4o", messages=USER_HI, tools=WEATHER_TOOL_OPENAI
    )
    calls = done.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 2
    assert all(c.id.startswith("call_") for c in calls)


async def test_openai_tool_stream_wire_shape(fake: FakeUpstream) -> None:
    fake.script(Reply.tool_call("get_weather", {"city": "Paris"}, id="call_1"))
    events = await raw_sse(
        fake.openai_base + "/chat/completions",
        {"model": "m", "messages": USER_HI, "stream": True, "tools": WEATHER_TOOL_OPENAI},
        {"Authorization": f"Bearer {KEY}"},
    )
    deltas = [c["choices"][0]["delta"] for c in chat_chunks(events)]
    assert deltas[0]["role"] == "assistant"
    assert deltas[0]["tool_calls"] == [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
    ]
    frags = [d["tool_calls"][0] for d in deltas[1:-1]]
    assert all(set(f) == {"index", "function"} for f in frags)
    assert "".join(f["function"]["arguments"] for f in frags) == '{"city":"Paris"}'


async def test_openai_reasoning_content_deltas(fake: FakeUpstream, oai: openai.AsyncOpenAI) -> None:
    fake.script(Reply.reasoning("Let me think about it.", "42"), Reply.reasoning("Hmm.", "43"))
    stream = await oai.chat.completions.create(
        model="deepseek-reasoner", messages=USER_HI, stream=True
    )
    reasoning, text = "", ""
    async for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            extra = delta.model_extra or {}
            reasoning += extra.get("reasoning_content") or ""
            text += delta.content or ""
    assert (reasoning, text) == ("Let me think about it.", "42")
    done = await oai.chat.completions.create(model="deepseek-reasoner", messages=USER_HI)
    assert (done.choices[0].message.model_extra or {})["reasoning_content"] == "Hmm."
    assert done.choices[0].message.content == "43"


async def test_openai_quirks_gemini_ollama_same_chunk(fake: FakeUpstream) -> None:
    url, auth = fake.openai_base + "/chat/completions", {"Authorization": f"Bearer {KEY}"}
    body = {
        "model": "gemini-2.5",
        "messages": USER_HI,
        "stream": True,
        "tools": WEATHER_TOOL_OPENAI,
    }
    fake.script(
        Reply.tool_call("get_weather", {"city": "Paris"}, parallel=True, omit_tool_index=True)
    )
    chunks = chat_chunks(await raw_sse(url, body, auth))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert len(calls) == 2
    assert all("index" not in c and c["function"]["arguments"] == '{"city":"Paris"}' for c in calls)

    fake.script(Reply.tool_call("get_weather", {"city": "Paris"}, tool_finish_reason="stop"))
    chunks = chat_chunks(await raw_sse(url, body, auth))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    fake.script(Reply.text("abc", chunks=3, finish_in_same_chunk_as_content=True))
    chunks = chat_chunks(await raw_sse(url, body, auth))
    assert chunks[-1]["choices"][0]["delta"] == {"content": "c"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 3

    fake.script(Reply.text("abc", usage_in_finish_chunk=True, usage=Usage(3, 4)))
    chunks = chat_chunks(await raw_sse(url, body, auth))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


async def test_openai_errors_raise_sdk_classes(fake: FakeUpstream, oai: openai.AsyncOpenAI) -> None:
    fake.script(
        Reply.rate_limited(retry_after=7),
        Reply.error(500),
        Reply.overloaded(),
        Reply.error(400, "bad thing", param="messages", code="invalid_value"),
    )
    with pytest.raises(openai.RateLimitError) as rl:
        await oai.chat.completions.create(model="m", messages=USER_HI)
    assert rl.value.status_code == 429
    assert rl.value.response.headers["retry-after"] == "7"
    assert rl.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError) as ise:
        await oai.chat.completions.create(model="m", messages=USER_HI)
    assert ise.value.status_code == 500 and ise.value.type == "server_error"
    with pytest.raises(openai.InternalServerError) as ov:
        await oai.chat.completions.create(model="m", messages=USER_HI)
    assert ov.value.status_code == 503
    with pytest.raises(openai.BadRequestError) as br:
        await oai.chat.completions.create(model="m", messages=USER_HI)
    assert "bad thing" in br.value.message
    assert (br.value.param, br.value.code, br.value.type) == (
        "messages",
        "invalid_value",
        "invalid_request_error",
    )


async def test_openai_auth(fake: FakeUpstream) -> None:
    async with openai.AsyncOpenAI(
        base_url=fake.openai_base, api_key="sk-wrong-key", max_retries=0
    ) as bad:
        with pytest.raises(openai.AuthenticationError) as err:
            await bad.chat.completions.create(model="m", messages=USER_HI)
    assert err.value.code == "invalid_api_key"
    assert fake.last_request.headers["authorization"] == "Bearer sk-wrong-key"
    assert fake.last_request.status == 401
    status, _, payload = await raw_post(
        fake.openai_base + "/chat/completions", {"model": "m", "messages": USER_HI}
    )
    assert status == 401 and json.loads(payload)["error"]["type"] == "invalid_request_error"


async def test_openai_mid_stream_error_and_disconnect(
    fake: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake.script(Reply.mid_stream_error("partial answer", after=2, message="server melted"))
    stream = await oai.chat.completions.create(model="m", messages=USER_HI, stream=True)
    got = ""
    with pytest.raises(openai.APIError, match="server melted"):
        async for chunk in stream:
            got += chunk.choices[0].delta.content or ""
    assert got and "partial answer".startswith(got) and got != "partial answer"
    assert (await settled(fake)).outcome == "stream_error"

    fake.script(Reply.disconnect("partial answer", after=2))
    stream = await oai.chat.completions.create(model="m", messages=USER_HI, stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    assert (await settled(fake)).outcome == "aborted"

    fake.script(Reply.disconnect())  # non-streamed: no response at all
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(model="m", messages=USER_HI)


async def test_openai_stream_is_written_incrementally(
    fake: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake.script(Reply.text("abcdefgh", chunks=8, chunk_delay=0.05))
    start = time.monotonic()
    stream = await oai.chat.completions.create(model="m", messages=USER_HI, stream=True)
    arrivals = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 8
    # 10 frames 50 ms apart: the first piece must arrive long before the last
    assert arrivals[-1] - arrivals[0] >= 0.25
    rec = fake.last_request
    gaps = [b - a for a, b in itertools.pairwise(rec.chunk_times)]
    assert min(gaps) >= 0.04


async def test_slow_first_byte_and_client_disconnect_recorded(fake: FakeUpstream) -> None:
    fake.script(Reply.text("late", delay_first_byte=3))
    async with openai.AsyncOpenAI(
        base_url=fake.openai_base, api_key=KEY, max_retries=0, timeout=0.3
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=USER_HI)
    assert (await settled(fake)).outcome == "client_disconnected"

    fake.script(Reply.text("x" * 50, chunks=50, chunk_delay=0.05))
    async with openai.AsyncOpenAI(base_url=fake.openai_base, api_key=KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(model="m", messages=USER_HI, stream=True)
        n = 0
        async for _ in stream:
            n += 1
            if n == 3:
                break
        await stream.close()
    assert (await settled(fake)).outcome == "client_disconnected"


async def test_stall_mid_stream(fake: FakeUpstream) -> None:
    fake.script(Reply.text("abcd", chunks=4, stall_after=2, stall_seconds=0.3))
    await raw_sse(
        fake.openai_base + "/chat/completions",
        {"model": "m", "messages": USER_HI, "stream": True},
        {"Authorization": f"Bearer {KEY}"},
    )
    times = fake.last_request.chunk_times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= 0.28 and gaps.index(max(gaps)) == 2  # after role chunk + 2 pieces


async def test_openai_strict_validation(fake: FakeUpstream, oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="only allowed when 'stream' is enabled"):
        await oai.chat.completions.create(
            model="m", messages=USER_HI, stream_options={"include_usage": True}
        )
    with pytest.raises(openai.BadRequestError, match="preceeding message with 'tool_calls'"):
        await oai.chat.completions.create(
            model="m",
            messages=[*USER_HI, {"role": "tool", "tool_call_id": "call_x", "content": "1"}],
        )
    history: list[Any] = [
        *USER_HI,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
    ]
    with pytest.raises(openai.BadRequestError, match="did not have response messages: call_2"):
        await oai.chat.completions.create(model="m", messages=history)
    history.append({"role": "tool", "tool_call_id": "call_2", "content": "ok"})
    await oai.chat.completions.create(model="m", messages=history)


async def test_reject_fields_and_unknown_models(make_fake_upstream: FakeUpstreamFactory) -> None:
    fake = await make_fake_upstream(
        reject_fields=["store"], reject_unknown_models=True, models=["llama"]
    )
    async with openai.AsyncOpenAI(base_url=fake.openai_base, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError, match="property 'store' is unsupported"):
            await client.chat.completions.create(model="llama", messages=USER_HI, store=True)
        with pytest.raises(openai.NotFoundError) as nf:
            await client.chat.completions.create(model="gpt-9", messages=USER_HI)
        assert nf.value.code == "model_not_found"
        await client.chat.completions.create(model="llama", messages=USER_HI)


# --------------------------------------------------------------------------------------------------
# OpenAI legacy completions, embeddings, Azure


async def test_legacy_completions(fake: FakeUpstream, oai: openai.AsyncOpenAI) -> None:
    fake.script(Reply.text("once upon"), Reply.text("a time", chunks=3))
    done = await oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say")
    assert done.object == "text_completion" and done.choices[0].text == "once upon"
    assert done.usage is not None and done.usage.total_tokens == 15
    stream = await oai.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Say",
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        text += "".join(c.text for c in chunk.choices)
        usage = chunk.usage or usage
    assert text == "a time" and usage is not None and usage.prompt_tokens == 10


async def test_embeddings(fake: FakeUpstream, oai: openai.AsyncOpenAI) -> None:
    res = await oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert [d.index for d in res.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in res.data)
    assert abs(sum(v * v for v in res.data[0].embedding) - 1) < 1e-5
    again = await oai.embeddings.create(
        model="text-embedding-3-small", input="alpha", encoding_format="float", dimensions=8
    )
    assert again.data[0].embedding == pytest.approx(res.data[0].embedding, abs=1e-6)
    assert fake.last_request.json["encoding_format"] == "float"
    fake.script(Reply.rate_limited(), endpoint="embeddings")
    with pytest.raises(openai.RateLimitError):
        await oai.embeddings.create(model="text-embedding-3-small", input="x")


async def test_azure_deployments(make_fake_upstream: FakeUpstreamFactory) -> None:
    fake = await make_fake_upstream(api_key=KEY, azure_deployments=["prod-gpt4o"])
    fake.script(Reply.text("azure says hi", model="gpt-4o-2024-08-06"))
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=fake.azure_endpoint, api_key=KEY, api_version="2024-10-21", max_retries=0
    ) as client:
        done = await client.chat.completions.create(model="prod-gpt4o", messages=USER_HI)
        assert done.choices[0].message.content == "azure says hi"
        assert done.model == "gpt-4o-2024-08-06"
        rec = fake.last_request
        assert rec.path == "/openai/deployments/prod-gpt4o/chat/completions"
        assert rec.query == {"api-version": "2024-10-21"}
        assert rec.headers["api-key"] == KEY and rec.api == "azure"
        assert rec.path_params == {"deployment": "prod-gpt4o"}
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="other", messages=USER_HI)
    status, _, payload = await raw_post(
        fake.base_url + "/openai/deployments/prod-gpt4o/chat/completions",
        {"messages": USER_HI},
        {"api-key": KEY},
    )
    assert status == 400 and "api-version" in json.loads(payload)["error"]["message"]
    status, _, payload = await raw_post(
        fake.base_url + "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
        {"messages": USER_HI},
        {"api-key": "wrong"},
    )
    assert status == 401 and json.loads(payload)["error"]["code"] == "401"


# --------------------------------------------------------------------------------------------------
# OpenAI Responses API


async def test_responses_non_stream_and_stream(fake: FakeUpstream, oai: openai.AsyncOpenAI) -> None:
    fake.script(
        Reply.text("The capital is Paris.", usage=Usage(50, 9, cached_tokens=10)),
        Reply.text("Streaming hello", chunks=4),
    )
    resp = await oai.responses.create(
        model="gpt-5", input="capital of France?", instructions="be brief"
    )
    assert resp.id.startswith("resp_") and resp.status == "completed"
    assert resp.output_text == "The capital is Paris."
    assert resp.instructions == "be brief"
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (
        50,
        9,
        59,
    )
    assert resp.usage.input_tokens_details.cached_tokens == 10

    async with oai.responses.stream(model="gpt-5", input="hi") as stream:
        types = [ev.type async for ev in stream]
        final = await stream.get_final_response()
    assert final.output_text == "Streaming hello"
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.count("response.output_text.delta") == 4
    assert types[-1] == "response.completed"


async def test_responses_function_call_and_reasoning_stream(
    fake: FakeUpstream, oai: openai.AsyncOpenAI
) -> None:
    fake.script(
        Reply.tool_call("exec_command", {"cmd": "ls"}, id="call_9", thinking="I should list files.")
    )
    tools: Any = [
        {
            "type": "function",
            "name": "exec_command",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
            "strict": False,
        }
    ]
    async with oai.responses.stream(model="gpt-5", input="list", tools=tools) as stream:
        events = [ev async for ev in stream]
        final = await stream.get_final_response()
    kinds = [o.type for o in final.output]
    assert kinds == ["reasoning", "function_call"]
    call = final.output[1]
    assert call.type == "function_call"
    assert (call.name, call.call_id, json.loads(call.arguments)) == (
        "exec_command",
        "call_9",
        {"cmd": "ls"},
    )
    seqs = [ev.sequence_number for ev in events]
    assert seqs == list(range(len(events)))
    assert any(ev.type == "response.reasoning_summary_text.delta" for ev in events)


async def test_responses_failed_mid_stream(fake: FakeUpstream) -> None:
    fake.script(Reply.mid_stream_error("partial", after=1, status=429))
    events = await raw_sse(
        fake.openai_base + "/responses",
        {"model": "gpt-5", "input": "hi", "stream": True},
        {"Authorization": f"Bearer {KEY}"},
    )
    assert all(e.event == e.json()["type"] for e in events)
    last = events[-1].json()
    assert last["type"] == "response.failed"
    assert last["response"]["error"]["code"] == "rate_limit_exceeded"
    assert last["sequence_number"] == len(events) - 1


# --------------------------------------------------------------------------------------------------
# Anthropic Messages


async def test_anthropic_non_stream_text_usage_and_headers(
    fake: FakeUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    fake.script(
        Reply.text(
            "Hi from Claude",
            usage=Usage(
                input_tokens=30, output_tokens=6, cached_tokens=100, cache_creation_tokens=20
            ),
        )
    )
    msg = await ant.messages.create(
        model="claude-fake-1",
        max_tokens=100,
        messages=USER_HI,
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == "claude-fake-1"
    assert msg.content[0].type == "text" and msg.content[0].text == "Hi from Claude"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    u = msg.usage
    assert (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
    ) == (
        30,
        6,
        100,
        20,
    )
    rec = fake.last_request
    # anthropic 2.x sends the key as Bearer (older SDKs and Claude Code with ANTHROPIC_API_KEY use
    # x-api-key, covered by the raw tests below); the version header value depends on the SDK
    assert KEY in (
        rec.headers.get("x-api-key"),
        rec.headers["authorization"].removeprefix("Bearer "),
    )
    assert rec.headers["anthropic-version"]
    assert rec.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert rec.json["max_tokens"] == 100


async def test_anthropic_stream_text(fake: FakeUpstream, ant: anthropic.AsyncAnthropic) -> None:
    fake.script(
        Reply.text("Streaming from the fake Claude", chunks=6, usage=Usage(11, 22, cached_tokens=3))
    )
    async with ant.messages.stream(model="claude-x", max_tokens=50, messages=USER_HI) as stream:
        pieces = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) == 6 and "".join(pieces) == "Streaming from the fake Claude"
    assert final.content[0].type == "text"
    assert final.content[0].text == "Streaming from the fake Claude"
    assert final.stop_reason == "end_turn"
    assert (
        final.usage.input_tokens,
        final.usage.output_tokens,
        final.usage.cache_read_input_tokens,
    ) == (
        11,
        22,
        3,
    )


async def test_anthropic_stream_wire_shape(fake: FakeUpstream) -> None:
    fake.script(
        Reply.tool_call("get_weather", {"city": "Paris"}, text="Let me check.", id="toolu_01X")
    )
    events = await raw_sse(
        fake.base_url + "/v1/messages?beta=true",
        {"model": "c", "max_tokens": 10, "messages": USER_HI, "stream": True},
        ANTHROPIC_HEADERS,
    )
    names = [e.event for e in events]
    assert all(e.event == e.json()["type"] for e in events)  # event: line == JSON type
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    starts = [e.json() for e in events if e.event == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1]
    assert starts[1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_01X",
        "name": "get_weather",
        "input": {},
    }
    json_deltas = [
        e.json()["delta"]["partial_json"]
        for e in events
        if e.event == "content_block_delta" and e.json()["delta"]["type"] == "input_json_delta"
    ]
    assert json_deltas[0] == "" and len(json_deltas) == 4
    assert json.loads("".join(json_deltas)) == {"city": "Paris"}
    start_msg = events[0].json()["message"]
    assert start_msg["stop_reason"] is None and start_msg["content"] == []
    assert events[-2].json()["delta"]["stop_reason"] == "tool_use"


async def test_anthropic_streamed_tool_use(
    fake: FakeUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    fake.script(
        Reply.tool_calls(
            ToolCall("get_weather", {"city": "Paris", "days": 3}),
            ToolCall("get_weather", {"city": "Rome", "days": 1}),
            text="Checking.",
            arg_chunks=5,
        )
    )
    async with ant.messages.stream(
        model="claude-x", max_tokens=50, messages=USER_HI, tools=WEATHER_TOOL_ANTHROPIC
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [{"city": "Paris", "days": 3}, {"city": "Rome", "days": 1}]
    assert all(u.id.startswith("toolu_") and u.name == "get_weather" for u in uses)


async def test_anthropic_thinking_with_signature(
    fake: FakeUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    fake.script(
        Reply.reasoning("First, 2+2.", "4", signature="EqQBsig=="),
        Reply.reasoning("Quietly.", "5", signature="sig2"),
    )
    async with ant.messages.stream(
        model="claude-x",
        max_tokens=2048,
        messages=USER_HI,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    thinking = final.content[0]
    assert thinking.type == "thinking"
    assert (thinking.thinking, thinking.signature) == ("First, 2+2.", "EqQBsig==")
    msg = await ant.messages.create(model="claude-x", max_tokens=2048, messages=USER_HI)
    assert msg.content[0].type == "thinking" and msg.content[0].signature == "sig2"


async def test_anthropic_errors(fake: FakeUpstream, ant: anthropic.AsyncAnthropic) -> None:
    fake.script(
        Reply.rate_limited(retry_after=3),
        Reply.error(500),
        Reply.overloaded(),
        Reply.mid_stream_error("cut here", after=1),
    )
    with pytest.raises(anthropic.RateLimitError) as rl:
        await ant.messages.create(model="c", max_tokens=5, messages=USER_HI)
    assert rl.value.response.headers["retry-after"] == "3"
    assert rl.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert rl.value.body["request_id"].startswith("req_")  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as ise:
        await ant.messages.create(model="c", max_tokens=5, messages=USER_HI)
    assert ise.value.status_code == 500
    with pytest.raises(anthropic.OverloadedError) as ov:
        await ant.messages.create(model="c", max_tokens=5, messages=USER_HI)
    assert ov.value.status_code == 529
    assert ov.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(anthropic.APIStatusError) as mid:
        async with ant.messages.stream(model="c", max_tokens=5, messages=USER_HI) as stream:
            async for _ in stream:
                pass
    assert mid.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert (await settled(fake)).outcome == "stream_error"


async def test_anthropic_auth_and_disconnect(
    fake: FakeUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=fake.anthropic_base, api_key="wrong", max_retries=0
    ) as bad:
        with pytest.raises(anthropic.AuthenticationError):
            await bad.messages.create(model="c", max_tokens=5, messages=USER_HI)
    async with anthropic.AsyncAnthropic(
        base_url=fake.anthropic_base, auth_token=KEY, max_retries=0
    ) as bearer:  # ANTHROPIC_AUTH_TOKEN style
        await bearer.messages.create(model="c", max_tokens=5, messages=USER_HI)
    assert fake.last_request.headers["authorization"] == f"Bearer {KEY}"

    fake.script(Reply.disconnect("will be cut", after=1))
    # the Anthropic SDK does not wrap errors raised while iterating a stream
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        async with ant.messages.stream(model="c", max_tokens=5, messages=USER_HI) as stream:
            async for _ in stream:
                pass


async def test_anthropic_count_tokens_and_beta_query(
    fake: FakeUpstream, ant: anthropic.AsyncAnthropic
) -> None:
    counted = await ant.messages.count_tokens(model="claude-x", messages=USER_HI)
    assert counted.input_tokens >= 1
    fake.script(Reply(usage=Usage(input_tokens=728)), endpoint="count_tokens")
    counted = await ant.messages.count_tokens(model="claude-x", messages=USER_HI)
    assert counted.input_tokens == 728
    assert fake.last_request.path == "/v1/messages/count_tokens"
    msg = await ant.beta.messages.create(  # Claude Code's shape: ?beta=true + anthropic-beta
        model="claude-x",
        max_tokens=5,
        messages=USER_HI,
        betas=["context-1m-2025-08-07"],
        extra_query={"beta": "true"},
    )
    assert msg.content[0].type == "text"
    rec = fake.last_request
    assert rec.path == "/v1/messages" and rec.query == {"beta": "true"}
    assert rec.headers["anthropic-beta"] == "context-1m-2025-08-07"


async def test_anthropic_strict_validation(fake: FakeUpstream) -> None:
    url = fake.base_url + "/v1/messages"
    status, _, payload = await raw_post(url, {"model": "c", "messages": USER_HI}, ANTHROPIC_HEADERS)
    assert status == 400
    assert json.loads(payload)["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    status, _, payload = await raw_post(
        url, {"model": "c", "max_tokens": 5, "messages": USER_HI}, {"x-api-key": KEY}
    )
    assert status == 400 and b"anthropic-version" in payload
    dangling = [
        *USER_HI,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
        },
        {"role": "user", "content": [{"type": "text", "text": "go on"}]},
    ]
    status, _, payload = await raw_post(
        url, {"model": "c", "max_tokens": 5, "messages": dangling}, ANTHROPIC_HEADERS
    )
    assert (
        status == 400 and "without `tool_result` blocks" in json.loads(payload)["error"]["message"]
    )
    empty = [{"role": "user", "content": [{"type": "text", "text": ""}]}]
    status, _, payload = await raw_post(
        url, {"model": "c", "max_tokens": 5, "messages": empty}, ANTHROPIC_HEADERS
    )
    assert (
        json.loads(payload)["error"]["message"] == "messages: text content blocks must be non-empty"
    )
    ok_history = [
        *USER_HI,
        {"role": "system", "content": "mid-conversation system message"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
        },
    ]
    status, _, payload = await raw_post(
        url, {"model": "c", "max_tokens": 5, "messages": ok_history}, ANTHROPIC_HEADERS
    )
    assert status == 200, payload


async def test_truncated_maps_per_protocol(
    fake: FakeUpstream, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    fake.script(*[Reply.text("cut off", truncated=True)] * 3)
    done = await oai.chat.completions.create(model="m", messages=USER_HI)
    assert done.choices[0].finish_reason == "length"
    msg = await ant.messages.create(model="c", max_tokens=5, messages=USER_HI)
    assert msg.stop_reason == "max_tokens"
    resp = await oai.responses.create(model="m", input="hi")
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"


async def test_escape_hatches(fake: FakeUpstream, ant: anthropic.AsyncAnthropic) -> None:
    async def teapot(request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return web.json_response({"model_seen": rec.model}, status=418)

    fake.script(
        Reply.raw(502, "<html>Bad Gateway</html>", content_type="text/html"),
        Reply.error(503, body="upstream connect error"),
        Reply.custom(teapot),
        Reply.raw_stream(
            [b": OPENROUTER PROCESSING\n\n", 'data: {"x":1}\r\n\r\n', b"data: [DONE]\n\n"]
        ),
    )
    url, auth = fake.openai_base + "/chat/completions", {"Authorization": f"Bearer {KEY}"}
    body = {"model": "m", "messages": USER_HI}
    status, headers, payload = await raw_post(url, body, auth)
    assert (status, headers["Content-Type"], payload) == (
        502,
        "text/html",
        b"<html>Bad Gateway</html>",
    )
    status, _, payload = await raw_post(url, body, auth)
    assert (status, payload) == (503, b"upstream connect error")
    status, _, payload = await raw_post(url, body, auth)
    assert (status, json.loads(payload)) == (418, {"model_seen": "m"})
    events = await raw_sse(url, body, auth)
    assert [e.data for e in events] == ['{"x":1}', "[DONE]"]

    fake.script(Reply.text(["Hel", "lo", "!"]), Reply(redacted_thinking="opaque==", content="ok"))
    async with ant.messages.stream(model="c", max_tokens=5, messages=USER_HI) as stream:
        assert [t async for t in stream.text_stream] == ["Hel", "lo", "!"]
    async with ant.messages.stream(model="c", max_tokens=5, messages=USER_HI) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["redacted_thinking", "text"]


async def test_stop_interrupts_stalled_handlers(make_fake_upstream: FakeUpstreamFactory) -> None:
    fake = await make_fake_upstream()
    fake.script(Reply.text("never", delay_first_byte=60))
    pending = asyncio.create_task(
        raw_post(fake.openai_base + "/chat/completions", {"model": "m", "messages": USER_HI})
    )
    (rec,) = await fake.wait_for_requests(1)
    start = time.monotonic()
    await fake.stop()
    assert time.monotonic() - start < 3
    assert rec.outcome == "server_stopped"
    with pytest.raises(aiohttp.ClientError):
        await pending


async def test_sse_parser_incremental(fake: FakeUpstream) -> None:
    fake.script(Reply.text("abc", chunks=3, chunk_delay=0.02))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake.base_url + "/v1/messages",
            json={"model": "c", "max_tokens": 5, "messages": USER_HI, "stream": True},
            headers=ANTHROPIC_HEADERS,
        ) as resp,
    ):
        names = [ev.event async for ev in iter_sse(resp)]
    assert names.count("content_block_delta") == 3 and names[-1] == "message_stop"
