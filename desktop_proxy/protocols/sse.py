"""Server-sent events: an incremental decoder for upstream streams and an encoder for clients.

The decoder follows the WHATWG event-stream rules that matter for LLM APIs: UTF-8 decoded
incrementally (a multi-byte character may be split across network reads), lines ended by CRLF,
LF or CR, events dispatched on a blank line, `data:` with or without the space after the colon,
several `data:` lines joined with "\\n", `:` comment lines ignored.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["SSEDecoder", "SSEEvent", "encode_sse"]

# Only CR and LF end lines: str.splitlines() would also split on U+2028 and friends, which
# JSON written with ensure_ascii=False may carry raw inside a data line.
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(slots=True, frozen=True)
class SSEEvent:
    """One dispatched event: its `event:` name (None when absent) and its joined data."""

    event: str | None = None
    data: str = ""


class SSEDecoder:
    """Turns the bytes of an event stream, read in arbitrary pieces, into `SSEEvent`s."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Text after the last line end, in pieces: a long line arriving in many reads is only
        # joined once its end arrives (no quadratic re-scanning).
        self._tail: list[str] = []
        self._event: str | None = None
        self._data: list[str] = []
        self._at_start = True

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decodes one network read and returns the events it completed."""
        return self._feed_text(self._utf8.decode(chunk), final=False)

    def close(self) -> list[SSEEvent]:
        """Flushes the stream end; an event not followed by a blank line is still dispatched."""
        events = self._feed_text(self._utf8.decode(b"", final=True), final=True)
        if self._tail:
            self._take_line("".join(self._tail), events)
            self._tail = []
        self._dispatch(events)
        return events

    def _feed_text(self, text: str, *, final: bool) -> list[SSEEvent]:
        if self._at_start and text:
            text = text.removeprefix("\ufeff")
            self._at_start = False
        if not final and "\n" not in text and "\r" not in text:
            if text:
                self._tail.append(text)
            return []
        buffer = "".join(self._tail) + text
        carry = ""
        # A CR at the end may be the first half of a CRLF split across reads.
        if buffer.endswith("\r") and not final:
            buffer, carry = buffer[:-1], "\r"
        lines = _LINE_END.split(buffer)
        last = lines.pop() + carry
        self._tail = [last] if last else []
        events: list[SSEEvent] = []
        for line in lines:
            self._take_line(line, events)
        return events

    def _take_line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            events.append(SSEEvent(event=self._event, data="\n".join(self._data)))
        self._event = None
        self._data = []


def encode_sse(data: str | dict[str, Any], event: str | None = None) -> bytes:
    """Encodes one event; a dict is written as compact JSON, a multi-line string as several
    `data:` lines."""
    text = (
        data
        if isinstance(data, str)
        else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    )
    head = f"event: {event}\n" if event is not None else ""
    body = "".join(f"data: {line}\n" for line in _LINE_END.split(text))
    return f"{head}{body}\n".encode()
