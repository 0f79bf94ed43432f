"""Tiny Server-Sent-Events helpers for tests (parse what a fake upstream or the gateway sent).

`parse_sse` follows the WHATWG event-stream rules closely enough for LLM APIs: `event:`, `data:`,
`id:` fields, multi-line `data`, comment lines (`: ...`) ignored, LF / CRLF / CR line endings.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

_EOL = re.compile(r"\r\n|\n|\r(?!\Z)")


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched SSE event. `event` is None when the frame had no `event:` line."""

    event: str | None
    data: str
    id: str | None = None

    @property
    def is_done(self) -> bool:
        """True for OpenAI's `data: [DONE]` terminator."""
        return self.data.strip() == "[DONE]"

    def json(self) -> Any:
        return json.loads(self.data)


class SSEParser:
    """Incremental parser: feed bytes as they arrive, get complete events back."""

    def __init__(self) -> None:
        self._buf = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes | str) -> list[SSEEvent]:
        self._buf += self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        out: list[SSEEvent] = []
        while True:
            # a lone trailing "\r" stays buffered: it could be the first half of "\r\n"
            m = _EOL.search(self._buf)
            if m is None:
                return out
            line = self._buf[: m.start()]
            self._buf = self._buf[m.end() :]
            ev = self._line(line)
            if ev is not None:
                out.append(ev)

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._data:  # spec: no data line => nothing is dispatched
                self._event = None
                return None
            ev = SSEEvent(event=self._event, data="\n".join(self._data), id=self._id)
            self._event, self._data = None, []
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def parse_sse(payload: bytes | str) -> list[SSEEvent]:
    """Parse a complete SSE body. A final event without its blank line is still returned."""
    parser = SSEParser()
    events = parser.feed(payload)
    events.extend(parser.feed("\n\n"))
    return events


async def iter_sse(response: aiohttp.ClientResponse) -> AsyncIterator[SSEEvent]:
    """Yield events from an aiohttp response as the bytes arrive."""
    parser = SSEParser()
    async for chunk in response.content.iter_any():
        for ev in parser.feed(chunk):
            yield ev
    for ev in parser.feed("\n\n"):
        yield ev
