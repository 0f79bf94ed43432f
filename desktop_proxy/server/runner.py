"""Start and stop the gateway on the current event loop (plain asyncio or Qt's, via qasync)."""

from __future__ import annotations

import errno
import logging

from aiohttp import web

from desktop_proxy.errors import PortInUseError
from desktop_proxy.server.app import create_app
from desktop_proxy.server.state import GatewayState

log = logging.getLogger(__name__)

_ADDR_IN_USE = {errno.EADDRINUSE, 10048}  # 10048: WSAEADDRINUSE on Windows


def format_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}"


class GatewayServer:
    """One listening gateway. `start()` binds, `stop()` drains in-flight requests and closes."""

    def __init__(
        self,
        state: GatewayState,
        host: str,
        port: int,
        *,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.state = state
        self.host = host
        self.requested_port = port
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def running(self) -> bool:
        return self._site is not None

    @property
    def port(self) -> int:
        if self._site is None:
            return self.requested_port
        return self._site.port

    @property
    def url(self) -> str:
        return format_url(self.host, self.port)

    async def start(self) -> None:
        app = create_app(self.state)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.shutdown_timeout, handle_signals=False
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.requested_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno in _ADDR_IN_USE:
                raise PortInUseError(self.host, self.requested_port) from exc
            raise
        self._runner, self._site = runner, site
        log.info("gateway listening on %s", self.url)

    async def stop(self) -> None:
        runner, self._runner, self._site = self._runner, None, None
        if runner is not None:
            await runner.cleanup()
            log.info("gateway stopped")
