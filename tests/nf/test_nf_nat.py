"""NAT on conntrack: DNAT, SNAT 1:1, masquerade port allocation, reverse translation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from netvirt.dataplane.actions import CtDnat, CtSnat
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import CT_DNAT, CT_EST, CT_INV, CT_NEW, CT_RPL, CT_SNAT, CT_TRK
from netvirt.dataplane.nf import CtRequest, CtTuple, Dnat, NatRequest, Snat, icmp_tuple
from netvirt.dataplane.nf.codec import icmp_ident
from netvirt.dataplane.nf.nat import pool_key, port_window
from nf.nf_support import NfEnv

ZONE = 3
FIXED, FIP, OUTSIDE, EXT = 0x0A000005, 0xAC180410, 0x08080808, 0xAC180402
MASQ = NatRequest(snat=Snat(EXT, (1024, 65535)))
UN_NAT = NatRequest()


def udp(src: int, sport: int, dst: int = OUTSIDE, dport: int = 53) -> CtTuple:
    return CtTuple(4, 17, src, dst, sport, dport)


def test_nf_dnat_floating_ip_inbound_and_reply(env: NfEnv) -> None:
    ct = env.conntrack()
    inbound = CtTuple(4, 6, OUTSIDE, FIP, 50000, 22)
    first = ct.process(ZONE, inbound, 0x02, env.now, nat=NatRequest(dnat=Dnat(FIXED)))
    assert first.state == CT_TRK | CT_NEW | CT_DNAT
    assert first.tuple == CtTuple(4, 6, OUTSIDE, FIXED, 50000, 22)
    reply = ct.process(ZONE, first.tuple.reversed(), 0x12, env.now, nat=UN_NAT)
    assert reply.state == CT_TRK | CT_EST | CT_RPL | CT_DNAT
    assert reply.tuple == inbound.reversed()  # source back to the floating IP
    untranslated = ct.process(ZONE, first.tuple.reversed(), 0x10, env.now)
    assert untranslated.tuple == first.tuple.reversed()  # ct_next alone never rewrites


def test_nf_snat_floating_ip_outbound_keeps_ports(env: NfEnv) -> None:
    ct = env.conntrack()
    out = ct.process(ZONE, udp(FIXED, 40000), 0, env.now, nat=NatRequest(snat=Snat(FIP)))
    assert out.state == CT_TRK | CT_NEW | CT_SNAT
    assert out.tuple == udp(FIP, 40000)
    back = ct.process(ZONE, out.tuple.reversed(), 0, env.now, nat=UN_NAT)
    assert back.tuple == udp(FIXED, 40000).reversed()


def test_nf_masquerade_prefers_the_source_port(env: NfEnv) -> None:
    ct = env.conntrack()
    first = ct.process(ZONE, udp(FIXED, 40000), 0, env.now, nat=MASQ)
    assert first.tuple.sport == 40000
    second = ct.process(ZONE, udp(FIXED + 1, 40000), 0, env.now, nat=MASQ)
    assert second.tuple.src == EXT
    assert second.tuple.sport != 40000
    pool = pool_key("ct:", EXT, udp(FIXED, 40000))
    assert env.store.release(pool, "40000", "someone else") is False  # claimed by the conn


def test_nf_masquerade_unique_ports_under_many_flows(env: NfEnv) -> None:
    """Hosts reusing the same source ports get distinct external ports; replies find them."""
    ct = env.conntrack()
    hosts = 40 if env.kind == "memory" else 12
    flows = [udp(FIXED + h, sport) for h in range(hosts) for sport in (5000, 5001, 33333)]
    results = ct.process_batch([CtRequest(ZONE, f, nat=MASQ) for f in flows], env.now)
    external = [(r.tuple.src, r.tuple.sport) for r in results]
    assert all(r.state & CT_NEW for r in results)
    assert len(set(external)) == len(flows)
    assert all(src == EXT and 1024 <= port <= 65535 for src, port in external)
    replies = ct.process_batch(
        [CtRequest(ZONE, r.tuple.reversed(), nat=UN_NAT) for r in results], env.now
    )
    assert [r.tuple for r in replies] == [f.reversed() for f in flows]
    assert all(r.state & CT_RPL for r in replies)


def test_nf_masquerade_one_by_one_and_retry_gets_same_port(mem: NfEnv) -> None:
    ct = mem.conntrack()
    ports = set()
    for h in range(100):
        result = ct.process(ZONE, udp(FIXED + h, 7000), 0, mem.now, nat=MASQ)
        ports.add(result.tuple.sport)
        again = ct.process(ZONE, udp(FIXED + h, 7000), 0, mem.now, nat=MASQ)
        assert again.tuple == result.tuple  # NAT is fixed at creation
    assert len(ports) == 100


def test_nf_masquerade_exhausted_pool_is_invalid(env: NfEnv) -> None:
    ct = env.conntrack()
    tiny = NatRequest(snat=Snat(EXT, (2000, 2001)))
    got = [ct.process(ZONE, udp(FIXED + h, 9000), 0, env.now, nat=tiny) for h in range(3)]
    assert sorted(r.tuple.sport for r in got[:2]) == [2000, 2001]
    assert got[2].state == CT_TRK | CT_INV
    assert got[2].drop is DropReason.INVALID_CT_STATE
    assert ct.lookup_batch([(ZONE, udp(FIXED + 2, 9000))], env.now) == [None]
    if env.kind == "redis":
        return  # pool claims expire on the store's clock, which a fake ``now`` does not move
    env.advance(30)  # the first two expire with their claims
    later = ct.process(ZONE, udp(FIXED + 2, 9000), 0, env.now, nat=tiny)
    assert later.state & CT_NEW


def test_nf_masquerade_skips_a_port_whose_reply_tuple_is_taken(env: NfEnv) -> None:
    """A claim can expire under a live tuple; the mirror's create-only CAS still catches it."""
    ct = env.conntrack()
    squatter = ct.process(ZONE, udp(EXT, 2000), 0, env.now, commit=True)  # EXT:2000 -> OUTSIDE
    assert squatter.entry is not None
    narrow = NatRequest(snat=Snat(EXT, (2000, 2001)))
    result = ct.process(ZONE, udp(FIXED, 2000), 0, env.now, nat=narrow)
    assert result.tuple == udp(EXT, 2001)
    back = ct.process(ZONE, udp(EXT, 2001).reversed(), 0, env.now, nat=UN_NAT)
    assert back.tuple == udp(FIXED, 2000).reversed()


def test_nf_snat_one_to_one_collision_is_invalid(env: NfEnv) -> None:
    ct = env.conntrack()
    shared = NatRequest(snat=Snat(FIP))
    assert ct.process(ZONE, udp(FIXED, 4000), 0, env.now, nat=shared).state & CT_NEW
    clash = ct.process(ZONE, udp(FIXED + 1, 4000), 0, env.now, nat=shared)
    assert clash.state == CT_TRK | CT_INV
    assert clash.drop is DropReason.INVALID_CT_STATE
    assert ct.lookup_batch([(ZONE, udp(FIXED + 1, 4000))], env.now) == [None]  # rolled back


def test_nf_empty_nat_request_leaves_new_connections_alone(env: NfEnv) -> None:
    ct = env.conntrack()
    result = ct.process(ZONE, udp(FIXED, 4000), 0, env.now, nat=UN_NAT)
    assert (result.state, result.entry) == (CT_TRK | CT_NEW, None)
    assert result.tuple == udp(FIXED, 4000)


def test_nf_dnat_and_snat_together(env: NfEnv) -> None:
    ct = env.conntrack()
    hairpin = NatRequest(dnat=Dnat(FIXED + 9, 8080), snat=Snat(EXT, (1024, 65535)))
    t = CtTuple(4, 6, FIXED, FIP, 45000, 80)
    out = ct.process(ZONE, t, 0x02, env.now, nat=hairpin)
    assert out.state == CT_TRK | CT_NEW | CT_SNAT | CT_DNAT
    assert out.tuple == CtTuple(4, 6, EXT, FIXED + 9, 45000, 8080)
    back = ct.process(ZONE, out.tuple.reversed(), 0x12, env.now, nat=UN_NAT)
    assert back.tuple == t.reversed()


def test_nf_icmp_echo_masquerade_translates_the_identifier(env: NfEnv) -> None:
    ct = env.conntrack()
    first = ct.process(ZONE, icmp_tuple(4, FIXED, OUTSIDE, 8, 4242), 0, env.now, nat=MASQ)
    second = ct.process(ZONE, icmp_tuple(4, FIXED + 1, OUTSIDE, 8, 4242), 0, env.now, nat=MASQ)
    assert icmp_ident(first.tuple) == 4242
    ident = icmp_ident(second.tuple)
    assert ident != 4242
    answer = icmp_tuple(4, OUTSIDE, EXT, 0, ident)
    back = ct.process(ZONE, answer, 0, env.now, nat=UN_NAT)
    assert back.tuple == icmp_tuple(4, OUTSIDE, FIXED + 1, 0, 4242)


def test_nf_ipv6_dnat(env: NfEnv) -> None:
    ct = env.conntrack()
    vip, backend, client = 0x20010DB8 << 96 | 0x100, 0x20010DB8 << 96 | 0x5, 0x20010DB8 << 96 | 9
    t = CtTuple(6, 17, client, vip, 1111, 53)
    out = ct.process(ZONE, t, 0, env.now, nat=NatRequest(dnat=Dnat(backend, 5353)))
    assert out.tuple == CtTuple(6, 17, client, backend, 1111, 5353)
    back = ct.process(ZONE, out.tuple.reversed(), 0, env.now, nat=UN_NAT)
    assert back.tuple == t.reversed()


def test_nf_nat_request_from_actions() -> None:
    assert NatRequest.from_action(CtDnat()) == NatRequest()
    assert NatRequest.from_action(CtDnat(ip=FIXED, port=80)).dnat == Dnat(FIXED, 80)
    assert NatRequest.from_action(CtSnat(ip=EXT, port_range=(1, 9))).snat == Snat(EXT, (1, 9))
    assert not NatRequest.from_action(CtSnat()).creates


@given(
    sport=st.integers(0, 65535),
    lo=st.integers(1, 65535),
    span=st.integers(0, 2000),
    size=st.integers(1, 64),
    attempt=st.integers(0, 5),
)
def test_nf_port_window_stays_in_range(
    sport: int, lo: int, span: int, size: int, attempt: int
) -> None:
    hi = min(65535, lo + span)
    window = port_window(udp(FIXED, sport), lo, hi, size, attempt)
    assert all(lo <= p <= hi for p in window)
    assert len(window) == len(set(window))
    assert min(size, hi - lo + 1) <= len(window) <= min(size, hi - lo + 1) + 1
    if attempt == 0 and lo <= sport <= hi:
        assert window[0] == sport
