"""Hypothesis stateful test of conntrack invariants, on the memory store and on Redis.

Random packets of a few flows (TCP, UDP, ICMP echo, some masqueraded) in both
directions, from two conntrack instances sharing one store (two hosts), with
random flag combinations, commits and jumps of the clock. After every step:

* both directions of a live connection that is not closed find the same
  connection (the primary and its mirror agree on the entry);
* within one connection (same incarnation), a state never moves backwards —
  in particular never from ESTABLISHED back to SYN_SENT;
* every result has exactly one of new/est/rel/inv, and trk;
* a connection is gone once its expiry has passed (with the memory store,
  whose clock is ``now``, the store itself has dropped both records).
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from netvirt.dataplane.fields import CT_EST, CT_INV, CT_NEW, CT_REL, CT_TRK
from netvirt.dataplane.nf import (
    Conntrack,
    CtEntry,
    CtRequest,
    CtState,
    CtTuple,
    NatRequest,
    Snat,
    icmp_tuple,
)
from netvirt.dataplane.nf.codec import decode
from netvirt.state import MemoryStore, StateStore
from netvirt.state.redis import RedisStore
from state.state_support import FakeClock

ZONE = 5
A, B, EXT = 0x0A000001, 0x0A000002, 0xC0000201
MASQ = NatRequest(snat=Snat(EXT, (3000, 3003)))
FLOWS: list[tuple[CtTuple, NatRequest | None]] = [
    (CtTuple(4, 6, A, B, 40000, 80), None),
    (CtTuple(4, 6, A, B, 40001, 80), MASQ),
    (CtTuple(4, 6, A + 1, B, 40000, 80), MASQ),
    (CtTuple(4, 17, A, B, 5000, 53), None),
    (CtTuple(4, 17, A + 1, B, 5000, 53), MASQ),
    (icmp_tuple(4, A, B, 8, 9), None),
]
FLAGS = [0x02, 0x12, 0x10, 0x11, 0x04, 0x14, 0x18, 0x03, 0x00]
# how far a state is along a TCP connection's life; a step may never decrease it
_ORDER = {
    CtState.SYN_SENT: 0,
    CtState.SYN_RECV: 1,
    CtState.ESTABLISHED: 2,
    CtState.FIN_WAIT: 3,
    CtState.CLOSE_WAIT: 4,
    CtState.TIME_WAIT: 5,
    CtState.CLOSED: 6,
    CtState.UNREPLIED: 0,
    CtState.REPLIED: 1,
}
_CLOSED = (CtState.TIME_WAIT, CtState.CLOSED)
Opener = Callable[[FakeClock], StateStore]


class ConntrackMachine(RuleBasedStateMachine):
    def __init__(self, opener: Opener) -> None:
        super().__init__()
        self.clock = FakeClock(10_000.0)
        self.store = opener(self.clock)
        self.hosts = [Conntrack(self.store), Conntrack(self.store)]
        self.known: dict[CtTuple, CtEntry] = {}  # last entry seen, by original tuple
        self.expiry: dict[CtTuple, float] = {}

    def _packet_tuple(self, flow: int, reply: bool) -> CtTuple:
        t, _ = FLOWS[flow]
        entry = self.known.get(t)
        if not reply:
            return t
        return entry.reply if entry is not None else t.reversed()

    @rule(
        flow=st.integers(0, len(FLOWS) - 1),
        reply=st.booleans(),
        flags=st.sampled_from(FLAGS),
        commit=st.booleans(),
        host=st.integers(0, 1),
    )
    def packet(self, flow: int, reply: bool, flags: int, commit: bool, host: int) -> None:
        t, nat = FLOWS[flow]
        packet = self._packet_tuple(flow, reply)
        tcp_flags = flags if t.proto == 6 else 0
        result = self.hosts[host].process(
            ZONE, packet, tcp_flags, self.clock.now, commit=commit, nat=None if reply else nat
        )
        kinds = [bit for bit in (CT_NEW, CT_EST, CT_REL, CT_INV) if result.state & bit]
        assert result.state & CT_TRK
        assert len(kinds) == 1, hex(result.state)
        if result.entry is not None:
            self._observe(result.entry)

    @rule(
        packets=st.lists(
            st.tuples(
                st.integers(0, len(FLOWS) - 1),
                st.booleans(),
                st.sampled_from(FLAGS),
                st.booleans(),
            ),
            min_size=2,
            max_size=4,
        ),
        host=st.integers(0, 1),
    )
    def burst(self, packets: list[tuple[int, bool, int, bool]], host: int) -> None:
        """Several packets in one batch: decided on one snapshot, settled by CAS."""
        requests = []
        for flow, reply, flags, commit in packets:
            t, nat = FLOWS[flow]
            tcp_flags = flags if t.proto == 6 else 0
            packet = self._packet_tuple(flow, reply)
            nat_request = None if reply else nat
            requests.append(CtRequest(ZONE, packet, tcp_flags, commit, nat=nat_request))
        for result in self.hosts[host].process_batch(requests, self.clock.now):
            assert result.state & CT_TRK
        probes = [(ZONE, FLOWS[flow][0]) for flow, *_ in packets]
        probes += [(ZONE, t.reversed()) for _, t in probes]
        for hit in self.hosts[host].lookup_batch(probes, self.clock.now):
            if hit is not None and not hit.reply:
                self._observe(hit.entry)

    def _observe(self, entry: CtEntry) -> None:
        previous = self.known.get(entry.orig)
        if previous is not None and previous.same_connection(entry):
            assert _ORDER[entry.state] >= _ORDER[previous.state], (previous.state, entry.state)
            assert not (previous.state is CtState.ESTABLISHED and entry.state is CtState.SYN_SENT)
        self.known[entry.orig] = entry
        self.expiry[entry.orig] = entry.expiry

    @rule(seconds=st.sampled_from([0.5, 3.0, 29.0, 31.0, 119.0, 181.0, 601.0, 7300.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def both_directions_find_the_same_entry(self) -> None:
        ct, now = self.hosts[0], self.clock.now
        for t, _ in FLOWS:
            for probe in (t, t.reversed()):
                hit = ct.lookup_batch([(ZONE, probe)], now)[0]
                if hit is None or hit.entry.state in _CLOSED:
                    continue  # a closed connection may have lost its mirror to a new one
                other = hit.entry.orig if hit.reply else hit.entry.reply
                twin = ct.lookup_batch([(ZONE, other)], now)[0]
                assert twin is not None, (probe, other)
                assert twin.reply != hit.reply
                assert twin.entry.same_connection(hit.entry)
                assert (twin.entry.state, twin.entry.mark, twin.entry.expiry) == (
                    hit.entry.state,
                    hit.entry.mark,
                    hit.entry.expiry,
                )

    @invariant()
    def expired_connections_are_gone(self) -> None:
        ct, now = self.hosts[1], self.clock.now
        for orig, expiry in self.expiry.items():
            if expiry > now:
                continue
            entry = self.known[orig]
            for hit in ct.lookup_batch([(ZONE, orig), (ZONE, entry.reply)], now):
                # the tuples may be in use again, but never by the expired connection
                assert hit is None or not hit.entry.same_connection(entry)
            if isinstance(self.store, MemoryStore):
                for raw in self.store.get_many([ct.key(ZONE, orig), ct.key(ZONE, entry.reply)]):
                    assert raw is None or not decode(raw.value)[0].same_connection(entry)


def test_nf_conntrack_invariants_memory() -> None:
    run_state_machine_as_test(
        lambda: ConntrackMachine(MemoryStore),  # type: ignore[call-arg]
        settings=settings(max_examples=100, stateful_step_count=30, deadline=None),
    )


def test_nf_conntrack_invariants_redis(nf_redis_url: str) -> None:
    client = redis.Redis.from_url(nf_redis_url)

    def opener(clock: FakeClock) -> StateStore:
        client.flushdb()  # a fresh store per example
        return RedisStore.from_url(nf_redis_url)

    try:
        run_state_machine_as_test(
            lambda: ConntrackMachine(opener),  # type: ignore[call-arg]
            settings=settings(max_examples=10, stateful_step_count=20, deadline=None),
        )
    finally:
        client.close()
