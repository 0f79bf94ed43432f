"""When the gateway decides that its history writer is starved of CPU time (priority.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from desktop_proxy.history.priority import NICENESS, StarvationWatch, run_delay


def test_a_writer_that_stores_nothing_while_waiting_to_run_is_starved() -> None:
    watch = StarvationWatch(stall_limit=5.0, share=0.5)
    assert not watch.starved(0.0, 6.0, 10.0)  # the first sample only sets a baseline
    assert watch.starved(1.0, 7.0, 10.8)  # waited 0.8 s of the last second


def test_a_writer_blocked_on_the_database_is_not_starved() -> None:
    """Stalled for long, but asleep (a locked database): a new process would not help."""
    watch = StarvationWatch(stall_limit=5.0, share=0.5)
    watch.starved(0.0, 30.0, 10.0)
    assert not watch.starved(1.0, 31.0, 10.05)


def test_a_writer_that_waits_but_keeps_storing_is_not_starved() -> None:
    """Under load the idle class waits for its turn most of the time and still keeps up."""
    watch = StarvationWatch(stall_limit=5.0, share=0.5)
    watch.starved(0.0, 0.3, 10.0)
    assert not watch.starved(1.0, 0.2, 10.9)


def test_without_figures_nothing_is_decided() -> None:
    watch = StarvationWatch(stall_limit=5.0, share=0.5)
    assert not watch.starved(0.0, 9.0, None)
    assert not watch.starved(1.0, 10.0, 5.0)  # a new baseline after a gap
    assert not watch.starved(1.0, 10.0, 9.0)  # no time passed
    # A thread that ended takes its waiting with it: the sum may shrink, never "negative".
    assert not watch.starved(2.0, 11.0, 1.0)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/PID/schedstat is Linux's")
def test_run_delay_reads_the_processes_threads() -> None:
    delay = run_delay(os.getpid())
    assert delay is not None and delay >= 0.0
    assert run_delay(2**22 + 12345) is None  # no such process


_PLACEMENT_PROBE = """
import os, threading
from desktop_proxy.history.priority import enter_background, step_back

def niceness(tid=0):
    return os.getpriority(os.PRIO_PROCESS, tid)

start = niceness()
enter_background("catch-up")
catching_up = niceness()
ready, done = threading.Event(), threading.Event()
tid = []
def writer_thread():
    tid.append(threading.get_native_id()); ready.set(); done.wait()
threading.Thread(target=writer_thread).start()
ready.wait()
step_back()
print(start, catching_up, niceness(), niceness(tid[0]) if os.uname().sysname == "Linux" else "-")
done.set()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="niceness is POSIX's; Windows uses a class")
def test_a_catching_up_writer_steps_back_later_with_all_its_threads() -> None:
    # In a child process: a process cannot take back niceness it gave away.
    out = subprocess.run(
        [sys.executable, "-c", _PLACEMENT_PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    start, catching_up, after = (int(x) for x in out[:3])
    assert catching_up == start
    assert after == min(19, start + NICENESS)
    if sys.platform == "linux":  # per-thread niceness: the running writer thread steps back too
        assert int(out[3]) == after
