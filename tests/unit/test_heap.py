"""The garbage-collector settings of the long-running processes (desktop_proxy/heap.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from desktop_proxy.heap import settle_heap, tune_for_batches


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settling_takes_the_objects_alive_now_out_of_every_collection(restore_gc: None) -> None:
    gc.unfreeze()
    tables = [{"model": f"m{i}", "prices": [i, i + 1]} for i in range(5000)]  # 10,000 containers
    settle_heap()
    assert gc.get_freeze_count() >= 10_000
    walked = {id(o) for o in gc.get_objects()}  # what collections still go through
    assert id(tables) not in walked and id(tables[0]) not in walked
    # Garbage made after settling is still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


def test_tuning_for_batches_only_changes_the_youngest_generation(restore_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_for_batches()
    assert gc.get_threshold() == (20_000, 10, 10)
    tune_for_batches(5000)
    assert gc.get_threshold() == (5000, 10, 10)
