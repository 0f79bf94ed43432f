"""The history writer in a process of its own, so that its work never holds the gateway's GIL.

Preparing rows (redacting base64 bodies, masking key-shaped strings) and SQLite inserts cost
the gateway's process tens of µs of CPU per request, most of it under the GIL that the event
loop needs; in the tray app that loop is also the UI thread. Measured under load, the writer
thread cost 15–35% of the gateway's throughput (docs/performance.md, "History"). Here the
gateway's side only takes each record's values (one C call) and a sender thread pickles them
in batches down a pipe to `desktop-proxy _history-writer` (`worker.py`), which runs the
ordinary HistoryWriter.

Nothing accepted is lost: what was sent stays in this process, as the pickled message it was
sent as, until the writer process reports it stored; if the process dies, a new one is started
and gets those messages again (the database ignores ids it already has). The records themselves
are let go once pickled: kept as thousands of small objects until stored, they raised the event
loop's CPU per request under load in some A/B runs (docs/performance.md, "History on vs off").
The buffer is bounded like the writer's own.

Same interface as HistoryWriter: `record`, `flush`, `close`, `configure`, `status`, listeners.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from desktop_proxy.config.models import HistorySettings
from desktop_proxy.history import priority
from desktop_proxy.history.pipe import WORKER_ARG, Channel, decode, encode, enlarge_pipe, receive
from desktop_proxy.history.pricing import Pricer
from desktop_proxy.history.record import (
    RequestRecord,
    as_record_values,
    plain_values,
    raw_body_size,
    without_raw_bodies,
)
from desktop_proxy.history.writer import (
    HistoryWriter,
    StatusListener,
    WriterStatus,
    warn_bodies_trimmed,
)

log = logging.getLogger("desktop_proxy.history")

SEND_INTERVAL = 0.05  # how long a record may wait before it is sent to the writer process
# How often the bodies of records waiting for the writer process are weighed, when many wait.
BODY_CHECK_INTERVAL = 1.0
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A writer process that dies this many times in a row without a word (a platform where the
# second process cannot run) is given up for a writer thread in the gateway's process.
MAX_SILENT_DEATHS = 3
_MAX_PER_MESSAGE = 500


# Windows' creation flags, by value: `subprocess` only defines them on Windows.
CREATE_NEW_PROCESS_GROUP: Final = 0x00000200
BELOW_NORMAL_PRIORITY_CLASS: Final = 0x00004000
CREATE_NO_WINDOW: Final = 0x08000000


def spawn_options(platform: str) -> dict[str, Any]:
    """How the writer process is placed among the user's processes, beyond its pipes.

    Its own process group: Ctrl+C in a terminal reaches the whole foreground group, and the
    writer must outlive it to store what the gateway sends while shutting down (it exits when
    the gateway closes the pipe). The gateway's session, though, not a new one: Linux's
    autogroup gives each session its own share of the CPU, and a writer in a session of its
    own took its share from the gateway as an equal of everything else the user runs, whatever
    its niceness. In the gateway's session it lowers its priority (priority.py) and yields to
    the requests it records. On Windows: no console window, and below-normal priority.
    """
    if platform == "win32":
        flags = CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP | BELOW_NORMAL_PRIORITY_CLASS
        return {"creationflags": flags}
    return {"process_group": 0}


@dataclass(slots=True)
class _Sent:
    """Records handed to the writer process and not yet reported stored: the message as sent,
    to send again should the process die."""

    first: int  # the records' sequence numbers, first and last
    last: int
    count: int
    data: bytes  # from pipe.encode
    body_bytes: int  # of raw bodies in it (the buffer's budget for bodies)

    @classmethod
    def reserve(cls, chunk: list[tuple[int, tuple[Any, ...]]]) -> _Sent:
        """Counted as pending at once; `fill` makes the message (outside the lock)."""
        return cls(chunk[0][0], chunk[-1][0], len(chunk), b"", 0)

    def fill(self, chunk: list[tuple[int, tuple[Any, ...]]]) -> None:
        self.data = encode(("records", chunk))
        self.body_bytes = sum(raw_body_size(values) for _, values in chunk)

    def records(self) -> list[tuple[int, tuple[Any, ...]]]:
        chunk: list[tuple[int, tuple[Any, ...]]] = decode(self.data)[1]
        return chunk

    def drop_bodies(self) -> None:
        self.data = encode(("records", [(seq, without_raw_bodies(v)) for seq, v in self.records()]))
        self.body_bytes = 0


def worker_command() -> list[str]:
    """How to start the writer process: the same program, with the hidden command."""
    if getattr(sys, "frozen", False):  # the installed app (PyInstaller)
        return [sys.executable, WORKER_ARG]
    return [sys.executable, "-m", "desktop_proxy", WORKER_ARG]


class HistoryWriterProcess:
    def __init__(
        self,
        path: Path,
        *,
        settings: HistorySettings | None = None,
        pricer: Pricer | None = None,
        max_buffer: int = 10_000,
        max_buffer_body_bytes: int = 64 * 1024 * 1024,
        command: Sequence[str] | None = None,
        send_interval: float = SEND_INTERVAL,
        body_check_interval: float = BODY_CHECK_INTERVAL,
        idle_priority: bool | None = None,
        stall_limit: float = priority.STALL_LIMIT,
        run_delay: Callable[[int], float | None] = priority.run_delay,
    ) -> None:
        self.path = path
        self.listeners: list[StatusListener] = []
        self._settings = settings or HistorySettings()
        self._pricer = pricer
        self._max_buffer = max(1, max_buffer)
        self._max_body_bytes = max_buffer_body_bytes
        self._body_check_interval = body_check_interval
        self._bodies_trimmed = 0
        self._command = list(command or worker_command())
        self._send_interval = send_interval
        # Linux: the writer starts in the idle scheduling class, until it is seen starved.
        if idle_priority is None:
            idle_priority = priority.idle_class_available()
        self._placement: priority.Placement = "idle" if idle_priority else "below"
        self._watch = priority.StarvationWatch(stall_limit)
        self._run_delay = run_delay
        self._progress_at = 0.0  # when the writer last stored something, or was first waited on
        # The generation stopped on purpose, for starving (at most one: the writer leaves the
        # idle class for good): its end is not a failure.
        self._retired = 0

        self._cond = threading.Condition(threading.Lock())
        # (seq, values) not yet sent, oldest first; then what was sent and not yet reported
        # stored, oldest first, and how many records that holds.
        self._items: collections.deque[tuple[int, tuple[Any, ...]]] = collections.deque()
        self._unsettled: collections.deque[_Sent] = collections.deque()
        self._unsettled_count = 0
        self._resend = False  # a new process: everything unsettled goes to it first
        self._counter = itertools.count(1)
        self._sent = 0  # the newest record handed to the current process
        self._stored = 0
        self._dropped = 0
        self._written = 0
        self._control: list[tuple[Any, ...]] = []  # configure / retention / flush, in order
        self._closing = False
        self._close_timeout = 10.0
        self._closed_ok: bool | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._generation = 0  # which child the reader thread is listening to
        self._child_status = WriterStatus("starting")
        self._status = WriterStatus("starting")
        self._sender: threading.Thread | None = None
        self._warned_after_close = False
        self._heard_from: set[int] = set()  # generations that sent at least one message
        self._silent_deaths = 0
        self._local: HistoryWriter | None = None  # the fallback, once the process is given up

    # --- the gateway side: never blocks, never raises -----------------------------------------

    def record(self, rec: RequestRecord) -> None:
        # No lock: this runs on the event loop for every request. next() on a counter and a
        # deque append are atomic; the other threads copy the deque whole (list()) or take
        # from its left end under the lock, as the trimming below does.
        try:
            local = self._local
            if local is not None:
                local.record(rec)
                return
            if self._closing:
                self._dropped += 1
                if not self._warned_after_close:
                    self._warned_after_close = True
                    log.warning("history writer is closed: a request was not recorded")
                return
            self._items.append((next(self._counter), plain_values(rec)))
            if len(self._items) + self._unsettled_count > self._max_buffer:
                with self._cond:
                    self._shed_locked()
        except Exception:  # pragma: no cover - the gateway must never see an error from here
            with contextlib.suppress(Exception):
                log.exception("history: could not accept a record")

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> HistoryWriterProcess:
        """Start the writer process and the sender thread. Raises OSError if the process
        cannot be started at all (the caller falls back to the in-process writer)."""
        self._spawn()
        self._sender = threading.Thread(
            target=self._send_loop, name="desktop-proxy-history-sender", daemon=True
        )
        self._sender.start()
        if self._placement == "idle":
            threading.Thread(
                target=self._watch_loop, name="desktop-proxy-history-watch", daemon=True
            ).start()
        return self

    def _shed_locked(self) -> None:
        """Over the buffer's bound: the oldest go first. What was sent goes a message at a time
        (the writer process may still store it, but could not be given it again)."""
        while len(self._items) + self._unsettled_count > self._max_buffer:
            if self._unsettled:
                sent = self._unsettled.popleft()
                self._unsettled_count -= sent.count
                self._dropped += sent.count
            else:
                self._items.popleft()
                self._dropped += 1

    def _oldest_pending_locked(self) -> int | None:
        if self._unsettled:
            return self._unsettled[0].first
        return self._items[0][0] if self._items else None

    def _newest_pending_locked(self) -> int | None:
        if self._items:
            return self._items[-1][0]
        return self._unsettled[-1].last if self._unsettled else None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record accepted so far is stored. True if it was."""
        if self._local is not None:
            return self._local.flush(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._newest_pending_locked()
            if target is None:
                return True
            self._control.append(("flush",))
            self._cond.notify_all()
            # Done when nothing up to `target` is left: stored, or dropped by a full buffer.
            while (oldest := self._oldest_pending_locked()) is not None and oldest <= target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self, timeout: float | None = 10.0) -> bool:
        """Send everything, let the writer process store it and stop. True when all was."""
        with self._cond:
            if self._closing and self._sender is None:
                return self._closed_ok is not False
            self._closing = True
            self._close_timeout = 10.0 if timeout is None else timeout
            sender = self._sender
            self._cond.notify_all()
        if sender is not None:
            sender.join(self._close_timeout + 5.0)
        if self._local is not None:
            with self._cond:
                self._sender = None
            return self._local.close(timeout)
        with self._cond:
            self._sender = None
            lost = len(self._items) + self._unsettled_count
            if lost:
                self._dropped += lost
                self._items.clear()
                self._unsettled.clear()
                self._unsettled_count = 0
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()
        if lost:
            log.error("history: %d requests could not be written before shutdown", lost)
        self._set_status(replace(self._status, state="closed", pending=0))
        return lost == 0

    async def aclose(self, grace: float | None = 10.0) -> bool:
        return await asyncio.to_thread(self.close, grace)

    async def aflush(self, max_wait: float | None = None) -> bool:
        return await asyncio.to_thread(self.flush, max_wait)

    def configure(self, settings: HistorySettings, pricer: Pricer | None = None) -> None:
        if self._local is not None:
            self._local.configure(settings, pricer)
            return
        with self._cond:
            self._settings = settings
            if pricer is not None:
                self._pricer = pricer
            self._control.append(("configure", settings, self._pricer))
            self._cond.notify_all()

    def run_retention_soon(self) -> None:
        if self._local is not None:
            self._local.run_retention_soon()
            return
        with self._cond:
            self._control.append(("retention",))
            self._cond.notify_all()

    # --- status -------------------------------------------------------------------------------

    @property
    def status(self) -> WriterStatus:
        if self._local is not None:
            return self._local.status
        with self._cond:
            return self._snapshot_locked(self._status)

    @property
    def pending(self) -> int:
        if self._local is not None:
            return self._local.pending
        with self._cond:
            return len(self._items) + self._unsettled_count

    @property
    def dropped(self) -> int:
        if self._local is not None:
            return self._dropped + self._local.dropped
        with self._cond:
            return self._dropped + self._child_status.dropped

    def _snapshot_locked(self, status: WriterStatus) -> WriterStatus:
        return replace(
            status,
            pending=len(self._items) + self._unsettled_count,
            dropped=self._dropped + self._child_status.dropped,
            written=self._written,
        )

    def _set_status(self, status: WriterStatus) -> None:
        with self._cond:
            previous = self._status
            self._status = status
            status = self._snapshot_locked(status)
        if (previous.state, previous.message) == (status.state, status.message):
            return
        for listener in list(self.listeners):
            try:
                listener(status)
            except Exception:
                log.exception("history status listener failed")

    # --- the writer process -------------------------------------------------------------------

    def _spawn(self) -> None:
        child = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            **spawn_options(sys.platform),
        )
        assert child.stdin is not None and child.stdout is not None
        enlarge_pipe(child.stdin.fileno())
        channel = Channel(child.stdin)
        with self._cond:
            self._generation += 1
            generation = self._generation
            self._child, self._channel = child, channel
            self._sent = self._stored
            self._resend = True  # a new process gets everything not yet stored
            settings, pricer, placement = self._settings, self._pricer, self._placement
        channel.send(("open", str(self.path), settings, pricer, placement))
        threading.Thread(
            target=self._read_loop,
            args=(child, channel, generation),
            name="desktop-proxy-history-reader",
            daemon=True,
        ).start()

    def _read_loop(self, child: subprocess.Popen[bytes], channel: Channel, generation: int) -> None:
        assert child.stdout is not None
        try:
            while (message := receive(child.stdout)) is not None:
                self._heard_from.add(generation)
                self._handle(message)
        except Exception as exc:  # a garbled pipe: treat the process as gone
            log.warning("history writer process: unreadable message (%s)", exc)
        code = child.wait()
        channel.close()
        with contextlib.suppress(OSError):
            child.stdout.close()
        with self._cond:
            if generation != self._generation:
                return
            self._channel = None
            closing = self._closing
            retired = generation == self._retired
            if generation in self._heard_from:
                self._silent_deaths = 0
            elif not retired:
                self._silent_deaths += 1
            self._cond.notify_all()
        if not (closing or retired):
            self._set_status(
                WriterStatus(
                    "degraded",
                    f"the history writer process stopped (exit code {code}); restarting it",
                    moved_aside=self._status.moved_aside,
                )
            )

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "stored":
            with self._cond:
                seq = int(message[1])
                # Stored per message sent, so a message is settled whole.
                while self._unsettled and self._unsettled[0].last <= seq:
                    sent = self._unsettled.popleft()
                    self._unsettled_count -= sent.count
                    self._written += sent.count
                self._stored = max(self._stored, seq)
                self._progress_at = time.monotonic()
                self._cond.notify_all()
        elif kind == "status":
            status: WriterStatus = message[1]
            with self._cond:
                self._child_status = status
            if status.state != "closed":
                self._set_status(status)
        elif kind == "log":
            log.log(int(message[1]), "%s", message[2])
        elif kind == "closed":
            with self._cond:
                self._closed_ok = bool(message[1])
                self._cond.notify_all()

    def _send_loop(self) -> None:
        delays = iter(RESTART_DELAYS)
        last_chance = True  # closing with records left and no process: start one more
        weighed = time.monotonic()
        while True:
            with self._cond:
                if not self._closing:
                    self._cond.wait(self._send_interval)
                now = time.monotonic()
                pending = len(self._items) + self._unsettled_count
                too_big: list[_Sent] = []
                if pending > _MAX_PER_MESSAGE and now - weighed >= self._body_check_interval:
                    weighed = now
                    too_big = self._trim_bodies_locked()
                closing = self._closing
                channel = self._channel
                if self._placement == "catch-up" and pending <= _MAX_PER_MESSAGE:
                    self._control.append(("background",))  # the backlog is (almost) stored
                    self._placement = "below"
                control, self._control = self._control, []
                resend: list[_Sent] = []
                if channel is not None and self._resend:
                    resend, self._resend = list(self._unsettled), False
                waiting = pending > 0  # sent or not, none stored yet
            for sent in too_big:  # only this thread touches a message's data
                sent.drop_bodies()
            if self._local is not None:
                self._hand_over()  # records that raced the switch
                if closing:
                    return
                continue
            if channel is None and self._silent_deaths >= MAX_SILENT_DEATHS and not closing:
                self._give_up_the_process()
                continue
            if channel is None:
                if closing:
                    if not (waiting and last_chance):
                        return
                    last_chance = False
                    with contextlib.suppress(OSError):
                        self._spawn()
                    continue
                time.sleep(next(delays, RESTART_DELAYS[-1]))
                with contextlib.suppress(OSError):
                    self._spawn()
                continue
            try:
                sent_any = False
                for sent in itertools.chain(resend, self._take_messages()):
                    channel.send_encoded(sent.data)
                    sent_any = True
                    with self._cond:
                        if self._sent <= self._stored:  # the writer had nothing to do until now
                            self._progress_at = time.monotonic()
                        self._sent = max(self._sent, sent.last)
                for message in control:
                    channel.send(message)
                if closing:
                    channel.send(("close", self._close_timeout))
                    if self._wait_for_close():
                        return
                    continue  # it was starved: a writer at normal priority stores the rest
            except OSError:  # the process is gone; the reader notices and we restart it
                with self._cond:
                    self._control = control + self._control
                time.sleep(0.05)
                continue
            if sent_any:
                delays = iter(RESTART_DELAYS)

    def _take_messages(self) -> Iterator[_Sent]:
        """The records not sent yet, a message at a time, each counted among the unsettled ones
        before it is made (so that a flush never misses it) and sent after."""
        while True:
            with self._cond:
                # record() appends at the right end meanwhile, without the lock.
                count = min(len(self._items), _MAX_PER_MESSAGE)
                if not count:
                    return
                chunk = [self._items.popleft() for _ in range(count)]
                sent = _Sent.reserve(chunk)
                self._unsettled.append(sent)
                self._unsettled_count += sent.count
            # Pickled outside the lock: `status` readers (the tray's UI thread) never wait on it.
            sent.fill(chunk)
            yield sent

    def _trim_bodies_locked(self) -> list[_Sent]:
        """Records wait here until the writer process has stored them: while it cannot (the
        disk is full, the database locked), keep their bodies within budget by dropping the
        oldest ones, not the records. Claude Code's requests are 50–200 KB each. Returns the
        sent messages to drop the bodies from (the caller does, outside the lock)."""
        items = list(self._items)  # record() appends without the lock; the left end is ours
        sizes = [raw_body_size(values) for _, values in items]
        total = sum(sizes) + sum(sent.body_bytes for sent in self._unsettled)
        if total <= self._max_body_bytes:
            return []
        too_big = []
        for sent in self._unsettled:  # the oldest; the writer process has its own copy
            if total <= self._max_body_bytes:
                break
            if sent.body_bytes:
                total -= sent.body_bytes
                too_big.append(sent)
        for index, ((seq, values), size) in enumerate(zip(items, sizes, strict=True)):
            if total <= self._max_body_bytes:
                break
            if size:
                total -= size
                self._items[index] = (seq, without_raw_bodies(values))
        self._bodies_trimmed += 1
        warn_bodies_trimmed(self._bodies_trimmed, self._max_body_bytes)
        return too_big

    @property
    def buffered_body_bytes(self) -> int:
        """Bytes of bodies held by the records not yet reported stored."""
        if self._local is not None:
            return self._local.buffered_body_bytes
        with self._cond:
            return sum(raw_body_size(values) for _, values in self._items) + sum(
                sent.body_bytes for sent in self._unsettled
            )

    def _give_up_the_process(self) -> None:
        log.warning(
            "history: the writer process stopped %d times without starting; writing from the "
            "gateway's process instead",
            self._silent_deaths,
        )
        local = HistoryWriter.in_gateway_process(
            self.path, settings=self._settings, pricer=self._pricer
        )
        local.listeners = self.listeners  # the same list: listeners added later count too
        local.start()
        self._local = local
        self._hand_over()

    def _hand_over(self) -> None:
        local = self._local
        assert local is not None
        with self._cond:
            unsettled = list(self._unsettled)
            self._unsettled.clear()
            self._unsettled_count = 0
            waiting = list(self._items)
            self._items.clear()
        # Unpickled outside the lock, as they were pickled.
        items = [item for sent in unsettled for item in sent.records()] + waiting
        if items:
            local.record_many(as_record_values(values) for _, values in items)

    def _wait_for_close(self) -> bool:
        """False if the writer process had to be replaced because it was starved."""
        deadline = time.monotonic() + self._close_timeout + 2.0
        with self._cond:
            while self._closed_ok is None and self._channel is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)
            if self._closed_ok is None and self._generation == self._retired:
                return False
        child = self._child
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(0.1, deadline - time.monotonic()))
        return True

    def _watch_loop(self) -> None:
        # A thread of its own: the sender blocks on a full pipe when the writer gets no CPU.
        while self._placement == "idle" and self._local is None and self._status.state != "closed":
            time.sleep(1.0)
            self._check_starvation(time.monotonic())

    def _check_starvation(self, now: float) -> None:
        """A writer in the idle class gets no CPU time while every CPU is busy, and cannot leave
        that class by itself: replace it with one that catches up at normal priority."""
        with self._cond:
            child, generation = self._child, self._generation
            stalled_for = now - self._progress_at if self._sent > self._stored else 0.0
        if child is None or child.poll() is not None:
            return
        if not self._watch.starved(now, stalled_for, self._run_delay(child.pid)):
            return
        log.warning(
            "history: the writer process stored nothing for %.0f s, getting no CPU time at idle "
            "priority (every CPU is busy); starting it again at normal priority",
            stalled_for,
        )
        with self._cond:
            self._placement = "catch-up"
            self._retired = generation
        child.kill()  # what it had not stored yet goes to the next one


AnyHistoryWriter = HistoryWriter | HistoryWriterProcess
