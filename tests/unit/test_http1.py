"""The lean upstream HTTP/1.1 client against raw servers that send exactly the bytes we script.

Real upstreams differ in how they frame answers (Content-Length, chunked, close-delimited),
split them into packets, drop idle keep-alive connections and misbehave; each test pins down
one of those against what a user of the gateway would see.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from desktop_proxy.server.http1 import (
    ConnectError,
    ConnectionPool,
    HTTPClientError,
    ReadTimeout,
    RemoteProtocolError,
    encode_head,
    parse_target,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawServer"], Awaitable[None]]


class RawServer:
    """A TCP server on 127.0.0.1:0 running `handler` for each connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.server: asyncio.Server | None = None

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        self.requests.append((head, body))
        return head, body

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(handler: Handler) -> RawServer:
        server = await RawServer(handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    p = ConnectionPool(connect_timeout=2)
    yield p
    await p.close()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def keep_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: RawServer
) -> None:
    while True:
        _, body = await server.read_request(reader)
        writer.write(answer(b'{"echo":' + body + b"}", "Content-Type: application/json"))
        await writer.drain()


async def test_content_length_answers_reuse_one_connection(serve, pool) -> None:
    server = await serve(keep_answering)
    for n in range(3):
        response = await pool.request("POST", server.url, {"X-N": str(n)}, b"[%d]" % n)
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert await response.read() == b'{"echo":[%d]}' % n
        response.release()
    assert server.connections == 1
    head = server.requests[0][0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.url.split(':')[2].split('/')[0]}" in head
    assert "Content-Length: 3" in head and "X-N: 0" in head
    assert "Accept-Encoding: identity" in head


async def test_chunked_answer_split_into_tiny_packets(serve, pool) -> None:
    events = [b'data: {"n":%d}\n\n' % i for i in range(5)]
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\nX-T: 1\r\n\r\n"

    async def handler(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(wire), 3):
            writer.write(wire[i : i + 3])
            await writer.drain()
            await asyncio.sleep(0)
        await keep_answering(reader, writer, server)

    server = await serve(handler)
    response = await pool.request("POST", server.url, {}, b"{}")
    assert await response.read() == b"".join(events)
    response.release()
    # The connection was left clean: the next request reuses it.
    again = await pool.request("POST", server.url, {}, b"1")
    assert await again.read() == b'{"echo":1}'
    again.release()
    assert server.connections == 1


async def test_streamed_reads_arrive_as_the_server_sends_them(serve, pool) -> None:
    release = asyncio.Event()

    async def handler(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    server = await serve(handler)
    response = await pool.request("POST", server.url, {}, b"{}")
    # The first event is readable while the server still holds back the rest.
    assert await asyncio.wait_for(response.readany(), 2) == b"first"
    release.set()
    assert await response.readany() == b"second"
    assert await response.readany() == b""
    response.release()


async def test_answer_delimited_by_close_is_read_and_not_reused(serve, pool) -> None:
    async def handler(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    server = await serve(handler)
    for _ in range(2):
        response = await pool.request("POST", server.url, {}, b"{}")
        assert await response.read() == b"all of it"
        response.release()
    assert server.connections == 2
    assert pool.idle_count() == 0


async def test_gzip_answer_is_decompressed_although_identity_was_asked(serve, pool) -> None:
    payload = b'{"text": "' + b"compressed " * 500 + b'"}'

    async def handler(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(answer(gzip.compress(payload), "Content-Encoding: gzip"))
        await writer.drain()

    server = await serve(handler)
    response = await pool.request("POST", server.url, {}, b"{}")
    assert await response.read() == payload
    response.release()


async def test_informational_answers_are_skipped(serve, pool) -> None:
    async def handler(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"ok", status="201 Created"))
        await writer.drain()

    server = await serve(handler)
    response = await pool.request("POST", server.url, {}, b"{}")
    assert (response.status, await response.read()) == (201, b"ok")
    response.release()


async def test_no_body_for_204_and_head(serve, pool) -> None:
    async def handler(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
        await writer.drain()
        await keep_answering(reader, writer, server)

    server = await serve(handler)
    first = await pool.request("POST", server.url, {}, b"{}")
    assert (first.status, await first.read()) == (204, b"")
    first.release()
    head = await pool.request("HEAD", server.url, {}, b"")
    assert await head.read() == b""
    head.release()
    last = await pool.request("POST", server.url, {}, b"2")
    assert await last.read() == b'{"echo":2}'
    last.release()
    assert server.connections == 1


async def test_idle_connection_closed_by_the_server_is_not_used_again(serve, pool) -> None:
    async def handler(reader, writer, server) -> None:
        # Answers one request, then closes the idle connection without saying so, as servers
        # with a short keep-alive timeout do.
        _, body = await server.read_request(reader)
        writer.write(answer(body))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    server = await serve(handler)
    first = await pool.request("POST", server.url, {}, b"one")
    assert await first.read() == b"one"
    first.release()
    await asyncio.sleep(0.15)
    second = await pool.request("POST", server.url, {}, b"two")
    assert await second.read() == b"two"
    second.release()
    assert server.connections == 2


async def test_request_crossing_the_servers_keep_alive_close_is_retried_once(serve, pool) -> None:
    async def handler(reader, writer, server) -> None:
        if server.connections == 1:
            _, body = await server.read_request(reader)
            writer.write(answer(body))
            await writer.drain()
            # The next request starts to arrive just as the server gives up on the
            # connection: it resets it without reading or answering.
            await reader.read(1)
            writer.transport.abort()
            return
        await keep_answering(reader, writer, server)

    server = await serve(handler)
    first = await pool.request("POST", server.url, {}, b"one")
    assert await first.read() == b"one"
    first.release()
    second = await pool.request("POST", server.url, {}, b"two")
    assert await second.read() == b'{"echo":two}'
    second.release()
    assert server.connections == 2
    assert [body for _, body in server.requests] == [b"one", b"two"]


async def test_connection_closed_before_any_answer_on_a_fresh_connection_is_an_error(
    serve, pool
) -> None:
    async def handler(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.close()

    server = await serve(handler)
    with pytest.raises(RemoteProtocolError, match="closed the connection before answering"):
        await pool.request("POST", server.url, {}, b"{}")
    assert server.connections == 1  # a fresh connection is not retried: the POST may have run


async def test_connection_closed_mid_body_is_an_error(serve, pool) -> None:
    async def handler(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    server = await serve(handler)
    response = await pool.request("POST", server.url, {}, b"{}")
    with pytest.raises(RemoteProtocolError, match="mid-answer"):
        await response.read()
    response.release()
    assert pool.idle_count() == 0


async def test_read_timeout_between_bytes_and_before_the_answer(serve, pool) -> None:
    async def silent_after_head(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()
        await asyncio.sleep(5)

    async def silent(reader, writer, server) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    server = await serve(silent_after_head)
    response = await pool.request("POST", server.url, {}, b"{}", read_timeout=0.2)
    with pytest.raises(ReadTimeout):
        await response.read()
    response.release()
    quiet = await serve(silent)
    with pytest.raises(ReadTimeout):
        await pool.request("POST", quiet.url, {}, b"{}", read_timeout=0.2)


async def test_quiet_after_reports_silence_without_ending_the_answer(serve, pool) -> None:
    go = asyncio.Event()

    async def handler(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        await writer.drain()
        await go.wait()
        writer.write(b"done")
        await writer.drain()

    server = await serve(handler)
    response = await pool.request("POST", server.url, {}, b"{}", read_timeout=5)
    assert await response.readany(quiet_after=0.05) is None
    go.set()
    assert await response.readany(quiet_after=2) == b"done"
    assert await response.readany() == b""
    response.release()


async def test_a_slow_reader_pauses_the_upstream_instead_of_buffering_everything(
    serve, pool
) -> None:
    total = 64 * 1024 * 1024
    sent = 0
    block = b"x" * (256 * 1024)

    async def handler(reader, writer, server) -> None:
        nonlocal sent
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        while sent < total:
            writer.write(block)
            await writer.drain()
            sent += len(block)

    server = await serve(handler)
    response = await pool.request("POST", server.url, {}, b"{}")
    first = await response.readany()
    assert first
    await asyncio.sleep(0.5)  # the client reads nothing for a while
    assert sent < total // 2, f"the upstream got {sent} bytes out to a client that stopped reading"
    received = len(first)
    while data := await response.readany():
        received += len(data)
    assert received == total
    response.release()


async def test_unreachable_and_garbage_answers_are_clear_errors(serve, pool) -> None:
    async def not_http(reader, writer, server) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    server = await serve(not_http)
    with pytest.raises(RemoteProtocolError, match=r"not an HTTP/1\.1 answer"):
        await pool.request("POST", server.url, {}, b"{}")
    port = server.url.split(":")[2].split("/")[0]
    await server.stop()
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectError) as caught:
        await pool.request("POST", f"http://127.0.0.1:{port}/v1", {}, b"{}")
    assert isinstance(caught.value.os_error, ConnectionRefusedError)


async def test_limit_per_host_queues_the_extra_request(serve) -> None:
    gate = asyncio.Event()
    in_flight = 0
    peak = 0

    async def handler(reader, writer, server) -> None:
        nonlocal in_flight, peak
        while True:
            _, body = await server.read_request(reader)
            in_flight += 1
            peak = max(peak, in_flight)
            await gate.wait()
            in_flight -= 1
            writer.write(answer(body))
            await writer.drain()

    server = await serve(handler)
    small = ConnectionPool(limit_per_host=2)

    async def one(n: int) -> bytes:
        response = await small.request("POST", server.url, {}, b"%d" % n)
        try:
            return await response.read()
        finally:
            response.release()

    tasks = [asyncio.ensure_future(one(n)) for n in range(3)]
    await asyncio.sleep(0.2)
    assert (in_flight, peak) == (2, 2)
    gate.set()
    assert sorted(await asyncio.gather(*tasks)) == [b"0", b"1", b"2"]
    assert peak == 2
    await small.close()


async def test_close_closes_idle_connections(serve) -> None:
    closed = asyncio.Event()

    async def handler(reader, writer, server) -> None:
        _, body = await server.read_request(reader)
        writer.write(answer(body))
        await writer.drain()
        await reader.read()  # until the client closes
        closed.set()

    server = await serve(handler)
    p = ConnectionPool()
    response = await p.request("POST", server.url, {}, b"x")
    await response.read()
    response.release()
    assert p.idle_count() == 1
    await p.close()
    await asyncio.wait_for(closed.wait(), 2)
    with pytest.raises(HTTPClientError, match="closed"):
        await p.request("POST", server.url, {}, b"x")


def test_header_injection_and_unencodable_values_are_refused_without_echoing_them() -> None:
    target = parse_target("https://api.example.com/v1/chat/completions?x=1")
    assert (target.host_header, target.port, target.path) == (
        "api.example.com",
        443,
        "/v1/chat/completions?x=1",
    )
    with pytest.raises(HTTPClientError, match="line break"):
        encode_head("POST", target, {"X-Evil": "a\r\nInjected: 1"}, 0)
    with pytest.raises(HTTPClientError) as caught:
        encode_head("POST", target, {"Authorization": "Bearer sk-ключ-secret"}, 0)
    assert "secret" not in str(caught.value)
    with pytest.raises(HTTPClientError, match="scheme"):
        parse_target("ftp://example.com/")
