"""Keeping Python's cyclic garbage collector out of the way of long-running processes.

The objects loaded at start-up (aiohttp's, the price tables', Qt's in the tray app: ~80,000)
live as long as the process, yet every full collection walks them all: a pause of the event
loop of 35 ms here under load, 60–130 ms in the tray app (bench/ui_stall.py). `gc.freeze()`
moves them to the permanent generation, which collections skip.
"""

from __future__ import annotations

import gc
from typing import Final

# After the gateway starts, its price tables and connection pools are loaded by then.
SETTLE_DELAY_SECONDS: Final = 5.0


def settle_heap(*, collect: bool = True) -> None:
    """Take the objects alive now out of the collector's passes. `collect` first clears what
    is garbage already: a pause too, so only when nothing is being served yet."""
    if collect:
        gc.collect()
    gc.freeze()


def tune_for_batches(first_generation: int = 20_000) -> None:
    """For a process that handles records in batches (the history writer): collect the
    youngest generation every `first_generation` container allocations instead of 700.

    Every record the writer handles allocates a few containers (its tuples, its row) that live
    until its batch is written, some 0.2 s: the default threshold ran a collection every ~100
    records, walking the buffered ones again each time, for 8% of the writer's CPU under load
    (perf, docs/performance.md). Records hold no cycles, so collecting rarely costs nothing."""
    _, second, third = gc.get_threshold()
    gc.set_threshold(first_generation, second, third)
