"""`desktop-proxy _history-writer`: the history writer's own process (see `remote.py`).

Reads records from stdin, hands them to an ordinary HistoryWriter, and reports back on stdout
which ones are stored, its status and its log lines. It stops when told to, or when stdin
closes (the gateway is gone): what it has is written first.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import IO

from desktop_proxy.heap import settle_heap, tune_for_batches
from desktop_proxy.history.pipe import Channel, receive
from desktop_proxy.history.priority import enter_background, step_back
from desktop_proxy.history.record import as_record_values
from desktop_proxy.history.writer import HistoryWriter, WriterStatus

CLOSE_TIMEOUT = 10.0


class _ForwardLogs(logging.Handler):
    """Log records go to the gateway, which logs them where its own lines go."""

    def __init__(self, channel: Channel) -> None:
        super().__init__(logging.INFO)
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # the pipe is gone: nobody left to tell
            self._channel.send(("log", record.levelno, self.format(record)))


class _Acks:
    """Maps the writer's own seqs back to the gateway's, to report what is stored."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._marks: collections.deque[tuple[int, int]] = collections.deque()

    def add(self, writer_seq: int, gateway_seq: int) -> None:
        with self._lock:
            self._marks.append((writer_seq, gateway_seq))

    def stored_up_to(self, writer_seq: int) -> None:
        stored = None
        with self._lock:
            while self._marks and self._marks[0][0] <= writer_seq:
                stored = self._marks.popleft()[1]
        if stored is not None:
            self._channel.send(("stored", stored))


def main(stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> int:
    # Ctrl+C in a terminal reaches the whole process group; the gateway decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source = stdin or sys.stdin.buffer
    channel = Channel(stdout or sys.stdout.buffer)
    sys.stdout = sys.stderr  # nothing else may write into the pipe
    root = logging.getLogger()
    root.handlers[:] = [_ForwardLogs(channel)]
    root.setLevel(logging.INFO)

    opening = receive(source)
    if opening is None or opening[0] != "open":
        return 2
    _, path, settings, pricer, placement = opening
    writer = HistoryWriter(
        Path(path),
        settings=settings,
        pricer=pricer,
        # Its own process: no event loop to share the GIL with, so batches can be short.
        batch_interval=0.2,
        batch_size=2000,
    )
    if pricer is not None:
        pricer.warm_up()  # here rather than in the writer thread: frozen with the rest below
    settle_heap()  # nothing is buffered yet
    tune_for_batches()
    # After start-up, which a replacement for a starved writer must get through quickly, and
    # before the writer's thread starts, which inherits it.
    enter_background(placement)
    acks = _Acks(channel)
    writer.progress_listeners.append(acks.stored_up_to)
    writer.listeners.append(lambda status: _send_status(channel, status))
    writer.start()
    ok = True
    while True:
        message = receive(source)
        if message is None:  # the gateway went away without saying goodbye
            ok = writer.close(CLOSE_TIMEOUT)
            break
        kind = message[0]
        if kind == "records" and message[1]:
            batch = message[1]
            last = writer.record_many(as_record_values(values) for _, values in batch)
            acks.add(last, batch[-1][0])  # acknowledged per message, once all of it is stored
        elif kind == "flush":
            writer.flush(CLOSE_TIMEOUT)
        elif kind == "configure":
            writer.configure(message[1], message[2])
        elif kind == "retention":
            writer.run_retention_soon()
        elif kind == "background":  # caught up after replacing a starved writer
            step_back()
        elif kind == "close":
            ok = writer.close(message[1])
            break
    try:
        channel.send(("closed", ok))
        channel.close()
    except OSError:
        pass
    return 0 if ok else 1


def _send_status(channel: Channel, status: WriterStatus) -> None:
    with contextlib.suppress(OSError):
        channel.send(("status", status))
