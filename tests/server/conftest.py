"""A running gateway in front of fake upstreams, and SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from desktop_proxy.config.loader import parse_config
from desktop_proxy.config.secrets import SecretResolver
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.paths import AppPaths
from desktop_proxy.server.runner import GatewayServer
from desktop_proxy.services import GatewayOptions, Services

UPSTREAM_KEY = "sk-upstream-secret-0001"


def openai_provider(fake_base: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "up",
        "kind": "openai",
        "baseUrl": fake_base,
        "apiKey": UPSTREAM_KEY,
        "models": ["gpt-4o", "gpt-4o-mini"],
        **extra,
    }


class Gateway:
    """A started gateway, its records, and the base URLs a client needs."""

    def __init__(self, services: Services, server: GatewayServer) -> None:
        self.services = services
        self.server = server
        self.records: list[RequestRecord] = []
        services.record_listeners.append(self.records.append)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def openai_base(self) -> str:
        return self.url + "/v1"


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """`gw = await make_gateway(config_dict, host=..., access_keys=...)`; stopped at teardown."""
    started: list[Services] = []

    async def factory(config: dict[str, Any], **options: Any) -> Gateway:
        services = Services(
            AppPaths.for_root(tmp_path / f"gw{len(started)}"),
            secrets=SecretResolver(environ={}),
        )
        services.config = parse_config(config, "test-config.json")
        options.setdefault("port", 0)
        options.setdefault("shutdown_timeout", 1.0)
        # A writer process per gateway costs ~0.2 s; tests/server/test_history_gateway.py
        # runs the real thing, the rest write history from a thread.
        options.setdefault("history_process", False)
        server = await services.start_gateway(GatewayOptions(**options))
        started.append(services)
        return Gateway(services, server)

    yield factory
    for services in started:
        await services.stop_gateway()


ClientFactory = Callable[..., Any]


@pytest_asyncio.fixture
async def openai_client() -> AsyncIterator[ClientFactory]:
    """`client = openai_client(gw, key=...)`: an AsyncOpenAI aimed at the gateway, closed after."""
    import openai

    clients: list[openai.AsyncOpenAI] = []

    def factory(gw: Gateway, key: str = "anything", base_url: str | None = None) -> Any:
        client = openai.AsyncOpenAI(
            base_url=base_url or gw.openai_base, api_key=key, max_retries=0, timeout=20
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest_asyncio.fixture
async def anthropic_client() -> AsyncIterator[ClientFactory]:
    """`client = anthropic_client(gw, key=...)`: an AsyncAnthropic pointed at the gateway."""
    import anthropic

    clients: list[anthropic.AsyncAnthropic] = []

    def factory(gw: Gateway, key: str = "anything", base_url: str | None = None) -> Any:
        client = anthropic.AsyncAnthropic(
            base_url=base_url or gw.url, api_key=key, max_retries=0, timeout=20
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()
