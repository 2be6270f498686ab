"""The datapath's garbage-collection pause counters and tuning."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from netvirt.agent import gcpause


@pytest.fixture
def pauses() -> Iterator[gcpause.GcPauses]:
    monitor = gcpause.GcPauses()
    yield monitor
    monitor.close()


def test_every_collection_is_counted_once_per_generation(pauses: gcpause.GcPauses) -> None:
    before = list(pauses.count)
    gc.collect(0)
    gc.collect(2)
    gc.collect(2)
    doc = pauses.as_dict()
    assert doc["collections"] == [before[0] + 1, before[1], before[2] + 2]
    histogram = doc["histogram_ms"]
    assert isinstance(histogram, dict)
    assert sum(histogram.values()) == sum(pauses.count)  # every pause in one bucket
    assert pauses.max_ms[2] > 0.0
    assert pauses.total_ms[2] >= pauses.max_ms[2]


def test_close_stops_counting(pauses: gcpause.GcPauses) -> None:
    pauses.close()
    counted = list(pauses.count)
    gc.collect()
    assert pauses.count == counted


def test_tune_raises_only_the_young_threshold() -> None:
    saved = gc.get_threshold()
    try:
        gcpause.tune(12_345)
        assert gc.get_threshold() == (12_345, saved[1], saved[2])
    finally:
        gc.set_threshold(*saved)


def test_settle_freezes_what_is_alive() -> None:
    try:
        gcpause.settle()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def _promoted_after_young_collections(young_collections: int) -> bool:
    """Whether an object alive across that many automatic young collections reaches the
    oldest generation (where each full collection walks it)."""
    gc.collect()  # (counts reset; then the survivor is young)
    survivor: list[int] = []
    young = gc.get_threshold()[0]
    # tracked allocations kept alive (a freed one takes its count back): each ``young`` of
    # them is one automatic young collection
    kept = [[] for _ in range(young * young_collections)]
    found = any(o is survivor for o in gc.get_objects(generation=2))
    del kept
    return found


def test_spare_survivors_keeps_short_lived_objects_out_of_the_old_generation() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's default: promoted within ~20 collections
        assert _promoted_after_young_collections(40)
        gcpause.spare_survivors()
        assert gc.get_threshold() == (700, gcpause.MIDDLE_THRESHOLD, 10)
        assert not _promoted_after_young_collections(40)
    finally:
        gc.set_threshold(*saved)
