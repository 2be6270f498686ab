"""What only the Redis store has: round trips, failures, scripts, key layout, URLs."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.connection import AbstractConnection

from netvirt.state import (
    Entry,
    MemoryStore,
    StateStoreError,
    StateStoreUnavailable,
    open_store,
)
from netvirt.state.redis import DEFAULT_HOLD_DOWN, DEFAULT_TIMEOUT, RedisStore
from state.state_support import RedisServer, free_port

FAST_FAIL = "socket_timeout=0.2&socket_connect_timeout=0.2"


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts writes to Redis sockets: one per round trip for pipelined commands."""
    calls: list[int] = []
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        calls.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return calls


def _every_operation(store: RedisStore) -> list[Callable[[], object]]:
    def run_batch() -> object:
        batch = store.batch()
        batch.get("k")
        return batch.execute()

    return [
        lambda: store.get("k"),
        lambda: store.get_many(["k"]),
        lambda: store.put("k", b"v"),
        lambda: store.compare_and_set("k", 0, b"v"),
        lambda: store.delete_many(["k"]),
        lambda: store.expire("k", 1),
        lambda: store.allocate("pool", ["1"], "me"),
        run_batch,
    ]


# -- round trips -----------------------------------------------------------------------------


def test_a_mixed_batch_is_one_round_trip(redis_store: RedisStore, sends: list[int]) -> None:
    redis_store.put("warm-up", b"connects and loads scripts")
    sends.clear()
    batch = redis_store.batch()
    for i in range(64):
        batch.get(f"k{i}")
        batch.put(f"k{i}", b"v", ttl=5)
        batch.cas(f"c{i}", 0, b"v")
    batch.allocate("pool", ["1", "2"], "me")
    results = batch.execute()
    assert len(results) == 193
    assert len(sends) == 1


def test_a_batch_that_writes_is_one_script_call(
    redis_store: RedisStore, redis_raw: redis.Redis, sends: list[int]
) -> None:
    redis_store.put("warm-up", b"v")
    redis_raw.config_resetstat()
    sends.clear()
    batch = redis_store.batch()
    for i in range(128):
        batch.get(f"k{i}")
    for i in range(128):
        batch.put(f"k{i}", b"v", ttl=5)
    cas = batch.cas("warm-up", 1, b"w")
    claim = batch.allocate("pool", ["a", "b"], "me", ttl=5)
    gone = batch.release("pool", "b", "me")
    batch.execute()
    assert len(sends) == 1
    stats = redis_raw.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1  # everything else ran inside it
    assert cas.result().ok
    assert claim.result() == "a"
    assert gone.result() is False
    got = redis_store.get("k7")
    assert got is not None
    assert got.value == b"v"


def test_a_batch_of_reads_is_one_mget(redis_store: RedisStore, redis_raw: redis.Redis) -> None:
    redis_store.put("k1", b"v")
    redis_raw.config_resetstat()
    batch = redis_store.batch()
    for i in range(64):
        batch.get(f"k{i}")
    found = batch.execute()
    stats = redis_raw.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1
    assert "cmdstat_evalsha" not in stats
    assert [i for i, e in enumerate(found) if e is not None] == [1]


def test_bulk_calls_are_one_round_trip_each(redis_store: RedisStore, sends: list[int]) -> None:
    redis_store.put("warm-up", b"v")
    keys = [f"k{i}" for i in range(128)]
    sends.clear()
    versions = redis_store.put_many([(k, b"v") for k in keys], ttl=5)
    entries = redis_store.get_many(keys)
    deleted = redis_store.delete_many(keys)
    assert len(sends) == 3
    assert entries == [Entry(b"v", v) for v in versions]
    assert deleted == 128


# -- failures ----------------------------------------------------------------------------------


def test_closed_port_raises_unavailable_promptly() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0?{FAST_FAIL}")
    for operation in _every_operation(store):
        started = time.monotonic()
        with pytest.raises(StateStoreUnavailable):
            operation()
        assert time.monotonic() - started < 1.0
    store.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (in the backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_silent_server_times_out_instead_of_hanging(silent_server: int) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{silent_server}/0?{FAST_FAIL}")
    started = time.monotonic()
    with pytest.raises(StateStoreUnavailable, match="unavailable"):
        store.get_many(["k"])
    assert 0.15 < time.monotonic() - started < 2.0
    store.close()


def test_server_death_and_restart(redis_bin: str, tmp_path: Path) -> None:
    server = RedisServer(redis_bin, tmp_path)
    server.start()
    store = RedisStore.from_url(f"{server.url}?{FAST_FAIL}")
    try:
        assert store.compare_and_set("k", 0, b"v").ok
        server.stop()
        with pytest.raises(StateStoreUnavailable):
            store.get("k")
        server.start()  # same port, empty, no scripts loaded
        time.sleep(DEFAULT_HOLD_DOWN)  # the failure held the server down that long
        assert store.get("k") is None
        assert store.compare_and_set("k", 0, b"again").ok  # NOSCRIPT handled
    finally:
        store.close()
        server.stop()


def test_a_failed_server_is_held_down(redis_bin: str, tmp_path: Path) -> None:
    """After a failure, calls fail at once for hold_down seconds, then try again."""
    server = RedisServer(redis_bin, tmp_path)
    server.start()
    store = RedisStore.from_url(f"{server.url}?{FAST_FAIL}&hold_down=0.5")
    try:
        assert store.put("k", b"v") > 0
        server.stop()
        with pytest.raises(StateStoreUnavailable):
            store.get("k")
        server.start()  # up again, but the store does not look before the hold-down ends
        trips = store.stats()["round_trips"]
        started = time.monotonic()
        with pytest.raises(StateStoreUnavailable, match="held down"):
            store.get_many(["k"])
        with pytest.raises(StateStoreUnavailable, match="held down"):
            store.put("k", b"w")
        assert time.monotonic() - started < 0.05  # nothing waited for the network
        stats = store.stats()
        assert (stats["held_down"], stats["round_trips"]) == (2, trips)
        assert stats["unavailable"] == 3
        time.sleep(0.5)
        assert store.get("k") is None  # tried again: the restarted server is empty
    finally:
        store.close()
        server.stop()


def test_default_timeouts_fit_a_datapath() -> None:
    """Tens of milliseconds, so a stalled server stalls a datapath loop that long at most."""
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    kwargs = store._client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == DEFAULT_TIMEOUT
    assert DEFAULT_TIMEOUT <= 0.1
    assert store.hold_down == DEFAULT_HOLD_DOWN == 0.2
    store.close()


def test_wrong_type_is_a_store_error_not_unavailable(
    redis_store: RedisStore, redis_raw: redis.Redis
) -> None:
    redis_raw.hset("netvirt:d:k", "field", "value")
    with pytest.raises(StateStoreError) as caught:
        redis_store.compare_and_set("k", 0, b"v")
    assert not isinstance(caught.value, StateStoreUnavailable)
    batch = redis_store.batch()
    batch.get("other")
    batch.cas("k", 0, b"v")
    with pytest.raises(StateStoreError, match="WRONGTYPE"):
        batch.execute()


# -- scripts -----------------------------------------------------------------------------------


def test_lost_script_cache_single_ops_recover(
    redis_store: RedisStore, redis_raw: redis.Redis
) -> None:
    first = redis_store.put("k", b"1")
    redis_raw.script_flush()
    second = redis_store.put("k", b"2")
    assert second > first
    assert redis_store.allocate("pool", ["a"], "me") == "a"


def test_lost_script_cache_is_reloaded_and_the_batch_sent_again(
    redis_store: RedisStore, redis_raw: redis.Redis
) -> None:
    """A batch is one script call, so NOSCRIPT means nothing of it ran: sending it again
    after loading the script applies it exactly once."""
    first = redis_store.put("k", b"1")
    redis_raw.script_flush()
    batch = redis_store.batch()
    put = batch.put("k", b"2")
    cas = batch.cas("k", first, b"3")
    batch.execute()
    assert put.result() > first
    assert not cas.result().ok  # the put ran once, before it: the version moved on
    assert redis_store.get("k") == Entry(b"2", put.result())
    assert redis_store.stats()["unavailable"] == 0


# -- key layout and URLs -----------------------------------------------------------------------


def test_prefixes_isolate_stores(redis_url: str, redis_raw: redis.Redis) -> None:
    a = open_store(f"{redis_url}?prefix=tenant-a:")
    b = RedisStore.from_url(redis_url, prefix="tenant-b:")
    try:
        a.put("k", b"a")
        b.put("k", b"b")
        a.allocate("pool", ["1"], "x")
        assert b.allocate("pool", ["1"], "y") == "1"
        assert a.get("k") is not None
        assert b.get("k") is not None
        assert a.get("k") != b.get("k")
        keys = {k.decode() for k in redis_raw.keys("*")}
        assert keys == {
            f"{p}:{suffix}" for p in ("tenant-a", "tenant-b") for suffix in ("d:k", "p:4:pool:1")
        } | {"tenant-a:version", "tenant-b:version"}
    finally:
        a.close()
        b.close()


def test_ttl_is_stored_as_milliseconds(redis_store: RedisStore, redis_raw: redis.Redis) -> None:
    redis_store.put("k", b"v", ttl=12.3)
    assert 12000 < redis_raw.pttl("netvirt:d:k") <= 12300
    redis_store.put("k", b"v")
    assert redis_raw.pttl("netvirt:d:k") == -1


def test_open_store_picks_the_backend(redis_url: str) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    store = open_store(redis_url)
    assert isinstance(store, RedisStore)
    store.close()
    with pytest.raises(ValueError, match="scheme"):
        open_store("etcd://localhost:2379")
    with pytest.raises(ValueError, match="scheme"):
        open_store("localhost:6379")
