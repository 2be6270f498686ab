"""Two hosts (threads, each with its own Conntrack) racing on the same connections."""

from __future__ import annotations

import threading
from collections.abc import Callable

from netvirt.dataplane.actions import Backend
from netvirt.dataplane.fields import CT_EST, CT_NEW
from netvirt.dataplane.nf import Conntrack, CtResult, CtTuple, LbRequest, NatRequest, Snat
from netvirt.dataplane.nf.codec import decode
from nf.nf_support import NfEnv

ZONE = 9
CLIENT, VIP, EXT = 0x0A000001, 0x0A0000C8, 0xC0000201
BACKENDS = tuple(Backend(0x0A000010 + i, 8080) for i in range(4))


def race(env: NfEnv, work: Callable[[Conntrack], list[CtResult]]) -> list[list[CtResult]]:
    barrier = threading.Barrier(2)
    results: list[list[CtResult]] = [[], []]
    errors: list[BaseException] = []

    def host(index: int) -> None:
        ct = env.conntrack()
        barrier.wait()
        try:
            results[index] = work(ct)
        except BaseException as err:  # surfaced below; a thread cannot fail the test itself
            errors.append(err)

    threads = [threading.Thread(target=host, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def ct_records(env: NfEnv, ct: Conntrack, flows: list[CtTuple]) -> list[tuple[CtTuple, CtTuple]]:
    """(orig, reply) of every record held for ``flows``, primary and mirror alike."""
    hits = ct.lookup_batch([(ZONE, t) for t in flows], env.now)
    out = []
    for hit in hits:
        assert hit is not None
        raw = env.store.get_many([ct.key(ZONE, hit.entry.orig), ct.key(ZONE, hit.entry.reply)])
        for record in raw:
            assert record is not None
            entry, _ = decode(record.value)
            out.append((entry.orig, entry.reply))
    return out


def test_nf_racing_hosts_create_each_lb_connection_once(env: NfEnv) -> None:
    flows = [CtTuple(4, 6, CLIENT, VIP, 20000 + i, 80) for i in range(25)]
    nat = NatRequest(lb=LbRequest(BACKENDS))

    def work(ct: Conntrack) -> list[CtResult]:
        return [ct.process(ZONE, t, 0x02, env.now, nat=nat) for t in flows]

    first, second = race(env, work)
    ct = env.conntrack()
    for t, a, b in zip(flows, first, second, strict=True):
        assert a.entry is not None
        assert b.entry is not None
        assert a.entry.same_connection(b.entry), t  # one won, the other adopted its entry
        assert a.tuple == b.tuple
        assert {a.state & (CT_NEW | CT_EST), b.state & (CT_NEW | CT_EST)} <= {CT_NEW, CT_EST}
    records = ct_records(env, ct, flows)
    assert all(orig == records[i - i % 2][0] for i, (orig, _) in enumerate(records))
    # no loser's mirror is left behind for a backend the winner did not pick
    for t, result in zip(flows, first, strict=True):
        for backend in BACKENDS:
            stray = CtTuple(4, 6, backend.ip, CLIENT, 8080, t.sport)
            hit = ct.lookup_batch([(ZONE, stray)], env.now)[0]
            assert (hit is not None) == (result.tuple.dst == backend.ip)


def test_nf_racing_hosts_masquerade_without_duplicates(env: NfEnv) -> None:
    flows = [CtTuple(4, 17, CLIENT + i % 5, 0x08080808, 7000, 53 + i // 5) for i in range(25)]
    nat = NatRequest(snat=Snat(EXT, (1024, 65535)))

    def work(ct: Conntrack) -> list[CtResult]:
        return [ct.process(ZONE, t, 0, env.now, nat=nat) for t in reversed(flows)]

    first, second = race(env, work)
    assert [r.tuple for r in first] == [r.tuple for r in second]
    external = {(r.tuple.src, r.tuple.sport, r.tuple.dport) for r in first}
    assert len(external) == len(flows)
