"""What only the Redis Cluster store has: slots, per-node requests, clocks, node failures.

The contract itself runs on the cluster through ``harness`` (test_state_contract.py)
and the state machine (test_state_machine.py). Tests that break the cluster
(a node stopped, a slot moved) get a cluster of their own.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.connection import AbstractConnection

from netvirt.state import Entry, StateStoreError, StateStoreUnavailable, open_store
from netvirt.state.cluster import ClusterConfig, RedisClusterStore
from netvirt.state.slots import SLOTS, redis_slot, slot_of, slot_tags
from state.state_support import RedisClusterServers, free_ports

FAST_FAIL = "socket_timeout=0.3&socket_connect_timeout=0.3"


def keys_on_each_node(store: RedisClusterStore, count: int = 1) -> list[str]:
    """``count`` store keys per node, in node order."""
    wanted = dict.fromkeys(store.node_addresses(), count)
    found: list[str] = []
    index = 0
    while any(wanted.values()):
        key = f"key-{index}"
        index += 1
        node = store.node_of(key)
        if wanted[node]:
            wanted[node] -= 1
            found.append(key)
    return sorted(found, key=store.node_of)


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts writes to Redis sockets (one per request)."""
    calls: list[int] = []
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        calls.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return calls


@pytest.fixture
def own_cluster(redis_bin: str, tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A cluster this test may break."""
    servers = RedisClusterServers(redis_bin, tmp_path)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


# -- slots and key layout ------------------------------------------------------------------


def test_every_slot_has_a_short_tag_that_hashes_to_it() -> None:
    tags = slot_tags()
    assert len(tags) == SLOTS
    assert all(redis_slot(f"{{{t}}}".encode()) == slot for slot, t in enumerate(tags))
    assert max(len(t) for t in tags) <= 3
    assert redis_slot(b"foo") == 12182  # the example in the Redis Cluster specification


def test_keys_live_in_their_slot_with_its_counter(
    cluster: RedisClusterServers, cluster_store: RedisClusterStore
) -> None:
    store = cluster_store
    store.put("ct:1", b"v")
    store.allocate("snat:192.0.2.1:6", ["40000"], "owner")
    found: dict[bytes, int] = {}
    for index in range(len(cluster.nodes)):
        client = cluster.client(index)
        for key in client.keys("*"):
            found[key] = index
        client.close()
    tag_ct, tag_pool = slot_tags()[slot_of("ct:1")], slot_tags()[slot_of("snat:192.0.2.1:6")]
    data = f"netvirt:{{{tag_ct}}}d:ct:1".encode()
    counter = f"netvirt:{{{tag_ct}}}v".encode()
    member = f"netvirt:{{{tag_pool}}}p:16:snat:192.0.2.1:6:40000".encode()
    assert set(found) == {data, counter, member}
    assert redis_slot(data) == redis_slot(counter) == slot_of("ct:1")
    assert redis_slot(member) == slot_of("snat:192.0.2.1:6")
    address = cluster.nodes[found[data]].address
    assert store.node_of("ct:1") == address


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="braces"):
        open_store("redis+cluster://127.0.0.1:1?prefix=a{b}:")


# -- round trips -----------------------------------------------------------------------------


def test_a_batch_is_one_request_per_node_and_one_round_trip(
    cluster: RedisClusterServers, cluster_store: RedisClusterStore, sends: list[int]
) -> None:
    store = cluster_store
    keys = keys_on_each_node(store, 20)
    store.put_many([(k, b"warm-up") for k in keys])  # connects, loads the script everywhere
    cluster.each("CONFIG RESETSTAT")
    before = store.stats()
    sends.clear()
    batch = store.batch()
    for key in keys:
        batch.get(key)
        batch.cas(key, 0, b"lost")
        batch.put(key, b"v", ttl=5)
    batch.allocate("pool", ["1", "2"], "me")
    results = batch.execute()
    after = store.stats()
    assert len(results) == 3 * len(keys) + 1
    assert len(sends) == 3
    assert [s["cmdstat_evalsha"]["calls"] for s in _commandstats(cluster)] == [1, 1, 1]
    assert after["round_trips"] == before["round_trips"] + 1  # type: ignore[operator]
    assert after["requests"] == before["requests"] + 3  # type: ignore[operator]


def _commandstats(cluster: RedisClusterServers) -> list[dict[str, Any]]:
    stats = []
    for index in range(len(cluster.nodes)):
        client = cluster.client(index)
        stats.append(client.info("commandstats"))
        client.close()
    return stats


def test_bulk_calls_span_nodes_in_one_round_trip(
    cluster_store: RedisClusterStore, sends: list[int]
) -> None:
    store = cluster_store
    keys = keys_on_each_node(store, 10)
    store.put("warm-up", b"v")
    versions = store.put_many([(k, b"v") for k in keys], ttl=5)
    sends.clear()
    entries = store.get_many(keys)
    deleted = store.delete_many(keys)
    assert len(sends) == 6  # two calls, three nodes each
    assert entries == [Entry(b"v", v) for v in versions]
    assert deleted == len(keys)


# -- versions ------------------------------------------------------------------------------------


def test_versions_grow_per_key_across_clients(cluster: RedisClusterServers) -> None:
    """The slot counter, not the client's clock, keeps a key's versions growing."""
    a = RedisClusterStore.from_url(cluster.url)
    b = RedisClusterStore.from_url(cluster.url)
    try:
        for _ in range(30):
            a.put("x", b"a")
        latest = a.get("x")
        assert latest is not None
        assert b.put("x", b"b") > latest.version  # b has seen nothing, still above
        a.delete("x")
        reborn = b.compare_and_set("x", 0, b"again")
        assert reborn.entry is not None
        assert reborn.entry.version > latest.version + 1  # never a version x had before
    finally:
        a.close()
        b.close()


def test_a_client_writes_above_every_version_it_has_seen(cluster: RedisClusterServers) -> None:
    """The Lamport clock: reading a version orders this client's later writes after it."""
    a = RedisClusterStore.from_url(cluster.url)
    b = RedisClusterStore.from_url(cluster.url)
    try:
        hot, cold = keys_on_each_node(a)[:2]  # on different nodes
        for _ in range(40):
            a.put(hot, b"a")
        seen = b.get(hot)
        assert seen is not None
        assert b.put(cold, b"b") > seen.version
    finally:
        a.close()
        b.close()


# -- failures ------------------------------------------------------------------------------------


def test_unreachable_cluster_raises_unavailable_promptly() -> None:
    ports = free_ports(2)
    store = open_store(f"redis+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}?{FAST_FAIL}")
    started = time.monotonic()
    with pytest.raises(StateStoreUnavailable, match="no redis cluster node answers"):
        store.get("k")
    assert time.monotonic() - started < 2.0
    assert store.stats()["unavailable"] == 1
    store.close()


def test_lost_scripts_are_reloaded_without_failing(
    cluster: RedisClusterServers, cluster_store: RedisClusterStore
) -> None:
    store = cluster_store
    keys = keys_on_each_node(store)
    store.put_many([(k, b"1") for k in keys])
    cluster.each("SCRIPT FLUSH")
    version = store.put(keys[0], b"2")
    assert store.get(keys[0]) == Entry(b"2", version)
    batch = store.batch()
    for key in keys:
        batch.put(key, b"3")
    versions = batch.execute()
    assert store.get_many(keys) == [Entry(b"3", v) for v in versions]  # type: ignore[misc]


def test_wrong_type_is_a_store_error(
    cluster: RedisClusterServers, cluster_store: RedisClusterStore
) -> None:
    tag = slot_tags()[slot_of("k")]
    index = next(i for i, n in enumerate(cluster.nodes) if n.address == cluster_store.node_of("k"))
    client = cluster.client(index)
    client.hset(f"netvirt:{{{tag}}}d:k", "field", "value")
    client.close()
    with pytest.raises(StateStoreError, match="WRONGTYPE") as caught:
        cluster_store.compare_and_set("k", 0, b"v")
    assert not isinstance(caught.value, StateStoreUnavailable)


def _index(cluster: RedisClusterServers, store: RedisClusterStore, key: str) -> int:
    return next(i for i, n in enumerate(cluster.nodes) if n.address == store.node_of(key))


def test_a_dead_node_fails_only_its_keys_and_comes_back_empty(
    own_cluster: RedisClusterServers,
) -> None:
    store = RedisClusterStore.from_url(f"{own_cluster.url}?{FAST_FAIL}&hold_down=0.2")
    try:
        keys = keys_on_each_node(store)
        store.put_many([(k, b"v") for k in keys])
        dead = _index(own_cluster, store, keys[0])
        own_cluster.stop_node(dead)
        started = time.monotonic()
        with pytest.raises(StateStoreUnavailable, match="unavailable"):
            store.get_many(keys)  # a batch that needs the dead node
        assert time.monotonic() - started < 1.5
        with pytest.raises(StateStoreUnavailable, match="held down"):
            store.get(keys[0])
        assert [e is not None for e in store.get_many(keys[1:])] == [True, True]
        own_cluster.start_node(dead)  # rejoins from its nodes.conf, with no data
        deadline = time.monotonic() + 10
        while True:
            try:
                assert store.get(keys[0]) is None
                break
            except StateStoreUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert store.compare_and_set(keys[0], 0, b"again").ok
        assert store.stats()["unavailable"] >= 1  # type: ignore[operator]
    finally:
        store.close()


def test_a_silent_node_stalls_one_batch_then_is_held_down(
    own_cluster: RedisClusterServers,
) -> None:
    """A node that stops answering (SIGSTOP) costs one timeout, not one per batch."""
    store = RedisClusterStore.from_url(f"{own_cluster.url}?{FAST_FAIL}&hold_down=5")
    keys = keys_on_each_node(store)
    store.put_many([(k, b"v") for k in keys])
    silent = own_cluster.procs[_index(own_cluster, store, keys[0])]
    os.kill(silent.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StateStoreUnavailable, match="unavailable"):
            store.get_many(keys)
        assert 0.25 < time.monotonic() - started < 1.5  # waited for the socket timeout
        started = time.monotonic()
        for _ in range(5):
            with pytest.raises(StateStoreUnavailable, match="held down"):
                store.get(keys[0])
        assert time.monotonic() - started < 0.2  # no more waiting
        assert all(e is not None for e in store.get_many(keys[1:]))
        nodes = store.stats()["nodes"]
        assert isinstance(nodes, dict)
        assert nodes[store.node_of(keys[0])]["failures"] == 6
    finally:
        os.kill(silent.pid, signal.SIGCONT)
        store.close()


def test_a_moved_slot_is_followed(own_cluster: RedisClusterServers) -> None:
    store = RedisClusterStore.from_url(own_cluster.url)
    try:
        keys = keys_on_each_node(store)
        store.put("warm-up", b"v")
        moving = keys[0]
        slot = slot_of(moving)
        source = next(
            i for i, n in enumerate(own_cluster.nodes) if n.address == store.node_of(moving)
        )
        target = (source + 1) % len(own_cluster.nodes)
        _move_empty_slot(own_cluster, slot, target)
        assert store.put(moving, b"v") >= 1  # single op: reload the map, try again
        assert store.stats()["unavailable"] == 1  # the stale map was noticed, and followed
        assert store.node_of(moving) == own_cluster.nodes[target].address
        assert store.get(moving) is not None
    finally:
        store.close()


def _move_empty_slot(cluster: RedisClusterServers, slot: int, target: int) -> None:
    target_client = cluster.client(target)
    target_id = target_client.execute_command("CLUSTER MYID")
    target_client.execute_command("CLUSTER BUMPEPOCH")
    target_client.close()
    for index in range(len(cluster.nodes)):
        client = cluster.client(index)
        client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        client.close()


# -- URLs ------------------------------------------------------------------------------------------


def test_cluster_urls() -> None:
    config = ClusterConfig.from_url(
        "rediss+cluster://me:s%40cret@10.0.0.1:7000,[::1]:7001/0?prefix=p:&socket_timeout=2"
        "&hold_down=0"
    )
    assert config.addresses == (("10.0.0.1", 7000), ("::1", 7001))
    assert (config.username, config.password, config.tls) == ("me", "s@cret", True)
    assert (config.prefix, config.timeout, config.connect_timeout) == ("p:", 2.0, 2.0)
    assert config.hold_down == 0
    assert ClusterConfig.from_url("redis+cluster://h:1").prefix == "netvirt:"
    for bad, words in [
        ("redis+cluster://", "no node"),
        ("redis+cluster://h", "host:port"),
        ("redis+cluster://h:1/2", "database 0"),
        ("redis+cluster://h:1?db=2", "unknown"),
        ("redis://h:1", "not a cluster URL"),
    ]:
        with pytest.raises(ValueError, match=words):
            ClusterConfig.from_url(bad)


def test_open_store_picks_the_cluster(cluster: RedisClusterServers) -> None:
    store = open_store(f"{cluster.url}?prefix=nvc:")
    assert isinstance(store, RedisClusterStore)
    store.put("k", b"v")
    client = cluster.client(0)
    try:
        assert all(k.startswith(b"nvc:{") for k in client.keys("*"))
    finally:
        client.close()
        store.close()
