"""Hypothesis state machine: conntrack behind a host's read cache vs the uncached protocol.

Two hosts share one memory store: host A reads through a ``CachedStore`` (as the
datapath builds it: ``cacheable=stable_record``, every conntrack record in any
state), host B goes to the store directly. Random packets of a few flows (TCP
plain and masqueraded, UDP, ICMP echo), both directions, either host, random
flags and commits, and clock steps shorter and longer than the cache's
``max_age``. Before each of A's packets the same request is decided by an
uncached ``Conntrack`` on a copy of the store: the reference. A's answer must be
the reference's, except in the documented window (docs/stateless-nf.md,
"Consistency"): A may let the packet pass as established, writing nothing, when
its cached record of the key is stale (another host changed it) and younger than
``max_age``. Never the other way round: a cached record never makes A refuse a
packet, create over a live connection or pick another translation.
"""

from __future__ import annotations

import copy

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from netvirt.dataplane.fields import CT_EST, CT_INV, CT_TRK
from netvirt.dataplane.nf import Conntrack, CtResult, CtState, CtTuple, NatRequest, Snat
from netvirt.dataplane.nf.codec import decode, icmp_tuple, stable_record
from netvirt.state import MemoryStore
from netvirt.state.cached import CachedStore
from state.state_support import FakeClock

ZONE = 3
MAX_AGE = 0.5
A_IP, B_IP, EXT = 0x0A000001, 0x0A000002, 0xC0000201
MASQ = NatRequest(snat=Snat(EXT, (3000, 3003)))
FLOWS: list[tuple[CtTuple, NatRequest | None]] = [
    (CtTuple(4, 6, A_IP, B_IP, 40000, 80), None),
    (CtTuple(4, 6, A_IP, B_IP, 40001, 80), MASQ),
    (CtTuple(4, 17, A_IP, B_IP, 5000, 53), MASQ),
    (icmp_tuple(4, A_IP, B_IP, 8, 9), None),
]
FLAGS = [0x02, 0x12, 0x10, 0x11, 0x04, 0x18, 0x03]
# (reply direction, TCP flags, commit) of one connection: handshake, data, both FINs, ACK
EXCHANGE = [
    (False, 0x02, True),
    (True, 0x12, False),
    (False, 0x10, False),
    (True, 0x18, False),
    (False, 0x11, False),
    (True, 0x11, False),
    (False, 0x10, False),
]
_CLOSED = (CtState.TIME_WAIT, CtState.CLOSED)


def snapshot(store: MemoryStore, clock: FakeClock) -> MemoryStore:
    """An independent copy of a memory store's records, claims and version counter."""
    twin = MemoryStore(clock)
    twin._slots = copy.deepcopy(store._slots)
    twin._claims = copy.deepcopy(store._claims)
    twin._last_version = store._last_version
    return twin


def state_of(store: MemoryStore) -> tuple[object, ...]:
    """Everything a write changes (to tell that a call wrote nothing)."""
    return (store._last_version, len(store._slots), len(store._claims))


class CachedHostMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(50_000.0)
        self.store = MemoryStore(self.clock)
        self.cache = CachedStore(self.store, MAX_AGE, clock=self.clock, cacheable=stable_record)
        self.a = Conntrack(self.cache)
        self.b = Conntrack(self.store)
        self.replies: dict[CtTuple, CtTuple] = {}  # original tuple -> reply tuple seen
        self.deviations = 0

    def _tuple(self, flow: int, reply: bool) -> CtTuple:
        t, _ = FLOWS[flow]
        return self.replies.get(t, t.reversed()) if reply else t

    @rule(
        flow=st.integers(0, len(FLOWS) - 1),
        reply=st.booleans(),
        flags=st.sampled_from(FLAGS),
        commit=st.booleans(),
        on_a=st.booleans(),
    )
    def packet(self, flow: int, reply: bool, flags: int, commit: bool, on_a: bool) -> None:
        self._send(flow, reply, flags, commit, on_a)

    @rule(
        flow=st.sampled_from([0, 1]),
        hosts=st.lists(st.booleans(), min_size=len(EXCHANGE), max_size=len(EXCHANGE)),
        pause=st.sampled_from([0.0, 0.2]),
    )
    def exchange(self, flow: int, hosts: list[bool], pause: float) -> None:
        """A whole TCP connection (connrate's), each segment on a random host: the
        interleavings where A's cached record is behind B's writes."""
        for (reply, flags, commit), on_a in zip(EXCHANGE, hosts, strict=True):
            self._send(flow, reply, flags, commit, on_a)
            self.clock.advance(pause)

    def _send(self, flow: int, reply: bool, flags: int, commit: bool, on_a: bool) -> None:
        t, nat = FLOWS[flow]
        tup = self._tuple(flow, reply)
        tcp_flags = flags if t.proto == 6 else 0
        request = {"commit": commit, "nat": None if reply else nat}
        now = self.clock.now
        if not on_a:
            self._seen(self.b.process(ZONE, tup, tcp_flags, now, **request))  # type: ignore[arg-type]
            return
        reference = Conntrack(snapshot(self.store, self.clock))
        expected = reference.process(ZONE, tup, tcp_flags, now, **request)  # type: ignore[arg-type]
        key = self.a.key(ZONE, tup)
        cached = self.cache._cache.get(key)
        current = self.store.get(key)
        before = state_of(self.store)
        got = self.a.process(ZONE, tup, tcp_flags, now, **request)  # type: ignore[arg-type]
        self._seen(got)
        assert got.state & CT_TRK
        if _decision(got) == _decision(expected):
            return
        # the one permitted difference: a pass without writing, on a stale cached record
        stale = cached is not None and (current is None or cached[0].version != current.version)
        assert stale, (got, expected)
        assert self.clock.now - cached[1] <= MAX_AGE  # type: ignore[index]
        assert got.state & CT_EST, got
        assert not got.state & CT_INV
        assert got.drop is None
        assert state_of(self.store) == before, "a decision on a stale record wrote"
        self.deviations += 1

    def _seen(self, result: CtResult) -> None:
        if result.entry is not None:
            self.replies[result.entry.orig] = result.entry.reply

    @rule(seconds=st.sampled_from([0.1, 0.3, 0.6, 3.5, 31.0, 121.0, 7300.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def primary_and_mirror_agree(self) -> None:
        """The shared records stay consistent whatever A decided from its cache."""
        now = self.clock.now
        for t, _ in FLOWS:
            raw = self.store.get(self.a.key(ZONE, t))
            if raw is None:
                continue
            entry, kind = decode(raw.value)
            if kind != 0 or entry.expiry <= now or entry.state in _CLOSED:
                continue
            mirror = self.store.get(self.a.key(ZONE, entry.reply))
            assert mirror is not None, entry
            twin, twin_kind = decode(mirror.value)
            assert twin_kind == 1
            assert twin.same_connection(entry)
            assert (twin.state, twin.expiry, twin.mark) == (entry.state, entry.expiry, entry.mark)


def _decision(r: CtResult) -> tuple[object, ...]:
    """What the pipeline acts on: ct_state bits, the drop, the translated tuple, the mark."""
    return (r.state, r.drop, r.tuple if not r.state & CT_INV else None, r.mark)


def test_nf_cached_host_decides_as_the_uncached_protocol_but_for_the_window() -> None:
    run_state_machine_as_test(
        CachedHostMachine,
        settings=settings(max_examples=60, stateful_step_count=25, deadline=None),
    )


def test_nf_cached_host_without_the_recheck_would_refuse_packets() -> None:
    """The guard the machine relies on: A, having cached SYN_SENT, gets the handshake's
    ACK after B wrote SYN_RECV. Judged on its cache the ACK is invalid; conntrack reads
    the record again and passes it (and moves the connection to ESTABLISHED)."""
    clock = FakeClock(1000.0)
    store = MemoryStore(clock)
    cache = CachedStore(store, MAX_AGE, clock=clock, cacheable=stable_record)
    a, b = Conntrack(cache), Conntrack(store)
    t = FLOWS[0][0]
    assert a.process(ZONE, t, 0x02, clock.now, commit=True).entry is not None
    assert b.process(ZONE, t.reversed(), 0x12, clock.now).state & CT_EST
    hits = cache.hits
    result = a.process(ZONE, t, 0x10, clock.now)
    assert cache.hits > hits  # the first read came from the cache (stale SYN_SENT)
    assert result.state & CT_EST
    assert not result.state & CT_INV
    assert result.entry is not None
    assert result.entry.state is CtState.ESTABLISHED
