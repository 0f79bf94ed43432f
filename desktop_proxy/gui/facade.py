"""What the tray app needs from the core, as Protocols, and the adapter over `Services`.

Nothing here imports Qt: widgets get a `GuiFacade`, tests give them a fake one. Blocking work
(keyring, config file writes, SQLite) happens inside the async methods, off the event loop, or
in `HistorySource` methods that the GUI only calls from worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Literal, Protocol

import aiohttp

from desktop_proxy.config.loader import save_config
from desktop_proxy.config.models import AppConfig, ProviderConfig
from desktop_proxy.config.secrets import (
    KeyringStatus,
    delete_secret,
    keyring_status,
    parse_ref,
    store_secret,
)
from desktop_proxy.errors import DesktopProxyError, SecretError
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.writer import WriterStatus
from desktop_proxy.paths import AppPaths
from desktop_proxy.server.runner import GatewayServer, format_url
from desktop_proxy.server.state import is_loopback_host
from desktop_proxy.server.upstream import is_loopback_url, upstream_headers, upstream_url
from desktop_proxy.services import Services

GatewayPhase = Literal["stopped", "starting", "running", "stopping", "error"]
StatusFilter = Literal["any", "ok", "error"]
RecordListener = Callable[[RequestRecord], None]
HealthListener = Callable[[str, bool, str], None]
# Called from the history writer's THREAD (not the UI thread) when it degrades or recovers.
HistoryStatusListener = Callable[[WriterStatus], None]


# --- gateway state ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    phase: GatewayPhase
    host: str
    port: int
    error: str | None = None
    # provider name -> why it is cooling down
    cooling: Mapping[str, str] = field(default_factory=dict)
    open_access: bool = True

    @property
    def running(self) -> bool:
        return self.phase == "running"

    @property
    def degraded(self) -> bool:
        return self.running and bool(self.cooling)

    @property
    def url(self) -> str:
        return format_url(self.host, self.port)

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_url(self) -> str:
        return self.url

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    restarted: bool = False
    # Set when the new host/port could not be bound; the old listener keeps serving.
    listener_error: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionResult:
    ok: bool
    message: str
    models: tuple[str, ...] = ()
    status: int | None = None

    @property
    def key_rejected(self) -> bool:
        return self.status in (401, 403)


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    argv: list[str]
    # Only what differs from our own environment: set these, remove `unset`.
    env: dict[str, str]
    cwd: Path
    unset: list[str] = field(default_factory=list)


class LaunchError(DesktopProxyError):
    """Claude Code cannot be launched; the message says how to fix it."""


# --- history --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    since: float | None = None
    until: float | None = None
    provider: str | None = None
    model: str | None = None
    status: StatusFilter = "any"
    text: str = ""

    def matches(self, rec: RequestRecord) -> bool:
        """The reference semantics every HistorySource implements (and live updates use)."""
        if self.since is not None and rec.time < self.since:
            return False
        if self.until is not None and rec.time >= self.until:
            return False
        if self.provider and rec.provider != self.provider:
            return False
        if self.model and self.model not in (rec.model, rec.requested_model):
            return False
        if self.status == "ok" and not rec.ok:
            return False
        if self.status == "error" and rec.ok:
            return False
        if self.text:
            needle = self.text.lower()
            # The same fields the SQLite history searches (history.query._TEXT_COLUMNS).
            hay = (
                rec.id,
                rec.client_api,
                rec.path,
                rec.client,
                rec.session_id,
                rec.access_key,
                rec.requested_model,
                rec.model,
                rec.provider,
                rec.error,
            )
            if not any(needle in h.lower() for h in hay if h):
                return False
        return True


@dataclass(frozen=True, slots=True)
class DayCost:
    day: date
    requests: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class HistoryStats:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0
    # One entry per local calendar day with requests, oldest first.
    days: tuple[DayCost, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryFacets:
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    """Requests and cost since a time, as stored, and which of the asked-about ids (requests the
    tray saw live) those figures already include."""

    requests: int = 0
    cost_usd: float = 0.0
    found: frozenset[str] = frozenset()


class HistorySource(Protocol):
    """Read side of the request history. Every method may block: call them off the UI thread.

    Rows are ordered newest first. Implementations must be safe to call from a worker thread.
    """

    @property
    def notice(self) -> str | None:
        """Why the history shown is incomplete (off, unreadable), for the window; None if it
        is not. Cheap, never blocks: reflects what the last query found."""
        ...

    def count(self, filters: HistoryFilter) -> int: ...

    def page(self, filters: HistoryFilter, offset: int, limit: int) -> list[RequestRecord]:
        """Up to `limit` records from `offset`; bodies may be left out (see `get`)."""
        ...

    def page_before(
        self, filters: HistoryFilter, before: RequestRecord | None, limit: int
    ) -> list[RequestRecord]:
        """Up to `limit` records older than `before` (a record a previous page returned; None
        for the newest). Unlike offsets, this does not shift while new requests arrive."""
        ...

    def usage_since(self, since: float, pending: Callable[[], Collection[str]]) -> UsageSnapshot:
        """Requests and cost with time >= `since`, and which of the ids `pending()` returns are
        counted in them. `pending` is called after the figures were read (one snapshot), so
        every request they include that the caller had seen is among those ids."""
        ...

    def stats(self, filters: HistoryFilter) -> HistoryStats: ...

    def get(self, record_id: str) -> RequestRecord | None:
        """One record with its request/response bodies (when they were stored)."""
        ...

    def facets(self) -> HistoryFacets:
        """Providers and models seen, for the filter pickers."""
        ...


def local_day(timestamp: float) -> date:
    return datetime.fromtimestamp(timestamp).date()


def start_of_today(now: float | None = None) -> float:
    today = datetime.fromtimestamp(time.time() if now is None else now)
    return today.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


# --- the facade -------------------------------------------------------------------------------


class GuiFacade(Protocol):
    """Everything the tray, settings and history windows ask of the core."""

    @property
    def paths(self) -> AppPaths: ...

    @property
    def config_path(self) -> Path: ...

    @property
    def config(self) -> AppConfig:
        """The configuration in force (loaded at start-up, replaced by apply_config)."""
        ...

    @property
    def history(self) -> HistorySource | None: ...

    def status(self) -> GatewayStatus: ...

    def add_record_listener(self, listener: RecordListener) -> None: ...

    def add_health_listener(self, listener: HealthListener) -> None:
        """listener(provider, healthy, reason) when a provider enters or leaves cooldown."""
        ...

    def add_history_status_listener(self, listener: HistoryStatusListener) -> None:
        """listener(status) when the history writer degrades or recovers. Called from the
        writer's thread: the listener must hand over to the UI thread itself."""
        ...

    async def start_gateway(self, port: int | None = None) -> GatewayStatus:
        """Raises PortInUseError, InsecureBindError, ConfigError, SecretError."""
        ...

    async def stop_gateway(self) -> None: ...

    async def apply_config(
        self, config: AppConfig, secrets: Mapping[str, str], forget: Sequence[str]
    ) -> ApplyResult:
        """Store `secrets` (keyring entry -> value), save `config` atomically, and apply it.

        In-flight requests finish on the old configuration; only a host or port change
        restarts the listener. Keyring entries in `forget` are deleted afterwards.
        """
        ...

    async def resolve_secret(self, ref: str) -> str: ...

    async def keyring_status(self) -> KeyringStatus: ...

    async def test_connection(self, provider: ProviderConfig, key: str | None) -> ConnectionResult:
        """GET the provider's model list with `key` (a value or a secret reference)."""
        ...

    async def prepare_claude_launch(self, folder: Path) -> LaunchSpec:
        """Check the gateway answers, find `claude`, build its environment. Raises LaunchError."""
        ...

    async def shutdown(self) -> None:
        """Stop the gateway and flush what needs flushing; the app is about to exit."""
        ...


def models_url(provider: ProviderConfig) -> str:
    url = upstream_url(provider, "models", "")
    if provider.kind == "azure" and provider.api_version and "api-version" not in url:
        url += f"?api-version={provider.api_version}"
    return url


def parse_model_list(data: object) -> list[str]:
    """Model ids from an OpenAI/Anthropic `{"data": [...]}` or Ollama-style `{"models": [...]}`."""
    if not isinstance(data, dict):
        return []
    items = data.get("data")
    if not isinstance(items, list):
        items = data.get("models")
    if not isinstance(items, list):
        return []
    ids: list[str] = []
    for item in items:
        if isinstance(item, dict):
            value = item.get("id") or item.get("name") or item.get("model")
        else:
            value = item
        if isinstance(value, str) and value and value not in ids:
            ids.append(value.removeprefix("models/"))
    return sorted(ids)


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:200]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:200]
        if isinstance(err, str):
            return err[:200]
        if isinstance(data.get("message"), str):
            return str(data["message"])[:200]
    return body.decode("utf-8", "replace").strip()[:200]


async def probe_models(
    provider: ProviderConfig, key: str | None, *, limit_seconds: float = 15.0
) -> ConnectionResult:
    """One GET of the upstream model list, summarised for people."""
    url = models_url(provider)
    headers = upstream_headers(provider, key)
    headers.pop("Content-Type", None)
    started = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(trust_env=not is_loopback_url(url)) as session,
            session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=limit_seconds)
            ) as resp,
        ):
            body = await resp.read()
            status = resp.status
    except TimeoutError:
        return ConnectionResult(False, f"No answer from {url} within {limit_seconds:.0f} s.")
    except aiohttp.ClientError as exc:
        return ConnectionResult(False, f"Cannot connect to {url}: {exc}")
    ms = (time.perf_counter() - started) * 1000
    if status in (401, 403):
        return ConnectionResult(
            False, f"The key was rejected (HTTP {status}): {_error_text(body)}", status=status
        )
    if status >= 400:
        return ConnectionResult(
            False, f"The server answered HTTP {status}: {_error_text(body)}", status=status
        )
    try:
        models = parse_model_list(json.loads(body))
    except ValueError:
        models = []
    what = f"{len(models)} models available" if models else "no model list in the answer"
    return ConnectionResult(True, f"Connected in {ms:.0f} ms: {what}.", tuple(models), status)


class ServicesFacade:
    """`GuiFacade` over the shared `Services` (and, once it exists, the SQLite history)."""

    def __init__(self, services: Services, history: HistorySource | None = None) -> None:
        self._services = services
        self._history = history
        self._phase: GatewayPhase = "stopped"
        self._error: str | None = None
        self._record_listeners: list[RecordListener] = []
        self._health_listeners: list[HealthListener] = []
        self._history_status_listeners: list[HistoryStatusListener] = []
        services.record_listeners.append(self._on_record)
        # Copied into each history writer when the gateway opens one (Services._open_history).
        services.history_status_listeners.append(self._on_history_status)

    @property
    def services(self) -> Services:
        return self._services

    @property
    def paths(self) -> AppPaths:
        return self._services.paths

    @property
    def config_path(self) -> Path:
        return self._services.config_path

    @property
    def config(self) -> AppConfig:
        return self._services.config or self._services.load_config()

    @property
    def history(self) -> HistorySource | None:
        return self._history

    def status(self) -> GatewayStatus:
        gateway = self._services.gateway
        config = self.config
        if gateway is not None and gateway.running:
            return GatewayStatus(
                "running",
                gateway.host,
                gateway.port,
                cooling=gateway.state.health.cooling_providers(),
                open_access=gateway.state.open_access,
            )
        return GatewayStatus(
            self._phase if self._phase != "running" else "stopped",
            config.server.host,
            config.server.port,
            error=self._error,
            open_access=not config.access_keys,
        )

    def add_record_listener(self, listener: RecordListener) -> None:
        self._record_listeners.append(listener)

    def add_health_listener(self, listener: HealthListener) -> None:
        self._health_listeners.append(listener)

    def add_history_status_listener(self, listener: HistoryStatusListener) -> None:
        self._history_status_listeners.append(listener)

    def _on_history_status(self, status: WriterStatus) -> None:
        # The writer's thread: just pass it on (the bridge queues it to the UI thread).
        for listener in list(self._history_status_listeners):
            listener(status)

    def _on_record(self, rec: RequestRecord) -> None:
        for listener in list(self._record_listeners):
            listener(rec)

    def _on_health(self, provider: str, healthy: bool, reason: str) -> None:
        for listener in list(self._health_listeners):
            listener(provider, healthy, reason)

    def _watch(self, server: GatewayServer) -> None:
        if self._on_health not in server.state.health.listeners:
            server.state.health.listeners.append(self._on_health)

    async def start_gateway(self, port: int | None = None) -> GatewayStatus:
        from desktop_proxy.services import GatewayOptions

        self._phase, self._error = "starting", None
        try:
            if self._services.config is None:
                await asyncio.to_thread(self._services.load_config)
            server = await self._services.start_gateway(GatewayOptions(port=port))
        except BaseException as exc:
            self._phase, self._error = "error", str(exc)
            raise
        self._watch(server)
        self._phase = "running"
        return self.status()

    async def stop_gateway(self) -> None:
        self._phase = "stopping"
        try:
            await self._services.stop_gateway()
        finally:
            self._phase, self._error = "stopped", None

    async def apply_config(
        self, config: AppConfig, secrets: Mapping[str, str], forget: Sequence[str]
    ) -> ApplyResult:
        for entry, value in secrets.items():
            await asyncio.to_thread(store_secret, entry, value)
        old = self.config
        await asyncio.to_thread(save_config, config, self.config_path)
        self._services.secrets.invalidate()
        gateway = self._services.gateway
        moved = (old.server.host, old.server.port) != (config.server.host, config.server.port)
        result = ApplyResult()
        if gateway is not None and gateway.running and moved:
            result = await self._move_listener(gateway)
        else:
            await self._services.reload_config()
        for entry in forget:
            with contextlib.suppress(SecretError):  # already gone: nothing to clean up
                await asyncio.to_thread(delete_secret, entry)
        return result

    async def _move_listener(self, old: GatewayServer) -> ApplyResult:
        """Bind the new address first, then drain the old listener: no gap, nothing dropped."""
        await asyncio.to_thread(self._services.load_config)
        self._services.gateway = None
        try:
            server = await self._services.start_gateway()
        except DesktopProxyError as exc:
            self._services.gateway = old
            await self._services.reload_config()
            return ApplyResult(restarted=False, listener_error=str(exc))
        self._watch(server)
        await old.stop()
        return ApplyResult(restarted=True)

    async def resolve_secret(self, ref: str) -> str:
        return await self._services.secrets.resolve(ref)

    async def keyring_status(self) -> KeyringStatus:
        return await asyncio.to_thread(keyring_status)

    async def test_connection(self, provider: ProviderConfig, key: str | None) -> ConnectionResult:
        value = key
        if key and parse_ref(key).kind != "literal":
            try:
                value = await self._services.secrets.resolve(key, where=provider.name)
            except SecretError as exc:
                return ConnectionResult(False, str(exc))
        return await probe_models(provider, value)

    async def prepare_claude_launch(self, folder: Path) -> LaunchSpec:
        from desktop_proxy.launch import claude_code

        status = self.status()
        if not status.running:
            raise LaunchError("The gateway is not running. Start it from the tray menu first.")
        if await claude_code.probe_gateway(status.url) is None:
            raise LaunchError(f"The gateway at {status.url} does not answer its health check.")
        environ = dict(os.environ)
        claude = await asyncio.to_thread(claude_code.find_claude, environ)
        if claude is None:
            raise LaunchError(
                "Claude Code (`claude`) was not found. Install it with "
                f"`{claude_code.CLAUDE_INSTALL_HINT}`, then try again."
            )
        keys = await self._services.resolve_access_keys(self.config)
        env = claude_code.claude_env(
            status.anthropic_url, keys[0].value if keys else None, base_env=environ
        )
        changed, removed = claude_code.env_changes(environ, env)
        return LaunchSpec([str(claude)], changed, folder, unset=removed)

    async def shutdown(self) -> None:
        await self.stop_gateway()
