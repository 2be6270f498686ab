"""Garbage collection: a flood of short connections leaves nothing behind once it expires.

Conntrack writes every record (primary, mirror, SNAT claim) with the TTL of
its connection's timeout, so the store drops them by itself: Redis by its
own expiry, the memory store on ``sweep()`` (which the agent runs every 10 s).
The flood goes through the real conntrack (dataplane/nf) with timeouts of a
fraction of a second: masqueraded UDP flows and TCP connections from SYN to
TIME_WAIT, in batches of 64 like the datapath's.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

import redis

from netvirt.dataplane.fields import CT_INV, CT_NEW
from netvirt.dataplane.nf import Conntrack, CtRequest, CtTuple, NatRequest, Snat, Timeouts
from netvirt.dataplane.nf.conntrack import TCP_ACK, TCP_FIN, TCP_SYN
from netvirt.state import MemoryStore, StateStore
from netvirt.state.cluster import RedisClusterStore
from netvirt.state.redis import RedisStore
from state.state_support import FakeClock, RedisClusterServers

TIMEOUT = 3.0  # seconds: long enough to count the flood before it expires
SHORT = Timeouts(
    syn_sent=TIMEOUT,
    syn_recv=TIMEOUT,
    established=TIMEOUT,
    fin_wait=TIMEOUT,
    close_wait=TIMEOUT,
    time_wait=TIMEOUT,
    closed=TIMEOUT,
    udp_unreplied=TIMEOUT,
    udp_replied=TIMEOUT,
    icmp=TIMEOUT,
    other=TIMEOUT,
)
UDP_FLOWS, TCP_FLOWS, BATCH = 640, 320, 64
SNAT = Snat(int(ipaddress.IPv4Address("192.0.2.1")), (20000, 29999))
SERVER = int(ipaddress.IPv4Address("198.51.100.7"))
# per flow: primary + mirror + the SNAT port claim (UDP); primary + mirror (TCP)
FLOOD_KEYS = 3 * UDP_FLOWS + 2 * TCP_FLOWS


def client(i: int) -> int:
    return int(ipaddress.IPv4Address("10.1.0.0")) + i


def _patient(url: str) -> str:
    """``url`` with a 2 s store timeout: these tests count what garbage collection leaves,
    and the datapath's 50 ms default failed a round trip now and then on a loaded machine
    (a flood's packet then came back invalid), which is the failure tests elsewhere test."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}socket_timeout=2&socket_connect_timeout=2"


def flood(ct: Conntrack, now: Callable[[], float]) -> None:
    """Open every flow; take every TCP connection through its handshake and close."""
    udp = [CtTuple(4, 17, client(i), SERVER, 5000 + i % 1000, 53) for i in range(UDP_FLOWS)]
    for start in range(0, UDP_FLOWS, BATCH):
        nat = NatRequest(snat=SNAT)
        requests = [CtRequest(1, t, 0, nat=nat) for t in udp[start : start + BATCH]]
        results = ct.process_batch(requests, now())
        assert all(r.state & CT_NEW and not r.state & CT_INV for r in results)
    tcp = [CtTuple(4, 6, client(i), SERVER, 40000 + i, 80) for i in range(TCP_FLOWS)]
    steps = [  # (direction is reply, flags): handshake, FIN each way, last ACK
        (False, TCP_SYN),
        (True, TCP_SYN | TCP_ACK),
        (False, TCP_ACK),
        (False, TCP_FIN | TCP_ACK),
        (True, TCP_ACK),
        (True, TCP_FIN | TCP_ACK),
        (False, TCP_ACK),
    ]
    for start in range(0, TCP_FLOWS, BATCH):
        chunk = tcp[start : start + BATCH]
        for reply, flags in steps:
            tuples = [t.reversed() if reply else t for t in chunk]
            requests = [CtRequest(2, t, flags, commit=True) for t in tuples]
            results = ct.process_batch(requests, now())
            assert not any(r.state & CT_INV for r in results), (reply, flags)


def test_memory_sweep_empties_the_store_after_a_flood() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    flood(Conntrack(store, timeouts=SHORT), clock)
    assert len(store) == 2 * (UDP_FLOWS + TCP_FLOWS)
    clock.advance(TIMEOUT / 2)
    assert store.sweep() == 0
    clock.advance(TIMEOUT)
    assert store.sweep() == FLOOD_KEYS  # entries and SNAT claims
    assert len(store) == 0


def _wait_for(sizes: Callable[[], list[int]], done: Callable[[list[int]], bool]) -> list[int]:
    deadline = time.monotonic() + 10.0
    while not done(current := sizes()):
        assert time.monotonic() < deadline, f"store still holds {current} keys"
        time.sleep(0.1)
    return current


def _every_key_has_a_ttl(client: Any, counters: Callable[[bytes], bool]) -> int:
    """Check the PTTL of every key but the version counters; return how many there were."""
    keys = [k for k in client.scan_iter(count=1000) if not counters(k)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    ttls = pipe.execute()
    # -2: expired between SCAN and PTTL, fine; -1 would be a key that never expires
    assert all(ttl > 0 or ttl == -2 for ttl in ttls), sorted(set(ttls))
    return len(keys)


def test_redis_forgets_a_flood_by_itself(redis_raw: redis.Redis, redis_url: str) -> None:
    store = RedisStore.from_url(_patient(redis_url))
    try:
        flood(Conntrack(store, timeouts=SHORT), time.time)
        held = _every_key_has_a_ttl(redis_raw, lambda k: k == b"netvirt:version")
        assert held >= FLOOD_KEYS * 0.9  # a few of the first may have expired already
        _wait_for(lambda: [int(redis_raw.dbsize())], lambda sizes: sizes == [1])
        assert redis_raw.keys("*") == [b"netvirt:version"]  # only the version counter is left
        _check_stats(store)
    finally:
        store.close()


def _is_counter(key: bytes) -> bool:
    return key.endswith(b"}v")


def test_a_cluster_forgets_a_flood_by_itself(cluster: RedisClusterServers) -> None:
    store = RedisClusterStore.from_url(_patient(cluster.url))
    try:
        flood(Conntrack(store, timeouts=SHORT), time.time)
        held = []
        counters = []
        for index in range(len(cluster.nodes)):
            node = cluster.client(index)
            held.append(_every_key_has_a_ttl(node, _is_counter))
            counters.append(sum(1 for k in node.scan_iter(count=1000) if _is_counter(k)))
            node.close()
        assert sum(held) >= FLOOD_KEYS * 0.9
        assert all(h > FLOOD_KEYS / 6 for h in held)  # the flood was spread over every node
        # what stays: one version counter per slot written, bounded by the 16384 slots
        final = _wait_for(cluster.dbsizes, lambda sizes: sizes == counters)
        assert sum(final) <= 16384
        _check_stats(store)
    finally:
        store.close()


def _check_stats(store: StateStore) -> None:
    stats = store.stats()
    batches = UDP_FLOWS // BATCH + 7 * (TCP_FLOWS // BATCH)
    assert stats["round_trips"] >= batches  # type: ignore[operator]
    assert stats["round_trip_keys"] > FLOOD_KEYS  # type: ignore[operator]
    assert stats["misses"] >= UDP_FLOWS + TCP_FLOWS  # type: ignore[operator]
    assert stats["hits"] >= 6 * TCP_FLOWS  # type: ignore[operator]
    assert sum(stats["latency_us_log2"]) == stats["round_trips"]  # type: ignore[arg-type]


def test_write_behind_forgets_a_flood_here_and_in_redis(
    redis_raw: redis.Redis, redis_url: str
) -> None:
    """The write-behind mode (``?write_behind=``): zone 2's plain TCP records are kept in
    the host's memory and written behind with their remaining TTL, zone 1's masqueraded
    ones go to Redis at once. Both sides forget the flood: Redis by expiry, the host's
    records on ``sweep()``; nothing waits to be flushed."""
    from netvirt.dataplane.nf.codec import closed_record, port_zone_keys, shared_record
    from netvirt.state.writebehind import WriteBehindStore

    store = WriteBehindStore(
        RedisStore.from_url(_patient(redis_url)),
        port_zone_keys(),
        shared=shared_record,
        closed=closed_record,
        interval=0.02,
    )
    try:
        flood(Conntrack(store, timeouts=SHORT), time.time)
        ended = time.monotonic()
        store.flush(force=True)
        stats = store.stats()["write_behind"]
        assert stats["pending"] == 0  # type: ignore[index]
        assert stats["refused"] == 0  # type: ignore[index]
        assert len(store.local) == 2 * TCP_FLOWS  # primaries and mirrors, here
        held = _every_key_has_a_ttl(redis_raw, lambda k: k == b"netvirt:version")
        assert held >= 3 * UDP_FLOWS * 0.9  # the NATed flows and their claims
        _wait_for(lambda: [int(redis_raw.dbsize())], lambda sizes: sizes == [1])
        time.sleep(max(0.0, ended + TIMEOUT + 0.1 - time.monotonic()))  # the last writes
        store.sweep()
        assert len(store.local) == 0
    finally:
        store.close()
