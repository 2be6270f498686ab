"""Deferred records of kernel-made connections (``offload/templates.py``: ``DEFER``).

A connection the kernel made from a SYN template gets no user-space records at its
report; they are written only when user space needs them (a frame of it about to take
the slow path, an ICMP error about it, its removal while open), in the kernel's state
at that moment. The reference is the eager path those records replace: written at the
report in SYN_SENT, then the kernel's state folded into them (``KernelConns._fold``).
Both must leave the same records and the same SNAT claim, for any client port, SNAT
port and kernel state (Hypothesis).
"""

from __future__ import annotations

import struct
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether

from dataplane.test_offload_synk import _KConns, _learn, _Lib, _primary, _same, _segmented
from netvirt.dataplane.nf.codec import FIN_ORIG, FIN_REPLY, SNAT_POOL, CtEntry, CtState, decode
from netvirt.dataplane.nf.nat import snat_pool
from netvirt.dataplane.nf.tcp import Timeouts, claim_ttl
from netvirt.dataplane.offload.conns import KernelConn, KernelConns, frame_tuple, related_tuple
from netvirt.dataplane.offload.handshake import records_of
from netvirt.dataplane.offload.templates import Deferred, Made, SynTemplates, made_records
from pipeline.conftest import World, world  # noqa: F401

_KEY = (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + bytes(68)


class _DKConns(_KConns):
    """The templates' side of KernelConns, recorded, deferred connections included."""

    def __init__(self, ct: Any) -> None:
        super().__init__(ct)
        self.owned: dict[int, KernelConn] = {}

    def adopt_deferred(
        self, cid: int, keys: Any, ifx: Any, made: Deferred, tuples: Any = None
    ) -> KernelConn:
        kc = KernelConn(keys, (keys[0], keys[1]), ifx, (), 1, made.ns, made)
        self.owned[cid] = kc
        return kc


def _templates(world: World, defer: bool) -> tuple[Any, SynTemplates, _DKConns, int]:  # noqa: F811
    run = _segmented(world)
    kconns = _DKConns(run.ct)
    loaded = SimpleNamespace(lib=_Lib(), tpls_fd=1, tpl_ports_fd=2, made_fd=3, next_conn_fd=4)
    tpl = SynTemplates(loaded, kconns)
    tpl.enable(True)
    tpl.defer = defer
    _syn, first, _second, _ack = _learn(run, 40000)
    deps = tuple(records_of(first.ct))
    assert tpl.learn(_KEY, bytes(176), _KEY, bytes(176), deps, 40000, lambda ip: (1024, 65535))
    return run, tpl, kconns, next(iter(tpl.by_id))


def _stored(run: Any, t: Any, sport: int, port: int) -> list[CtEntry]:
    out = []
    for rec in made_records(t, sport, port, 0.0, 1.0):
        found = _primary(run, rec.zone, rec.orig)
        if found is not None:
            out.append(found)
    return sorted(out, key=lambda e: e.zone)


def _claim_owner(run: Any, rec: CtEntry) -> str | None:
    pool, member = snat_pool(run.ct.prefix, rec)
    return run.ct.store._live_owner(pool, member, time.monotonic())  # type: ignore[no-any-return]


_STATES = st.sampled_from(
    [CtState.SYN_SENT, CtState.SYN_RECV, CtState.ESTABLISHED, CtState.FIN_WAIT,
     CtState.CLOSE_WAIT, CtState.TIME_WAIT]
)  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(
    sport=st.integers(1024, 65535),
    state=_STATES,
    fins=st.sampled_from([0, FIN_ORIG, FIN_REPLY, FIN_ORIG | FIN_REPLY]),
    ago=st.floats(0.0, 5.0),
)
def test_deferred_records_are_the_eager_ones_folded(
    world: World,  # noqa: F811
    sport: int,
    state: CtState,
    fins: int,
    ago: float,
) -> None:
    if sport == 40000:
        sport = 40001
    st_ = int(state) | fins << 8
    # the reference: records at the report, the kernel's state folded in
    e_run, eager, e_kconns, tid = _templates(world, defer=False)
    port = next(iter(eager.supply[tid].posted))
    made_ns = time.monotonic_ns() - int(6e9)
    last_ns = time.monotonic_ns() - int(ago * 1e9)
    eager._record(Made(7, made_ns, tid, sport, port))
    ((_cid, _keys, _ifx, deps, _ns),) = e_kconns.adopted
    folder = KernelConns(SimpleNamespace(lib=_Lib(), cstates_fd=5, timeouts_fd=6, conns_fd=7))
    folder.bind(e_run.ct, None)
    folder._fold(KernelConn((b"", b""), (b"", b""), (1, 1), deps, 1, made_ns), st_, last_ns)
    # deferred: nothing at the report ...
    d_run, lazy, d_kconns, dtid = _templates(world, defer=True)
    assert next(iter(lazy.supply[dtid].posted)) == port  # (the same pool, the same port)
    lazy._record(Made(8, made_ns, dtid, sport, port))
    assert lazy.counters["deferred"] == 1
    t = lazy.by_id[dtid]
    assert _stored(d_run, t, sport, port) == []
    assert d_kconns.adopted == []
    kc = d_kconns.owned[8]
    # ... and the same records when they are written
    assert lazy.materialize(kc, st_, last_ns)
    want = _stored(e_run, eager.by_id[tid], sport, port)
    got = _stored(d_run, t, sport, port)
    assert len(got) == len(want) == 2
    assert [_same(g) for g in got] == [_same(w) for w in want]
    for g, w in zip(got, want, strict=True):
        assert abs(g.created - w.created) < 0.05
        if state is not CtState.SYN_SENT or fins:  # (an unchanged state is not refolded)
            assert abs(g.last_seen - w.last_seen) < 0.05
            assert abs(g.expiry - w.expiry) < 0.05
        mirror = d_run.ct.store.get(d_run.ct.key(g.zone, g.reply))
        assert mirror is not None
        assert decode(mirror.value, mirror.version)[0].orig == g.orig
        if g.flags & SNAT_POOL:
            assert _claim_owner(d_run, g) == d_run.ct.key(g.zone, g.orig)
            assert _claim_owner(e_run, w) == e_run.ct.key(w.zone, w.orig)
    assert kc.made is None
    assert sorted(kc.deps) == sorted((g.zone, g.orig, g.serial) for g in got)


def _one_deferred(
    world: World,  # noqa: F811
    cid: int,
    sport: int,
) -> tuple[Any, SynTemplates, KernelConn, int, CtEntry]:
    """A template learned, then one connection made from it (deferred, made now): the
    run, the templates, the connection, its SNAT port and its SNAT zone's record."""
    run, tpl, kconns, tid = _templates(world, defer=True)
    port = next(iter(tpl.supply[tid].posted))
    tpl._record(Made(cid, time.monotonic_ns(), tid, sport, port))
    snat = next(r for r in made_records(tpl.by_id[tid], sport, port, 0.0, 1.0) if r.flags & 4)
    return run, tpl, kconns.owned[cid], port, snat


def test_a_closed_connection_is_parked_then_faulted_in(world: World) -> None:  # noqa: F811
    run, tpl, kc, port, snat = _one_deferred(world, 9, 41000)
    tid = kc.made.tid
    t = tpl.by_id[tid]
    now_ns = kc.made.ns
    assert _claim_owner(run, snat) == f"{tpl.owner}:{tid}"  # (the block's, all along)
    closed = int(CtState.TIME_WAIT) | (FIN_ORIG | FIN_REPLY) << 8
    tpl.settle(kc, (closed, now_ns), fault=False)
    assert tpl.counters["parked"] == 1
    assert _stored(run, t, 41000, port) == []
    assert set(tpl.parked) == set(kc.tuples)
    tpl.fault_in(kc.tuples[1])  # a late reply: the records, TIME_WAIT with both FINs
    assert not tpl.parked
    got = _stored(run, t, 41000, port)
    assert {g.state for g in got} == {CtState.TIME_WAIT}
    assert all(g.flags & (FIN_ORIG | FIN_REPLY) == FIN_ORIG | FIN_REPLY for g in got)
    rec = next(g for g in got if g.flags & SNAT_POOL)
    assert _claim_owner(run, rec) == run.ct.key(rec.zone, rec.orig)
    assert claim_ttl(run.ct.timeouts, rec) == run.ct.timeouts.time_wait
    tpl.expire(time.monotonic() + 10_000)  # (written: its port is the records' now)
    assert _claim_owner(run, rec) == run.ct.key(rec.zone, rec.orig)


def test_a_parked_connection_lets_its_port_go_at_its_timeout(world: World) -> None:  # noqa: F811
    run, tpl, kc, port, snat = _one_deferred(world, 10, 41001)
    tid, now_ns = kc.made.tid, kc.made.ns
    tpl.settle(kc, (int(CtState.CLOSED), now_ns), fault=False)
    tpl.expire(time.monotonic() + run.ct.timeouts.closed - 1)
    assert _claim_owner(run, snat) == f"{tpl.owner}:{tid}"  # not yet
    tpl.expire(time.monotonic() + run.ct.timeouts.closed + 1)
    assert _claim_owner(run, snat) is None
    assert not tpl.parked
    assert tpl.counters["let_go"] == 1
    assert _stored(run, tpl.by_id[tid], 41001, port) == []


def test_an_expired_connection_needs_no_records(world: World) -> None:  # noqa: F811
    run, tpl, kconns, tid = _templates(world, defer=True)
    port = next(iter(tpl.supply[tid].posted))
    old_ns = time.monotonic_ns() - int((run.ct.timeouts.syn_sent + 1) * 1e9)
    tpl._record(Made(11, old_ns, tid, 41002, port))
    tpl.settle(kconns.owned[11], (int(CtState.SYN_SENT), old_ns), fault=True)
    t = tpl.by_id[tid]
    assert _stored(run, t, 41002, port) == []
    snat = next(r for r in made_records(t, 41002, port, 0.0, 1.0) if r.flags & SNAT_POOL)
    assert _claim_owner(run, snat) is None


@pytest.mark.parametrize("at", ["primary", "mirror", "snat mirror"])
def test_a_record_on_a_tuple_takes_the_eager_path(world: World, at: str) -> None:  # noqa: F811
    """Anything at one of the four keys (here an older, closed connection's record) is for
    the eager path's rules: nothing deferred."""
    from dataclasses import replace

    from netvirt.dataplane.nf.codec import MIRROR, encode

    run, tpl, kconns, tid = _templates(world, defer=True)
    port = next(iter(tpl.supply[tid].posted))
    t = tpl.by_id[tid]
    snat = at == "snat mirror"
    (old,) = [
        r for r in made_records(t, 41003, port, 1.0, 600.0) if bool(r.flags & SNAT_POOL) == snat
    ]
    closed = replace(old, state=CtState.CLOSED, expiry=1e12)
    if at == "primary":
        run.ct.store.put(run.ct.key(closed.zone, closed.orig), encode(closed), 600.0)
    else:
        run.ct.store.put(run.ct.key(closed.zone, closed.reply), encode(closed, MIRROR), 600.0)
    tpl._record(Made(12, 0, tid, 41003, port))
    assert tpl.counters["deferred"] == 0
    assert not kconns.owned


@settings(max_examples=30, deadline=None)
@given(sport=st.integers(1, 65535), dport=st.integers(1, 65535), port=st.integers(1, 65535))
def test_key_parts_are_conntracks_keys(world: World, sport: int, dport: int, port: int) -> None:  # noqa: F811
    run, tpl, _k, tid = _templates(world, defer=True)
    t = tpl.by_id[tid]
    for rec, (head, tail, rhead, snat) in zip(
        made_records(t, sport, port, 0.0, 1.0), t.keyparts, strict=True
    ):
        assert head + f"{sport:x}" + tail == run.ct.key(rec.zone, rec.orig)
        assert rhead + f"{port if snat else sport:x}" == run.ct.key(rec.zone, rec.reply)


@settings(max_examples=50, deadline=None)
@given(
    sport=st.integers(1, 65535),
    dport=st.integers(1, 65535),
    kind=st.sampled_from([(3, 3), (3, 4), (11, 0), (12, 0)]),
    options=st.integers(0, 2),
)
def test_an_icmp_error_names_the_direction_it_answers(
    sport: int, dport: int, kind: tuple[int, int], options: int
) -> None:
    """The quoted segment went one way; the error's tuple is the other way's ingress."""
    quoted = IP(src="10.0.0.5", dst="203.0.113.9", options=b"\x01" * 4 * options) / TCP(
        sport=sport, dport=dport
    )
    err = bytes(
        Ether()
        / IP(src="203.0.113.1", dst="10.0.0.5")
        / ICMP(type=kind[0], code=kind[1])
        / bytes(quoted)[: 4 * (5 + options) + 8]
    )
    back = bytes(Ether() / IP(src="203.0.113.9", dst="10.0.0.5") / TCP(sport=dport, dport=sport))
    assert related_tuple(err) == frame_tuple(back)
    echo = bytes(Ether() / IP() / ICMP(type=8) / bytes(quoted)[:28])
    assert related_tuple(echo) is None
    assert related_tuple(err[:40]) is None  # (truncated: nothing)


def test_kernel_conns_hand_a_deferred_connection_to_the_templates() -> None:
    """``release_many``: a deferred connection's last kernel state goes to ``settle``
    (with whether a frame of it is waiting); the sweep folds nothing into it."""
    lib = _Lib()
    kconns = KernelConns(SimpleNamespace(lib=lib, cstates_fd=5, timeouts_fd=6, conns_fd=7))
    seen: list[tuple[Any, Any, bool]] = []
    kconns.deferred = SimpleNamespace(
        settle=lambda kc, found, fault: seen.append((kc, found, fault)),
        expire=lambda now: None,
        parked={},
    )
    kconns.conntrack = SimpleNamespace(timeouts=Timeouts())
    made = Deferred(1, 41000, 2000, 0)
    covered = bytes(12) + b"\x08\x00" + bytes(5) + b"\x06" + bytes(8)
    okey = bytes(16) + covered + b"\xa0\x28\x00\x50" + bytes(28)
    rkey = bytes(16) + covered + b"\x00\x50\x07\xd0" + bytes(28)
    kc = kconns.adopt_deferred(3, (okey, rkey), (1, 1), made)
    assert kc is not None
    assert kc.made is made
    ns = time.monotonic_ns()
    lib.maps.setdefault(5, {})[struct.pack("=Q", 3)] = struct.pack("=QQQ", ns, 4, 3)
    kconns.tick(time.monotonic() + 1)  # ESTABLISHED, not idle: kept, nothing folded
    assert kconns.counters["folded"] == 0
    assert 3 in kconns.owned
    kconns.release_many([3], fault=True)
    ((kc2, found, fault),) = seen
    assert kc2 is kc
    assert found == (3, ns)
    assert fault


def test_a_frame_of_a_closed_connection_gets_its_records_at_once(world: World) -> None:  # noqa: F811
    """Taken back because its frame is about to take the slow path: written, even closed."""
    run, tpl, kconns, tid = _templates(world, defer=True)
    port = next(iter(tpl.supply[tid].posted))
    now_ns = time.monotonic_ns()
    tpl._record(Made(13, now_ns, tid, 41004, port))
    tpl.settle(kconns.owned[13], (int(CtState.TIME_WAIT) | FIN_ORIG << 8, now_ns), fault=True)
    assert not tpl.parked
    got = _stored(run, tpl.by_id[tid], 41004, port)
    assert [g.state for g in got] == [CtState.TIME_WAIT] * 2


def test_fold_frames_faults_parked_connections_in() -> None:
    """A slow-path frame (or an ICMP error) of a parked connection: ``fault_in`` first."""
    kconns = KernelConns(SimpleNamespace(lib=_Lib(), cstates_fd=5, timeouts_fd=6, conns_fd=7))
    frame = bytes(Ether() / IP(src="203.0.113.9", dst="10.0.0.5") / TCP(sport=80, dport=41000))
    tup = frame_tuple(frame)
    faulted: list[bytes] = []
    kconns.deferred = SimpleNamespace(parked={tup: object()}, fault_in=faulted.append)
    kconns.fold_frames([bytes(Ether() / IP() / TCP(sport=1, dport=2))])
    assert faulted == [frame_tuple(bytes(Ether() / IP() / TCP(sport=1, dport=2)))]
    faulted.clear()
    kconns.fold_frames([frame])
    assert faulted == [tup]
    quoted = bytes(IP(src="10.0.0.5", dst="203.0.113.9") / TCP(sport=41000, dport=80))[:28]
    err = bytes(Ether() / IP(src="203.0.113.1", dst="10.0.0.5") / ICMP(type=3, code=4) / quoted)
    faulted.clear()
    kconns.fold_frames([err])
    assert faulted == [tup]


def test_a_deferred_connections_port_is_never_posted_again(world: World) -> None:  # noqa: F811
    """Its port stays claimed by the block (no store write at the report), and ``allocate``
    gives an owner its own ports back: the refill must skip it until it is let go."""
    run, tpl, kconns, tid = _templates(world, defer=True)
    sup = tpl.supply[tid]
    port = next(iter(sup.posted))
    now_ns = time.monotonic_ns()
    tpl._record(Made(14, now_ns, tid, 41005, port))
    assert port in sup.inuse
    for p in list(sup.posted)[: len(sup.posted) // 2]:  # taken and reported (another way)
        sup.posted.pop(p)
        run.ct.store.release(sup.pool, str(p), sup.owner)
    tpl._cursor[sup.pool] = port - sup.port_range[0]  # the refill starts at its port
    tpl.refill()
    assert port not in sup.posted
    tpl.settle(kconns.owned[14], None, fault=False)  # gone from the kernel: let go
    assert port not in sup.inuse
    for p in list(sup.posted):
        sup.posted.pop(p)
        run.ct.store.release(sup.pool, str(p), sup.owner)
    tpl._cursor[sup.pool] = port - sup.port_range[0]
    tpl.refill()
    assert port in sup.posted  # (free again: claimed anew)


def test_the_sweeps_read_serves_a_deferred_connections_release() -> None:
    """``release_many(known=...)``: a deferred connection settles on the sweep's read of
    its state (no second lookup), and its state entry still leaves the kernel."""
    lib = _Lib()
    kconns = KernelConns(SimpleNamespace(lib=lib, cstates_fd=5, timeouts_fd=6, conns_fd=7))
    seen: list[tuple[Any, Any, bool]] = []
    kconns.deferred = SimpleNamespace(
        settle=lambda kc, found, fault: seen.append((kc, found, fault)), parked={}
    )
    covered = bytes(12) + b"\x08\x00" + bytes(5) + b"\x06" + bytes(8)
    okey = bytes(16) + covered + b"\xa0\x28\x00\x50" + bytes(28)
    rkey = bytes(16) + covered + b"\x00\x50\x07\xd0" + bytes(28)
    assert kconns.adopt_deferred(4, (okey, rkey), (1, 1), Deferred(1, 41000, 2000, 0))
    key = struct.pack("=Q", 4)
    lib.maps.setdefault(5, {})[key] = struct.pack("=QQQ", 99, 1, 3)  # (the kernel's now)
    kconns.release_many([4], known={4: (6, 77)})
    ((_kc, found, fault),) = seen
    assert found == (6, 77)
    assert not fault
    assert key not in lib.maps[5]


def test_a_full_port_map_leaves_no_gap_in_a_supply(world: World) -> None:  # noqa: F811
    """The kernel takes a supply's ports in sequence: a refill whose writes the map refuses
    part-way keeps only the ports before the first refusal, the rest given back."""
    run, tpl, _kconns, tid = _templates(world, defer=True)
    sup = tpl.supply[tid]
    lib = tpl.lib
    for p in list(sup.posted)[:400]:  # taken and reported: the refill tops the supply up
        del lib.maps[2][struct.pack("=II", tid, sup.posted.pop(p))]
        run.ct.store.release(sup.pool, str(p), sup.owner)
    room = len(lib.maps[2]) + 100  # the map takes 100 more, then refuses
    real = lib.bpf_map_update_elem

    def full(fd: int, key: Any, value: Any, flags: int) -> int:
        if fd == 2 and len(lib.maps.get(2, {})) >= room:
            return -1
        return real(fd, key, value, flags)

    lib.bpf_map_update_elem = full
    tail = sup.tail
    tpl.refill()
    assert sup.tail == tail + 100
    seqs = sorted(struct.unpack("=II", k)[1] for k in lib.maps[2])
    assert seqs == list(range(seqs[0], sup.tail))  # no gap
    assert sorted(sup.posted.values()) == seqs
    for port in sup.posted:  # every posted port claimed, the others given back
        assert run.ct.store._live_owner(sup.pool, str(port), time.monotonic()) == sup.owner
    assert tpl.counters["ports_claimed"] == len(seqs) + 400


@settings(max_examples=30, deadline=None)
@given(sport=st.integers(1, 65535), port=st.integers(1, 65535))
def test_the_reports_tuples_are_the_keys_covered_tuples(sport: int, port: int) -> None:
    """``_record`` slices an IPv4 ``conns`` key's ingress tuple where ``covered_tuple``
    finds it: the tuple of the frame the key is of."""
    from netvirt.dataplane.fastpath import TCP4, frame_key
    from netvirt.dataplane.offload import templates as tmod
    from netvirt.dataplane.offload.conns import conn_key, covered_tuple
    from netvirt.dataplane.offload.manager import pack_key

    frame = bytes(
        Ether() / IP(src="10.0.0.5", dst="203.0.113.9") / TCP(sport=sport, dport=port, flags="A")
    )
    found = frame_key(frame)
    assert found is not None
    assert found[0] is not None
    key = conn_key(pack_key(1, TCP4.name, found[0]))
    assert key is not None
    assert key[tmod._TUPLE : tmod._TUPLE_END] == covered_tuple(key[16:]) == frame_tuple(frame)
