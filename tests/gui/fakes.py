"""A fake GuiFacade and TrayHost: enough behaviour to drive the widgets, nothing real."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from desktop_proxy.config.loader import default_config, save_config
from desktop_proxy.config.models import AccessKey, AppConfig, ProviderConfig
from desktop_proxy.config.secrets import KeyringStatus, SecretResolver, store_secret
from desktop_proxy.errors import PortInUseError
from desktop_proxy.gui.facade import (
    ApplyResult,
    ConnectionResult,
    GatewayPhase,
    GatewayStatus,
    HealthListener,
    HistorySource,
    HistoryStatusListener,
    LaunchSpec,
    RecordListener,
)
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.writer import WriterStatus
from desktop_proxy.paths import AppPaths


class FakeFacade:
    def __init__(self, root: Path, config: AppConfig | None = None) -> None:
        self._paths = AppPaths.for_root(root)
        self._config = config or default_config()
        self.history: HistorySource | None = None
        self.phase: GatewayPhase = "stopped"
        self.error: str | None = None
        self.cooling: dict[str, str] = {}
        self.taken_ports: set[int] = set()
        self.record_listeners: list[RecordListener] = []
        self.health_listeners: list[HealthListener] = []
        self.history_status_listeners: list[HistoryStatusListener] = []
        self.applied: list[tuple[AppConfig, dict[str, str], list[str]]] = []
        self.connection = ConnectionResult(
            True, "Connected in 5 ms: 2 models available.", ("m1", "m2"), 200
        )
        self.tested: list[tuple[ProviderConfig, str | None]] = []
        self.secrets = SecretResolver(environ={})
        self.launches: list[Path] = []

    @property
    def paths(self) -> AppPaths:
        return self._paths

    @property
    def config_path(self) -> Path:
        return self._paths.config_file

    @property
    def config(self) -> AppConfig:
        return self._config

    def status(self) -> GatewayStatus:
        return GatewayStatus(
            self.phase,
            self._config.server.host,
            self._config.server.port,
            error=self.error,
            cooling=dict(self.cooling) if self.phase == "running" else {},
            open_access=not self._config.access_keys,
        )

    def add_record_listener(self, listener: RecordListener) -> None:
        self.record_listeners.append(listener)

    def add_health_listener(self, listener: HealthListener) -> None:
        self.health_listeners.append(listener)

    def add_history_status_listener(self, listener: HistoryStatusListener) -> None:
        self.history_status_listeners.append(listener)

    def emit_history_status(self, status: WriterStatus) -> None:
        """As the history writer does: call the listeners on the calling thread."""
        for listener in self.history_status_listeners:
            listener(status)

    def emit_record(self, rec: RequestRecord) -> None:
        for listener in self.record_listeners:
            listener(rec)

    def emit_health(self, provider: str, healthy: bool, reason: str) -> None:
        if healthy:
            self.cooling.pop(provider, None)
        else:
            self.cooling[provider] = reason
        for listener in self.health_listeners:
            listener(provider, healthy, reason)

    async def start_gateway(self, port: int | None = None) -> GatewayStatus:
        wanted = self._config.server.port if port is None else port
        if wanted in self.taken_ports:
            self.phase, self.error = "error", f"Port {wanted} is already in use."
            raise PortInUseError(self._config.server.host, wanted)
        self.phase, self.error = "running", None
        return self.status()

    async def stop_gateway(self) -> None:
        self.phase = "stopped"

    async def apply_config(
        self, config: AppConfig, secrets: Mapping[str, str], forget: Sequence[str]
    ) -> ApplyResult:
        for entry, value in secrets.items():
            store_secret(entry, value)
        save_config(config, self.config_path)
        moved = (config.server.host, config.server.port) != (
            self._config.server.host,
            self._config.server.port,
        )
        self._config = config
        self.applied.append((config, dict(secrets), list(forget)))
        return ApplyResult(restarted=moved and self.phase == "running")

    async def resolve_secret(self, ref: str) -> str:
        return await self.secrets.resolve(ref)

    async def keyring_status(self) -> KeyringStatus:
        return KeyringStatus(True, "tests.memory_keyring.MemoryKeyring", "Memory keyring.")

    async def test_connection(self, provider: ProviderConfig, key: str | None) -> ConnectionResult:
        self.tested.append((provider, key))
        return self.connection

    async def prepare_claude_launch(self, folder: Path) -> LaunchSpec:
        self.launches.append(folder)
        return LaunchSpec(["claude"], {"ANTHROPIC_BASE_URL": self.status().url}, folder)

    async def shutdown(self) -> None:
        self.phase = "stopped"


@dataclass
class FakeHost:
    calls: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    autostart: bool = False
    launched: list[Path] = field(default_factory=list)

    def show_settings(self) -> None:
        self.calls.append("settings")

    def show_history(self) -> None:
        self.calls.append("history")

    def choose_claude_folder(self) -> None:
        self.calls.append("choose")

    def launch_claude(self, folder: Path) -> None:
        self.launched.append(folder)

    def recent_folders(self) -> list[str]:
        return list(self.folders)

    def open_logs(self) -> None:
        self.calls.append("logs")

    def autostart_enabled(self) -> bool:
        return self.autostart

    def set_autostart(self, enabled: bool) -> None:
        self.autostart = enabled
        self.calls.append(f"autostart={enabled}")

    def quit(self) -> None:
        self.calls.append("quit")


def make_record(
    i: int,
    *,
    now: float | None = None,
    provider: str = "openai",
    model: str = "gpt-4o-mini",
    ok: bool = True,
    cost: float = 0.001,
    spacing: float = 60.0,
) -> RequestRecord:
    base = time.time() if now is None else now
    return RequestRecord(
        id=f"req_{i:08d}",
        time=base - (100_000 - i) * spacing,
        client_api="openai-chat",
        path="/v1/chat/completions",
        requested_model=model,
        provider=provider,
        model=model,
        status=200 if ok else 500,
        ok=ok,
        error=None if ok else "upstream failed",
        input_tokens=100,
        output_tokens=20,
        cost_usd=cost,
        duration_ms=350.0,
    )


def with_keys(config: AppConfig, *keys: AccessKey) -> AppConfig:
    config.access_keys.extend(keys)
    return config
