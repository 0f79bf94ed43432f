"""The one facade the CLI and the tray both drive: config, secrets, the gateway, (later) history.

Nothing here imports Qt. The GUI observes state through plain callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as pysecrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from desktop_proxy.config.loader import load_config, load_or_create
from desktop_proxy.config.models import AppConfig
from desktop_proxy.config.secrets import SecretResolver
from desktop_proxy.errors import InsecureBindError
from desktop_proxy.history.pricing import Pricer
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.remote import AnyHistoryWriter, HistoryWriterProcess
from desktop_proxy.history.writer import HistoryWriter, WriterStatus
from desktop_proxy.paths import AppPaths
from desktop_proxy.server.runner import GatewayServer
from desktop_proxy.server.state import (
    GatewayState,
    ResolvedAccessKey,
    Restrictions,
    is_loopback_host,
)

log = logging.getLogger(__name__)


def generate_access_key() -> str:
    return "dp-" + pysecrets.token_urlsafe(24)


@dataclass(slots=True)
class GatewayOptions:
    """Per-run overrides from the command line (or the tray)."""

    host: str | None = None
    port: int | None = None
    access_keys: Sequence[ResolvedAccessKey] = ()
    only_providers: Sequence[str] | None = None
    only_models: Sequence[str] | None = None
    history: bool | None = None
    allow_insecure_remote: bool = False
    shutdown_timeout: float = 5.0
    # The history writer runs in a process of its own (history/remote.py); False keeps it in
    # a thread of this one (tests that start hundreds of gateways).
    history_process: bool = True


@dataclass
class Services:
    paths: AppPaths
    config_file: Path | None = None
    secrets: SecretResolver = field(default_factory=SecretResolver)
    config: AppConfig | None = None
    created_config: bool = False
    gateway: GatewayServer | None = None
    record_listeners: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    # Called from the history writer's thread when the database degrades or recovers.
    history_status_listeners: list[Callable[[WriterStatus], None]] = field(default_factory=list)
    history_writer: AnyHistoryWriter | None = None
    history_process: bool = True
    pricer: Pricer | None = None
    history_forced_off: bool = False  # serve --no-history: config reloads must not turn it on

    @property
    def config_path(self) -> Path:
        return self.config_file or self.paths.config_file

    def load_config(self) -> AppConfig:
        """Read the config file; a missing default file is created with the first-run default.

        Raises:
            ConfigError: the file is unreadable or invalid (the message names key paths).
        """
        if self.config_file is not None:
            self.config = load_config(self.config_file)
            self.created_config = False
        else:
            self.config, self.created_config = load_or_create(
                self.paths.config_file, write_default=True
            )
        return self.config

    async def resolve_access_keys(self, config: AppConfig) -> list[ResolvedAccessKey]:
        keys = []
        for i, entry in enumerate(config.access_keys):
            value = await self.secrets.resolve(entry.key, where=f"accessKeys[{i}].key")
            keys.append(ResolvedAccessKey(entry.name, value))
        return keys

    async def start_gateway(self, options: GatewayOptions | None = None) -> GatewayServer:
        """Start listening. Raises PortInUseError, InsecureBindError, ConfigError, SecretError."""
        opts = options or GatewayOptions()
        config = self.config or self.load_config()
        host = opts.host or config.server.host
        port = config.server.port if opts.port is None else opts.port
        access_keys = [*await self.resolve_access_keys(config), *opts.access_keys]
        insecure_ok = opts.allow_insecure_remote or config.server.allow_insecure_remote
        if not is_loopback_host(host) and not access_keys and not insecure_ok:
            raise InsecureBindError(
                f"Refusing to listen on {host} without an access key: anyone who can reach this "
                "machine could spend your provider keys. Add an access key (serve -k KEY, "
                "serve -g, or accessKeys in config.json), or pass --insecure-no-auth if you "
                "really mean to serve an open gateway on your network."
            )
        self.history_forced_off = opts.history is False
        self.history_process = opts.history_process
        history_on = config.history.enabled and not self.history_forced_off
        if history_on:
            # Off the loop (also the UI thread): starting the writer process forks.
            await asyncio.to_thread(self._open_history, config)
        recorder = _ServicesRecorder(self)
        state = GatewayState(
            config=config,
            secrets=self.secrets,
            access_keys=access_keys,
            bind_host=host,
            restrictions=Restrictions(opts.only_providers, opts.only_models),
            recorder=recorder,
            capture_bodies=history_on and config.history.store_bodies,
        )
        server = GatewayServer(state, host, port, shutdown_timeout=opts.shutdown_timeout)
        try:
            await server.start()
        except BaseException:
            await self._close_history()
            raise
        self.gateway = server
        return server

    def _open_history(self, config: AppConfig) -> None:
        self.pricer = Pricer.from_config(config)
        if self.record_listeners:
            # Live views (the tray) show each request's cost as it finishes: that needs the
            # price tables in this process too. Without them (serve) only the writer's process
            # loads them, sparing the gateway ~20 MB and a quarter second of CPU at start.
            self.pricer.warm_up_in_background()
        path = self.paths.history_db
        writer: AnyHistoryWriter | None = None
        if self.history_process:
            process = HistoryWriterProcess(path, settings=config.history, pricer=self.pricer)
            process.listeners.extend(self.history_status_listeners)
            try:
                writer = process.start()
            except OSError as exc:
                log.warning(
                    "history: could not start the writer process (%s); writing from the "
                    "gateway's process instead",
                    exc,
                )
        if writer is None:
            thread_writer = HistoryWriter.in_gateway_process(
                path, settings=config.history, pricer=self.pricer
            )
            thread_writer.listeners.extend(self.history_status_listeners)
            writer = thread_writer.start()
        self.history_writer = writer

    async def _close_history(self) -> None:
        writer, self.history_writer = self.history_writer, None
        if writer is not None:
            await writer.aclose()

    async def stop_gateway(self) -> None:
        server, self.gateway = self.gateway, None
        if server is not None:
            await server.stop()
        # After the server: in-flight requests finished, so every record is in the queue.
        await self._close_history()

    async def reload_config(self) -> AppConfig:
        """Re-read the config file and apply it without dropping in-flight requests."""
        config = await asyncio.to_thread(self.load_config)
        if self.gateway is not None:
            keys = await self.resolve_access_keys(config)
            writer = self.history_writer
            wanted = config.history.enabled and not self.history_forced_off
            if wanted and writer is None:
                await asyncio.to_thread(self._open_history, config)
            elif not wanted and writer is not None:
                await self._close_history()
            elif writer is not None:
                self.pricer = Pricer.from_config(config)
                writer.configure(config.history, self.pricer)
            state = self.gateway.state
            state.capture_bodies = self.history_writer is not None and config.history.store_bodies
            state.apply_config(config, keys)
        return config


class _ServicesRecorder:
    """The gateway's recorder: prices the record for live views, hands it to the history
    writer (a queue append), then to listeners (tray, tests). Never blocks, never raises."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def record(self, rec: RequestRecord) -> None:
        services = self._services
        writer = services.history_writer
        try:
            # Priced here only for live views (tray, History window, tests); the history
            # writer prices what arrives unpriced, off the event loop.
            if services.pricer is not None and services.record_listeners:
                if not Pricer.ready():  # a live view that started listening since
                    services.pricer.warm_up_in_background()
                services.pricer.apply(rec)
            if writer is not None:
                writer.record(rec)
        except Exception:  # a record must never fail a request
            log.exception("could not hand a request record to history")
        for listener in list(services.record_listeners):
            try:
                listener(rec)
            except Exception:
                log.exception("a request record listener failed")
