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
