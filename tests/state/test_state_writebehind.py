"""Write-behind (``state/writebehind.py``): port zones kept on the host, flushed behind.

Failure semantics (a store that cannot be written makes new connections fail closed, and
recovers), a restarted host picking up a flushed connection, nothing of a short
connection reaching the store, round trips on a real Redis (a port zone's packets never
wait for it; the flush is one round trip from the loop's tick), TTLs and ``open_store``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
import redis

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import CT_EST, CT_INV, CT_NEW
from netvirt.dataplane.nf import Conntrack, CtState, CtTuple, NatRequest, Snat
from netvirt.dataplane.nf.codec import (
    closed_record,
    port_zone_keys,
    record_remaining,
    shared_record,
)
from netvirt.dataplane.nf.request import CtRequest
from netvirt.state import MemoryStore, StateStoreUnavailable, open_store
from netvirt.state.cached import CachedStore
from netvirt.state.jobs import StoreJobs
from netvirt.state.redis import RedisStore
from netvirt.state.store import Entry, Op
from netvirt.state.threaded import ThreadedStore
from netvirt.state.writebehind import WriteBehindStore
from state.state_support import FakeClock, RedisClusterServers

PORT_ZONE, ROUTER_ZONE = 0x20005, 0x30000
T = CtTuple(4, 6, 0x0A000005, 0x0AFD6401, 40000, 5301)
SYN, SYNACK, ACK, FIN = 0x02, 0x12, 0x10, 0x11
INTERVAL = 0.05
HOLD = 1.0  # DEFAULT_HOLD: a new connection's records wait this long


class Switchable(MemoryStore):
    """A memory store that can be taken down (every call fails as unreachable)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.down = False
        self.round_trips = 0

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        self.round_trips += 1
        if self.down:
            raise StateStoreUnavailable("down")
        return super()._execute(ops)

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        self.round_trips += 1
        if self.down:
            raise StateStoreUnavailable("down")
        return super().get_many(keys)


def host(
    remote: MemoryStore, clock: FakeClock, fail: str = "closed"
) -> tuple[Conntrack, WriteBehindStore]:
    wb = WriteBehindStore(
        remote,
        port_zone_keys(),
        shared=shared_record,
        closed=closed_record,
        remaining=record_remaining(clock),
        interval=INTERVAL,
        clock=clock,
    )
    return Conntrack(wb, fail=fail), wb


def handshake(ct: Conntrack, t: CtTuple, now: float) -> None:
    assert ct.process(PORT_ZONE, t, SYN, now).state & CT_NEW
    assert ct.process(PORT_ZONE, t, SYN, now, commit=True).entry is not None
    assert ct.process(PORT_ZONE, t.reversed(), SYNACK, now).state & CT_EST
    assert ct.process(PORT_ZONE, t, ACK, now).state & CT_EST


def test_a_port_zone_connection_costs_no_store_round_trip_until_the_flush() -> None:
    clock = FakeClock(1000.0)
    remote = Switchable(clock)
    ct, wb = host(remote, clock)
    handshake(ct, T, clock.now)
    assert remote.round_trips == 1  # one read: the store answers (fail closed otherwise)
    assert wb.counters["contacts"] == 1
    handshake(ct, T._replace(sport=40009), clock.now)
    assert remote.round_trips == 1  # within the interval: no round trip at all
    assert remote.get(ct.key(PORT_ZONE, T)) is None  # not yet: written behind
    clock.advance(2 * INTERVAL)
    wb.flush()
    assert remote.get(ct.key(PORT_ZONE, T)) is None  # younger than HOLD: still waiting
    assert wb.stats()["write_behind"]["young"] == 4  # type: ignore[index]
    clock.advance(HOLD)
    ct.process(PORT_ZONE, T, ACK | 0x08, clock.now)  # any call past the interval flushes
    record = remote.get(ct.key(PORT_ZONE, T))
    assert record is not None
    assert not closed_record(record.value)
    assert remote.get(ct.key(PORT_ZONE, T.reversed())) is not None  # the mirror too
    assert wb.counters["flushes"] == 1


def test_a_connection_opened_and_closed_within_the_interval_is_never_written() -> None:
    clock = FakeClock(1000.0)
    remote = Switchable(clock)
    ct, wb = host(remote, clock)
    handshake(ct, T, clock.now)
    ct.process(PORT_ZONE, T, FIN, clock.now)
    ct.process(PORT_ZONE, T.reversed(), FIN, clock.now)
    wb.flush(force=True)
    assert remote.get(ct.key(PORT_ZONE, T)) is None
    assert wb.counters["skipped"] == 2  # primary and mirror
    # one that lived past a flush is written when it closes
    t2 = T._replace(sport=40001)
    handshake(ct, t2, clock.now)
    wb.flush(force=True)
    ct.process(PORT_ZONE, t2, FIN, clock.now)
    ct.process(PORT_ZONE, t2.reversed(), FIN, clock.now)
    wb.flush(force=True)
    record = remote.get(ct.key(PORT_ZONE, t2))
    assert record is not None
    assert closed_record(record.value)


def test_shared_zones_and_pools_still_go_to_the_store_at_once() -> None:
    clock = FakeClock(1000.0)
    remote = Switchable(clock)
    ct, _ = host(remote, clock)
    masq = NatRequest(snat=Snat(0xC0000201, (3000, 3010)))
    r = ct.process(ROUTER_ZONE, T, SYN, clock.now, nat=masq)
    assert r.entry is not None
    assert remote.get(ct.key(ROUTER_ZONE, T)) is not None  # no flush needed
    assert remote.get(ct.key(ROUTER_ZONE, r.entry.reply)) is not None


def test_a_store_that_cannot_be_written_makes_new_connections_fail_closed() -> None:
    clock = FakeClock(1000.0)
    remote = Switchable(clock)
    ct, wb = host(remote, clock)
    handshake(ct, T, clock.now)
    remote.down = True
    clock.advance(HOLD + 2 * INTERVAL)
    wb.flush()
    assert not wb.healthy
    # a new connection: refused, dropped as state_unavailable (fail closed)
    t2 = T._replace(sport=40001)
    refused = ct.process(PORT_ZONE, t2, SYN, clock.now, commit=True)
    assert refused.drop is DropReason.STATE_UNAVAILABLE
    assert refused.unavailable
    assert refused.state & CT_INV
    # an established connection's packets that change nothing still pass
    assert ct.process(PORT_ZONE, T, ACK, clock.now).state & CT_EST
    # fail open: passes as established, writes nothing
    open_ct = Conntrack(wb, fail="open")
    passed = open_ct.process(PORT_ZONE, t2, SYN, clock.now, commit=True)
    assert passed.state & CT_EST
    assert passed.entry is None
    # back: the next flush writes what waited and new connections work again
    remote.down = False
    clock.advance(2 * INTERVAL)
    wb.flush()
    assert wb.healthy
    assert remote.get(ct.key(PORT_ZONE, T)) is not None
    assert ct.process(PORT_ZONE, t2, SYN, clock.now, commit=True).entry is not None


def test_an_outage_met_by_nothing_else_is_found_by_a_probe_and_left() -> None:
    """Unhealthy with nothing queued (every local write refused): a probe every interval
    tells when the store is back."""
    clock = FakeClock(1000.0)
    remote = Switchable(clock)
    ct, wb = host(remote, clock)
    t2 = T._replace(sport=40001)
    # a creation long after the last answer from the store asks it first: refused
    remote.down = True
    assert ct.process(PORT_ZONE, t2, SYN, clock.now, commit=True).drop is not None
    assert not wb.healthy
    remote.down = False
    clock.advance(2 * INTERVAL)
    wb.flush()  # nothing queued: a probe
    assert wb.healthy
    assert ct.process(PORT_ZONE, T._replace(sport=1), SYN, clock.now, commit=True).entry
    remote.down = True
    # the store answered less than an interval ago: admitted (the documented window) ...
    assert ct.process(PORT_ZONE, t2, SYN, clock.now, commit=True).entry is not None
    clock.advance(HOLD + 2 * INTERVAL)
    wb.flush()  # ... and the flush finds the store down
    assert not wb.healthy
    assert ct.process(PORT_ZONE, T, SYN, clock.now, commit=True).drop is not None
    remote.down = False
    clock.advance(2 * INTERVAL)
    wb.flush()  # flushes t2's records (kept while down)
    assert wb.healthy
    assert remote.get(ct.key(PORT_ZONE, t2)) is not None
    remote.down = True
    ct.process(ROUTER_ZONE, T, SYN, clock.now, nat=NatRequest(snat=Snat(1, (3000, 3001))))
    assert not wb.healthy  # a failed shared round trip tells too
    assert ct.process(PORT_ZONE, T, SYN, clock.now, commit=True).drop is not None
    remote.down = False
    clock.advance(2 * INTERVAL)
    wb.flush()  # nothing queued: a probe
    assert wb.healthy
    assert ct.process(PORT_ZONE, T, SYN, clock.now, commit=True).entry is not None


def test_a_restarted_host_picks_up_a_flushed_connection_mid_stream() -> None:
    clock = FakeClock(1000.0)
    remote = Switchable(clock)
    ct, wb = host(remote, clock)
    handshake(ct, T, clock.now)
    clock.advance(HOLD + 2 * INTERVAL)
    wb.flush()
    clock.advance(30.0)
    again, wb2 = host(remote, clock)  # a new datapath process: nothing local
    r = again.process(PORT_ZONE, T.reversed(), ACK | 0x08, clock.now)
    assert r.state & CT_EST
    assert r.entry is not None
    assert r.entry.state is CtState.ESTABLISHED
    assert wb2.counters["adopted"] == 1  # the mirror; the primary at its first packet
    assert again.process(PORT_ZONE, T, FIN, clock.now).state & CT_EST
    assert wb2.counters["adopted"] == 2
    # from then on it is local: the other FIN is written here, not in the store
    trips = remote.round_trips
    closing = again.process(PORT_ZONE, T.reversed(), FIN, clock.now)
    assert closing.state & CT_EST
    assert closing.entry is not None
    assert closing.entry.state is CtState.TIME_WAIT
    assert remote.round_trips == trips
    # a connection that was never flushed is lost: its mid-stream packet is invalid
    t2 = T._replace(sport=40002)
    handshake(ct, t2, clock.now)
    assert again.process(PORT_ZONE, t2, ACK, clock.now).state & CT_INV


def test_a_queue_nothing_flushed_for_long_is_no_outage() -> None:
    """Health is the shared store's answers, not the age of the queue: a loop turn that
    stalled past ``max_lag`` (nothing ticked the store) must not fail the next
    connections closed; a flush sent and unanswered for ``max_lag`` does."""
    clock = FakeClock(1000.0)
    remote = Switchable(clock)
    wb = WriteBehindStore(remote, port_zone_keys(), closed=closed_record, clock=clock)
    ct = Conntrack(wb)
    assert ct.process(PORT_ZONE, T, SYN, clock.now, commit=True).entry is not None
    assert ct.process(PORT_ZONE, T.reversed(), SYNACK, clock.now).state & CT_EST
    clock.advance(5.0)  # nothing ticked the store for 5 s
    assert wb.healthy
    t2 = T._replace(sport=40009)
    assert ct.process(PORT_ZONE, t2, SYN, clock.now, commit=True).entry is not None
    wb._flushing, wb._sent_at = {}, clock.now  # a flush in flight, never answered
    clock.advance(wb.max_lag + 0.01)
    assert not wb.healthy


def test_a_record_taken_over_lives_here_exactly_as_long_as_there() -> None:
    """A restarted host adopts a flushed record for what is left of its life there: not
    the two-hour default (a record gone there living on here, unflushable), not less (a
    local absence, final for a SYN, hiding a record the shared store still has)."""
    clock = FakeClock(1000.0)
    remote = Switchable(clock)
    ct, wb = host(remote, clock)
    u = CtTuple(4, 17, 0x0A000005, 0x0AFD6401, 5000, 53)
    assert ct.process(PORT_ZONE, u, 0, clock.now, commit=True).entry is not None
    clock.advance(HOLD + 2 * INTERVAL)
    wb.flush()
    key = ct.key(PORT_ZONE, u)
    shared = remote.get(key)
    assert shared is not None
    again, wb2 = host(remote, clock)
    r = again.process(PORT_ZONE, u, 0, clock.now)
    assert r.entry is not None
    assert wb2.counters["adopted"] >= 1
    assert wb2.local.get(key) is not None
    clock.advance(r.entry.expiry - clock.now - 0.01)
    assert remote.get(key) is not None
    assert wb2.local.get(key) is not None  # not shorter than there
    clock.advance(0.02)
    assert remote.get(key) is None
    assert wb2.local.get(key) is None  # not longer


def test_on_redis_a_port_zone_step_never_waits_and_the_flush_is_one_round_trip(
    redis_store: RedisStore, redis_raw: redis.Redis
) -> None:
    wb = WriteBehindStore(
        redis_store,
        port_zone_keys(),
        shared=shared_record,
        closed=closed_record,
        interval=0.2,  # long enough that a loaded machine's pause is not a contact lapse
        hold=0.0,  # every new record goes out with the next flush
    )
    cache = CachedStore(wb, 0.5, cacheable=closed_record)
    ct = Conntrack(cache)
    jobs = StoreJobs(cache)
    done: list[object] = []
    first = [CtRequest(PORT_ZONE, T._replace(sport=40500), SYN, True)]
    assert not jobs.start(ct.process_steps(first, 1000.0), done.append)  # asks the store once
    while not done:
        redis_store.wait(0.01)
    assert wb.counters["contacts"] == 1
    requests = [CtRequest(PORT_ZONE, T._replace(sport=41000 + i), SYN, True) for i in range(32)]
    assert jobs.start(ct.process_steps(requests, 1000.0), done.append)  # no parking
    assert jobs.parked_total == 1
    before = redis_store.stats()["round_trips"]
    assert wb.in_flight() == 1  # writes wait: the loop keeps ticking
    time.sleep(0.21)
    wb.handle()  # the loop's store tick: the flush goes out
    deadline = time.monotonic() + 2.0
    while wb._flushing is not None and time.monotonic() < deadline:
        redis_store.wait(0.01)
    assert redis_store.stats()["round_trips"] == before + 1
    assert wb.counters["flushed"] == 66  # 33 primaries and 33 mirrors, one round trip
    key = f"netvirt:d:{ct.key(PORT_ZONE, requests[0].tuple)}"
    ttl = redis_raw.pttl(key)
    assert 0 < ttl <= 30_000  # the SYN's timeout, counted from the write
    assert wb.in_flight() == 0


def test_open_store_write_behind_option(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"{redis_url}?write_behind=0.02&prefix=wb:")
    try:
        assert isinstance(store, WriteBehindStore)
        assert store.interval == 0.02
        assert isinstance(store.remote, RedisStore)
        assert store.remote._prefix == "wb:"
    finally:
        store.close()
    plain = open_store(f"{redis_url}?write_behind=0")
    assert isinstance(plain, RedisStore)
    plain.close()
    monkeypatch.setenv("NETVIRT_WRITE_BEHIND", "0.1")
    env = open_store(redis_url)
    assert isinstance(env, WriteBehindStore)
    assert env.interval == 0.1
    env.close()


def test_the_datapaths_default_is_write_behind(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The datapath opens its store with :data:`DATAPATH_WRITE_BEHIND`; the URL's option
    and the environment still decide over it (0: write-through)."""
    from netvirt.state import DATAPATH_WRITE_BEHIND

    monkeypatch.delenv("NETVIRT_WRITE_BEHIND", raising=False)
    assert DATAPATH_WRITE_BEHIND > 0
    store = open_store(redis_url, DATAPATH_WRITE_BEHIND)
    assert isinstance(store, WriteBehindStore)
    assert store.interval == DATAPATH_WRITE_BEHIND
    store.close()
    plain = open_store(f"{redis_url}?write_behind=0", DATAPATH_WRITE_BEHIND)
    assert isinstance(plain, RedisStore)
    plain.close()
    monkeypatch.setenv("NETVIRT_WRITE_BEHIND", "0")
    env = open_store(redis_url, DATAPATH_WRITE_BEHIND)
    assert isinstance(env, RedisStore)
    env.close()
    monkeypatch.delenv("NETVIRT_WRITE_BEHIND")
    other = open_store(redis_url)  # (other callers: as before)
    assert isinstance(other, RedisStore)
    other.close()


def test_open_store_write_behind_on_the_cluster_is_threaded(cluster: RedisClusterServers) -> None:
    store = open_store(f"{cluster.url}?write_behind=0.05")
    try:
        assert isinstance(store, WriteBehindStore)
        assert isinstance(store.remote, ThreadedStore)
        assert store.supports_submit
        ct = Conntrack(store)
        assert ct.process(ROUTER_ZONE, T, SYN, 1000.0, commit=True).entry is not None
        assert store.remote.get(ct.key(ROUTER_ZONE, T)) is not None
    finally:
        store.close()


@pytest.mark.parametrize("bad", ["abc", "-1", "nan", "inf"])
def test_a_bad_write_behind_interval_is_a_clear_error(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NETVIRT_WRITE_BEHIND", raising=False)
    with pytest.raises(ValueError, match=r"write_behind in the state store URL must be"):
        open_store(f"redis://127.0.0.1:1/0?write_behind={bad}")
    monkeypatch.setenv("NETVIRT_WRITE_BEHIND", bad)
    with pytest.raises(ValueError, match=r"NETVIRT_WRITE_BEHIND must be a number of seconds"):
        open_store("redis://127.0.0.1:1/0")
