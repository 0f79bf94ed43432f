"""The app's event loop: qasync with asyncio-style timers, so the timeouts aiohttp arms and
cancels for every request do not pile up (bench/ui_stall.py measured the stalls they caused)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from desktop_proxy.gui.loop import GatewayEventLoop

pytestmark = pytest.mark.gui


@pytest.fixture
def loop(qapp: object) -> Iterator[GatewayEventLoop]:
    loop = GatewayEventLoop(qapp)
    try:
        yield loop
    finally:
        loop.close()


def test_delayed_callbacks_run_in_order_and_on_time(loop: GatewayEventLoop) -> None:
    ran: list[str] = []

    async def main() -> None:
        start = loop.time()
        loop.call_later(0.06, ran.append, "c")
        loop.call_later(0.02, ran.append, "a")
        loop.call_at(start + 0.04, ran.append, "b")
        loop.call_soon(ran.append, "now")
        dropped = loop.call_later(0.03, ran.append, "cancelled")
        dropped.cancel()
        await asyncio.sleep(0.1)
        assert loop.time() - start >= 0.1

    loop.run_until_complete(main())
    assert ran == ["now", "a", "b", "c"]


def test_timeouts_still_time_out(loop: GatewayEventLoop) -> None:
    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.05)
        return time.monotonic() - started

    assert 0.04 <= loop.run_until_complete(main()) < 2


def test_cancelled_timers_do_not_pile_up(loop: GatewayEventLoop) -> None:
    async def main() -> int:
        for _ in range(10_000):
            loop.call_later(300, lambda: None).cancel()
        await asyncio.sleep(0)
        return loop.scheduled_timers

    assert loop.run_until_complete(main()) <= 200


def test_http_requests_leave_no_timers_behind(loop: GatewayEventLoop) -> None:
    """aiohttp server and client on the loop: a few hundred requests, a handful of timers."""

    async def hello(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def main() -> tuple[int, int]:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        ok = 0
        try:
            timeout = aiohttp.ClientTimeout(total=30, sock_read=30)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                for _ in range(300):
                    async with session.get(f"http://127.0.0.1:{port}/") as resp:
                        ok += resp.status == 200
                left = loop.scheduled_timers
        finally:
            await runner.cleanup()
        return ok, left

    ok, left = loop.run_until_complete(main())
    assert ok == 300
    assert left < 100  # qasync alone kept every one of the ~1,000 cancelled timeouts
