"""Store counters (``stats()``): the same meaning on every store (see state/stats.py)."""

from __future__ import annotations

import json

import pytest

from netvirt.state import StateStoreUnavailable
from netvirt.state.redis import RedisStore
from netvirt.state.stats import LATENCY_BUCKETS, StoreStats, latency_bucket
from state.state_support import Harness, free_port


def test_calls_ops_hits_and_misses_count_alike_everywhere(harness: Harness) -> None:
    store = harness.store
    store.put("a", b"1")
    base = store.stats()
    assert store.get("a") is not None
    store.get_many(["a", "b"])
    batch = store.batch()
    batch.get("a")
    batch.get("c")
    batch.put("c", b"3")
    batch.execute()
    stats = store.stats()
    assert (
        stats["backend"]
        == {"memory": "memory", "redis": "redis", "cluster": "redis-cluster"}[harness.kind]
    )
    assert _delta(stats, base, "calls") == 3
    assert _delta(stats, base, "ops") == 1 + 2 + 3
    assert (_delta(stats, base, "hits"), _delta(stats, base, "misses")) == (3, 2)
    json.dumps(stats)  # goes into the agent's JSON counters as is


def _delta(after: dict[str, object], before: dict[str, object], name: str) -> int:
    a, b = after[name], before[name]
    assert isinstance(a, int)
    assert isinstance(b, int)
    return a - b


def test_round_trips_and_their_latency(harness: Harness) -> None:
    store = harness.store

    def one_batch() -> None:
        batch = store.batch()
        for i in range(10):
            batch.get(f"k{i}")
            batch.put(f"k{i}", b"v")
        batch.execute()

    # the same keys once before counting: connects to every node they live on and loads
    # the scripts there (a cluster's first contact with a node costs round trips of its own)
    one_batch()
    store.get_many(["k1", "k2"])
    base = store.stats()
    one_batch()
    store.get_many(["k1", "k2"])
    stats = store.stats()
    histogram = stats["latency_us_log2"]
    assert isinstance(histogram, list)
    assert len(histogram) == LATENCY_BUCKETS
    assert sum(histogram) == stats["round_trips"]
    if harness.kind == "memory":
        assert stats["round_trips"] == stats["round_trip_keys"] == stats["latency_us_sum"] == 0
        return
    assert _delta(stats, base, "round_trips") == 2
    assert _delta(stats, base, "round_trip_keys") == 22
    assert isinstance(stats["latency_us_sum"], float)
    assert stats["latency_us_sum"] > 0
    assert sum(histogram[:4]) == 0  # nothing over the network takes under 8 µs


def test_failures_are_counted() -> None:
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0?socket_timeout=0.2&socket_connect_timeout=0.2"
    )
    with pytest.raises(StateStoreUnavailable):
        store.get_many(["k"])
    stats = store.stats()
    assert (stats["unavailable"], stats["errors"], stats["round_trips"]) == (1, 0, 1)
    store.close()


@pytest.mark.parametrize(
    ("micros", "bucket"),
    [(0.0, 0), (0.9, 0), (1.0, 1), (1.9, 1), (2.0, 2), (3.9, 2), (64.0, 7), (127.0, 7), (1e12, 23)],
)
def test_latency_buckets_are_log2_microseconds(micros: float, bucket: int) -> None:
    assert latency_bucket(micros) == bucket
    stats = StoreStats("x")
    stats.round_trip(keys=5, seconds=micros / 1e6)
    snapshot = stats.snapshot()
    histogram = snapshot["latency_us_log2"]
    assert isinstance(histogram, list)
    assert histogram[bucket] == 1
