"""One client request carried to an upstream and back.

Two paths:

* passthrough — the client and the upstream speak the same protocol: the body is forwarded
  with only the model (and auth) rewritten, and streams are relayed event by event as they
  arrive, with usage read on the side. Anthropic thinking signatures and cache_control survive
  untouched because nothing is decoded into the internal form.
* translation — the client's codec decodes the request into the internal form, the upstream's
  codec encodes it; responses and streams go back the same way through incremental state
  machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from desktop_proxy.history.record import RequestRecord
from desktop_proxy.history.store import CAPTURE_LIMIT
from desktop_proxy.protocols import anthropic as anthropic_codec
from desktop_proxy.protocols import internal as ir
from desktop_proxy.protocols import openai_chat as openai_codec
from desktop_proxy.protocols.errors import (
    ProtocolError,
    anthropic_status_for_upstream,
    extract_error_message,
    openai_status_for_upstream,
)
from desktop_proxy.protocols.quirks import traits_for
from desktop_proxy.protocols.sse import SSEDecoder, SSEEvent
from desktop_proxy.protocols.tokens import estimate_request_tokens, estimate_tokens
from desktop_proxy.routing import Route
from desktop_proxy.server.dialects import Dialect, GatewayHTTPError, error_body
from desktop_proxy.server.http1 import HTTPClientError
from desktop_proxy.server.state import GatewayState
from desktop_proxy.server.upstream import (
    Attempt,
    Endpoint,
    UpstreamFailure,
    UpstreamResponse,
    UpstreamUnavailable,
    send_with_failover,
    upstream_headers,
    upstream_url,
)

log = logging.getLogger(__name__)

Protocol = Literal["openai", "anthropic"]
# Claude Code shows a stall warning after ~20 s without bytes; a ping every 10 s keeps it calm
# while the upstream read timeout still ends a dead stream.
KEEPALIVE_SECONDS = 10.0
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_PASSTHROUGH_RESPONSE_HEADERS = ("request-id", "x-request-id", "openai-processing-ms")


class ClientGone(Exception):
    """The client disconnected before its response began; there is nobody to answer."""


def protocol_of(dialect: Dialect) -> Protocol:
    return "anthropic" if dialect is Dialect.ANTHROPIC else "openai"


@dataclass
class Exchange:
    request: web.Request
    state: GatewayState
    record: RequestRecord
    dialect: Dialect
    body: dict[str, Any]
    routes: list[Route]
    stream: bool
    endpoint: Endpoint
    requested_model: str
    # State gathered while the exchange runs.
    _decoded: ir.Request | None = None
    _anthropic_usage: ir.Usage | None = None  # cumulative over message_start/message_delta
    _stream_error: str | None = None
    _output_chars: list[str] = field(default_factory=list)  # for estimates when usage is missing
    _captured: bytearray = field(default_factory=bytearray)  # what the client was sent

    # --- request side --------------------------------------------------------------------

    def decoded(self) -> ir.Request:
        if self._decoded is None:
            codec = anthropic_codec if self.dialect is Dialect.ANTHROPIC else openai_codec
            try:
                self._decoded = codec.decode_request(self.body)
            except ProtocolError as exc:
                raise GatewayHTTPError(exc.status, str(exc), param=exc.param) from exc
        return self._decoded

    def client_wants_usage(self) -> bool:
        opts = self.body.get("stream_options")
        return isinstance(opts, dict) and opts.get("include_usage") is True

    def upstream_payload(self, route: Route) -> bytes:
        provider = route.provider
        if provider.protocol == protocol_of(self.dialect):
            out = dict(self.body)
            out["model"] = route.upstream_model
            if provider.protocol == "anthropic":
                strip_unsigned_thinking(out)
            if (
                self.stream
                and provider.protocol == "openai"
                and not self.client_wants_usage()
                # Looked up only here: traits_for costs tens of µs, a passthrough rarely needs it.
                and traits_for(
                    provider.kind, route.upstream_model, provider.max_output_tokens
                ).supports_stream_options
            ):
                # Ask for usage so history can record it; the extra chunk is not relayed.
                opts = out.get("stream_options")
                out["stream_options"] = {
                    **(opts if isinstance(opts, dict) else {}),
                    "include_usage": True,
                }
            return json.dumps(out, ensure_ascii=False).encode()
        traits = traits_for(provider.kind, route.upstream_model, provider.max_output_tokens)
        req = self.decoded()
        try:
            if provider.protocol == "anthropic":
                encoded = anthropic_codec.encode_request(req, route.upstream_model, traits=traits)
            else:
                encoded = openai_codec.encode_request(req, route.upstream_model, traits=traits)
        except ProtocolError as exc:
            raise GatewayHTTPError(exc.status, str(exc), param=exc.param) from exc
        return json.dumps(encoded, ensure_ascii=False).encode()

    async def send(self, route: Route, key: str | None) -> UpstreamResponse:
        provider = route.provider
        endpoint: Endpoint = self.endpoint
        if provider.protocol != protocol_of(self.dialect) and endpoint in ("chat", "messages"):
            endpoint = "messages" if provider.protocol == "anthropic" else "chat"
        url = upstream_url(provider, endpoint, route.upstream_model)
        client_headers = self.request.headers if self.dialect is Dialect.ANTHROPIC else None
        headers = upstream_headers(provider, key, client_headers=client_headers, stream=self.stream)
        return await self.state.upstream_client().post(
            provider, url, headers, self.upstream_payload(route)
        )

    # --- running it ----------------------------------------------------------------------

    async def run(self) -> web.StreamResponse:
        try:
            attempt = await send_with_failover(
                self.routes,
                self.send,
                self.state.provider_key,
                self.state.health,
                auxiliary=self.endpoint == "count_tokens",
            )
        except UpstreamUnavailable as exc:
            raise GatewayHTTPError(exc.status, exc.message) from exc
        except UpstreamFailure as exc:
            raise self.failure_error(exc) from exc
        rec = self.record
        rec.provider = attempt.route.provider.name
        rec.model = attempt.route.upstream_model
        rec.upstream_key_id = attempt.key_id
        rec.mark_first_byte()
        same = attempt.route.provider.protocol == protocol_of(self.dialect)
        try:
            if not self.stream:
                return await self.respond_whole(attempt, same)
            if same:
                return await self.relay_passthrough(attempt)
            return await self.relay_translated(attempt)
        finally:
            if self._captured:
                rec.response_body = bytes(self._captured)

    def failure_error(self, exc: UpstreamFailure) -> GatewayHTTPError:
        """Pass an upstream's error on, in the caller's shape, naming the provider."""
        try:
            parsed: object = json.loads(exc.body)
        except ValueError:
            parsed = exc.body.decode("utf-8", "replace")[:500]
        message = extract_error_message(parsed, f"HTTP {exc.status}")
        if self.dialect is Dialect.ANTHROPIC:
            status = anthropic_status_for_upstream(exc.status, parsed)
        else:
            status = openai_status_for_upstream(exc.status)
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() in ("retry-after", "retry-after-ms")
        }
        return GatewayHTTPError(
            status,
            f"{message} (from provider '{exc.provider}')",
            headers=headers or None,
        )

    async def respond_whole(self, attempt: Attempt, same: bool) -> web.Response:
        upstream = attempt.response
        try:
            data = await upstream.read()
        except (HTTPClientError, TimeoutError) as exc:
            raise GatewayHTTPError(
                504 if isinstance(exc, TimeoutError) else 502,
                f"provider '{attempt.route.provider.name}' broke off its answer: {exc}",
            ) from exc
        finally:
            upstream.release()
        try:
            payload = json.loads(data)
        except ValueError as exc:
            raise GatewayHTTPError(
                502,
                f"provider '{attempt.route.provider.name}' answered with invalid JSON",
            ) from exc
        if same:
            self.read_usage(payload, attempt.route.provider.protocol)
            if (
                self.dialect is Dialect.ANTHROPIC
                and isinstance(payload, dict)
                and payload.get("model") != self.requested_model
            ):
                payload["model"] = self.requested_model
                data = json.dumps(payload, ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json"}
            for name in _PASSTHROUGH_RESPONSE_HEADERS:
                value = upstream.headers.get(name)
                if value is not None:
                    headers[name] = value
            self.capture(data)
            return web.Response(status=upstream.status, body=data, headers=headers)
        up_codec = (
            anthropic_codec if attempt.route.provider.protocol == "anthropic" else openai_codec
        )
        try:
            response = up_codec.decode_response(payload)
        except ProtocolError as exc:
            raise GatewayHTTPError(
                502, f"provider '{attempt.route.provider.name}' sent an unreadable answer: {exc}"
            ) from exc
        if isinstance(payload, dict) and payload.get("usage"):
            self.set_usage(response.usage)
        else:
            self._output_chars.extend(_response_text(response))
        client_codec = anthropic_codec if self.dialect is Dialect.ANTHROPIC else openai_codec
        out = client_codec.encode_response(response, self.requested_model)
        encoded = json.dumps(out, ensure_ascii=False).encode()
        self.capture(encoded)
        return web.Response(body=encoded, content_type="application/json")

    # --- usage ---------------------------------------------------------------------------

    def fill_missing_usage(self) -> None:
        """Estimate tokens for a successful request whose upstream reported none.

        Some servers ignore stream_options or send no usage at all; history would otherwise
        show those requests as free. The record says the figures are estimates.
        """
        rec = self.record
        if rec.status != 200 or rec.output_tokens is not None or rec.input_tokens is not None:
            return
        try:
            rec.input_tokens = estimate_request_tokens(self.decoded())
        except GatewayHTTPError:
            return
        text = "".join(self._output_chars)
        if not text and rec.response_body is not None:
            text = _text_from_captured(rec.response_body)
        rec.output_tokens = estimate_tokens(text) if text else 0
        rec.usage_estimated = True

    def set_usage(self, usage: ir.Usage) -> None:
        rec = self.record
        rec.input_tokens = usage.input_tokens
        rec.output_tokens = usage.output_tokens
        rec.cache_read_tokens = usage.cache_read_tokens
        rec.cache_write_tokens = usage.cache_write_tokens
        rec.reasoning_tokens = usage.reasoning_tokens

    def read_usage(self, payload: object, protocol: Protocol) -> None:
        if not isinstance(payload, dict):
            return
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            return
        if protocol == "openai":
            self.set_usage(openai_codec.decode_usage(usage))
        else:
            merged = anthropic_codec.decode_usage(usage, self._anthropic_usage or ir.Usage())
            self._anthropic_usage = merged
            self.set_usage(merged)

    # --- streams -------------------------------------------------------------------------

    async def open_stream(self, upstream: UpstreamResponse) -> web.StreamResponse:
        """Send the stream's headers; a client already gone is a 499, not a server error."""
        response = web.StreamResponse(status=200, headers=SSE_HEADERS)
        try:
            await response.prepare(self.request)
        except ConnectionResetError:
            self.record.finish(499, "client closed the connection before the stream began")
            upstream.close()
            raise ClientGone from None
        return response

    @staticmethod
    async def upstream_chunks(
        upstream: UpstreamResponse, keepalive: float | None
    ) -> AsyncIterator[bytes | None]:
        """Yield upstream reads as they arrive; `None` marks `keepalive` seconds of silence.

        The upstream's read timeout still ends a dead stream (ReadTimeout, a TimeoutError).
        """
        while True:
            chunk = await upstream.readany(quiet_after=keepalive)
            if chunk is None:
                yield None
                continue
            if not chunk:
                return
            yield chunk

    async def relay_passthrough(self, attempt: Attempt) -> web.StreamResponse:
        upstream = attempt.response
        protocol = attempt.route.provider.protocol
        hide_usage_chunk = protocol == "openai" and not self.client_wants_usage()
        decoder = SSEDecoder()
        response = await self.open_stream(upstream)
        keepalive = KEEPALIVE_SECONDS if protocol == "anthropic" else None
        finished = False
        error: str | None = None
        try:
            async for chunk in self.upstream_chunks(upstream, keepalive):
                if chunk is None:
                    await response.write(b'event: ping\ndata: {"type":"ping"}\n\n')
                    continue
                out = bytearray()
                for event in decoder.feed(chunk):
                    forwarded = self.tap_passthrough_event(event, protocol, hide_usage_chunk)
                    if forwarded is not None:
                        out += forwarded
                    if self._stream_error is not None:
                        error = self._stream_error
                    if event.data == "[DONE]" or event.event == "message_stop":
                        finished = True
                if out:
                    await self.emit(response, bytes(out))
            if not finished and error is None:
                error = "the upstream closed the stream before it finished"
                await self.emit(response, self.passthrough_error_event(protocol, 502, error))
        except (ConnectionResetError, asyncio.CancelledError) as exc:
            self.record.finish(499, "client closed the connection mid-stream")
            upstream.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return response
        except (HTTPClientError, TimeoutError) as exc:
            error = self.describe_stream_failure(attempt, exc)
            await self.try_write(response, self.passthrough_error_event(protocol, 502, error))
        finally:
            upstream.release()
        self.record.finish(200, error)
        await self.try_eof(response)
        return response

    def capture(self, data: bytes) -> None:
        """Keep what the client was sent, for history (bounded; history trims it further)."""
        if not self.state.capture_bodies:
            return
        room = CAPTURE_LIMIT - len(self._captured)
        if room > 0:
            self._captured += data[:room]

    def tap_passthrough_event(
        self, event: SSEEvent, protocol: Protocol, hide_usage_chunk: bool
    ) -> bytes | None:
        """Read usage and errors off a relayed event; return the bytes to forward, if any."""
        data = event.data
        if data == "[DONE]" or not data:
            return encode_raw_event(event)
        if protocol == "openai":
            if '"usage"' in data or '"error"' in data:
                try:
                    obj = json.loads(data)
                except ValueError:
                    return encode_raw_event(event)
                if isinstance(obj, dict):
                    if obj.get("error"):
                        self._stream_error = extract_error_message(obj, "upstream stream error")
                    self.read_usage(obj, "openai")
                    if hide_usage_chunk and obj.get("usage") and not obj.get("choices"):
                        return None
            return encode_raw_event(event)
        kind = event.event
        if kind in ("message_start", "message_delta", "error"):
            try:
                obj = json.loads(data)
            except ValueError:
                return encode_raw_event(event)
            if kind == "message_start" and isinstance(obj, dict):
                message = obj.get("message")
                if isinstance(message, dict):
                    self.read_usage(message, "anthropic")
                    if message.get("model") != self.requested_model:
                        message["model"] = self.requested_model
                        return encode_raw_event(SSEEvent(kind, json.dumps(obj)))
            elif kind == "message_delta":
                self.read_usage(obj, "anthropic")
            elif kind == "error":
                self._stream_error = extract_error_message(obj, "upstream stream error")
        return encode_raw_event(event)

    def passthrough_error_event(self, protocol: Protocol, status: int, message: str) -> bytes:
        if protocol == "anthropic":
            body = error_body(Dialect.ANTHROPIC, status, message)
            return encode_raw_event(SSEEvent("error", json.dumps(body)))
        body = error_body(Dialect.OPENAI, status, message)
        return encode_raw_event(SSEEvent(None, json.dumps(body)))

    def describe_stream_failure(self, attempt: Attempt, exc: BaseException) -> str:
        name = attempt.route.provider.name
        if isinstance(exc, TimeoutError):
            return f"provider '{name}' went silent mid-stream (read timeout)"
        return f"provider '{name}' broke off the stream: {type(exc).__name__}: {exc}"

    async def relay_translated(self, attempt: Attempt) -> web.StreamResponse:
        upstream = attempt.response
        up_is_anthropic = attempt.route.provider.protocol == "anthropic"
        decoder: Any = (
            anthropic_codec.StreamDecoder() if up_is_anthropic else openai_codec.StreamDecoder()
        )
        encoder: Any
        if self.dialect is Dialect.ANTHROPIC:
            encoder = anthropic_codec.StreamEncoder(
                self.requested_model, estimate_request_tokens(self.decoded())
            )
            keepalive: float | None = KEEPALIVE_SECONDS
        else:
            encoder = openai_codec.StreamEncoder(
                self.requested_model, include_usage=self.client_wants_usage()
            )
            keepalive = None
        sse = SSEDecoder()
        response = await self.open_stream(upstream)
        error: str | None = None
        saw_finish = False

        def translate(events: list[ir.StreamEvent]) -> bytes:
            nonlocal error, saw_finish
            out = bytearray()
            for ev in events:
                if isinstance(ev, ir.TextDelta | ir.ReasoningDelta):
                    self._output_chars.append(ev.text)
                elif isinstance(ev, ir.ToolCallDelta):
                    self._output_chars.append(ev.arguments)
                if isinstance(ev, ir.UsageUpdate):
                    self.set_usage(ev.usage)
                elif isinstance(ev, ir.StreamFinish):
                    saw_finish = True
                    if ev.usage is not None:
                        self.set_usage(ev.usage)
                elif isinstance(ev, ir.StreamError):
                    error = ev.message
                out += encoder.feed(ev)
            return bytes(out)

        try:
            async for chunk in self.upstream_chunks(upstream, keepalive):
                if chunk is None:
                    await response.write(encoder.ping())
                    continue
                out = bytearray()
                for event in sse.feed(chunk):
                    out += translate(decoder.feed(event))
                if out:
                    await self.emit(response, bytes(out))
            tail = bytearray()
            for event in sse.close():
                tail += translate(decoder.feed(event))
            tail += translate(decoder.close())
            if not saw_finish and error is None:
                error = "the upstream closed the stream before it finished"
                tail += encoder.feed(ir.StreamError(status=502, message=error))
            tail += encoder.close()
            if tail:
                await self.emit(response, bytes(tail))
        except (ConnectionResetError, asyncio.CancelledError) as exc:
            self.record.finish(499, "client closed the connection mid-stream")
            upstream.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return response
        except (HTTPClientError, TimeoutError) as exc:
            error = self.describe_stream_failure(attempt, exc)
            tail = encoder.feed(ir.StreamError(status=502, message=error)) + encoder.close()
            await self.try_write(response, tail)
        finally:
            upstream.release()
        self.record.finish(200, error)
        await self.try_eof(response)
        return response

    async def emit(self, response: web.StreamResponse, data: bytes) -> None:
        self.capture(data)
        await response.write(data)

    async def try_write(self, response: web.StreamResponse, data: bytes) -> None:
        self.capture(data)
        with contextlib.suppress(ConnectionResetError):
            await response.write(data)

    @staticmethod
    async def try_eof(response: web.StreamResponse) -> None:
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()


def _response_text(response: ir.Response) -> list[str]:
    out: list[str] = []
    for part in response.parts:
        if isinstance(part, ir.TextPart | ir.ReasoningPart):
            out.append(part.text)
        elif isinstance(part, ir.ToolCallPart):
            out.append(part.arguments)
    return out


_TEXT_KEYS = ("content", "text", "partial_json", "thinking", "arguments", "reasoning_content")


def _text_from_captured(body: bytes) -> str:
    """The generated text inside a captured response (JSON or SSE), for estimating tokens."""
    pieces: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _TEXT_KEYS and isinstance(value, str):
                    pieces.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    text = body.decode("utf-8", "replace")
    chunks = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    for chunk in chunks or [text]:
        try:
            walk(json.loads(chunk))
        except ValueError:
            continue
    return "".join(pieces)


def strip_unsigned_thinking(body: dict[str, Any]) -> None:
    """Drop thinking blocks Anthropic did not sign (P21), replacing `body["messages"]`.

    Reasoning that came from another provider reaches Claude Code as thinking blocks with an
    empty signature; sent back to a real Anthropic upstream after a model switch, they would
    be rejected with a 400. Signed blocks are left byte-for-byte alone, and the client's own
    message list is never modified (a failover route may still need that reasoning).
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    changed = False
    rebuilt: list[Any] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and message.get("role") == "assistant":
            kept = [block for block in content if not _unsigned_thinking(block)]
            if len(kept) != len(content):
                changed = True
                message = {**message, "content": kept or [{"type": "text", "text": "(empty)"}]}
        rebuilt.append(message)
    if changed:
        body["messages"] = rebuilt


def _unsigned_thinking(block: object) -> bool:
    return (
        isinstance(block, dict) and block.get("type") == "thinking" and not block.get("signature")
    )


def encode_raw_event(event: SSEEvent) -> bytes:
    lines = []
    if event.event:
        lines.append(f"event: {event.event}")
    lines.extend(f"data: {line}" for line in event.data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()
