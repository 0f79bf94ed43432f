"""Creating, logging and handing over the per-request record."""

from __future__ import annotations

import logging

from aiohttp import web

from desktop_proxy.history.record import RequestRecord

log = logging.getLogger("desktop_proxy.requests")

ACCESS_KEY_NAME: web.RequestKey[str] = web.RequestKey("access_key_name", str)

_CLIENT_APIS = (
    ("/messages/count_tokens", "anthropic-count-tokens"),
    ("/messages", "anthropic"),
    ("/chat/completions", "openai-chat"),
    ("/embeddings", "openai-embeddings"),
    ("/models", "models"),
)


def client_api_for(path: str) -> str:
    for suffix, api in _CLIENT_APIS:
        if path.endswith(suffix):
            return api
    return "other"


def new_record(request: web.Request, client_api: str | None = None) -> RequestRecord:
    headers = request.headers
    client = headers.get("User-Agent")
    app = headers.get("x-app")
    return RequestRecord(
        client_api=client_api or client_api_for(request.path),
        path=request.path,
        client=f"{client} ({app})" if client and app else (client or app),
        session_id=headers.get("X-Claude-Code-Session-Id"),
        access_key=request.get(ACCESS_KEY_NAME),
    )


def log_request(rec: RequestRecord) -> None:
    """One line per request: failures at INFO, successes at DEBUG.

    History already records every request; formatting and writing a line for each success
    cost about a fifth of the gateway's CPU under load (docs/performance.md).
    """
    level = logging.DEBUG if rec.ok else logging.INFO
    if not log.isEnabledFor(level):
        return
    target = f"{rec.provider}:{rec.model}" if rec.provider else "-"
    log.log(
        level,
        "%s %s %s -> %s %d %.0fms%s%s",
        rec.client_api,
        rec.requested_model or "-",
        "stream" if rec.stream else "whole",
        target,
        rec.status,
        rec.duration_ms or 0.0,
        f" tokens={rec.input_tokens}/{rec.output_tokens}" if rec.input_tokens is not None else "",
        f" error={rec.error!r}" if rec.error else "",
    )
