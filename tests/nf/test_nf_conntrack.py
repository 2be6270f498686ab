"""Conntrack state machines and ct_state bits, on the memory store and on Redis."""

from __future__ import annotations

import pytest

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import CT_EST, CT_INV, CT_NEW, CT_REL, CT_RPL, CT_TRK
from netvirt.dataplane.nf import (
    Conntrack,
    CtRequest,
    CtState,
    CtTuple,
    NatRequest,
    Snat,
    icmp_tuple,
    tcp_step,
)
from netvirt.dataplane.nf.codec import decode
from netvirt.state import MemoryStore
from nf.nf_support import CountingMemoryStore, NfEnv

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
A, B, EXT = 0x0A000001, 0x0A000002, 0xC0000201
ZONE = 7
NEW, EST, EST_RPL, INV = CT_TRK | CT_NEW, CT_TRK | CT_EST, CT_TRK | CT_EST | CT_RPL, CT_TRK | CT_INV


def tcp(sport: int = 40000, dport: int = 80, src: int = A, dst: int = B) -> CtTuple:
    return CtTuple(4, 6, src, dst, sport, dport)


def udp(sport: int = 5000, dport: int = 53, src: int = A, dst: int = B) -> CtTuple:
    return CtTuple(4, 17, src, dst, sport, dport)


def handshake(ct: Conntrack, t: CtTuple, now: float) -> None:
    assert ct.process(ZONE, t, SYN, now, commit=True).state == NEW
    assert ct.process(ZONE, t.reversed(), SYN | ACK, now).state == EST_RPL
    result = ct.process(ZONE, t, ACK, now)
    assert result.entry is not None
    assert result.entry.state is CtState.ESTABLISHED


def test_nf_tcp_handshake_new_est_rpl(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    probe = ct.process(ZONE, t, SYN, env.now)
    assert (probe.state, probe.entry) == (NEW, None)  # not committed: nothing stored
    first = ct.process(ZONE, t, SYN, env.now, commit=True)
    assert first.state == NEW
    assert first.entry is not None
    assert first.entry.state is CtState.SYN_SENT
    again = ct.process(ZONE, t, SYN, env.now)  # retransmitted SYN of a committed connection
    assert again.state == EST
    synack = ct.process(ZONE, t.reversed(), SYN | ACK, env.now)
    assert synack.state == EST_RPL
    assert synack.reply
    assert synack.entry is not None
    assert synack.entry.state is CtState.SYN_RECV
    ack = ct.process(ZONE, t, ACK, env.now)
    assert ack.state == EST
    assert ack.entry is not None
    assert ack.entry.state is CtState.ESTABLISHED
    data = ct.process(ZONE, t.reversed(), ACK | PSH, env.now)
    assert data.state == EST_RPL
    assert data.entry is not None
    assert data.entry.orig == t


def test_nf_tcp_fin_teardown_and_time_wait_expiry(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    handshake(ct, t, env.now)
    states = []
    for packet, flags in [(t, FIN | ACK), (t.reversed(), ACK), (t.reversed(), FIN | ACK)]:
        result = ct.process(ZONE, packet, flags, env.now)
        assert result.state & CT_EST
        assert result.entry is not None
        states.append(result.entry.state)
    assert states == [CtState.FIN_WAIT, CtState.CLOSE_WAIT, CtState.TIME_WAIT]
    last = ct.process(ZONE, t, ACK, env.now)
    assert last.entry is not None
    assert last.entry.state is CtState.TIME_WAIT
    env.advance(119)
    assert ct.lookup_batch([(ZONE, t)], env.now)[0] is not None
    env.advance(1)
    assert ct.lookup_batch([(ZONE, t), (ZONE, t.reversed())], env.now) == [None, None]
    assert ct.process(ZONE, t, ACK, env.now).state == INV


def test_nf_tcp_rst_closes_then_closed_timeout(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    handshake(ct, t, env.now)
    rst = ct.process(ZONE, t.reversed(), RST, env.now)
    assert rst.state == EST_RPL
    assert rst.entry is not None
    assert rst.entry.state is CtState.CLOSED
    assert ct.process(ZONE, t, ACK, env.now).state == INV  # data after RST
    assert ct.process(ZONE, t, RST, env.now).state == EST
    env.advance(10)
    assert ct.lookup_batch([(ZONE, t)], env.now) == [None]


def test_nf_tcp_rst_answers_syn(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    ct.process(ZONE, t, SYN, env.now, commit=True)
    refused = ct.process(ZONE, t.reversed(), RST | ACK, env.now)
    assert refused.state == EST_RPL
    assert refused.entry is not None
    assert refused.entry.state is CtState.CLOSED


def test_nf_syn_reopens_time_wait_connection(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    handshake(ct, t, env.now)
    for packet, flags in [(t, FIN | ACK), (t.reversed(), FIN | ACK), (t, ACK)]:
        ct.process(ZONE, packet, flags, env.now)
    env.advance(5)
    reopen = ct.process(ZONE, t, SYN, env.now, commit=True)
    assert reopen.state == NEW
    assert reopen.entry is not None
    assert reopen.entry.state is CtState.SYN_SENT
    assert reopen.entry.created == env.now
    assert ct.process(ZONE, t.reversed(), SYN | ACK, env.now).state == EST_RPL


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (ACK, "ack without connection"),
        (SYN | FIN, "syn+fin"),
        (SYN | ACK, "syn-ack first"),
        (0, "null"),
    ],
)
def test_nf_tcp_invalid_without_connection(env: NfEnv, flags: int, why: str) -> None:
    ct, t = env.conntrack(), tcp()
    result = ct.process(ZONE, t, flags, env.now, commit=True)
    assert result.state == INV, why
    assert ct.lookup_batch([(ZONE, t)], env.now) == [None]  # nothing committed


def test_nf_tcp_out_of_state_packets_are_invalid_and_change_nothing(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    ct.process(ZONE, t, SYN, env.now, commit=True)
    early = ct.process(ZONE, t, ACK, env.now)  # ACK before the SYN-ACK
    assert early.state == INV
    assert early.entry is not None
    assert early.entry.state is CtState.SYN_SENT
    handshake_rest = ct.process(ZONE, t.reversed(), SYN | ACK, env.now)
    assert handshake_rest.state == EST_RPL
    ct.process(ZONE, t, ACK, env.now)
    assert ct.process(ZONE, t, SYN, env.now).state == INV  # SYN on an established connection
    assert ct.process(ZONE, t, SYN | RST, env.now).state == INV
    hit = ct.lookup_batch([(ZONE, t)], env.now)[0]
    assert hit is not None
    assert hit.entry.state is CtState.ESTABLISHED


def test_nf_tcp_timeouts_with_fake_clock(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    ct.process(ZONE, t, SYN, env.now, commit=True)
    env.advance(29.9)
    assert ct.lookup_batch([(ZONE, t)], env.now)[0] is not None
    env.advance(0.1)
    assert ct.lookup_batch([(ZONE, t)], env.now) == [None]
    t2 = tcp(sport=40001)
    handshake(ct, t2, env.now)
    for _ in range(3):  # traffic every 1000 s keeps a 7200 s connection alive
        env.advance(1000)
        assert ct.process(ZONE, t2, ACK, env.now).state == EST
    env.advance(7199)
    assert ct.lookup_batch([(ZONE, t2)], env.now)[0] is not None
    env.advance(1)
    assert ct.lookup_batch([(ZONE, t2)], env.now) == [None]


def test_nf_refresh_is_rate_limited(mem: NfEnv) -> None:
    ct, t = mem.conntrack(), tcp()
    handshake(ct, t, mem.now)
    version = ct.lookup_batch([(ZONE, t)], mem.now)[0]
    assert version is not None
    mem.advance(100)  # < 10% of 7200 s: no write
    same = ct.process(ZONE, t, ACK, mem.now)
    assert same.entry is not None
    assert same.entry.version == version.entry.version
    mem.advance(700)
    refreshed = ct.process(ZONE, t, ACK, mem.now)
    assert refreshed.entry is not None
    assert refreshed.entry.version > version.entry.version
    assert refreshed.entry.expiry == mem.now + 7200


def test_nf_udp_unreplied_then_assured(env: NfEnv) -> None:
    ct, u = env.conntrack(), udp()
    first = ct.process(ZONE, u, 0, env.now, commit=True)
    assert first.state == NEW
    assert first.entry is not None
    assert first.entry.expiry == env.now + 30
    env.advance(10)
    answer = ct.process(ZONE, u.reversed(), 0, env.now)
    assert answer.state == EST_RPL
    assert answer.entry is not None
    assert answer.entry.state is CtState.REPLIED
    env.advance(179)
    assert ct.process(ZONE, u, 0, env.now).state == EST
    env.advance(180)
    assert ct.process(ZONE, u, 0, env.now).state == NEW


def test_nf_icmp_echo(env: NfEnv) -> None:
    ct = env.conntrack()
    request = icmp_tuple(4, A, B, 8, ident=0x1234)
    reply = icmp_tuple(4, B, A, 0, ident=0x1234)
    assert reply == request.reversed()
    assert ct.process(ZONE, reply, 0, env.now, commit=True).state == INV  # reply first
    assert ct.process(ZONE, request, 0, env.now, commit=True).state == NEW
    assert ct.process(ZONE, reply, 0, env.now).state == EST_RPL
    other_id = icmp_tuple(4, B, A, 0, ident=0x1235)
    assert ct.process(ZONE, other_id, 0, env.now).state == INV
    env.advance(30)
    assert ct.process(ZONE, reply, 0, env.now).state == INV


def test_nf_other_protocol_600s(env: NfEnv) -> None:
    ct, gre = env.conntrack(), CtTuple(4, 47, A, B)
    assert ct.process(ZONE, gre, 0, env.now, commit=True).state == NEW
    assert ct.process(ZONE, gre.reversed(), 0, env.now).state == EST_RPL
    env.advance(599)
    assert ct.process(ZONE, gre, 0, env.now).state == EST
    env.advance(600)
    assert ct.process(ZONE, gre, 0, env.now).state == NEW


def test_nf_icmp_error_is_related(env: NfEnv) -> None:
    ct, u = env.conntrack(), udp()
    ct.process(ZONE, u, 0, env.now, commit=True)
    router = 0x0A0000FE
    error = icmp_tuple(4, router, A, 3)
    rel = ct.process(ZONE, error, 0, env.now, related=u)
    assert rel.state == CT_TRK | CT_REL | CT_RPL
    assert rel.entry is not None
    assert rel.entry.orig == u
    # an error from A's side about a reply packet travels in the original direction
    orig_dir = ct.process(ZONE, icmp_tuple(4, A, B, 3), 0, env.now, related=u.reversed())
    assert orig_dir.state == CT_TRK | CT_REL
    unknown = ct.process(ZONE, error, 0, env.now, related=udp(sport=9))
    assert unknown.state == INV


def test_nf_icmp_error_related_through_snat(env: NfEnv) -> None:
    ct, u = env.conntrack(), udp()
    nat = NatRequest(snat=Snat(EXT, (1024, 65535)))
    out = ct.process(ZONE, u, 0, env.now, nat=nat)
    outside = out.tuple  # the packet as it left: EXT:port -> B
    router = 0xC6336401
    error = icmp_tuple(4, router, EXT, 11)
    rel = ct.process(ZONE, error, 0, env.now, related=outside, nat=NatRequest())
    assert rel.state & (CT_REL | CT_RPL) == CT_REL | CT_RPL
    assert (rel.tuple.src, rel.tuple.dst) == (router, A)  # outer destination un-SNATed
    assert rel.quoted == u  # the quoted packet as A sent it


def test_nf_commit_mark(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    created = ct.process(ZONE, t, SYN, env.now, commit=True, mark=0x5)
    assert created.mark == 0x5
    assert ct.process(ZONE, t.reversed(), SYN | ACK, env.now).mark == 0x5
    updated = ct.process(ZONE, t, ACK, env.now, commit=True, mark=0x9)
    assert updated.mark == 0x9
    assert ct.process(ZONE, t.reversed(), ACK, env.now).mark == 0x9  # mirror updated too
    kept = ct.process(ZONE, t, ACK, env.now, commit=True)
    assert kept.mark == 0x9


def test_nf_zones_are_separate(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    ct.process(ZONE, t, SYN, env.now, commit=True)
    assert ct.process(ZONE + 1, t, SYN, env.now).state == NEW
    assert ct.process(ZONE + 1, t.reversed(), SYN | ACK, env.now).state == INV


def test_nf_ipv6_connection(env: NfEnv) -> None:
    ct = env.conntrack()
    t = CtTuple(6, 6, 0x20010DB8 << 96 | 1, 0x20010DB8 << 96 | 2, 33000, 443)
    handshake(ct, t, env.now)
    hit = ct.lookup_batch([(ZONE, t.reversed())], env.now)[0]
    assert hit is not None
    assert hit.reply
    assert hit.entry.orig == t


def test_nf_two_hosts_share_one_store(env: NfEnv) -> None:
    """The stateless-NF property: host B continues the connection host A created."""
    host_a, host_b = env.conntrack(), env.conntrack()
    t = tcp()
    assert host_a.process(ZONE, t, SYN, env.now, commit=True).state == NEW
    synack = host_b.process(ZONE, t.reversed(), SYN | ACK, env.now)
    assert synack.state == EST_RPL
    ack = host_b.process(ZONE, t, ACK, env.now)  # host A failed; B takes over
    assert ack.entry is not None
    assert ack.entry.state is CtState.ESTABLISHED
    seen_by_a = host_a.process(ZONE, t.reversed(), ACK, env.now)
    assert seen_by_a.state == EST_RPL
    assert seen_by_a.entry is not None
    assert seen_by_a.entry.state is CtState.ESTABLISHED


def test_nf_same_connection_twice_in_one_batch_converges(env: NfEnv) -> None:
    ct, u = env.conntrack(), udp()
    results = ct.process_batch(
        [CtRequest(ZONE, u, commit=True), CtRequest(ZONE, u, commit=True)], env.now
    )
    assert results[0].state == NEW
    assert results[1].state == EST  # lost the create race, continued the winner's entry
    assert results[0].entry is not None
    assert results[1].entry is not None
    assert results[0].entry.same_connection(results[1].entry)


def test_nf_race_loser_drops_its_mirror(env: NfEnv) -> None:
    """Two hosts race to create one connection with different DNAT: one wins, one adopts it."""
    from netvirt.dataplane.nf import Dnat

    ct, t = env.conntrack(), tcp(dport=80, dst=EXT)
    backend_x, backend_y = 0x0A000105, 0x0A000106
    results = ct.process_batch(
        [
            CtRequest(ZONE, t, SYN, nat=NatRequest(dnat=Dnat(backend_x, 8080))),
            CtRequest(ZONE, t, SYN, nat=NatRequest(dnat=Dnat(backend_y, 8080))),
        ],
        env.now,
    )
    assert [r.tuple.dst for r in results] == [backend_x, backend_x]
    loser_reply = CtTuple(4, 6, backend_y, A, 8080, 40000)
    winner_reply = CtTuple(4, 6, backend_x, A, 8080, 40000)
    assert ct.lookup_batch([(ZONE, loser_reply), (ZONE, winner_reply)], env.now)[0] is None
    assert env.store.get(ct.key(ZONE, loser_reply)) is None


def test_nf_batch_of_established_packets_is_one_round_trip(mem: NfEnv) -> None:
    counting = CountingMemoryStore(mem.clock)
    setup = Conntrack(counting)
    flows = [tcp(sport=41000 + i) for i in range(50)]
    for t in flows:
        handshake(setup, t, mem.now)
    counting.round_trips = 0
    ct = Conntrack(counting)
    requests = [CtRequest(ZONE, t, ACK) for t in flows]
    requests += [CtRequest(ZONE, t.reversed(), ACK) for t in flows]
    results = ct.process_batch(requests, mem.now)
    assert all(r.state & CT_EST for r in results)
    assert counting.round_trips == 1
    counting.round_trips = 0
    assert all(h is not None for h in ct.lookup_batch([(ZONE, t) for t in flows], mem.now))
    assert counting.round_trips == 1


def test_nf_batch_of_new_connections_is_two_round_trips(mem: NfEnv) -> None:
    counting = CountingMemoryStore(mem.clock)
    ct = Conntrack(counting)
    requests = [CtRequest(ZONE, udp(sport=6000 + i), commit=True) for i in range(40)]
    assert all(r.state == NEW for r in ct.process_batch(requests, mem.now))
    assert counting.round_trips == 2  # lookup, then primary + mirror creation


def test_nf_stale_mirror_is_not_a_connection(mem: NfEnv) -> None:
    """A mirror whose primary belongs to a newer incarnation is treated as absent on write."""
    ct = mem.conntrack()
    u = udp()
    nat_a = NatRequest(snat=Snat(EXT, (2000, 2000)))
    first = ct.process(ZONE, u, 0, mem.now, nat=nat_a)
    assert first.entry is not None
    old_reply = first.entry.reply
    mem.store.delete(ct.key(ZONE, u))  # the primary vanishes (e.g. evicted); the mirror stays
    result = ct.process(ZONE, old_reply, 0, mem.now)  # a reply needs a write: reads the primary
    assert result.state == NEW  # the mirror was stale: the packet is a new connection
    assert result.entry is None


def test_nf_records_are_primary_and_mirror(env: NfEnv) -> None:
    ct, t = env.conntrack(), tcp()
    ct.process(ZONE, t, SYN, env.now, commit=True)
    primary, mirror = env.store.get_many([ct.key(ZONE, t), ct.key(ZONE, t.reversed())])
    assert primary is not None
    assert mirror is not None
    p_entry, p_kind = decode(primary.value)
    m_entry, m_kind = decode(mirror.value)
    assert (p_kind, m_kind) == (0, 1)
    assert p_entry == m_entry


def test_nf_tcp_step_is_idempotent_for_retransmissions() -> None:
    states = list(CtState)[:7]
    for state in states:
        for fins in range(4):
            for reply in (False, True):
                for flags in range(0x20):
                    once = tcp_step(state, fins, reply, flags)
                    if once is not None:
                        assert tcp_step(once[0], once[1], reply, flags) == once


def test_nf_unreadable_record_is_replaced(env: NfEnv) -> None:
    ct, u = env.conntrack(), udp()
    env.store.put(ct.key(ZONE, u), b"\xff garbage")
    created = ct.process(ZONE, u, 0, env.now, commit=True)
    assert created.state == NEW
    assert created.entry is not None
    assert ct.lookup_batch([(ZONE, u)], env.now)[0] is not None


def test_nf_no_lb_backend_drop_reason(mem: NfEnv) -> None:
    from netvirt.dataplane.nf import LbRequest

    ct = mem.conntrack()
    result = ct.process(ZONE, tcp(), SYN, mem.now, nat=NatRequest(lb=LbRequest(())))
    assert result.drop is DropReason.NO_LB_BACKEND
    assert result.state == INV


def test_nf_memory_store_ttl_follows_entry_expiry() -> None:
    from state.state_support import FakeClock

    clock = FakeClock(50.0)
    store = MemoryStore(clock)
    ct = Conntrack(store)
    ct.process(ZONE, udp(), 0, clock.now, commit=True)
    assert len(store) == 2
    clock.advance(30)
    assert store.sweep() == 2  # the store dropped both records at the entry's expiry
