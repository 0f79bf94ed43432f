"""ServicesFacade over a real gateway on 127.0.0.1 (no Qt): start, reload, move, probe."""

from __future__ import annotations

import copy
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from desktop_proxy.config.loader import save_config
from desktop_proxy.config.models import ProviderConfig
from desktop_proxy.errors import PortInUseError
from desktop_proxy.gui.facade import (
    HistoryFilter,
    LaunchError,
    ServicesFacade,
    models_url,
    parse_model_list,
    probe_models,
)
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.paths import AppPaths
from desktop_proxy.services import Services
from tests.fakes.upstream import FakeUpstream
from tests.memory_keyring import MemoryKeyring


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def facade(tmp_path: Path) -> AsyncIterator[ServicesFacade]:
    services = Services(AppPaths.for_root(tmp_path / "home"))
    config = services.load_config()
    config.server.port = free_port()
    save_config(config, services.config_path)
    services.load_config()
    facade = ServicesFacade(services)
    yield facade
    await facade.shutdown()


async def _health(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/health") as resp:
        return resp.status


async def test_start_status_stop(facade: ServicesFacade) -> None:
    status = await facade.start_gateway()
    assert status.running and status.port == facade.config.server.port
    assert status.openai_url.endswith("/v1")
    assert await _health(status.url) == 200
    await facade.stop_gateway()
    assert facade.status().phase == "stopped"


async def test_port_in_use_is_reported(facade: ServicesFacade) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", facade.config.server.port))
        s.listen()
        with pytest.raises(PortInUseError):
            await facade.start_gateway()
    status = facade.status()
    assert status.phase == "error" and "already in use" in (status.error or "")


async def test_apply_reloads_without_restarting(
    facade: ServicesFacade, memory_keyring: MemoryKeyring
) -> None:
    await facade.start_gateway()
    server = facade.services.gateway
    config = copy.deepcopy(facade.config)
    config.aliases = {"local": "ollama:llama3"}
    config.providers[0].models = ["llama3"]
    result = await facade.apply_config(config, {"provider-x": "sk-abcdefghijklmnop"}, [])
    assert not result.restarted
    assert facade.services.gateway is server  # same listener, new routing
    assert server is not None and server.state.config.aliases == {"local": "ollama:llama3"}
    assert memory_keyring.passwords[("desktop-proxy", "provider-x")] == "sk-abcdefghijklmnop"


async def test_port_change_moves_the_listener(facade: ServicesFacade) -> None:
    await facade.start_gateway()
    old_url = facade.status().url
    config = copy.deepcopy(facade.config)
    config.server.port = free_port()
    result = await facade.apply_config(config, {}, [])
    assert result.restarted and result.listener_error is None
    assert facade.status().port == config.server.port
    assert await _health(facade.status().url) == 200
    with pytest.raises(aiohttp.ClientError):
        await _health(old_url)


async def test_port_change_to_a_taken_port_keeps_serving(facade: ServicesFacade) -> None:
    await facade.start_gateway()
    old_port = facade.status().port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        config = copy.deepcopy(facade.config)
        config.server.port = s.getsockname()[1]
        result = await facade.apply_config(config, {}, [])
    assert not result.restarted and "already in use" in (result.listener_error or "")
    assert facade.status().port == old_port
    assert await _health(facade.status().url) == 200


async def test_records_and_health_reach_listeners(facade: ServicesFacade) -> None:
    seen: list[RequestRecord] = []
    health: list[tuple[str, bool, str]] = []
    facade.add_record_listener(seen.append)
    facade.add_health_listener(lambda *a: health.append(a))
    await facade.start_gateway()
    rec = RequestRecord(provider="ollama")
    for listener in facade.services.record_listeners:
        listener(rec)
    assert seen == [rec]
    gateway = facade.services.gateway
    assert gateway is not None
    gateway.state.health.fail_provider("ollama", "HTTP 503")
    assert health == [("ollama", False, "HTTP 503")]
    assert facade.status().degraded


async def test_test_connection_and_fetch_models() -> None:
    async with FakeUpstream(api_key="sk-right-key-123456", models=["a", "b"]) as fake:
        provider = ProviderConfig(
            "local", "openai-compatible", fake.openai_base, "openai", "bearer"
        )
        ok = await probe_models(provider, "sk-right-key-123456")
        assert ok.ok and ok.models == ("a", "b")
        assert ok.message.startswith("Connected in ")
        bad = await probe_models(provider, "sk-wrong-key-1234567")
        assert not bad.ok and bad.key_rejected
        assert bad.message.startswith("The key was rejected (HTTP 401)")
    gone = await probe_models(provider, None, limit_seconds=2)
    assert not gone.ok and gone.message.startswith("Cannot connect")


def test_models_url_and_parsing() -> None:
    anthropic = ProviderConfig(
        "a", "anthropic", "https://api.anthropic.com", "anthropic", "x-api-key"
    )
    assert models_url(anthropic) == "https://api.anthropic.com/v1/models"
    openai = ProviderConfig("o", "openai", "https://api.openai.com/v1", "openai", "bearer")
    assert models_url(openai) == "https://api.openai.com/v1/models"
    assert parse_model_list({"data": [{"id": "x"}, {"id": "a"}]}) == ["a", "x"]
    assert parse_model_list({"models": [{"name": "models/gemini"}]}) == ["gemini"]
    assert parse_model_list([1, 2]) == []


async def test_launch_needs_a_running_gateway(facade: ServicesFacade, tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="not running"):
        await facade.prepare_claude_launch(tmp_path)


async def test_launch_builds_a_process_scoped_env(
    facade: ServicesFacade, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    claude = fake_bin / "claude"
    claude.write_text("#!/bin/sh\n")
    claude.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-real-anthropic-key")
    await facade.start_gateway()
    spec = await facade.prepare_claude_launch(tmp_path)
    assert spec.argv == [str(claude)]
    assert spec.env["ANTHROPIC_BASE_URL"] == facade.status().url
    assert spec.env["ANTHROPIC_AUTH_TOKEN"] == "desktop-proxy"
    assert "ANTHROPIC_API_KEY" in spec.unset
    assert "PATH" not in spec.env  # only what differs


def test_filter_semantics() -> None:
    rec = RequestRecord(
        provider="groq", model="llama", ok=False, status=500, error="boom", time=100
    )
    assert HistoryFilter(provider="groq", status="error", text="BOOM").matches(rec)
    assert not HistoryFilter(status="ok").matches(rec)
    assert not HistoryFilter(since=101).matches(rec)
    assert HistoryFilter(until=101, model="llama").matches(rec)
