"""SNAT port claims are refreshed only when the record needs it (nf/tcp.py, claim_due).

A masqueraded TCP connection's claim is written at creation, kept through a fast
SYN_SENT → SYN_RECV step, renewed for ESTABLISHED and by refreshes, given
TIME_WAIT's length at the first FIN and then left alone until it expires:
never shorter than the record by more than the refresh fraction while the
connection is open, never held longer than TIME_WAIT after the first FIN.
"""

from __future__ import annotations

from collections.abc import Sequence

from netvirt.dataplane.nf import Conntrack, CtState, CtTuple, NatRequest, Snat
from netvirt.dataplane.nf.conntrack import Timeouts
from netvirt.dataplane.nf.nat import DEFAULT_WINDOW, pool_key, port_window, snat_pool
from netvirt.state import MemoryStore
from netvirt.state.store import AllocateOp, Op
from state.state_support import FakeClock

ZONE = 4
EXT = 0xAC180402
MASQ = NatRequest(snat=Snat(EXT, (1024, 65535)))
T = CtTuple(4, 6, 0x0A000005, 0x08080808, 40000, 443)
SYN, SYN_ACK, ACK, FIN_ACK = 0x02, 0x12, 0x10, 0x11


class ClaimLog(MemoryStore):
    """A memory store that remembers the TTL of every claim (allocate) it executed."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.claims: list[float | None] = []

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        self.claims += [op.ttl for op in ops if isinstance(op, AllocateOp)]
        return super()._execute(ops)

    def claim_expiry(self, pool: str, member: str) -> float | None:
        claim = self._claims.get((pool, member))
        return None if claim is None else claim[1]  # (owner, expires_at)


def setup() -> tuple[FakeClock, ClaimLog, Conntrack]:
    clock = FakeClock(1000.0)
    store = ClaimLog(clock)
    return clock, store, Conntrack(store, "ct:")


def test_nf_claims_follow_the_connection_not_every_write() -> None:
    clock, store, ct = setup()
    t = Timeouts()
    created = ct.process(ZONE, T, SYN, clock.now, nat=MASQ)
    assert created.entry is not None
    pool, member = snat_pool("ct:", created.entry)
    assert store.claims == [t.syn_sent]
    back = created.tuple.reversed()
    clock.advance(0.5)
    ct.process(ZONE, back, SYN_ACK, clock.now, nat=NatRequest())  # SYN_RECV: claim kept
    assert store.claims == [t.syn_sent]
    ct.process(ZONE, T, ACK, clock.now, nat=MASQ)
    assert store.claims[-1] == t.established
    clock.advance(t.established * t.refresh_fraction + 1)
    ct.process(ZONE, T, ACK, clock.now, nat=MASQ)  # a refresh renews the claim too
    assert len(store.claims) == 3
    first_fin = clock.now
    ct.process(ZONE, T, FIN_ACK, clock.now, nat=MASQ)
    assert store.claims[-1] == max(t.fin_wait, t.time_wait)
    clock.advance(1.0)
    closed = ct.process(ZONE, back, FIN_ACK, clock.now, nat=NatRequest())
    assert closed.entry is not None
    assert closed.entry.state is CtState.TIME_WAIT
    assert len(store.claims) == 4  # TIME_WAIT needs no claim of its own
    expiry = store.claim_expiry(pool, member)
    assert expiry is not None
    assert expiry == first_fin + t.time_wait  # held no longer than TIME_WAIT after a FIN
    assert expiry >= closed.entry.expiry - 1.0


def test_nf_claims_of_a_slow_handshake_and_a_reset_are_renewed() -> None:
    clock, store, ct = setup()
    t = Timeouts()
    created = ct.process(ZONE, T, SYN, clock.now, nat=MASQ)
    clock.advance(t.syn_sent * t.refresh_fraction + 0.5)  # the SYN-ACK comes late
    ct.process(ZONE, created.tuple.reversed(), SYN_ACK, clock.now, nat=NatRequest())
    assert store.claims == [t.syn_sent, t.syn_recv]  # else the claim would end too early
    ct.process(ZONE, T, 0x04, clock.now, nat=MASQ)  # RST: CLOSED, the claim shrinks
    assert store.claims[-1] == t.closed


def test_nf_a_masqueraded_syn_claims_its_port_with_the_lookup() -> None:
    clock, store, ct = setup()
    trips = []
    real = store._execute

    def counted(ops: Sequence[Op]) -> list[object]:
        trips.append([type(op).__name__ for op in ops])
        return real(ops)

    store._execute = counted  # type: ignore[method-assign]
    created = ct.process(ZONE, T, SYN, clock.now, nat=MASQ)
    assert created.entry is not None
    assert trips == [["GetOp", "AllocateOp"], ["CasOp", "CasOp"]]  # not three round trips


def test_nf_an_unused_early_claim_is_released_after_the_batch() -> None:
    clock, store, ct = setup()
    window = port_window(T, 1024, 65535, DEFAULT_WINDOW, 0)
    pool = pool_key("ct:", EXT, T)
    for port in window:  # the first window is taken: the connection gets a later port
        assert store.allocate(pool, [str(port)], f"other:{port}", 60) == str(port)
    created = ct.process(ZONE, T, SYN, clock.now, nat=MASQ)
    assert created.entry is not None
    own = created.entry.nat_src[1]
    assert own not in window
    assert store.release(pool, str(window[3]), f"other:{window[3]}")  # one frees up
    retransmit = ct.process(ZONE, T, SYN, clock.now, nat=MASQ)  # claims it early, unused
    assert retransmit.entry is not None
    assert retransmit.entry.nat_src[1] == own
    assert store.claim_expiry(pool, str(window[3])) is None  # given back
    assert store.claim_expiry(pool, str(own)) is not None
