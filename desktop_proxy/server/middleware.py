"""Error shaping, local-safety guards (DNS rebinding, browser origins, CORS) and access keys."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from desktop_proxy.server.dialects import (
    GatewayHTTPError,
    dialect_for,
    error_response,
)
from desktop_proxy.server.records import ACCESS_KEY_NAME, log_request, new_record
from desktop_proxy.server.state import STATE, is_loopback_host

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/", "/health"})
CORS_ALLOW_METHODS = "GET, POST, HEAD, OPTIONS"
CORS_DEFAULT_HEADERS = (
    "Authorization, Content-Type, x-api-key, anthropic-version, anthropic-beta, "
    "OpenAI-Organization, OpenAI-Project, x-stainless-*"
)

CORS_ORIGIN: web.RequestKey[str] = web.RequestKey("cors_origin", str)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves in the caller's API error shape; tracebacks go to the log only."""
    try:
        return await handler(request)
    except GatewayHTTPError as exc:
        return exc.response(dialect_for(request))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = _http_exception_message(request, exc)
        return error_response(dialect_for(request), exc.status, message)
    except Exception:
        log.exception("unexpected error while handling %s %s", request.method, request.path)
        return error_response(
            dialect_for(request),
            500,
            "desktop-proxy hit an internal error while handling this request; "
            "details are in its log file. The gateway is still running.",
        )


def _http_exception_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return (
            f"No route for {request.method} {request.path}. desktop-proxy serves /v1/models, "
            "/v1/chat/completions, /v1/embeddings, /v1/messages, /v1/messages/count_tokens "
            "and /health."
        )
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}."
    if exc.status == 413:
        limit = request.app[STATE].config.server.max_body_bytes
        return (
            f"Request body is larger than the gateway's limit of {limit // (1024 * 1024)} MiB "
            "(server.maxBodyBytes in config.json)."
        )
    return exc.reason or "HTTP error"


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def refuse(request: web.Request, status: int, message: str, **extra: Any) -> GatewayHTTPError:
    """A refused request is still a request: it gets its record (and a log line)."""
    rec = new_record(request)
    rec.finish(status, message)
    log_request(rec)
    request.app[STATE].recorder.record(rec)
    return GatewayHTTPError(status, message, **extra)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Keep web pages from spending the user's keys through a gateway on loopback.

    A page can point a DNS name at 127.0.0.1 (rebinding) or call the gateway from script: the
    first shows up as a foreign Host, the second as a foreign Origin.
    """
    state = request.app[STATE]
    host = request.headers.get("Host")
    if state.loopback_only and host and not is_loopback_host(_host_name(host)):
        raise refuse(
            request,
            403,
            f"Host '{host}' is not allowed: this gateway listens on loopback and only answers "
            "to localhost names (protection against DNS rebinding).",
            type="permission_error",
        )
    origin = request.headers.get("Origin")
    allowed = state.config.server.allowed_origins
    origin_ok = origin is None or "*" in allowed or origin in allowed
    if request.method == "OPTIONS":
        if origin is None or not origin_ok:
            raise refuse(
                request,
                403,
                f"Origin '{origin}' is not allowed to call this gateway. Add it to "
                "server.allowedOrigins in config.json if you trust it.",
                type="permission_error",
            )
        requested = request.headers.get("Access-Control-Request-Headers", CORS_DEFAULT_HEADERS)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
                "Access-Control-Allow-Headers": requested,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    if not origin_ok:
        raise refuse(
            request,
            403,
            f"Origin '{origin}' is not allowed to call this gateway. Add it to "
            "server.allowedOrigins in config.json if you trust it.",
            type="permission_error",
        )
    if origin is not None:
        # Read by the on_response_prepare hook, which runs before any body (even a stream).
        request[CORS_ORIGIN] = origin
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    origin = request.get(CORS_ORIGIN)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"


def presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or request.headers.get("api-key")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    if state.open_access or request.path in PUBLIC_PATHS:
        return await handler(request)
    key = presented_key(request)
    if not key:
        raise refuse(
            request,
            401,
            "Missing access key. This gateway requires one: send it as "
            "'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            code="invalid_api_key",
        )
    match = state.match_access_key(key)
    if match is None:
        raise refuse(
            request,
            401,
            "Invalid access key. Check the key your client sends against the gateway's "
            "access keys (`desktop-proxy config show`).",
            code="invalid_api_key",
        )
    request[ACCESS_KEY_NAME] = match.name
    return await handler(request)
