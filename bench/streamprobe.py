"""Stream probe: times every SSE event of a streamed chat completion at the client.

A plain asyncio Protocol over a raw socket, so each `data_received` call is one network read:
for every stream it records when each SSE event completed and in which read it arrived. That
tells apart a relay that forwards events as the upstream sends them (one read per event, gaps
matching the upstream's pacing) from one that batches them (many events per read, a burst at
the end). Run as its own process: `python -m bench.streamprobe --url ... --body-file ...`;
prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

_CONTENT_MARK = b'"delta":{"content":"'
_SIZE_LINE = -1
_CRLF = -2


@dataclass(slots=True)
class StreamStats:
    status: int
    ttfb_ms: float  # first byte of the response
    ttfe_ms: float  # first complete SSE event
    total_ms: float  # end of the response
    events: int
    reads: int  # distinct network reads in which events completed
    content_events: int
    content_reads: int  # distinct reads in which content events completed
    max_content_per_read: int  # the largest burst of content events in one read
    span_ms: float  # first to last content event
    gaps_ms: list[float] = field(default_factory=list)  # between consecutive content events


class _Probe(asyncio.Protocol):
    """HTTP/1.1 keep-alive client for sequential streamed requests on one connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self._reset(None)

    def _reset(self, done: asyncio.Future[None] | None) -> None:
        self.done = done
        self.raw = b""
        self.headers_done = False
        self.status = 0
        self.chunked = False
        self.remaining: int | None = None  # content-length bytes left
        self.chunk_left = _SIZE_LINE  # or _CRLF, or the data bytes left in this chunk
        self.sse = b""
        self.read_index = 0
        self.t_first_body: float | None = None
        self.events: list[tuple[float, int, bool]] = []  # (time, read index, is content)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection closed mid-response"))

    async def request(self, payload: bytes) -> tuple[float, StreamStats]:
        assert self.transport is not None
        self._reset(asyncio.get_running_loop().create_future())
        assert self.done is not None
        t0 = time.perf_counter()
        self.transport.write(payload)
        await self.done
        end = time.perf_counter()
        return t0, self._stats(t0, end)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.read_index += 1
        self.raw += data
        if not self.headers_done:
            head_end = self.raw.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.raw[:head_end].decode("latin-1").split("\r\n")
            self.raw = self.raw[head_end + 4 :]
            self.status = int(head[0].split()[1])
            fields = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])
            }
            self.chunked = "chunked" in fields.get("transfer-encoding", "").lower()
            if not self.chunked:
                self.remaining = int(fields.get("content-length", "0"))
            self.headers_done = True
        if self.raw and self.t_first_body is None:
            self.t_first_body = now
        body, finished = self._dechunk()
        if body:
            self._feed_sse(body, now)
        if finished and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def _dechunk(self) -> tuple[bytes, bool]:
        """Body bytes available so far, and whether the response is complete."""
        if not self.chunked:
            assert self.remaining is not None
            body, self.raw = self.raw[: self.remaining], self.raw[self.remaining :]
            self.remaining -= len(body)
            return body, self.remaining == 0
        out = bytearray()
        while True:
            if self.chunk_left == _SIZE_LINE:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    return bytes(out), False
                size = int(self.raw[:line_end].split(b";")[0], 16)
                self.raw = self.raw[line_end + 2 :]
                if size == 0:
                    self.raw = b""  # no trailers expected
                    return bytes(out), True
                self.chunk_left = size
            elif self.chunk_left == _CRLF:
                if len(self.raw) < 2:
                    return bytes(out), False
                self.raw = self.raw[2:]
                self.chunk_left = _SIZE_LINE
            else:
                if not self.raw:
                    return bytes(out), False
                take = self.raw[: self.chunk_left]
                out += take
                self.raw = self.raw[len(take) :]
                self.chunk_left -= len(take)
                if self.chunk_left == 0:
                    self.chunk_left = _CRLF

    def _feed_sse(self, data: bytes, now: float) -> None:
        self.sse += data
        while True:
            end = self.sse.find(b"\n\n")
            if end < 0:
                return
            event, self.sse = self.sse[:end], self.sse[end + 2 :]
            if event.strip():
                self.events.append((now, self.read_index, _CONTENT_MARK in event))

    def _stats(self, t0: float, end: float) -> StreamStats:
        content = [(t, i) for t, i, is_content in self.events if is_content]
        per_read = Counter(i for _, i in content)
        gaps = [(b[0] - a[0]) * 1000 for a, b in itertools.pairwise(content)]
        return StreamStats(
            status=self.status,
            ttfb_ms=((self.t_first_body or end) - t0) * 1000,
            ttfe_ms=((self.events[0][0] if self.events else end) - t0) * 1000,
            total_ms=(end - t0) * 1000,
            events=len(self.events),
            reads=len({i for _, i, _ in self.events}),
            content_events=len(content),
            content_reads=len({i for _, i in content}),
            max_content_per_read=max(per_read.values(), default=0),
            span_ms=(content[-1][0] - content[0][0]) * 1000 if content else 0.0,
            gaps_ms=[round(g, 4) for g in gaps],
        )


async def probe(url: str, body: bytes, streams: int, concurrency: int) -> list[StreamStats]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = (
        f"POST {parts.path or '/'} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    results: list[StreamStats] = []
    todo = list(range(streams))

    async def worker() -> None:
        transport, proto = await loop.create_connection(_Probe, host, port)
        try:
            while todo:
                todo.pop()
                _, stats = await asyncio.wait_for(proto.request(payload), 30)
                results.append(stats)
        finally:
            transport.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, streams))))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streamprobe")
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)
    stats = asyncio.run(
        probe(args.url, args.body_file.read_bytes(), args.streams, args.concurrency)
    )
    print(json.dumps([asdict(s) for s in stats]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
