"""History as the gateway writes it: one row per request on every exit path, no secrets on
disk, and a broken database never failing a request."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from desktop_proxy.config.loader import parse_config
from desktop_proxy.config.secrets import SecretResolver
from desktop_proxy.history import pricing, remote
from desktop_proxy.history.pricing import Pricer
from desktop_proxy.history.query import HistoryFilter, HistoryReader
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.writer import HistoryWriter
from desktop_proxy.paths import AppPaths
from desktop_proxy.services import GatewayOptions, Services
from tests.fakes.upstream import RecordedRequest, Reply, Usage
from tests.server.conftest import UPSTREAM_KEY, GatewayFactory, openai_provider

ACCESS_KEY = "dp-history-test-access-key-7777"


def reply_for(request: RecordedRequest) -> Reply:
    """The fake upstream's behaviour is chosen by the text of the request."""
    text = json.dumps(request.json)
    if "please-fail" in text:
        return Reply.error(500, "upstream exploded")
    if "please-stall" in text:
        return Reply.text(["first ", "second ", "third"], chunk_delay=0.5)
    return Reply.text("fine", usage=Usage(input_tokens=10, output_tokens=2))


async def test_hundreds_of_requests_leave_exactly_one_row_each(
    make_fake_upstream: Any, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Concurrent traffic over four front doors and six exit paths (success, upstream 500,
    wrong access key, client abort mid-stream, bad JSON, unknown model) is recorded once each."""
    fake = await make_fake_upstream(api_key=UPSTREAM_KEY)
    fake.default_reply = reply_for
    config = {
        "providers": [openai_provider(fake.openai_base)],
        "tiers": {"big": "up:gpt-4o", "middle": "up:gpt-4o", "small": "up:gpt-4o-mini"},
        "accessKeys": [{"name": "tests", "key": ACCESS_KEY}],
    }
    gw = await make_gateway(config, history_process=True)
    oai = openai.AsyncOpenAI(base_url=gw.openai_base, api_key=ACCESS_KEY, max_retries=0)
    ant = anthropic.AsyncAnthropic(base_url=gw.url, api_key=ACCESS_KEY, max_retries=0)
    wrong = openai.AsyncOpenAI(base_url=gw.openai_base, api_key="dp-wrong", max_retries=0)
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {ACCESS_KEY}"})
    user = [{"role": "user", "content": "hello"}]
    failing = [{"role": "user", "content": "please-fail"}]
    expected: collections.Counter[int] = collections.Counter()

    async def chat_ok(i: int) -> None:
        if i % 2:
            await oai.chat.completions.create(model="up:gpt-4o", messages=user)  # type: ignore[arg-type]
        else:
            stream = await oai.chat.completions.create(
                model="up:gpt-4o",
                messages=user,
                stream=True,  # type: ignore[arg-type]
            )
            async for _ in stream:
                pass

    async def messages_ok(i: int) -> None:
        if i % 2:
            await ant.messages.create(model="claude-opus-4-8", max_tokens=50, messages=user)  # type: ignore[arg-type]
        else:
            async with ant.messages.stream(
                model="claude-opus-4-8",
                max_tokens=50,
                messages=user,  # type: ignore[arg-type]
            ) as s:
                await s.get_final_message()

    async def count_tokens(_: int) -> None:
        await ant.messages.count_tokens(model="claude-opus-4-8", messages=user)  # type: ignore[arg-type]

    async def embeddings(_: int) -> None:
        await oai.embeddings.create(model="up:gpt-4o", input="x")

    async def upstream_500(_: int) -> None:
        try:
            await oai.chat.completions.create(model="up:gpt-4o", messages=failing)  # type: ignore[arg-type]
        except openai.InternalServerError:
            return
        raise AssertionError("expected a 500")

    async def wrong_key(_: int) -> None:
        try:
            await wrong.chat.completions.create(model="up:gpt-4o", messages=user)  # type: ignore[arg-type]
        except openai.AuthenticationError:
            return
        raise AssertionError("expected a 401")

    async def abort_mid_stream(_: int) -> None:
        body = {
            "model": "up:gpt-4o",
            "stream": True,
            "messages": [{"role": "user", "content": "please-stall"}],
        }
        async with http.post(gw.openai_base + "/chat/completions", json=body) as resp:
            assert resp.status == 200
            await resp.content.readline()  # the first bytes arrived: now walk away
            resp.close()

    async def bad_json(_: int) -> None:
        async with http.post(gw.openai_base + "/chat/completions", data=b"{nope") as resp:
            assert resp.status == 400

    async def unknown_model(_: int) -> None:
        try:
            await oai.chat.completions.create(model="no-such-model", messages=user)  # type: ignore[arg-type]
        except openai.NotFoundError:
            return
        raise AssertionError("expected a 404")

    plan = [
        (chat_ok, 80, 200),
        (messages_ok, 60, 200),
        (count_tokens, 20, 200),
        (embeddings, 20, 200),
        (upstream_500, 30, 500),
        (wrong_key, 30, 401),
        (abort_mid_stream, 20, 499),
        (bad_json, 20, 400),
        (unknown_model, 20, 404),
    ]
    jobs = []
    for func, count, status in plan:
        expected[status] += count
        jobs += [func(i) for i in range(count)]
    try:
        results = await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        await http.close()
        await oai.close()
        await ant.close()
        await wrong.close()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]

    await gw.services.stop_gateway()  # drains in-flight requests, then flushes history
    reader = HistoryReader(gw.services.paths.history_db)
    total = sum(expected.values())
    assert reader.count() == total
    seen = collections.Counter(
        {status: reader.count(HistoryFilter(status=status)) for status in expected}
    )
    assert seen == expected
    rows = reader.page(HistoryFilter(), 0, total)
    assert len({row.id for row in rows}) == total


async def test_usage_and_cost_are_recorded_by_the_model_that_ran(
    make_fake_upstream: Any, make_gateway: GatewayFactory
) -> None:
    """A Claude-tier request routed to gpt-4o is recorded as gpt-4o, with its tokens and a cost
    from gpt-4o's price; a local Ollama model costs $0; an unknown model is unpriced.

    The fake upstream is a custom URL, which the pricer never assumes to be OpenAI's own API,
    so gpt-4o's price comes from a config override here (the library's prices are checked in
    tests/unit/test_history_pricing.py)."""
    fake = await make_fake_upstream()
    fake.default_reply = Reply.text("ok", usage=Usage(input_tokens=1000, output_tokens=100))
    config = {
        "providers": [
            {
                "name": "openai",
                "kind": "openai",
                "baseUrl": fake.openai_base,
                "apiKey": "sk-x-123456789",
                "models": ["gpt-4o", "my-finetune-xyz"],
            },
            {
                "name": "local",
                "kind": "ollama",
                "baseUrl": fake.openai_base,
                "models": ["llama3:8b"],
            },
        ],
        "tiers": {"big": "openai:gpt-4o"},
        "history": {"prices": {"openai:gpt-4o": {"input": 2.5, "output": 10}}},
    }
    gw = await make_gateway(config, history_process=True)
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="x", max_retries=0) as ant:
        await ant.messages.create(
            model="claude-opus-4-8", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="x", max_retries=0) as oai:
        for model in ("local:llama3:8b", "openai:my-finetune-xyz"):
            await oai.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}]
            )
    await gw.services.stop_gateway()
    rows = {
        r.model: r for r in HistoryReader(gw.services.paths.history_db).page(HistoryFilter(), 0, 10)
    }
    opus = rows["gpt-4o"]
    assert (opus.requested_model, opus.provider) == ("claude-opus-4-8", "openai")
    assert (opus.input_tokens, opus.output_tokens) == (1000, 100)
    # gpt-4o: $2.50 per million input tokens, $10 per million output tokens.
    assert opus.cost_usd is not None and abs(opus.cost_usd - 0.0035) < 1e-9
    assert rows["llama3:8b"].cost_usd == 0
    assert rows["my-finetune-xyz"].cost_usd is None and rows["my-finetune-xyz"].unpriced


async def test_no_secret_reaches_any_file_under_the_data_dir(
    make_fake_upstream: Any, make_gateway: GatewayFactory
) -> None:
    """Upstream keys and access keys never appear in the history database or beside it."""
    fake = await make_fake_upstream(api_key=UPSTREAM_KEY)
    config = {
        "providers": [openai_provider(fake.openai_base)],
        "accessKeys": [{"name": "tests", "key": ACCESS_KEY}],
    }
    gw = await make_gateway(config, history_process=True)
    async with openai.AsyncOpenAI(
        base_url=gw.openai_base, api_key=ACCESS_KEY, max_retries=0
    ) as oai:
        await oai.chat.completions.create(
            model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        stream = await oai.chat.completions.create(
            model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for _ in stream:
            pass
    async with openai.AsyncOpenAI(
        base_url=gw.openai_base, api_key="dp-wrong-key-555", max_retries=0
    ) as wrong:
        with contextlib.suppress(openai.AuthenticationError):
            await wrong.models.list()
    await gw.services.stop_gateway()
    data_dir = gw.services.paths.data_dir
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "history.sqlite3" for p in files)
    for path in files:
        content = path.read_bytes()
        for secret in (UPSTREAM_KEY, ACCESS_KEY, "dp-wrong-key-555"):
            assert secret.encode() not in content, f"{secret} found in {path}"
    rows = HistoryReader(gw.services.paths.history_db).page(HistoryFilter(), 0, 10, bodies=True)
    assert any(r.request_body for r in rows)  # bodies are stored, the keys are not


async def test_a_broken_database_never_fails_a_request(
    make_fake_upstream: Any, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """With the history database unusable (its path is a directory), requests still succeed
    and the writer reports itself degraded."""
    fake = await make_fake_upstream()
    gw_root = tmp_path / "gw0"
    (gw_root / "data" / "history.sqlite3").mkdir(parents=True)
    statuses: list[str] = []
    gw = await make_gateway(
        {"providers": [openai_provider(fake.openai_base)]}, history_process=True
    )
    writer = gw.services.history_writer
    assert writer is not None
    writer.listeners.append(lambda st: statuses.append(st.state))
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="x", max_retries=0) as oai:
        for _ in range(5):
            reply = await oai.chat.completions.create(
                model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content
    for _ in range(50):
        if "degraded" in statuses or writer.status.state == "degraded":
            break
        await asyncio.sleep(0.1)
    assert writer.status.state == "degraded"
    assert writer.status.message
    assert len(gw.records) == 5 and all(r.ok for r in gw.records)


async def test_missing_upstream_usage_is_estimated_and_marked(
    make_fake_upstream: Any, make_gateway: GatewayFactory
) -> None:
    """A server that ignores stream_options reports no usage; the record carries estimated
    tokens, marked as estimated, instead of looking free."""
    fake = await make_fake_upstream()
    answer = "The quick brown fox jumps over the lazy dog. " * 20
    fake.default_reply = Reply.text(answer, usage_in_stream=False)
    config = {
        "providers": [openai_provider(fake.openai_base)],
        "tiers": {"big": "up:gpt-4o"},
    }
    gw = await make_gateway(config, history_process=True)
    prompt = [{"role": "user", "content": "Tell me about foxes and dogs, at some length."}]
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="x", max_retries=0) as oai:
        stream = await oai.chat.completions.create(
            model="up:gpt-4o",
            messages=prompt,
            stream=True,  # type: ignore[arg-type]
        )
        async for _ in stream:
            pass
    async with (
        anthropic.AsyncAnthropic(base_url=gw.url, api_key="x", max_retries=0) as ant,
        ant.messages.stream(
            model="claude-opus-4-8",
            max_tokens=500,
            messages=prompt,  # type: ignore[arg-type]
        ) as s,
    ):
        await s.get_final_message()
    assert len(gw.records) == 2
    for record in gw.records:
        assert record.usage_estimated, record.client_api
        assert record.input_tokens is not None and 10 < record.input_tokens < 60
        # ~200 tokens of fox; the estimator is within ~10% of real tokenizers.
        assert record.output_tokens is not None and 150 < record.output_tokens < 260


async def test_history_still_works_when_its_process_cannot_start(
    make_fake_upstream: Any,
    make_gateway: GatewayFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No writer process (a broken install, a sandbox forbidding it): history is written from
    the gateway's own process instead, and the log says so."""
    monkeypatch.setattr(remote, "worker_command", lambda: [str(tmp_path / "no-such-program")])
    fake = await make_fake_upstream()
    gw = await make_gateway(
        {"providers": [openai_provider(fake.openai_base)]}, history_process=True
    )
    assert isinstance(gw.services.history_writer, HistoryWriter)
    assert "could not start the writer process" in caplog.text
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="x", max_retries=0) as oai:
        await oai.chat.completions.create(
            model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    await gw.services.stop_gateway()
    rows = HistoryReader(gw.services.paths.history_db).page(HistoryFilter(), 0, 10)
    assert [r.status for r in rows] == [200]


def priced_config(fake_base: str) -> dict[str, Any]:
    return {
        "providers": [openai_provider(fake_base)],
        "history": {"prices": {"up:gpt-4o": {"input": 2.5, "output": 10}}},
    }


async def test_a_headless_gateway_leaves_pricing_to_the_writer_process(
    make_fake_upstream: Any, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve` has no live view: the gateway's process never loads the price tables (~20 MB
    it has no use for), and the rows are priced all the same, by the writer's process."""
    loads: list[Pricer] = []
    monkeypatch.setattr(Pricer, "warm_up", lambda self: loads.append(self))
    fake = await make_fake_upstream()
    fake.default_reply = Reply.text("ok", usage=Usage(input_tokens=1000, output_tokens=100))
    gw = await make_gateway(priced_config(fake.openai_base), history_process=True)
    gw.services.record_listeners.clear()  # as in `serve`: nobody watching live
    async with openai.AsyncOpenAI(base_url=gw.openai_base, api_key="x", max_retries=0) as oai:
        for _ in range(3):
            await oai.chat.completions.create(
                model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
    await gw.services.stop_gateway()
    rows = HistoryReader(gw.services.paths.history_db).page(HistoryFilter(), 0, 10)
    # $2.50 per million input tokens, $10 per million output: 0.0025 + 0.001.
    assert [round(r.cost_usd or 0, 9) for r in rows] == [0.0035] * 3
    assert loads == []


async def test_a_live_view_sees_each_request_priced_as_it_finishes(
    make_fake_upstream: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tray listens from the start: the gateway loads the price tables in the background
    when history opens, and every record it hands over from then on carries its cost."""
    monkeypatch.setattr(pricing, "_loaded", threading.Event())
    monkeypatch.setattr(pricing, "_warming", threading.Lock())
    fake = await make_fake_upstream()
    fake.default_reply = Reply.text("ok", usage=Usage(input_tokens=1000, output_tokens=100))
    services = Services(AppPaths.for_root(tmp_path / "live"), secrets=SecretResolver(environ={}))
    services.config = parse_config(priced_config(fake.openai_base), "test-config.json")
    seen: list[RequestRecord] = []
    services.record_listeners.append(seen.append)
    server = await services.start_gateway(GatewayOptions(port=0, history_process=True))
    try:
        assert await asyncio.to_thread(pricing._loaded.wait, 30), "price tables never loaded"
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key="x", max_retries=0
        ) as oai:
            await oai.chat.completions.create(
                model="up:gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        await services.stop_gateway()
    assert [(r.status, r.cost_usd) for r in seen] == [(200, pytest.approx(0.0035))]
