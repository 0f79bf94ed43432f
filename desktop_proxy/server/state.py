"""Everything a running gateway needs, in one object the handlers share."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web

from desktop_proxy.config.models import AppConfig, ProviderConfig
from desktop_proxy.config.secrets import SecretResolver
from desktop_proxy.history.record import NullRecorder, Recorder
from desktop_proxy.routing import ModelRouter
from desktop_proxy.server.health import HealthBook
from desktop_proxy.server.upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class ResolvedAccessKey:
    name: str
    value: str


@dataclass(slots=True)
class Restrictions:
    """What `serve --provider NAME` and `serve -m MODEL` narrow the gateway down to."""

    providers: Sequence[str] | None = None
    models: Sequence[str] | None = None


@functools.lru_cache(maxsize=256)
def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "localhost.") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class GatewayState:
    config: AppConfig
    secrets: SecretResolver
    access_keys: list[ResolvedAccessKey]
    bind_host: str
    restrictions: Restrictions = field(default_factory=Restrictions)
    recorder: Recorder = field(default_factory=NullRecorder)
    health: HealthBook = field(default_factory=HealthBook)
    started_at: float = field(default_factory=time.time)
    upstream: UpstreamClient | None = None
    # Keep raw request/response bodies on records (history.storeBodies, history on).
    capture_bodies: bool = False
    router: ModelRouter = field(init=False)

    def __post_init__(self) -> None:
        self.health.default_cooldown = self.config.routing.cooldown
        self.router = self._make_router(self.config)

    def _make_router(self, config: AppConfig) -> ModelRouter:
        return ModelRouter(
            config,
            only_providers=self.restrictions.providers,
            only_models=self.restrictions.models,
        )

    def apply_config(self, config: AppConfig, access_keys: list[ResolvedAccessKey]) -> None:
        """Swap in a new configuration. In-flight requests keep the router they started with."""
        self.router = self._make_router(config)
        self.config = config
        self.access_keys = access_keys
        self.health.default_cooldown = config.routing.cooldown
        self.secrets.invalidate()

    @property
    def loopback_only(self) -> bool:
        return is_loopback_host(self.bind_host)

    @property
    def open_access(self) -> bool:
        return not self.access_keys

    def match_access_key(self, presented: str) -> ResolvedAccessKey | None:
        """Constant-time comparison against every key, so timing says nothing about which."""
        found: ResolvedAccessKey | None = None
        given = presented.encode()
        for key in self.access_keys:
            if hmac.compare_digest(given, key.value.encode()):
                found = key
        return found

    async def provider_key(self, provider: ProviderConfig, index: int) -> str | None:
        if not provider.api_keys:
            return None
        ref = provider.api_keys[index % len(provider.api_keys)]
        where = f"providers[{provider.name}].apiKeys[{index}]"
        return await self.secrets.resolve(ref, where=where)

    def upstream_client(self) -> UpstreamClient:
        if self.upstream is None:
            raise RuntimeError("the gateway's upstream client is not running")
        return self.upstream

    @property
    def uptime(self) -> float:
        return time.time() - self.started_at


STATE: web.AppKey[GatewayState] = web.AppKey("state", GatewayState)
