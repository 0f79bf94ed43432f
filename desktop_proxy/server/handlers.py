"""HTTP routes. Each handler validates the edge, resolves the model and hands over to Exchange."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from desktop_proxy._version import __version__
from desktop_proxy.history.record import RequestRecord
from desktop_proxy.protocols import anthropic as anthropic_codec
from desktop_proxy.protocols.errors import ProtocolError
from desktop_proxy.protocols.tokens import estimate_request_tokens
from desktop_proxy.routing import Route, UnknownModelError
from desktop_proxy.server.dialects import Dialect, GatewayHTTPError, error_body
from desktop_proxy.server.exchange import ClientGone, Exchange
from desktop_proxy.server.records import log_request, new_record
from desktop_proxy.server.state import STATE, GatewayState
from desktop_proxy.server.upstream import Endpoint

log = logging.getLogger(__name__)

PREFIXES = ("", "/openai", "/anthropic")


async def root(request: web.Request) -> web.Response:
    return web.Response(text=f"desktop-proxy {__version__} is running. See /health.\n")


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cooling = state.health.cooling_providers()
    providers = [
        {
            "name": p.name,
            "kind": p.kind,
            "protocol": p.protocol,
            "enabled": p.enabled,
            "models": len(p.models),
            "status": "cooldown" if p.name in cooling else ("ok" if p.enabled else "disabled"),
        }
        for p in state.config.providers
    ]
    return web.json_response(
        {
            "status": "degraded" if cooling else "ok",
            "version": __version__,
            "uptime": round(state.uptime, 3),
            "accessKeyRequired": not state.open_access,
            "providers": providers,
        }
    )


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    created = int(state.started_at)
    data = [
        {
            "id": entry.id,
            "object": "model",
            "created": created,
            "owned_by": entry.owned_by,
            # Anthropic's list shape, so Claude Code's model discovery reads the same list.
            "type": "model",
            "display_name": entry.id,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        }
        for entry in state.router.list_models()
    ]
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


# --- the API routes --------------------------------------------------------------------------


async def read_json_body(request: web.Request, rec: RequestRecord | None = None) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app[STATE].config.server.max_body_bytes
        raise GatewayHTTPError(
            413,
            f"Request body is larger than the gateway's limit of {limit // (1024 * 1024)} MiB "
            "(server.maxBodyBytes in config.json).",
            type="request_too_large",
        ) from exc
    if rec is not None and request.app[STATE].capture_bodies:
        rec.request_body = raw
    if not raw:
        raise GatewayHTTPError(400, "Request body is empty; expected a JSON object.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatewayHTTPError(400, f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise GatewayHTTPError(
            400, f"Request body must be a JSON object, got {type(body).__name__}."
        )
    return body


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise GatewayHTTPError(
            400, "'model' is required and must be a non-empty string.", param="model"
        )
    return model


def require_list(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if not isinstance(value, list) or not value:
        raise GatewayHTTPError(
            400, f"'{name}' is required and must be a non-empty array.", param=name
        )


def stream_flag(body: dict[str, Any]) -> bool:
    value = body.get("stream", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise GatewayHTTPError(400, "'stream' must be true or false.", param="stream")
    return value


def resolve_routes(
    state: GatewayState, model: str, *, protocols: tuple[str, ...] = ()
) -> list[Route]:
    try:
        routes = state.router.candidates(model)
    except UnknownModelError as exc:
        raise GatewayHTTPError(404, exc.message, code="model_not_found", param="model") from exc
    if protocols:
        routes = [r for r in routes if r.provider.protocol in protocols]
        if not routes:
            raise GatewayHTTPError(
                400,
                f"Model '{model}' is served by a provider that does not offer this endpoint.",
                param="model",
            )
    return routes


@contextlib.contextmanager
def recorded(state: GatewayState, rec: RequestRecord, dialect: Dialect) -> Iterator[None]:
    """Finish `rec` on every exit path, then log it and hand it to history exactly once."""
    try:
        yield
    except GatewayHTTPError as exc:
        rec.finish(exc.status, exc.message)
        if state.capture_bodies:
            rec.response_body = json.dumps(error_body(dialect, exc.status, exc.message)).encode()
        raise
    except asyncio.CancelledError:
        if rec.status == 0:
            rec.finish(499, "client closed the connection")
        raise
    except Exception as exc:
        rec.finish(500, f"internal error: {type(exc).__name__}")
        raise
    finally:
        log_request(rec)
        state.recorder.record(rec)


async def run_exchange(
    request: web.Request,
    dialect: Dialect,
    endpoint: Endpoint,
    client_api: str,
) -> web.StreamResponse:
    state = request.app[STATE]
    rec = new_record(request, client_api)
    with recorded(state, rec, dialect):
        body = await read_json_body(request, rec)
        model = require_model(body)
        rec.requested_model = model
        if endpoint == "chat" or endpoint == "messages":
            require_list(body, "messages")
        elif endpoint == "embeddings" and "input" not in body:
            raise GatewayHTTPError(400, "'input' is required.", param="input")
        stream = stream_flag(body) if endpoint in ("chat", "messages") else False
        rec.stream = stream
        routes = resolve_routes(
            state, model, protocols=("openai",) if endpoint == "embeddings" else ()
        )
        exchange = Exchange(
            request=request,
            state=state,
            record=rec,
            dialect=dialect,
            body=body,
            routes=routes,
            stream=stream,
            endpoint=endpoint,
            requested_model=model,
        )
        try:
            response = await exchange.run()
        except ClientGone:
            # Nobody to answer; aiohttp drops a response it cannot send without complaint.
            return web.Response(status=499)
        if rec.status == 0:
            rec.finish(response.status)
        exchange.fill_missing_usage()
        return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await run_exchange(request, Dialect.OPENAI, "chat", "openai-chat")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await run_exchange(request, Dialect.OPENAI, "embeddings", "openai-embeddings")


async def messages(request: web.Request) -> web.StreamResponse:
    return await run_exchange(request, Dialect.ANTHROPIC, "messages", "anthropic")


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """Forwarded to Anthropic upstreams; counted locally for everything else. Never a 404."""
    state = request.app[STATE]
    rec = new_record(request, "anthropic-count-tokens")
    with recorded(state, rec, Dialect.ANTHROPIC):
        body = await read_json_body(request, rec)
        model = require_model(body)
        rec.requested_model = model
        require_list(body, "messages")
        routes = resolve_routes(state, model)
        anthropic_routes = [r for r in routes if r.provider.protocol == "anthropic"]
        if anthropic_routes:
            exchange = Exchange(
                request=request,
                state=state,
                record=rec,
                dialect=Dialect.ANTHROPIC,
                body=body,
                routes=anthropic_routes,
                stream=False,
                endpoint="count_tokens",
                requested_model=model,
            )
            try:
                response = await exchange.run()
            except GatewayHTTPError as exc:
                # An auxiliary count must not fail the client: estimate instead.
                log.info("count_tokens upstream failed (%s); estimating locally", exc.message)
            else:
                rec.finish(response.status)
                return response
        try:
            decoded = anthropic_codec.decode_request(body, require_max_tokens=False)
        except ProtocolError as exc:
            raise GatewayHTTPError(exc.status, str(exc), param=exc.param) from exc
        counted = estimate_request_tokens(decoded)
        if state.capture_bodies:
            rec.response_body = json.dumps({"input_tokens": counted}).encode()
        # Nothing was billed: the record carries no tokens, only that a count was served.
        rec.provider, rec.model = None, None
        rec.finish(200)
        return web.json_response({"input_tokens": counted})


API_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/v1/models", list_models),
    ("GET", "/models", list_models),
    ("POST", "/v1/chat/completions", chat_completions),
    ("POST", "/chat/completions", chat_completions),
    ("POST", "/v1/embeddings", embeddings),
    ("POST", "/embeddings", embeddings),
    ("POST", "/v1/messages", messages),
    ("POST", "/v1/messages/count_tokens", count_tokens),
)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/health", health, allow_head=True)
    for prefix in PREFIXES:
        for method, path, handler in API_ROUTES:
            app.router.add_route(method, prefix + path, handler)
            # Registered per path so CORS preflights reach the guard middleware.
            app.router.add_route("OPTIONS", prefix + path, _preflight_fallback)


async def _preflight_fallback(request: web.Request) -> web.Response:
    # The guard middleware answers preflights; reaching here means the guard let it through.
    return web.Response(status=204)
