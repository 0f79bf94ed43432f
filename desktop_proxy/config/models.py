"""Typed configuration. Pure data: parsing and validation live in `config.loader`.

Field names are snake_case here and camelCase in `config.json`; the loader maps between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

WireProtocol = Literal["openai", "anthropic"]
AuthStyle = Literal["bearer", "x-api-key", "api-key", "none"]
RoutingStrategy = Literal["failover", "round-robin", "weighted", "random"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6789
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class ServerSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Browser origins allowed to call the gateway (CORS). Loopback origins are not implied.
    allowed_origins: list[str] = field(default_factory=list)
    # Serving on a non-loopback address with no access key needs this explicit opt-in.
    allow_insecure_remote: bool = False


@dataclass(slots=True)
class AccessKey:
    name: str
    # A secret reference like provider keys: literal, `env:NAME` or `keyring:NAME`.
    key: str


@dataclass(slots=True)
class ProviderConfig:
    name: str
    kind: str
    base_url: str
    protocol: WireProtocol
    auth: AuthStyle
    # Secret references: literal key, `env:NAME`, or `keyring:ENTRY`.
    api_keys: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    weight: int = 1
    enabled: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    # Azure: query `api-version`; `deployments` maps model name -> deployment name.
    api_version: str | None = None
    deployments: dict[str, str] = field(default_factory=dict)
    # Per-model output-token limits overriding the built-in table (model -> max output tokens).
    max_output_tokens: dict[str, int] = field(default_factory=dict)
    # Seconds; None falls back to routing.timeouts.
    timeout: float | None = None

    @property
    def requires_key(self) -> bool:
        return self.auth != "none"


@dataclass(slots=True)
class Timeouts:
    connect: float = 10.0
    # Longest silence tolerated while reading an upstream response (first byte or between chunks).
    read: float = 300.0


@dataclass(slots=True)
class RoutingSettings:
    strategy: RoutingStrategy = "failover"
    timeouts: Timeouts = field(default_factory=Timeouts)
    # Seconds a failing key/provider sits out before it is tried again.
    cooldown: float = 60.0


@dataclass(slots=True)
class PriceOverride:
    """A model's price in USD per million tokens, overriding the pricing library.

    Cache prices default to the input price when not given.
    """

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None


@dataclass(slots=True)
class HistorySettings:
    enabled: bool = True
    store_bodies: bool = True
    # 0 = no limit (keep everything / no size cap).
    retention_days: int = 90
    max_size_mb: int = 500
    # Price overrides keyed by "provider:model", a bare "model" (any provider) or "provider:*".
    prices: dict[str, PriceOverride] = field(default_factory=dict)


@dataclass(slots=True)
class Tiers:
    big: str | None = None
    middle: str | None = None
    small: str | None = None


@dataclass(slots=True)
class AppConfig:
    server: ServerSettings = field(default_factory=ServerSettings)
    access_keys: list[AccessKey] = field(default_factory=list)
    providers: list[ProviderConfig] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    tiers: Tiers = field(default_factory=Tiers)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    history: HistorySettings = field(default_factory=HistorySettings)

    def provider(self, name: str) -> ProviderConfig | None:
        for p in self.providers:
            if p.name == name:
                return p
        return None
