"""How the history writer's process keeps out of the gateway's way, and how the gateway tells
when it is kept out too far.

The writer runs below the gateway's priority everywhere: niceness +10 (below normal on
Windows). On Linux it starts in the idle scheduling class instead, where it only gets CPU time
that nothing else wants: under the bench's load that cost history several points of throughput
less than niceness 10 (docs/performance.md, "History on vs off"). The idle class has no floor,
though. When every CPU is busy it gets next to nothing, and an unprivileged process cannot leave
it again. So the gateway watches, and when the writer has stopped storing while it waits to run
most of the time, replaces it with one that catches up at the gateway's own priority and then
steps back to niceness +10, where it keeps up even on a machine with no CPU to spare.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Final, Literal

Placement = Literal["idle", "below", "catch-up"]

# At niceness 10 the writer weighs a tenth of a task at the gateway's own priority: when the CPU
# is short, requests go first, and that tenth is still more than the writer needs at the
# bench's peak.
NICENESS: Final = 10
STALL_LIMIT: Final = 2.0  # seconds without a record stored, while records wait
STARVED_SHARE: Final = 0.5  # ...and the writer waited to run at least this share of the time


def idle_class_available() -> bool:
    return sys.platform == "linux" and hasattr(os, "SCHED_IDLE")


def enter_background(placement: Placement) -> None:
    """Called by the writer process after its start-up, before its writer thread starts."""
    if sys.platform == "win32":
        return  # started with BELOW_NORMAL_PRIORITY_CLASS (remote.spawn_options)
    # In a process group of its own, the writer is a background job to the terminal; a
    # traceback written to it under `stty tostop` would otherwise stop the process.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    if placement == "catch-up":
        return  # the gateway sends "background" once the backlog is stored
    step_back()
    if placement == "idle" and idle_class_available():
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def step_back() -> None:
    """Niceness +10 for every thread of this process (on Linux, niceness is per thread)."""
    if sys.platform == "win32":
        return
    if sys.platform != "linux":
        with contextlib.suppress(OSError):
            os.nice(NICENESS)
        return
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                tid = int(task)
                niceness = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, min(19, niceness + NICENESS))


def runs_idle(pid: int) -> bool:
    return idle_class_available() and os.sched_getscheduler(pid) == os.SCHED_IDLE


def run_delay(pid: int) -> float | None:
    """Seconds the process's threads have spent ready to run but waiting for a CPU, summed
    (Linux's /proc/PID/task/*/schedstat); None where that is not known."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


class StarvationWatch:
    """Fed every second or so by the gateway: is the writer starved of CPU time?

    Starved means both: nothing stored for `stall_limit` seconds while records wait, and, since
    the last sample, the writer waited to run for at least `share` of the time. A writer
    blocked on a locked database is stalled too, but it sleeps rather than waits: a new process
    would not help it."""

    def __init__(self, stall_limit: float = STALL_LIMIT, share: float = STARVED_SHARE) -> None:
        self._stall_limit = stall_limit
        self._share = share
        self._last: tuple[float, float] | None = None

    def starved(self, now: float, stalled_for: float, delay: float | None) -> bool:
        last, self._last = self._last, None if delay is None else (now, delay)
        if delay is None or last is None or now <= last[0]:
            return False
        waited = max(0.0, delay - last[1]) / (now - last[0])  # threads come and go: never < 0
        return stalled_for >= self._stall_limit and waited >= self._share
