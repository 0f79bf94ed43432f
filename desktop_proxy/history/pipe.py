"""What the gateway and its history writer process say to each other, and how.

Messages are tuples, pickled and length-prefixed, over the child's stdin (gateway → writer) and
stdout (writer → gateway). Both ends are our own code from the same install; nothing from
outside reaches these pipes.

gateway → writer: ("open", path, settings, pricer, placement) where placement is the writer's
priority (`priority.py`), ("records", [(seq, values), ...]) where values is a record as a
plain tuple (`record.plain_values`), ("configure", settings, pricer), ("retention",),
("flush",), ("background",) (lower your priority now), ("close", timeout)
writer → gateway: ("status", WriterStatus), ("stored", seq), ("log", level, text),
("closed", ok)
"""

from __future__ import annotations

import contextlib
import pickle
import struct
import sys
import threading
from typing import IO, Any, Final

WORKER_ARG: Final = "_history-writer"  # `desktop-proxy _history-writer` runs the child
_HEADER = struct.Struct(">I")
# What one send of records needs at the bench's peak (~200 records with their bodies, 50 ms).
PIPE_SIZE: Final = 1 << 20


def enlarge_pipe(fd: int, size: int = PIPE_SIZE) -> int | None:
    """Ask Linux for a pipe buffer of `size` bytes (its own default is 64 KiB); the size granted, or
    None where pipes cannot be resized or the system refuses (`/proc/sys/fs/pipe-max-size`).

    A batch of records larger than the pipe goes through in pieces, each a wake-up of the
    writer process and a wait of the sender: under load that ping-pong took CPU from the event
    loop's thread, and history cost ~5 points more throughput (docs/performance.md)."""
    if sys.platform != "linux":
        return None
    import fcntl

    try:
        return int(fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size))
    except OSError:
        return None


class Channel:
    """One direction of the pipe. Writes are serialised: several threads may send."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._closed = False

    def send(self, message: tuple[Any, ...]) -> None:
        """Raises OSError (BrokenPipeError) when the other side or this one closed the pipe."""
        self.send_encoded(encode(message))

    def send_encoded(self, data: bytes) -> None:
        """Send a message `encode` made (kept to send again, for instance). Raises OSError as
        `send` does."""
        with self._lock:
            if self._closed:
                raise BrokenPipeError("the history pipe is closed")
            self._stream.write(_HEADER.pack(len(data)))
            self._stream.write(data)
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(OSError):
                    self._stream.close()


def encode(message: tuple[Any, ...]) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> tuple[Any, ...]:
    message = pickle.loads(data)
    if not isinstance(message, tuple) or not message:
        raise ValueError("history pipe: not a message")
    return message


def receive(stream: IO[bytes]) -> tuple[Any, ...] | None:
    """The next message, or None when the other side closed the pipe."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    data = _read_exactly(stream, length)
    if data is None:
        return None
    return decode(data)


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
