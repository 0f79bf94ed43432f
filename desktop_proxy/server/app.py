"""The aiohttp application: middlewares, routes and the upstream client's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from desktop_proxy.server.handlers import setup_routes
from desktop_proxy.server.middleware import (
    add_cors_headers,
    auth_middleware,
    error_middleware,
    guard_middleware,
)
from desktop_proxy.server.state import STATE, GatewayState
from desktop_proxy.server.upstream import UpstreamClient


async def _upstream_client(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.upstream = UpstreamClient(state.config.routing.timeouts)
    yield
    client, state.upstream = state.upstream, None
    await client.close()


def create_app(state: GatewayState) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, guard_middleware, auth_middleware],
        client_max_size=state.config.server.max_body_bytes,
    )
    app[STATE] = state
    app.on_response_prepare.append(add_cors_headers)
    app.cleanup_ctx.append(_upstream_client)
    setup_routes(app)
    return app
