"""A small HTTP/1.1 client for upstream calls: pooled keep-alive connections and little else.

Why not aiohttp's client: on a gateway that mostly relays, aiohttp's ClientSession costs more
CPU per request than everything else the gateway does (request and response objects, tracing,
cookie jar, URL building, a task per body write; see docs/performance.md), and the event loop
is also the tray app's UI thread. Upstream calls need little of it: a POST with known headers,
a JSON or SSE answer, HTTP/1.1 keep-alive, TLS and timeouts. Traffic that must go through an
HTTP(S)_PROXY still uses aiohttp (see `upstream.py`).

What it does: Content-Length, chunked and read-until-close bodies; gzip/deflate when a server
compresses although asked not to; 1xx answers skipped; back-pressure (reading from the upstream
pauses while a slow client has not taken what was read); a read timeout between bytes; one retry
on a fresh connection when a reused keep-alive connection turns out to have been closed by the
server before it answered anything.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

MAX_HEAD_BYTES: Final = 64 * 1024
IDLE_TIMEOUT: Final = 15.0  # seconds a pooled connection may sit unused (servers drop them too)
LIMIT_PER_HOST: Final = 256
_HIGH_WATER: Final = 1024 * 1024  # buffered body bytes at which reading from the socket pauses
_LOW_WATER: Final = 256 * 1024
_LARGE_BODY: Final = 64 * 1024  # above this the body is written apart from the head (no copy)


class HTTPClientError(Exception):
    """The upstream could not be reached or did not answer in valid HTTP."""


class ConnectError(HTTPClientError):
    """No connection could be opened (refused, DNS, TLS...)."""

    def __init__(self, host: str, os_error: OSError) -> None:
        super().__init__(f"cannot connect to {host}: {os_error.strerror or os_error}")
        self.os_error = os_error


class ConnectTimeout(HTTPClientError, TimeoutError):
    """Opening the connection took longer than the connect timeout."""


class ReadTimeout(HTTPClientError, TimeoutError):
    """The upstream sent nothing for longer than the read timeout."""


class RemoteProtocolError(HTTPClientError):
    """The upstream closed the connection early or answered something that is not HTTP/1.1."""


class _StaleConnection(RemoteProtocolError):
    """A reused connection was closed before any answer: the server had dropped it."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL points, split once (URLs repeat, so this is cached)."""

    scheme: str
    host: str
    port: int
    host_header: str
    path: str  # with the query string

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


@functools.lru_cache(maxsize=512)
def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise HTTPClientError(f"unsupported URL scheme '{parts.scheme}' in {url!r}")
    host = parts.hostname
    if not host:
        raise HTTPClientError(f"no host in URL {url!r}")
    default_port = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise HTTPClientError(f"bad port in URL {url!r}") from exc
    host_header = parts.netloc.rpartition("@")[2]
    if port == default_port and host_header.endswith(f":{port}"):
        host_header = host_header[: -len(f":{port}")]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port, host_header, path)


def encode_head(method: str, target: Target, headers: dict[str, str], body_length: int) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.host_header}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise HTTPClientError(f"header '{name.strip()[:40]}' contains a line break or colon")
        lines.append(f"{name}: {value}")
    if "accept-encoding" not in (name.lower() for name in headers):
        # Bodies are read (usage, history); compression would only cost CPU on loopback.
        lines.append("Accept-Encoding: identity")
    lines.append(f"Content-Length: {body_length}")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        # Never echo the value: it may be an API key.
        raise HTTPClientError("a header value has characters HTTP headers cannot carry") from None


class Response:
    """One upstream answer. Release it (or close it) when done; the body can be read once."""

    def __init__(self, conn: _Connection, status: int, reason: str, headers: CIMultiDict[str]):
        self.status = status
        self.reason = reason
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(headers)
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False

    # --- fed by the connection --------------------------------------------------------------

    def _push(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)
            if self._size > _HIGH_WATER:
                self._conn.pause_reading()
            self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if self._eof or self._error is not None:
            return
        if error is None:
            self._eof = True
        else:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- read by the caller ---------------------------------------------------------------

    async def readany(self, *, quiet_after: float | None = None) -> bytes | None:
        """Whatever has arrived, waiting for more if nothing has; b"" at the end of the body.

        With `quiet_after`, returns None when nothing arrived for that many seconds (the read
        timeout still applies and raises ReadTimeout).
        """
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            if not await self._wait(quiet_after):
                return None
        if len(self._chunks) == 1:
            data = self._chunks.popleft()
        else:
            data = b"".join(self._chunks)
            self._chunks.clear()
        self._size = 0
        self._conn.resume_reading()
        return data

    async def read(self) -> bytes:
        """The whole body."""
        parts: list[bytes] = []
        while data := await self.readany():
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _wait(self, quiet_after: float | None) -> bool:
        """Wait for news from the connection; False when `quiet_after` passed first."""
        conn = self._conn
        loop = conn.loop
        now = loop.time()
        timeout = conn.read_timeout
        deadline = None if timeout is None else conn.last_data + timeout
        wake_at = deadline
        quiet = quiet_after is not None and (deadline is None or now + quiet_after < deadline)
        if quiet and quiet_after is not None:
            wake_at = now + quiet_after
        if deadline is not None and now >= deadline:
            raise ReadTimeout(f"no data for {timeout:g} s")
        waiter = self._waiter = loop.create_future()
        handle = None if wake_at is None else loop.call_at(wake_at, _set_if_pending, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
        if self._chunks or self._eof or self._error is not None:
            return True
        if deadline is not None and loop.time() >= deadline:
            self._error = ReadTimeout(f"no data for {timeout:g} s")
            conn.close()
            raise self._error
        return not quiet

    def release(self) -> None:
        """Done with this answer: the connection goes back to the pool if it can."""
        if self._released:
            return
        self._released = True
        self._conn.release(reusable=self._eof and self._error is None)

    def close(self) -> None:
        """Done early: the connection is closed, not reused."""
        if self._released:
            return
        self._released = True
        self._conn.release(reusable=False)


def _set_if_pending(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_HEAD, _BODY_LENGTH, _BODY_CHUNKED, _BODY_UNTIL_CLOSE, _DONE = range(5)
_CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _CHUNK_TRAILER = range(4)


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self, pool: ConnectionPool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.used = 0  # requests sent on this connection
        self.idle_since = 0.0
        self.read_timeout: float | None = None
        self.last_data = 0.0
        self._paused = False
        self._buf = bytearray()
        self._state = _DONE
        self._head_waiter: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._method = "POST"
        self._remaining = 0
        self._chunk_state = _CHUNK_SIZE
        self._decoder: zlib._Decompress | None = None
        self._got_bytes = False

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_data = self.loop.time()
        self._got_bytes = True
        state = self._state
        if state == _BODY_LENGTH and not self._buf:
            self._feed_length(data)  # the common case: no copy into the buffer
            return
        if state == _DONE:
            # Bytes nobody asked for: this connection can no longer be trusted.
            self.reusable = False
            self.close()
            return
        self._buf += data
        self._advance()

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        state = self._state
        if state == _DONE:
            return
        self._state = _DONE
        if state == _HEAD:
            waiter = self._head_waiter
            if waiter is not None and not waiter.done():
                error: HTTPClientError
                if not self._got_bytes and self.used > 1:
                    error = _StaleConnection("the server closed the kept-alive connection")
                else:
                    reason = f": {exc}" if exc else ""
                    error = RemoteProtocolError(
                        f"the server closed the connection before answering{reason}"
                    )
                waiter.set_exception(error)
            return
        response = self._response
        if response is None:
            return
        if state == _BODY_UNTIL_CLOSE and exc is None:
            self._flush_decoder(response)
            response._finish()
        else:
            reason = f": {exc}" if exc else ""
            message = f"the server closed the connection mid-answer{reason}"
            response._finish(RemoteProtocolError(message))

    # --- flow control -----------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.last_data = self.loop.time()  # the wait was ours, not the upstream's
            self.transport.resume_reading()

    # --- request ------------------------------------------------------------------------------

    def send(self, method: str, head: bytes, body: bytes, read_timeout: float | None) -> None:
        assert self.transport is not None
        self.used += 1
        self._method = method
        self._state = _HEAD
        self._buf.clear()
        self._got_bytes = False
        self._response = None
        self._decoder = None
        self.read_timeout = read_timeout
        self.last_data = self.loop.time()
        self._head_waiter = self.loop.create_future()
        if len(body) > _LARGE_BODY:
            self.transport.write(head)
            self.transport.write(body)
        else:
            self.transport.write(head + body)

    async def response_head(self) -> Response:
        waiter = self._head_waiter
        assert waiter is not None
        timeout = self.read_timeout
        handle = None
        if timeout is not None:
            handle = self.loop.call_at(self.last_data + timeout, self._head_timeout)
        try:
            return await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._head_waiter = None

    def _head_timeout(self) -> None:
        waiter = self._head_waiter
        if waiter is None or waiter.done():
            return
        deadline = self.last_data + (self.read_timeout or 0.0)
        if self.loop.time() < deadline:  # bytes of the head came meanwhile: wait on
            self.loop.call_at(deadline, self._head_timeout)
            return
        waiter.set_exception(ReadTimeout(f"no answer within {self.read_timeout:g} s"))
        self.close()

    def release(self, *, reusable: bool) -> None:
        self._response = None
        if reusable and self.reusable and self._state == _DONE and not self.closed:
            self.pool.put_back(self)
        else:
            self.close()
            self.pool.forget(self)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    # --- parsing ------------------------------------------------------------------------------

    def _advance(self) -> None:
        try:
            if self._state == _HEAD:
                self._parse_head()
            if self._state == _BODY_LENGTH and self._buf:
                data = bytes(self._buf)
                self._buf.clear()
                self._feed_length(data)
            elif self._state == _BODY_CHUNKED:
                self._parse_chunks()
            elif self._state == _BODY_UNTIL_CLOSE and self._buf:
                data = bytes(self._buf)
                self._buf.clear()
                assert self._response is not None
                self._deliver(self._response, data)
        except HTTPClientError as exc:
            self._fail(exc)

    def _fail(self, exc: HTTPClientError) -> None:
        state = self._state
        self._state = _DONE
        self.close()
        waiter = self._head_waiter
        if state == _HEAD and waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        elif self._response is not None:
            self._response._finish(exc)

    def _parse_head(self) -> None:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise RemoteProtocolError("the answer's headers are too large")
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            status, reason, headers, version = _parse_head(head)
            if 100 <= status < 200:
                continue  # 100 Continue and friends: the real answer follows
            break
        response = Response(self, status, reason, headers)
        self._response = response
        connection = headers.get("Connection", "").lower()
        if "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection):
            self.reusable = False
        encoding = headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            # Asked for identity; some servers compress anyway.
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)
        elif encoding not in ("", "identity"):
            raise RemoteProtocolError(f"unsupported Content-Encoding '{encoding}'")
        transfer = headers.get("Transfer-Encoding", "").lower()
        length = headers.get("Content-Length")
        if self._method == "HEAD" or status in (204, 304):
            self._state = _DONE
            response._finish()
        elif "chunked" in transfer:
            self._state = _BODY_CHUNKED
            self._chunk_state = _CHUNK_SIZE
        elif length is not None:
            if not length.strip().isdigit():
                raise RemoteProtocolError(f"bad Content-Length {length[:20]!r}")
            self._remaining = int(length)
            self._state = _BODY_LENGTH
            if self._remaining == 0:
                self._state = _DONE
                response._finish()
        else:
            self._state = _BODY_UNTIL_CLOSE
            self.reusable = False
        waiter = self._head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _feed_length(self, data: bytes) -> None:
        response = self._response
        assert response is not None
        remaining = self._remaining
        if len(data) > remaining:
            self.reusable = False  # more bytes than announced
            data = data[:remaining]
        self._remaining = remaining - len(data)
        try:
            self._deliver(response, data)
            if self._remaining == 0:
                self._state = _DONE
                self._flush_decoder(response)
                response._finish()
        except HTTPClientError as exc:
            self._fail(exc)

    def _parse_chunks(self) -> None:
        buf = self._buf
        response = self._response
        assert response is not None
        while self._state == _BODY_CHUNKED:
            state = self._chunk_state
            if state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise RemoteProtocolError("bad chunk size line")
                    return
                size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise RemoteProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                if size < 0:
                    raise RemoteProtocolError("bad chunk size")
                if size == 0:
                    self._chunk_state = _CHUNK_TRAILER
                else:
                    self._remaining = size
                    self._chunk_state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if not buf:
                    return
                take = min(self._remaining, len(buf))
                data = bytes(buf[:take])
                del buf[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = _CHUNK_CRLF
                self._deliver(response, data)
            elif state == _CHUNK_CRLF:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise RemoteProtocolError("chunk not followed by CRLF")
                del buf[:2]
                self._chunk_state = _CHUNK_SIZE
            else:  # trailers: read and ignore up to the empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                line = buf[:end]
                del buf[: end + 2]
                if not line:
                    self._state = _DONE
                    if buf:
                        self.reusable = False
                    self._flush_decoder(response)
                    response._finish()

    def _deliver(self, response: Response, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise RemoteProtocolError(f"cannot decompress the answer: {exc}") from None
        response._push(data)

    def _flush_decoder(self, response: Response) -> None:
        if self._decoder is not None:
            response._push(self._decoder.flush())


def _parse_head(head: bytes) -> tuple[int, str, CIMultiDict[str], str]:
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].decode("latin-1").partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise RemoteProtocolError(f"not an HTTP/1.1 answer: {lines[0][:60]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
            raise RemoteProtocolError(f"bad header line {line[:60]!r}")
        headers.add(name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
    return int(code), reason, headers, version


class ConnectionPool:
    """Keep-alive connections per (scheme, host, port), reused most-recent first."""

    def __init__(
        self,
        *,
        connect_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        limit_per_host: int = LIMIT_PER_HOST,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._limit = limit_per_host
        self._idle_timeout = idle_timeout
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._closed = False

    async def ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # Loading the system CA store reads files for milliseconds: once, only for https,
            # and off the event loop (in the tray app it is also the UI thread).
            self._ssl_context = await asyncio.to_thread(ssl.create_default_context)
        return self._ssl_context

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        read_timeout: float | None = None,
    ) -> Response:
        """Send a request and return once the answer's status and headers are in."""
        if self._closed:
            raise HTTPClientError("the connection pool is closed")
        target = parse_target(url)
        head = encode_head(method, target, headers, len(body))
        slots = self._slots.get(target.key)
        if slots is None:
            slots = self._slots[target.key] = asyncio.Semaphore(self._limit)
        await slots.acquire()
        try:
            for _ in range(2):
                conn = self._pop_idle(target.key)
                if conn is None:
                    conn = await self._connect(target)
                self._busy.add(conn)
                try:
                    conn.send(method, head, body, read_timeout)
                    return await conn.response_head()
                except _StaleConnection:
                    self._discard(conn)
                    continue  # once, on a fresh connection
                except BaseException:
                    self._discard(conn)
                    raise
            raise RemoteProtocolError("the server closed the connection before answering")
        except BaseException:
            slots.release()
            raise

    def _pop_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest_allowed = time.monotonic() - self._idle_timeout
        while idle:
            conn = idle.pop()
            if conn.closed or conn.idle_since < oldest_allowed:
                conn.close()
                continue
            return conn
        return None

    async def _connect(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        key = target.key
        ctx = await self.ssl_context() if target.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, key),
                    target.host,
                    target.port,
                    ssl=ctx,
                    server_hostname=target.host if ctx is not None else None,
                    happy_eyeballs_delay=0.25,
                )
        except TimeoutError:
            raise ConnectTimeout(
                f"could not connect to {target.host}:{target.port} "
                f"within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise ConnectError(f"{target.host}:{target.port}", exc) from exc
        return protocol

    def put_back(self, conn: _Connection) -> None:
        self.forget(conn)
        if self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)

    def forget(self, conn: _Connection) -> None:
        """`conn` no longer carries a request: its slot is free."""
        if conn in self._busy:
            self._busy.discard(conn)
            slots = self._slots.get(conn.key)
            if slots is not None:
                slots.release()

    def _discard(self, conn: _Connection) -> None:
        # Only on the way out of request(), whose own handler frees the slot.
        conn.close()
        self._busy.discard(conn)

    def idle_count(self) -> int:
        return sum(1 for conns in self._idle.values() for c in conns if not c.closed)

    async def close(self) -> None:
        self._closed = True
        conns = [c for conns in self._idle.values() for c in conns] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for conn in conns:
            conn.close()
        # Let the transports run connection_lost (and TLS shutdowns start) before the loop ends.
        await asyncio.sleep(0)
