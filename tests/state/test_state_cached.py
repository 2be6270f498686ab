"""The read cache in front of a shared store (state/cached.py).

Two hosts share one store, each through its own cache: what one host changes
the other sees at once if it has not read it recently, and within ``max_age``
otherwise; every change goes through compare-and-set, so a host deciding on a
stale record loses the race and re-decides on the current one.
"""

from __future__ import annotations

from collections.abc import Callable

from netvirt.dataplane.fields import CT_EST, CT_INV, CT_NEW, CT_RPL, CT_TRK
from netvirt.dataplane.nf import Conntrack, CtTuple
from netvirt.dataplane.nf.codec import CtState, ct_key, decode, stable_record
from netvirt.state.cached import CachedStore
from netvirt.state.store import CACHED_ABSENT, CachedEntry, Entry, GetOp
from nf.nf_support import CountingMemoryStore
from state.state_support import FakeClock

SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
NEW, EST, EST_RPL, INV = CT_TRK | CT_NEW, CT_TRK | CT_EST, CT_TRK | CT_EST | CT_RPL, CT_TRK | CT_INV
ZONE = 7
T = CtTuple(4, 6, 0x0A000001, 0x0A000002, 40000, 80)


Hosts = tuple[CountingMemoryStore, CachedStore, CachedStore, FakeClock]


def hosts(max_age: float = 0.5, cacheable: Callable[[bytes], bool] | None = None) -> Hosts:
    clock = FakeClock()
    shared = CountingMemoryStore(clock)
    a = CachedStore(shared, max_age, clock=clock, cacheable=cacheable)
    b = CachedStore(shared, max_age, clock=clock, cacheable=cacheable)
    return shared, a, b, clock


def test_reads_are_reused_within_max_age_and_absences_never() -> None:
    shared, a, b, clock = hosts()
    assert a.get("k") is None
    version = b.put("k", b"v1")
    assert a.get("k") == (b"v1", version)  # an absence was not cached
    trips = shared.round_trips
    assert a.get_many(["k", "k"]) == [(b"v1", version)] * 2
    assert shared.round_trips == trips  # served from the cache
    b.put("k", b"v2")
    assert a.get("k") == (b"v1", version)  # stale, but within max_age
    clock.advance(0.6)
    fresh = a.get("k")
    assert fresh is not None
    assert fresh.value == b"v2"
    assert a.stats()["cache"]["hits"] >= 3  # type: ignore[index]


def test_writes_go_to_the_store_and_a_lost_cas_refreshes_the_cache() -> None:
    shared, a, b, _clock = hosts()
    v1 = a.put("k", b"v1")
    assert b.get("k") == (b"v1", v1)
    v2 = a.put("k", b"v2")
    lost = b.compare_and_set("k", v1, b"from-b")  # b decided on its cached (old) version
    assert not lost.ok
    assert lost.entry == (b"v2", v2)
    assert b.get("k") == (b"v2", v2)  # learned the current entry from the failed CAS
    won = b.compare_and_set("k", v2, b"from-b")
    assert won.ok
    assert shared.get("k") == won.entry
    assert b.delete("k")
    assert b.get("k") is None


def test_batches_update_the_cache_with_their_outcomes() -> None:
    shared, a, _b, _clock = hosts()
    batch = a.batch()
    put = batch.put("p", b"x", ttl=10)
    cas = batch.cas("c", 0, b"y")
    batch.execute()
    trips = shared.round_trips
    assert a.get_many(["p", "c"]) == [(b"x", put.result()), cas.result().entry]
    assert shared.round_trips == trips


def test_conntrack_on_two_hosts_with_caches_stays_correct_and_cheap() -> None:
    shared, a_store, b_store, clock = hosts(cacheable=stable_record)
    a, b = Conntrack(a_store, "ct:"), Conntrack(b_store, "ct:")
    assert a.process(ZONE, T, SYN, clock.now, commit=True).state == NEW
    assert b.process(ZONE, T.reversed(), SYN | ACK, clock.now).state == EST_RPL  # B sees A's
    assert a.process(ZONE, T, ACK, clock.now).state == EST
    trips = shared.round_trips
    for _ in range(50):  # data both ways, as on two hosts of an established connection
        assert a.process(ZONE, T, ACK, clock.now).state == EST
        assert b.process(ZONE, T.reversed(), ACK, clock.now).state == EST_RPL
    assert shared.round_trips - trips <= 4  # not one read per packet
    # A sees a RST: B's next packet may pass on its cached record for at most max_age
    assert a.process(ZONE, T, RST, clock.now).state == EST
    clock.advance(0.6)
    assert b.process(ZONE, T.reversed(), ACK, clock.now).state & CT_INV  # closed, seen by B
    # a state change decided on a stale record loses its CAS and is re-decided
    shared2, c_store, d_store, clock2 = hosts(max_age=5.0, cacheable=stable_record)
    c, d = Conntrack(c_store, "ct:"), Conntrack(d_store, "ct:")
    c.process(ZONE, T, SYN, clock2.now, commit=True)
    d.process(ZONE, T.reversed(), SYN | ACK, clock2.now)
    c.process(ZONE, T, ACK, clock2.now)
    d.process(ZONE, T.reversed(), ACK, clock2.now)  # D caches the established record
    assert c.process(ZONE, T, FIN | ACK, clock2.now).state == EST  # FIN_WAIT in the store
    d.process(ZONE, T.reversed(), FIN | ACK, clock2.now)  # D's cached record is ESTABLISHED
    entry = shared2.get(ct_key("ct:", ZONE, T))
    assert entry is not None
    record, _kind = decode(entry.value, entry.version)
    # decided on the stale ESTABLISHED record, D would have written FIN_WAIT; its CAS lost,
    # it re-read FIN_WAIT and moved the connection on as the other side's FIN does
    assert record.state == CtState.TIME_WAIT


def test_fresh_reads_bypass_the_cache_and_absences_serve_only_who_asks() -> None:
    shared, a, b, _clock = hosts()
    version = b.put("k", b"v1")
    assert a.get("k") == (b"v1", version)
    b.put("k", b"v2")
    stale = a.get_ops([GetOp("k")])[0]
    assert type(stale) is CachedEntry  # a hit says so: the caller may re-read it
    assert stale.value == b"v1"
    fresh = a.get_ops([GetOp("k", fresh=True)])[0]
    assert fresh is not None
    assert type(fresh) is Entry
    assert fresh.value == b"v2"
    assert a.get_ops([GetOp("k")])[0] == fresh  # and the cache learned it
    assert a.get_ops([GetOp("gone", absent_ok=True)]) == [None]  # read from the store
    trips = shared.round_trips
    assert a.get_ops([GetOp("gone", absent_ok=True)])[0] is CACHED_ABSENT
    assert shared.round_trips == trips
    assert a.get("gone") is None  # plain reads never see a cached absence
    assert shared.round_trips == trips + 1
    b.put("gone", b"now")
    assert a.get("gone") == (b"now", shared.get("gone").version)  # type: ignore[union-attr]
