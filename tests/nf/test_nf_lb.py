"""Load-balancer selection through ct_lb: spreading, stickiness, counters, affinity."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from netvirt.dataplane.actions import Backend, CtLb
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import CT_DNAT, CT_EST, CT_NEW, CT_RPL, CT_TRK
from netvirt.dataplane.nf import CtRequest, CtResult, CtTuple, LbRequest, NatRequest
from netvirt.dataplane.nf.lb import LbRound, backend_id
from netvirt.state import Entry
from nf.nf_support import NfEnv

ZONE = 11
VIP, CLIENT = 0x0A0000C8, 0x0A000100
BACKENDS = tuple(Backend(0x0A000010 + i, 8080) for i in range(3))
SYN, SYNACK, ACK, FIN = 0x02, 0x12, 0x10, 0x11


def lb(
    algorithm: str = "ROUND_ROBIN", backends: tuple[Backend, ...] = BACKENDS, **kw: float
) -> NatRequest:
    return NatRequest(lb=LbRequest(backends, algorithm, **kw))


def to_vip(client: int = CLIENT, sport: int = 30000) -> CtTuple:
    return CtTuple(4, 6, client, VIP, sport, 80)


def backend_of(result: CtResult) -> int:
    return BACKENDS.index(Backend(result.tuple.dst, result.tuple.dport))


def test_nf_round_robin_spreads_evenly(env: NfEnv) -> None:
    ct = env.conntrack()
    picks = [
        backend_of(ct.process(ZONE, to_vip(sport=i + 1), SYN, env.now, nat=lb())) for i in range(9)
    ]
    assert picks == [0, 1, 2] * 3


def test_nf_round_robin_spreads_evenly_within_a_batch(env: NfEnv) -> None:
    ct = env.conntrack()
    requests = [CtRequest(ZONE, to_vip(sport=i + 1), SYN, nat=lb()) for i in range(12)]
    picks = Counter(backend_of(r) for r in ct.process_batch(requests, env.now))
    assert picks == {0: 4, 1: 4, 2: 4}
    nxt = ct.process(ZONE, to_vip(sport=99), SYN, env.now, nat=lb())  # counter was written back
    assert backend_of(nxt) == 0


def test_nf_round_robin_shared_by_two_hosts(env: NfEnv) -> None:
    host_a, host_b = env.conntrack(), env.conntrack()
    picks = []
    for i in range(6):
        host = host_a if i % 2 else host_b
        picks.append(backend_of(host.process(ZONE, to_vip(sport=i + 1), SYN, env.now, nat=lb())))
    assert sorted(Counter(picks).values()) == [2, 2, 2]


def test_nf_existing_connection_follows_its_entry(env: NfEnv) -> None:
    ct, t = env.conntrack(), to_vip()
    first = ct.process(ZONE, t, SYN, env.now, nat=lb())
    assert first.state == CT_TRK | CT_NEW | CT_DNAT
    backend = first.tuple
    reply = ct.process(ZONE, backend.reversed(), SYNACK, env.now, nat=NatRequest())
    assert reply.state == CT_TRK | CT_EST | CT_RPL | CT_DNAT
    assert reply.tuple == t.reversed()  # the client sees the VIP answer
    shrunk = lb(backends=BACKENDS[2:] if backend_of(first) != 2 else BACKENDS[:1])
    later = ct.process(ZONE, t, ACK, env.now, nat=shrunk)
    assert later.tuple == backend


def test_nf_source_ip_is_sticky_and_spreads(env: NfEnv) -> None:
    host_a, host_b = env.conntrack(), env.conntrack()
    clients = range(CLIENT, CLIENT + (60 if env.kind == "memory" else 20))
    chosen = {}
    for c in clients:
        picks = {
            backend_of(host.process(ZONE, to_vip(c, sport), SYN, env.now, nat=lb("SOURCE_IP")))
            for host, sport in ((host_a, 1000), (host_b, 2000), (host_a, 3000))
        }
        assert len(picks) == 1  # same client, any host, any port: same backend
        chosen[c] = picks.pop()
    assert set(chosen.values()) == {0, 1, 2}


def test_nf_source_ip_removal_moves_only_that_backends_clients(mem: NfEnv) -> None:
    req_all = LbRequest(BACKENDS, "SOURCE_IP")
    req_two = LbRequest(BACKENDS[:2], "SOURCE_IP")
    lb_round = LbRound("ct:", mem.now)
    moved = 0
    for c in range(CLIENT, CLIENT + 200):
        before = lb_round.choose(to_vip(c), req_all)
        after = lb_round.choose(to_vip(c), req_two)
        assert before is not None
        assert after is not None
        if before.backend != BACKENDS[2]:
            assert after.backend == before.backend
        else:
            moved += 1
    assert 30 < moved < 110


def test_nf_source_ip_port_varies_with_port(mem: NfEnv) -> None:
    ct = mem.conntrack()
    picks = {
        backend_of(ct.process(ZONE, to_vip(sport=p), SYN, mem.now, nat=lb("SOURCE_IP_PORT")))
        for p in range(1, 40)
    }
    assert picks == {0, 1, 2}


def test_nf_least_connections_counts_and_releases(env: NfEnv) -> None:
    ct = env.conntrack()
    flows = [to_vip(sport=i + 1) for i in range(6)]
    picks = [
        backend_of(ct.process(ZONE, t, SYN, env.now, nat=lb("LEAST_CONNECTIONS"))) for t in flows
    ]
    assert Counter(picks) == {0: 2, 1: 2, 2: 2}
    # close both connections of backend 1 (FIN from both sides): it becomes the least loaded
    for t, pick in zip(flows, picks, strict=True):
        if pick == 1:
            server = ct.process(ZONE, t, SYN, env.now, nat=NatRequest()).tuple
            ct.process(ZONE, server.reversed(), SYNACK, env.now)
            ct.process(ZONE, t, ACK, env.now)
            ct.process(ZONE, t, FIN, env.now)
            ct.process(ZONE, server.reversed(), FIN, env.now)
    counts = _lc_counts(env, to_vip())
    assert counts[backend_id(BACKENDS[1])] == pytest.approx(0.0, abs=0.01)
    nxt = ct.process(ZONE, to_vip(sport=500), SYN, env.now, nat=lb("LEAST_CONNECTIONS"))
    assert backend_of(nxt) == 1


def test_nf_least_connections_counts_decay(mem: NfEnv) -> None:
    ct = mem.conntrack()
    for i in range(4):
        ct.process(ZONE, to_vip(sport=i + 1), SYN, mem.now, nat=lb("LEAST_CONNECTIONS"))
    mem.advance(900)  # one half-life
    lb_round = LbRound("ct:", mem.now)
    key = lb_round.lc_key(to_vip())
    lb_round.observe(key, mem.store.get(key))
    pick = lb_round.choose(to_vip(sport=77), LbRequest(BACKENDS, "LEAST_CONNECTIONS"))
    assert pick is not None
    counts = _lc_counts(mem, to_vip())
    assert sum(counts.values()) == pytest.approx(4.0)  # stored at t0; decay applies on read
    assert lb_round._lc_counts(key)[pick.backend_id] == pytest.approx(0.5 + 1.0)


def _lc_counts(env: NfEnv, t: CtTuple) -> dict[str, float]:
    entry = env.store.get(LbRound("ct:", env.now).lc_key(t))
    assert isinstance(entry, Entry)
    counts: dict[str, float] = json.loads(entry.value)["c"]
    return {backend_id(b): counts.get(backend_id(b), 0.0) for b in BACKENDS}


def test_nf_affinity_keeps_a_client_on_its_backend(env: NfEnv) -> None:
    ct = env.conntrack()
    sticky = lb(affinity_timeout=60.0)
    first = backend_of(ct.process(ZONE, to_vip(sport=1), SYN, env.now, nat=sticky))
    for sport in range(2, 6):
        env.advance(10)
        assert backend_of(ct.process(ZONE, to_vip(sport=sport), SYN, env.now, nat=sticky)) == first
    other = backend_of(ct.process(ZONE, to_vip(CLIENT + 1, 1), SYN, env.now, nat=sticky))
    assert other != first  # round robin still moves on for other clients
    env.advance(61)
    after = [
        backend_of(ct.process(ZONE, to_vip(sport=100 + i), SYN, env.now, nat=sticky))
        for i in range(3)
    ]
    assert len(set(after)) == 1  # a new affinity was set by the first of them


def test_nf_affinity_ignores_an_unhealthy_backend(env: NfEnv) -> None:
    ct = env.conntrack()
    first = ct.process(ZONE, to_vip(sport=1), SYN, env.now, nat=lb(affinity_timeout=60.0))
    healthy = tuple(b for i, b in enumerate(BACKENDS) if i != backend_of(first))
    moved = ct.process(
        ZONE, to_vip(sport=2), SYN, env.now, nat=lb(backends=healthy, affinity_timeout=60.0)
    )
    assert Backend(moved.tuple.dst, moved.tuple.dport) in healthy


def test_nf_lb_without_backends_drops(env: NfEnv) -> None:
    ct = env.conntrack()
    result = ct.process(ZONE, to_vip(), SYN, env.now, nat=lb(backends=()))
    assert result.drop is DropReason.NO_LB_BACKEND
    assert ct.lookup_batch([(ZONE, to_vip())], env.now) == [None]


def test_nf_lb_backend_without_port_keeps_the_port(env: NfEnv) -> None:
    ct = env.conntrack()
    result = ct.process(ZONE, to_vip(), SYN, env.now, nat=lb(backends=(Backend(0x0A000099, None),)))
    assert (result.tuple.dst, result.tuple.dport) == (0x0A000099, 80)


def test_nf_lb_request_from_action_and_validation() -> None:
    action = CtLb(BACKENDS, "SOURCE_IP", 30)
    assert LbRequest.from_action(action) == LbRequest(BACKENDS, "SOURCE_IP", 30.0)
    with pytest.raises(ValueError, match="algorithm"):
        LbRequest(BACKENDS, "RANDOM")
