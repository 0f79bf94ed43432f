"""The history writer in its own process: records arrive, survive its crash, and never cost
the gateway an error. These tests start real `desktop-proxy _history-writer` processes."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desktop_proxy.config.models import HistorySettings, ProviderConfig
from desktop_proxy.history import priority, remote
from desktop_proxy.history.pipe import PIPE_SIZE, Channel, enlarge_pipe, receive
from desktop_proxy.history.pricing import Pricer
from desktop_proxy.history.record import plain_values
from desktop_proxy.history.remote import HistoryWriterProcess, worker_command
from desktop_proxy.history.store import open_db
from tests.unit.history_helpers import make_record, pricer, wait_for


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


@pytest.fixture
def writers() -> Iterator[list[HistoryWriterProcess]]:
    made: list[HistoryWriterProcess] = []
    yield made
    for writer in made:
        writer.close(timeout=5)


def start(writers: list[HistoryWriterProcess], db: Path, **kwargs: object) -> HistoryWriterProcess:
    writer = HistoryWriterProcess(db, pricer=pricer(), **kwargs)  # type: ignore[arg-type]
    writers.append(writer)
    return writer.start()


def stored(db: Path) -> list[str]:
    conn = open_db(db)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM requests ORDER BY time")]
    finally:
        conn.close()


def test_records_reach_the_database_and_close_writes_the_rest(
    writers: list[HistoryWriterProcess], db: Path
) -> None:
    w = start(writers, db)
    first = [make_record() for _ in range(300)]
    for rec in first:
        w.record(rec)
    assert w.flush(timeout=20)
    assert sorted(stored(db)) == sorted(r.id for r in first)
    assert w.status.state == "ok" and w.status.pending == 0
    last = [make_record(request_body=b'{"q": 1}') for _ in range(50)]
    for rec in last:
        w.record(rec)
    assert w.close(timeout=10) is True  # no flush: close itself stores what was accepted
    assert len(stored(db)) == 350
    assert w.status.state == "closed"
    w.record(make_record())  # after close: counted as dropped, never raised
    assert w.dropped == 1


def test_a_crashed_writer_process_is_restarted_and_nothing_is_lost(
    writers: list[HistoryWriterProcess], db: Path
) -> None:
    w = start(writers, db)
    states: list[str] = []
    w.listeners.append(lambda status: states.append(status.state))
    before = [make_record() for _ in range(100)]
    for rec in before:
        w.record(rec)
    child = w._child
    assert child is not None
    child.kill()  # mid-stream: some of these may not be stored yet
    after = [make_record() for _ in range(100)]
    for rec in after:
        w.record(rec)
    assert w.flush(timeout=30)
    ids = stored(db)
    assert sorted(ids) == sorted(r.id for r in before + after)  # each exactly once
    assert "degraded" in states
    assert wait_for(lambda: w.status.state == "ok")
    assert w._child is not child


def test_what_a_dying_writer_process_had_received_but_not_stored_goes_to_its_successor(
    writers: list[HistoryWriterProcess], db: Path
) -> None:
    """The gateway lets records go once sent, keeping the messages as sent: those are what
    a new process gets when the one holding the records dies before storing them."""
    db.mkdir(parents=True)  # unusable: the writer process holds what it receives
    w = start(writers, db)
    records = [make_record(request_body=b'{"n": %d}' % i) for i in range(200)]
    for rec in records:
        w.record(rec)
    assert wait_for(lambda: w._sent >= 200)  # all of them handed to the process
    assert w.status.pending == 200
    child = w._child
    assert child is not None
    child.kill()
    db.rmdir()
    assert w.flush(timeout=30)
    assert sorted(stored(db)) == sorted(r.id for r in records)  # each exactly once
    assert w._child is not child
    conn = open_db(db)
    try:
        assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 200
    finally:
        conn.close()


def test_a_full_buffer_drops_the_oldest_and_counts_them(
    writers: list[HistoryWriterProcess], db: Path
) -> None:
    db.mkdir(parents=True)  # nothing can be stored: records pile up
    w = start(writers, db, max_buffer=300)
    for i in range(1000):
        w.record(make_record())
        if i % 100 == 99:
            time.sleep(0.1)  # the sender hands some over meanwhile, as under real load
    assert wait_for(lambda: w._sent > 0)
    assert w.status.pending <= 300
    assert w.dropped + w.status.pending == 1000  # each one either waits or is counted


def test_an_unusable_database_is_reported_from_the_writer_process(
    writers: list[HistoryWriterProcess], db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.mkdir(parents=True)  # a directory where the file should be
    w = start(writers, db)
    w.record(make_record())
    assert wait_for(lambda: w.status.state == "degraded")
    assert "cannot open the history database" in (w.status.message or "")
    assert w.status.pending == 1
    # The writer process's log lines come out in the gateway's log.
    assert wait_for(lambda: "history" in caplog.text and "in memory" in caplog.text)


@pytest.mark.parametrize("idle", [None, False], ids=["default", "normal-class"])
def test_the_writer_process_runs_at_a_lower_priority_in_the_gateways_session(
    writers: list[HistoryWriterProcess], db: Path, idle: bool | None
) -> None:
    """Its own process group (Ctrl+C stays out, see below), but the gateway's session: on
    Linux each session is a CPU-share group of its own (autogroup), where a lower priority
    would not count against the gateway's."""
    w = start(writers, db, idle_priority=idle)
    w.record(make_record())
    assert w.flush(timeout=20)  # it is up and storing
    child = w._child
    assert child is not None
    if sys.platform == "win32":
        return  # BELOW_NORMAL_PRIORITY_CLASS: checked through spawn_options below
    assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    assert os.getsid(child.pid) == os.getsid(0)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + priority.NICENESS)
    assert priority.runs_idle(child.pid) is (idle is None and priority.idle_class_available())
    autogroup = Path(f"/proc/{child.pid}/autogroup")
    if autogroup.exists():  # Linux with autogroup: the same CPU-share group as the gateway
        # The file is empty where tasks are grouped by cgroup instead (containers): then both
        # are empty, which is just as much "the same group".
        ours_group = Path("/proc/self/autogroup").read_text().split()[:1]
        assert autogroup.read_text().split()[:1] == ours_group


def starving(writers: list[HistoryWriterProcess], db: Path) -> HistoryWriterProcess:
    """A writer in the idle class that stops storing (stopped by a signal) while, as far as
    the gateway can tell, it waits to run all the time: a machine whose CPUs are all busy."""
    w = start(
        writers, db, idle_priority=True, stall_limit=0.5, run_delay=lambda pid: time.monotonic()
    )
    w.record(make_record())
    assert w.flush(timeout=20)
    assert w._child is not None
    os.kill(w._child.pid, signal.SIGSTOP)
    return w


@pytest.mark.skipif(sys.platform == "win32", reason="the idle class and SIGSTOP are POSIX's")
def test_a_starved_writer_is_replaced_by_one_at_normal_priority_and_nothing_is_lost(
    writers: list[HistoryWriterProcess], db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = starving(writers, db)
    stopped = w._child
    states: list[str] = []
    w.listeners.append(lambda status: states.append(status.state))
    records = [make_record() for _ in range(200)]
    for rec in records:
        w.record(rec)
    assert w.flush(timeout=30)
    assert w._child is not stopped
    assert len(stored(db)) == 201  # each exactly once
    assert "degraded" not in states  # a replacement on purpose, not a failure
    assert "no CPU time" in caplog.text and "normal priority" in caplog.text
    # The replacement caught up at the gateway's priority, then stepped back, out of the idle
    # class for good.
    child = w._child
    assert child is not None and not priority.runs_idle(child.pid)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert wait_for(
        lambda: os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + priority.NICENESS)
    )


@pytest.mark.skipif(sys.platform == "win32", reason="the idle class and SIGSTOP are POSIX's")
def test_a_writer_starved_while_the_gateway_shuts_down_is_replaced_and_stores_everything(
    writers: list[HistoryWriterProcess], db: Path
) -> None:
    w = starving(writers, db)
    for _ in range(100):
        w.record(make_record())
    assert w.close(timeout=10) is True
    assert len(stored(db)) == 101


def test_the_writer_process_is_started_below_normal_priority_on_windows() -> None:
    flags = remote.spawn_options("win32")["creationflags"]
    assert flags & remote.BELOW_NORMAL_PRIORITY_CLASS
    assert flags & remote.CREATE_NO_WINDOW and flags & remote.CREATE_NEW_PROCESS_GROUP
    for platform in ("linux", "darwin"):
        assert remote.spawn_options(platform) == {"process_group": 0}


def test_a_writer_process_that_cannot_start_raises_oserror(db: Path) -> None:
    w = HistoryWriterProcess(db, command=[str(db.parent / "no-such-program")])
    with pytest.raises(OSError):
        w.start()


def test_the_writer_process_outlives_ctrl_c_and_stores_what_it_has_when_the_gateway_dies(
    db: Path,
) -> None:
    """Ctrl+C reaches the whole process group; the gateway's own shutdown decides. If the
    gateway dies instead, the pipe closes and the writer stores what it received, then exits."""
    child = subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    channel = Channel(child.stdin)
    channel.send(("open", str(db), HistorySettings(), pricer(), False))
    records = [make_record() for _ in range(20)]
    channel.send(("records", [(n + 1, plain_values(r)) for n, r in enumerate(records)]))
    if sys.platform != "win32":
        time.sleep(0.5)  # let it install its handlers
        os.kill(child.pid, signal.SIGINT)
        time.sleep(0.2)
        assert child.poll() is None
    channel.close()  # the gateway is gone
    assert child.wait(timeout=20) == 0
    replies = []
    while (message := receive(child.stdout)) is not None:
        replies.append(message)
    child.stdout.close()
    assert ("stored", 20) in replies
    assert replies[-1] == ("closed", True)
    assert sorted(stored(db)) == sorted(r.id for r in records)


def test_the_pricer_travels_without_the_providers_keys() -> None:
    provider = ProviderConfig(
        name="openai",
        kind="openai",
        base_url="https://api.openai.com/v1",
        protocol="openai",
        auth="bearer",
        api_keys=["sk-secret-key-that-must-not-travel-0001"],
    )
    data = pickle.dumps(Pricer([provider]))
    assert b"sk-secret" not in data
    copy = pickle.loads(data)
    rec = make_record(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
    assert copy.price_record(rec).cost_usd == Pricer([provider]).price_record(rec).cost_usd


def test_a_writer_process_that_keeps_dying_silently_is_replaced_by_a_thread(
    writers: list[HistoryWriterProcess],
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Where the second process starts but cannot run (a platform we could not test, a broken
    install), history falls back to a writer thread and loses nothing."""
    monkeypatch.setattr(remote, "RESTART_DELAYS", (0.01,))
    w = start(writers, db, command=[sys.executable, "-c", "pass"])  # exits at once, silently
    records = [make_record() for _ in range(30)]
    for rec in records[:10]:
        w.record(rec)
    assert wait_for(lambda: w._local is not None, timeout=20)
    assert "writing from the gateway's process instead" in caplog.text
    for rec in records[10:]:
        w.record(rec)
    assert w.flush(timeout=20)
    assert sorted(stored(db)) == sorted(r.id for r in records)
    assert w.status.state == "ok"
    assert w.close(timeout=10) is True


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux pipes can be resized")
def test_a_send_of_records_fits_the_enlarged_pipe_in_one_piece(tmp_path: Path) -> None:
    """Without a reader, a 300 KB message goes into the pipe at once: the sender is not woken
    and put to sleep again for every 64 KiB, nor is the writer process."""
    read_fd, write_fd = os.pipe()
    try:
        assert enlarge_pipe(write_fd) == PIPE_SIZE
        os.set_blocking(write_fd, False)
        message = pickle.dumps(("records", [(1, b"x" * 300_000)]))
        assert os.write(write_fd, message) == len(message)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    with open(tmp_path / "not-a-pipe", "wb") as f:
        assert enlarge_pipe(f.fileno()) is None  # refused: nothing raised


def test_bodies_waiting_for_the_writer_process_stay_within_budget(
    writers: list[HistoryWriterProcess], db: Path
) -> None:
    """Records wait in the gateway until the writer process has stored them. While it cannot
    (here the database path is a directory), their bodies stay within budget, the oldest
    going first; every record is kept and stored once the database is back."""
    db.mkdir(parents=True)
    body = b"word " * 20_000  # 100 KB, a Claude Code-sized request
    w = start(writers, db, max_buffer_body_bytes=4_000_000, body_check_interval=0.05)
    records = [make_record(request_body=body) for _ in range(1200)]  # 120 MB of bodies
    for rec in records:
        w.record(rec)
    assert wait_for(lambda: w.buffered_body_bytes <= 4_000_000)
    assert w.status.pending == 1200
    db.rmdir()
    assert w.flush(timeout=60)
    assert len(stored(db)) == 1200
    conn = open_db(db)
    try:
        assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] > 0
    finally:
        conn.close()
