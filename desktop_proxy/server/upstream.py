"""Talking to upstreams: URLs, auth headers, timeouts, and failover before the first byte."""

from __future__ import annotations

import asyncio
import functools
import io
import ipaddress
import logging
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

import aiohttp

from desktop_proxy._version import __version__
from desktop_proxy.config.models import ProviderConfig, Timeouts
from desktop_proxy.config.secrets import key_id
from desktop_proxy.routing import Route
from desktop_proxy.server.health import HealthBook, retry_after_seconds
from desktop_proxy.server.http1 import (
    ConnectError,
    ConnectionPool,
    HTTPClientError,
    ReadTimeout,
    RemoteProtocolError,
    parse_target,
)

log = logging.getLogger(__name__)

Endpoint = Literal["chat", "messages", "count_tokens", "embeddings", "models", "responses"]

_OPENAI_PATHS: dict[str, str] = {
    "chat": "/chat/completions",
    "embeddings": "/embeddings",
    "models": "/models",
    "responses": "/responses",
}
_ANTHROPIC_PATHS: dict[str, str] = {
    "messages": "/v1/messages",
    "count_tokens": "/v1/messages/count_tokens",
    "models": "/v1/models",
}

# Statuses worth another key or provider: rate limits, overload, and server faults.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# Statuses that say this key is bad; another key of the same provider may still work.
KEY_STATUSES = frozenset({401, 402, 403})
ANTHROPIC_VERSION = "2023-06-01"
_LARGE_BODY = 512 * 1024


class UpstreamUnavailable(Exception):
    """No upstream could be reached (connection refused, DNS, timeout...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class UpstreamFailure(Exception):
    """Every attempt answered with an error status; the last answer is kept to pass on."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    provider: str


class UpstreamResponse(Protocol):
    """An upstream's answer, whichever client fetched it (see UpstreamClient.post)."""

    status: int

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive

    async def read(self) -> bytes: ...

    async def readany(self, *, quiet_after: float | None = None) -> bytes | None: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Attempt:
    route: Route
    key_index: int
    key: str | None
    response: UpstreamResponse

    @property
    def key_id(self) -> str | None:
        return key_id(self.key) if self.key else None


@functools.lru_cache(maxsize=512)
def is_loopback_url(url: str) -> bool:
    # Cached: it runs on every request and parsing the address costs ~10 µs each time.
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def upstream_url(provider: ProviderConfig, endpoint: Endpoint, model: str) -> str:
    base = provider.base_url.rstrip("/")
    if provider.protocol == "anthropic":
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        return base + _ANTHROPIC_PATHS[endpoint]
    if provider.kind == "azure" and not base.endswith("/openai/v1"):
        deployment = provider.deployments.get(model, model)
        version = provider.api_version or "2024-10-21"
        return (
            f"{base}/openai/deployments/{deployment}{_OPENAI_PATHS[endpoint]}?api-version={version}"
        )
    return base + _OPENAI_PATHS[endpoint]


def upstream_headers(
    provider: ProviderConfig,
    key: str | None,
    *,
    client_headers: Mapping[str, str] | None = None,
    stream: bool = False,
) -> dict[str, str]:
    headers: dict[str, str] = {
        "Content-Type": "application/json",
        "User-Agent": f"desktop-proxy/{__version__}",
    }
    if stream:
        headers["Accept"] = "text/event-stream"
        # Compression makes proxies and servers hold bytes back; streams should flow.
        headers["Accept-Encoding"] = "identity"
    if key:
        if provider.auth == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif provider.auth == "x-api-key":
            headers["x-api-key"] = key
        elif provider.auth == "api-key":
            headers["api-key"] = key
    if provider.protocol == "anthropic":
        client = client_headers or {}
        headers["anthropic-version"] = client.get("anthropic-version", ANTHROPIC_VERSION)
        beta = client.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
    headers.update(provider.headers)
    return headers


class UpstreamClient:
    """Owns the connections to upstreams. One per running gateway.

    Direct connections use the lean pooled client in `http1`; a URL that the environment's
    HTTP(S)_PROXY settings cover goes through aiohttp, which speaks proxies (CONNECT, auth).
    Loopback upstreams (Ollama, LM Studio) never go through a proxy.
    """

    def __init__(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self._pool = ConnectionPool(connect_timeout=timeouts.connect)
        self._proxies = {
            scheme: url
            for scheme, url in urllib.request.getproxies().items()
            if scheme in ("http", "https")
        }
        self._proxy_decisions: dict[tuple[str, str], bool] = {}
        self._proxied: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        await self._pool.close()
        if self._proxied is not None:
            await self._proxied.close()

    def read_timeout(self, provider: ProviderConfig) -> float:
        return provider.timeout if provider.timeout is not None else self._timeouts.read

    def uses_proxy(self, url: str) -> bool:
        if not self._proxies:
            return False
        target = parse_target(url)
        decision_key = (target.scheme, target.host)
        decision = self._proxy_decisions.get(decision_key)
        if decision is None:
            decision = (
                target.scheme in self._proxies
                and not is_loopback_url(url)
                and not urllib.request.proxy_bypass(target.host)
            )
            self._proxy_decisions[decision_key] = decision
        return decision

    async def post(
        self,
        provider: ProviderConfig,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> UpstreamResponse:
        try:
            if self.uses_proxy(url):
                return await self._post_via_proxy(provider, url, headers, body)
            return await self._pool.request(
                "POST", url, dict(headers), body, read_timeout=self.read_timeout(provider)
            )
        except TimeoutError as exc:
            raise UpstreamUnavailable(
                504, f"provider '{provider.name}' did not answer in time ({url_host(url)})"
            ) from exc
        except ConnectError as exc:
            raise UpstreamUnavailable(
                502,
                f"provider '{provider.name}' is unreachable at {url_host(url)}: "
                f"{exc.os_error.strerror or exc.os_error}",
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable(
                502,
                f"provider '{provider.name}' is unreachable at {url_host(url)}: "
                f"{exc.os_error.strerror or exc.os_error}",
            ) from exc
        except (HTTPClientError, aiohttp.ClientError) as exc:
            raise UpstreamUnavailable(
                502, f"provider '{provider.name}' failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def _post_via_proxy(
        self, provider: ProviderConfig, url: str, headers: Mapping[str, str], body: bytes
    ) -> UpstreamResponse:
        if self._proxied is None:
            self._proxied = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=64, ttl_dns_cache=300),
                trust_env=True,
            )
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._timeouts.connect, sock_read=self.read_timeout(provider)
        )
        # aiohttp copies large raw bodies on the loop (and warns); a buffer it reads in parts.
        data: bytes | io.BytesIO = io.BytesIO(body) if len(body) > _LARGE_BODY else body
        response = await self._proxied.post(url, data=data, headers=dict(headers), timeout=timeout)
        return ProxiedResponse(response)


class ProxiedResponse:
    """An aiohttp answer behind the UpstreamResponse interface, with http1's exceptions."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except aiohttp.ServerTimeoutError as exc:
            raise ReadTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc

    async def readany(self, *, quiet_after: float | None = None) -> bytes | None:
        content = self._response.content
        try:
            if quiet_after is None:
                return await content.readany()
            try:
                return await asyncio.wait_for(content.readany(), quiet_after)
            except TimeoutError as exc:
                # aiohttp's own read timeout is a TimeoutError too: that one means the
                # upstream is dead, not merely quiet.
                if isinstance(exc, aiohttp.ServerTimeoutError):
                    raise
                return b"" if content.is_eof() else None
        except aiohttp.ServerTimeoutError as exc:
            raise ReadTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        self._response.close()


def url_host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


KeyLookup = Callable[[ProviderConfig, int], Awaitable[str | None]]
Send = Callable[[Route, str | None], Awaitable[UpstreamResponse]]


async def send_with_failover(
    routes: list[Route],
    send: Send,
    resolve_key: KeyLookup,
    health: HealthBook,
    *,
    auxiliary: bool = False,
) -> Attempt:
    """Try each (route, key) until one answers 2xx or a non-retryable error.

    Retrying only happens before the first byte reaches the client, so it is always safe.
    `auxiliary` requests (count_tokens, model lists) never put a provider into cooldown.

    Raises:
        UpstreamFailure: every attempt answered with an error status (the last one is kept).
        UpstreamUnavailable: no attempt reached an upstream at all.
    """
    last_failure: UpstreamFailure | None = None
    last_unavailable: UpstreamUnavailable | None = None
    ordered = [r for r in routes if not health.provider_cooling(r.provider.name)]
    ordered += [r for r in routes if health.provider_cooling(r.provider.name)]
    for route in ordered:
        provider = route.provider
        key_count = max(1, len(provider.api_keys)) if provider.requires_key else 1
        for index in health.key_order(provider.name, key_count):
            key = await resolve_key(provider, index) if provider.requires_key else None
            try:
                response = await send(route, key)
            except UpstreamUnavailable as exc:
                log.warning("upstream %s unavailable: %s", provider.name, exc.message)
                last_unavailable = exc
                if not auxiliary:
                    health.fail_provider(provider.name, exc.message)
                break  # the whole provider is down; the next key will not help
            status = response.status
            if status < 400:
                if not auxiliary:
                    health.succeed(provider.name, index)
                return Attempt(route, index, key, response)
            try:
                body = await response.read()
            except (HTTPClientError, TimeoutError):
                body = b""  # the status says enough
            finally:
                response.release()
            failure = UpstreamFailure(status, body, dict(response.headers), provider.name)
            retryable = status in RETRYABLE_STATUSES or status in KEY_STATUSES
            if not retryable:
                raise failure
            last_failure = failure
            wait = retry_after_seconds(
                response.headers.get("retry-after"), response.headers.get("retry-after-ms")
            )
            log.warning(
                "upstream %s answered %d (key …%s); trying the next option",
                provider.name,
                status,
                key_id(key) if key else "-",
            )
            if not auxiliary:
                health.fail_key(provider.name, index, f"HTTP {status}", wait)
                if status >= 500 and status not in KEY_STATUSES:
                    health.fail_provider(provider.name, f"HTTP {status}", wait)
                    break
    if last_failure is not None:
        raise last_failure
    if last_unavailable is not None:
        raise last_unavailable
    raise UpstreamUnavailable(503, "no provider is available for this model")
