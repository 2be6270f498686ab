"""SNAT pools per destination (nf/nat.py): an external port is unique per destination
address and port (as in Linux and OVN), not per external address alone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netvirt.dataplane.nf import CtRequest, CtTuple, Dnat, NatRequest, Snat, icmp_tuple
from netvirt.dataplane.nf.codec import SNAT_POOL
from netvirt.dataplane.nf.nat import pool_key, snat_pool
from netvirt.state import MemoryStore
from nf.nf_support import NfEnv

ZONE = 3
INSIDE, EXT, SERVER = 0x0A000005, 0xAC180402, 0x08080800
TINY = NatRequest(snat=Snat(EXT, (2000, 2003)))  # 4 ports: collisions are likely


def test_pool_key_per_destination_for_port_protocols() -> None:
    a = CtTuple(4, 6, INSIDE, SERVER, 40000, 80)
    assert pool_key("ct:", EXT, a) != pool_key("ct:", EXT, a._replace(dport=81))
    assert pool_key("ct:", EXT, a) != pool_key("ct:", EXT, a._replace(dst=SERVER + 1))
    assert pool_key("ct:", EXT, a) == pool_key("ct:", EXT, a._replace(src=1, sport=1))
    for proto in (17, 132, 136):
        assert pool_key("ct:", EXT, a._replace(proto=proto)).endswith(f":{SERVER:x}:80")


def test_echo_keeps_one_pool_per_address() -> None:
    one = icmp_tuple(4, INSIDE, SERVER, 8, 7)
    two = icmp_tuple(4, INSIDE, SERVER + 9, 8, 7)
    assert pool_key("ct:", EXT, one) == pool_key("ct:", EXT, two) == f"ct:snat:4:{EXT:x}:1"


def test_dnat_then_snat_claims_in_the_translated_destination_pool(mem: NfEnv) -> None:
    """The pool is the destination after DNAT: the reply tuple's source."""
    ct = mem.conntrack()
    req = NatRequest(dnat=Dnat(SERVER + 5, 8080))
    t = CtTuple(4, 6, INSIDE, SERVER, 40000, 80)
    first = ct.process(ZONE, t, 0x02, mem.now, nat=req)
    assert first.tuple == t._replace(dst=SERVER + 5, dport=8080)
    out = ct.process(ZONE + 1, first.tuple, 0x02, mem.now, nat=TINY)
    assert out.entry is not None
    assert out.entry.flags & SNAT_POOL
    pool, member = snat_pool("ct:", out.entry)
    assert pool == pool_key("ct:", EXT, first.tuple)
    assert mem.store.allocate(pool, [member], "someone else", 60.0) is None
    both = NatRequest(dnat=Dnat(SERVER + 6, 443), snat=Snat(EXT, (2000, 2003)))  # one request
    u = t._replace(sport=40001)
    made = ct.process(ZONE + 2, u, 0x02, mem.now, nat=both)
    assert made.entry is not None
    assert made.tuple.dst == SERVER + 6
    pool, member = snat_pool("ct:", made.entry)
    assert pool == pool_key("ct:", EXT, u._replace(dst=SERVER + 6, dport=443))
    assert mem.store.allocate(pool, [member], "someone else", 60.0) is None  # claimed there


flows = st.lists(
    st.tuples(
        st.integers(0, 3),  # inside host
        st.integers(1024, 1030),  # its source port
        st.integers(0, 2),  # server
        st.sampled_from([53, 80]),  # server port
        st.sampled_from([6, 17]),
    ),
    min_size=1,
    max_size=24,
    unique=True,
)


@settings(max_examples=150, deadline=None)
@given(flows, st.booleans())
def test_external_ports_unique_per_destination_never_shared_to_one(
    picks: list[tuple[int, int, int, int, int]], batched: bool
) -> None:
    """Two connections to one destination never share an external port; connections to
    different destinations may (and with a 4-port pool, 24 flows to 6 destinations must
    sometimes); every reply finds its own connection back."""
    store = MemoryStore()
    from netvirt.dataplane.nf import Conntrack

    ct = Conntrack(store, "ct:")
    tuples = [
        CtTuple(4, proto, INSIDE + h, SERVER + s, sport, dport)
        for h, sport, s, dport, proto in picks
    ]
    if batched:
        results = ct.process_batch(
            [CtRequest(ZONE, t, 0x02 if t.proto == 6 else 0, nat=TINY) for t in tuples], 0.0
        )
    else:
        results = [ct.process(ZONE, t, 0x02 if t.proto == 6 else 0, 0.0, nat=TINY) for t in tuples]
    seen: dict[tuple[int, int, int, int, int], CtTuple] = {}
    made = []
    for t, r in zip(tuples, results, strict=True):
        if r.entry is None:  # pool of 4 exhausted for that destination: a named failure
            per_dest = sum(
                1 for u in tuples if (u.proto, u.dst, u.dport) == (t.proto, t.dst, t.dport)
            )
            assert per_dest > 4
            continue
        out = r.tuple
        assert out.src == EXT
        assert 2000 <= out.sport <= 2003
        k = (out.proto, out.dst, out.dport, out.src, out.sport)
        assert k not in seen, (t, seen[k])  # never twice toward one destination
        seen[k] = t
        made.append((t, out))
    by_dest: dict[tuple[int, int, int], int] = {}
    for t, _ in made:
        by_dest[(t.proto, t.dst, t.dport)] = by_dest.get((t.proto, t.dst, t.dport), 0) + 1
    assert all(n <= 4 for n in by_dest.values())
    if any(n == 4 for n in by_dest.values()) and len(by_dest) > 1:
        ports = [o.sport for _, o in made]
        assert len(set(ports)) < len(ports)  # shared across destinations
    replies = [ct.process(ZONE, o.reversed(), 0x12 if o.proto == 6 else 0, 0.0, nat=NatRequest())
               for _, o in made]  # fmt: skip
    assert [r.tuple for r in replies] == [t.reversed() for t, _ in made]
