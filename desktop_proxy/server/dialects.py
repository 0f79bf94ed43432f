"""Which API a client speaks, and errors shaped the way that API's SDKs expect them."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from aiohttp import web

from desktop_proxy.protocols.errors import anthropic_error_body, openai_error_body


class Dialect(Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


def dialect_for(request: web.Request) -> Dialect:
    """Guess the caller's API from the path, falling back to Anthropic's telltale headers."""
    path = request.path
    if path.startswith("/anthropic/") or "/messages" in path:
        return Dialect.ANTHROPIC
    if path.startswith("/openai/"):
        return Dialect.OPENAI
    if "anthropic-version" in request.headers:
        return Dialect.ANTHROPIC
    return Dialect.OPENAI


def error_body(dialect: Dialect, status: int, message: str, **extra: Any) -> dict[str, Any]:
    if dialect is Dialect.ANTHROPIC:
        return anthropic_error_body(status, message, extra.get("type"))
    return openai_error_body(
        status, message, extra.get("type"), code=extra.get("code"), param=extra.get("param")
    )


def error_response(
    dialect: Dialect,
    status: int,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body = error_body(dialect, status, message, **extra)
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode(),
        content_type="application/json",
        headers=headers,
    )


class GatewayHTTPError(Exception):
    """An error to answer in the caller's dialect; raised anywhere below a handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self, dialect: Dialect) -> web.Response:
        return error_response(
            dialect, self.status, self.message, headers=self.headers, **self.extra
        )
