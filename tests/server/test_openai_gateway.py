"""The OpenAI side of the gateway, driven by the official openai SDK against fake upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
from typing import Any

import aiohttp
import openai
import pytest

from tests.fakes.upstream import FakeUpstream, Reply, Usage
from tests.server.conftest import UPSTREAM_KEY, Gateway, GatewayFactory, openai_provider


def base_config(fake: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "providers": [openai_provider(fake.openai_base)],
        "aliases": {"fast": "up:gpt-4o-mini"},
        **extra,
    }


async def test_models_lists_provider_models_and_aliases(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """GET /v1/models lists provider:model ids owned by their provider, plus aliases."""
    fake = await make_fake_upstream()
    gw = await make_gateway(base_config(fake))
    models = [m async for m in openai_client(gw).models.list()]
    owned = {m.id: m.owned_by for m in models}
    assert owned["up:gpt-4o"] == "up"
    assert owned["up:gpt-4o-mini"] == "up"
    assert owned["fast"] == "alias"


async def test_non_streamed_chat_reaches_upstream_with_its_model_and_key(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """A chat completion is forwarded with the upstream model name and the provider's own key."""
    fake = await make_fake_upstream(api_key=UPSTREAM_KEY)
    fake.script(Reply.text("Bonjour!", usage=Usage(input_tokens=12, output_tokens=3)))
    gw = await make_gateway(base_config(fake))
    reply = await openai_client(gw, key="client-key-not-forwarded").chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Say hello in French"}]
    )
    assert reply.choices[0].message.content == "Bonjour!"
    assert reply.usage is not None and reply.usage.prompt_tokens == 12
    sent = fake.last_request
    assert sent is not None
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.header("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert sent.json["messages"] == [{"role": "user", "content": "Say hello in French"}]
    record = gw.records[-1]
    assert (record.provider, record.model, record.status, record.ok) == (
        "up",
        "gpt-4o-mini",
        200,
        True,
    )
    assert record.input_tokens == 12 and record.output_tokens == 3


async def test_streamed_chat_is_relayed_as_it_arrives(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """The first streamed chunk reaches the client while the upstream is still writing."""
    fake = await make_fake_upstream()
    fake.script(Reply.text(["one ", "two ", "three ", "four"], chunk_delay=0.3))
    gw = await make_gateway(base_config(fake))
    stream = await openai_client(gw).chat.completions.create(
        model="up:gpt-4o", messages=[{"role": "user", "content": "count"}], stream=True
    )
    pieces: list[str] = []
    upstream_done_at_first_text: bool | None = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if upstream_done_at_first_text is None:
                recorded = fake.last_request
                assert recorded is not None
                upstream_done_at_first_text = recorded.done.is_set()
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "one two three four"
    assert upstream_done_at_first_text is False


async def test_streamed_usage_is_recorded_but_not_shown_to_a_client_that_did_not_ask(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """The gateway asks for streamed usage for its records and hides that chunk from the client."""
    fake = await make_fake_upstream()
    fake.script(Reply.text("hi there", usage=Usage(input_tokens=7, output_tokens=2)))
    gw = await make_gateway(base_config(fake))
    stream = await openai_client(gw).chat.completions.create(
        model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    sent = fake.last_request
    assert sent is not None and sent.json["stream_options"] == {"include_usage": True}
    assert (gw.records[-1].input_tokens, gw.records[-1].output_tokens) == (7, 2)


async def test_streamed_usage_reaches_a_client_that_asked(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """With stream_options.include_usage the client gets the usage chunk."""
    fake = await make_fake_upstream()
    fake.script(Reply.text("hi", usage=Usage(input_tokens=5, output_tokens=1)))
    gw = await make_gateway(base_config(fake))
    stream = await openai_client(gw).chat.completions.create(
        model="up:gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in [c async for c in stream] if c.usage is not None]
    assert len(usage) == 1 and usage[0].prompt_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_come_back_whole(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any, stream: bool
) -> None:
    """Tool calls (two in parallel) reach the client with their names and full arguments."""
    fake = await make_fake_upstream()
    fake.script(Reply.tool_call("get_weather", {"city": "Paris", "unit": "C"}, parallel=True))
    gw = await make_gateway(base_config(fake))
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    client = openai_client(gw)
    if stream:
        async with client.chat.completions.stream(
            model="up:gpt-4o", messages=messages, tools=tools
        ) as s:
            completion = await s.get_final_completion()
    else:
        completion = await client.chat.completions.create(
            model="up:gpt-4o", messages=messages, tools=tools
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 2
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments)["city"] == "Paris"  # type: ignore[union-attr]
    assert fake.last_request is not None and fake.last_request.json["tools"] == tools


async def test_upstream_rate_limit_is_passed_on_with_retry_after(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """An upstream 429 reaches the client as a 429 naming the provider, with Retry-After."""
    fake = await make_fake_upstream()
    fake.script(Reply.rate_limited(retry_after=7))
    gw = await make_gateway(base_config(fake))
    with pytest.raises(openai.RateLimitError) as caught:
        await openai_client(gw).chat.completions.create(
            model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert "up" in caught.value.message
    assert caught.value.response.headers.get("retry-after") == "7"
    assert gw.records[-1].status == 429 and not gw.records[-1].ok


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, openai.BadRequestError), (500, openai.InternalServerError)],
)
async def test_upstream_errors_keep_their_status_and_message(
    make_fake_upstream: Any,
    make_gateway: GatewayFactory,
    openai_client: Any,
    status: int,
    error_class: type,
) -> None:
    """Upstream 4xx/5xx errors keep their status and the upstream's message."""
    fake = await make_fake_upstream()
    fake.script(Reply.error(status, "the upstream says no"))
    gw = await make_gateway(base_config(fake))
    with pytest.raises(error_class) as caught:
        await openai_client(gw).chat.completions.create(
            model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert "the upstream says no" in str(caught.value)


async def test_unknown_model_is_a_404_saying_how_to_list_models(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """An unknown model is a 404 in OpenAI's shape that says how to list the available ones."""
    fake = await make_fake_upstream()
    gw = await make_gateway(base_config(fake))
    with pytest.raises(openai.NotFoundError) as caught:
        await openai_client(gw).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert "/v1/models" in caught.value.message
    assert fake.requests == []


async def test_unreachable_upstream_is_a_502_naming_the_provider_and_serving_goes_on(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """A provider that refuses connections is a 502 naming it; other requests still succeed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    fake = await make_fake_upstream()
    config = {
        "providers": [
            openai_provider(f"http://127.0.0.1:{dead_port}/v1", name="dead", models=["m1"]),
            openai_provider(fake.openai_base),
        ]
    }
    gw = await make_gateway(config)
    client = openai_client(gw)
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 502
    assert "dead" in caught.value.message and "unreachable" in caught.value.message
    ok = await client.chat.completions.create(
        model="up:gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    assert ok.choices[0].message.content


async def test_upstream_timeout_is_a_504(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """An upstream that stays silent past the read timeout is a 504."""
    fake = await make_fake_upstream()
    fake.script(Reply.text("late", delay_first_byte=5))
    config = base_config(fake, routing={"timeouts": {"connect": 5, "read": 0.5}})
    gw = await make_gateway(config)
    with pytest.raises(openai.APIStatusError) as caught:
        await openai_client(gw).chat.completions.create(
            model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 504


async def test_mid_stream_upstream_error_reaches_the_client_as_an_error(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """An upstream error after the stream began surfaces as an API error, and is recorded."""
    fake = await make_fake_upstream()
    fake.script(Reply.mid_stream_error("partial answer", after=2, status=500))
    gw = await make_gateway(base_config(fake))
    stream = await openai_client(gw).chat.completions.create(
        model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert not gw.records[-1].ok and gw.records[-1].error


async def test_upstream_disconnect_mid_stream_is_an_error_not_a_silent_end(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """An upstream that drops the connection mid-stream gives the client an error chunk."""
    fake = await make_fake_upstream()
    fake.script(Reply.disconnect("partial", after=2))
    gw = await make_gateway(base_config(fake))
    stream = await openai_client(gw).chat.completions.create(
        model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert not gw.records[-1].ok


async def test_failover_to_the_next_provider_on_server_errors(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """When the first provider answers 500, the same model is served by the next one."""
    first = await make_fake_upstream()
    second = await make_fake_upstream()
    first.script(Reply.error(500, "boom"))
    second.script(Reply.text("from the second"))
    config = {
        "providers": [
            openai_provider(first.openai_base, name="first", models=["shared"]),
            openai_provider(second.openai_base, name="second", models=["shared"]),
        ]
    }
    gw = await make_gateway(config)
    reply = await openai_client(gw).chat.completions.create(
        model="shared", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "from the second"
    assert gw.records[-1].provider == "second"


async def test_a_rejected_key_rotates_to_the_next_key(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """A provider with a key pool retries with its next key when one is rejected."""
    fake = await make_fake_upstream(api_key="sk-good-key-22222")
    provider = openai_provider(fake.openai_base)
    del provider["apiKey"]
    provider["apiKeys"] = ["sk-bad-key-111111", "sk-good-key-22222"]
    gw = await make_gateway({"providers": [provider]})
    reply = await openai_client(gw).chat.completions.create(
        model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    assert gw.records[-1].upstream_key_id == "2222"


async def test_embeddings_are_passed_through(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """POST /v1/embeddings reaches the upstream and returns its vectors."""
    fake = await make_fake_upstream()
    gw = await make_gateway(base_config(fake))
    result = await openai_client(gw).embeddings.create(model="up:gpt-4o", input=["a", "b"])
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    assert fake.last_request is not None and fake.last_request.path == "/v1/embeddings"


# --- access keys ---------------------------------------------------------------------------------


async def test_access_keys_are_required_when_configured(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """With an access key configured, a wrong or missing key is a 401; the right one works."""
    fake = await make_fake_upstream()
    config = base_config(fake, accessKeys=[{"name": "laptop", "key": "dp-right-key-12345"}])
    gw = await make_gateway(config)
    with pytest.raises(openai.AuthenticationError) as caught:
        await openai_client(gw, key="dp-wrong").models.list()
    assert "Invalid access key" in caught.value.message
    ok = [m async for m in openai_client(gw, key="dp-right-key-12345").models.list()]
    assert ok
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.openai_base + "/models") as resp:
            assert resp.status == 401
            assert "error" in await resp.json()
        async with http.get(
            gw.openai_base + "/models", headers={"x-api-key": "dp-right-key-12345"}
        ) as resp:
            assert resp.status == 200
        async with http.get(gw.url + "/health") as resp:
            assert resp.status == 200
    await openai_client(gw, key="dp-right-key-12345").chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "hi"}]
    )
    assert gw.records[-1].access_key == "laptop"


# --- bad input ---------------------------------------------------------------------------------


async def post_raw(gw: Gateway, path: str, data: bytes, **headers: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.url + path,
            data=io.BytesIO(data),
            headers={"Content-Type": "application/json", **headers},
        ) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_malformed_json_is_a_clear_400_and_serving_goes_on(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """Malformed JSON and missing fields get 400s in OpenAI's shape that say what is wrong."""
    fake = await make_fake_upstream()
    gw = await make_gateway(base_config(fake))
    status, body = await post_raw(gw, "/v1/chat/completions", b'{"model": "fast", "messages": [')
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = await post_raw(gw, "/v1/chat/completions", b'{"messages": []}')
    assert status == 400 and "'model'" in body["error"]["message"]
    status, body = await post_raw(gw, "/v1/chat/completions", b'{"model": "fast"}')
    assert status == 400 and "'messages'" in body["error"]["message"]
    status, body = await post_raw(gw, "/v1/chat/completions", b"[1, 2]")
    assert status == 400 and "JSON object" in body["error"]["message"]
    status, body = await post_raw(
        gw,
        "/v1/chat/completions",
        b'{"model":"fast","messages":[{"role":"user","content":"x"}],"stream":"yes"}',
    )
    assert status == 400 and "'stream'" in body["error"]["message"]
    ok = await openai_client(gw).chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "still here?"}]
    )
    assert ok.choices[0].message.content


async def test_oversized_body_is_a_413(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """A body over server.maxBodyBytes is a 413 that names the limit."""
    fake = await make_fake_upstream()
    gw = await make_gateway(base_config(fake, server={"maxBodyBytes": 1024 * 1024}))
    big = json.dumps(
        {"model": "fast", "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    ).encode()
    status, body = await post_raw(gw, "/v1/chat/completions", big)
    assert status == 413
    assert "1 MiB" in body["error"]["message"]
    assert fake.requests == []


async def test_unknown_route_is_a_404_in_openai_shape(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """An unknown path answers in OpenAI's error shape and lists the routes."""
    fake = await make_fake_upstream()
    gw = await make_gateway(base_config(fake))
    status, body = await post_raw(gw, "/v1/nope", b"{}")
    assert status == 404 and "/v1/chat/completions" in body["error"]["message"]


# --- surface -----------------------------------------------------------------------------------


async def test_health_root_and_openai_prefix(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """/health reports version, uptime and providers; / answers GET and HEAD; /openai/ works."""
    from desktop_proxy import __version__

    fake = await make_fake_upstream()
    gw = await make_gateway(base_config(fake))
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/health") as resp:
            health = await resp.json()
        assert health["status"] == "ok" and health["version"] == __version__
        assert health["uptime"] >= 0 and health["providers"][0]["name"] == "up"
        async with http.head(gw.url + "/") as resp:
            assert resp.status == 200
        async with http.get(gw.url + "/") as resp:
            assert resp.status == 200
    prefixed = openai_client(gw, base_url=gw.url + "/openai/v1")
    reply = await prefixed.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    plain = openai_client(gw, base_url=gw.url)
    assert [m async for m in plain.models.list()]


# --- local safety ------------------------------------------------------------------------------


async def test_foreign_host_header_is_rejected_on_loopback(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """A request whose Host is not a loopback name is refused (DNS-rebinding guard)."""
    fake = await make_fake_upstream()
    gw = await make_gateway(base_config(fake))
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.openai_base + "/models", headers={"Host": "evil.example"}) as resp:
            assert resp.status == 403
            assert "DNS rebinding" in (await resp.json())["error"]["message"]
        async with http.get(
            gw.openai_base + "/models", headers={"Host": f"localhost:{gw.server.port}"}
        ) as resp:
            assert resp.status == 200


async def test_browser_origins_need_the_allowlist(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """Unlisted Origins are refused; listed ones get CORS preflights and headers."""
    fake = await make_fake_upstream()
    gw = await make_gateway(base_config(fake, server={"allowedOrigins": ["https://ok.example"]}))
    body = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gw.openai_base + "/chat/completions",
            data=body,
            headers={"Origin": "https://evil.example", "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 403
        async with http.options(
            gw.openai_base + "/chat/completions",
            headers={
                "Origin": "https://ok.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        ) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://ok.example"
            assert "authorization" in resp.headers["Access-Control-Allow-Headers"]
        async with http.post(
            gw.openai_base + "/chat/completions",
            data=body,
            headers={"Origin": "https://ok.example", "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert len([r for r in fake.requests if r.path == "/v1/chat/completions"]) == 1


async def test_many_concurrent_requests_are_all_served(
    make_fake_upstream: Any, make_gateway: GatewayFactory, openai_client: Any
) -> None:
    """Fifty concurrent streamed and non-streamed requests all complete correctly."""
    fake = await make_fake_upstream()
    fake.default_reply = Reply.text("ok ok ok", chunks=5)
    gw = await make_gateway(base_config(fake))
    client = openai_client(gw)

    async def one(i: int) -> str:
        if i % 2:
            r = await client.chat.completions.create(
                model="fast", messages=[{"role": "user", "content": str(i)}]
            )
            return r.choices[0].message.content or ""
        s = await client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": str(i)}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert results == ["ok ok ok"] * 50
    assert len(gw.records) == 50 and all(r.ok for r in gw.records)


async def test_client_gone_before_the_stream_begins_is_a_499_not_a_server_error(
    make_fake_upstream: Any, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that disconnects while the upstream is still deciding leaves a 499 record,
    no 'unexpected error' in the log, and the gateway keeps serving."""
    fake = await make_fake_upstream()
    fake.script(Reply.text("late", delay_first_byte=0.5))
    gw = await make_gateway(base_config(fake))
    body = {"model": "up:gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as http:
        with contextlib.suppress(TimeoutError):
            await http.post(
                gw.openai_base + "/chat/completions",
                json=body,
                timeout=aiohttp.ClientTimeout(total=0.2),
            )
    for _ in range(40):
        if gw.records:
            break
        await asyncio.sleep(0.05)
    assert [r.status for r in gw.records] == [499]
    assert "unexpected error" not in caplog.text
    status, _ = await post_raw(gw, "/v1/chat/completions", b"{}")
    assert status == 400
