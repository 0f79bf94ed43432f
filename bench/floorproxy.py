"""The floor: the least a proxy built like the gateway can do, for comparison with the gateway.

It forwards `POST /v1/chat/completions` to the upstream with the gateway's own HTTP stack, an
aiohttp server and the pooled client of `desktop_proxy.server.http1`, and hands the answer back
(streams relayed read by read): no validation, routing, auth, logging, records or usage
reading. Whatever it costs, the gateway cannot go below; the gap between the two is the
gateway's own work.

`python -m bench.floorproxy --upstream http://127.0.0.1:PORT` prints `Listening on URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from desktop_proxy.server.http1 import ConnectionPool

POOL: web.AppKey[ConnectionPool] = web.AppKey("pool", ConnectionPool)
UPSTREAM: web.AppKey[str] = web.AppKey("upstream", str)


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    url = request.app[UPSTREAM] + "/v1/chat/completions"
    upstream = await request.app[POOL].request(
        "POST", url, {"Content-Type": "application/json"}, body
    )
    try:
        if upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
            response = web.StreamResponse(
                status=upstream.status, headers={"Content-Type": "text/event-stream"}
            )
            await response.prepare(request)
            while chunk := await upstream.readany():
                await response.write(chunk)
            await response.write_eof()
            return response
        data = await upstream.read()
    finally:
        upstream.release()
    return web.Response(status=upstream.status, body=data, content_type="application/json")


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = ConnectionPool()
        app[POOL] = pool
        yield
        await pool.close()

    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def serve(upstream: str, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(upstream), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1] if runner.addresses else port
    print(f"Listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floorproxy")
    parser.add_argument("--upstream", required=True, help="the fake upstream's base URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.upstream, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
