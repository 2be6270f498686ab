"""SYN templates in user space (``offload/templates.py``, ``offload/handshake.py``).

Through the pipeline tests' cloud (a VM behind a router with masquerade SNAT to the
outside, security groups): the proof that a connection's walks read none of its
varying ports (and its refusal when a rule does read one), and, for generated client
ports and SNAT ports, that a connection made from a template learned on another
connection gets exactly the records the slow path writes for it and exactly the frames
the slow path sends for its SYN and SYN-ACK (the kernel's rewrite modelled here as the
template's rewrite then the port write; tests/dataplane/test_offload_synk_kernel.py
checks the kernel against the same model's frames).
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from dataplane.test_offload_handshake import _handshake, _reply_entry, _Run
from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.fastpath import TCP4, derive
from netvirt.dataplane.flow import FieldMatch, Rule, exact
from netvirt.dataplane.headers.checksum import internet_checksum
from netvirt.dataplane.nf.codec import SNAT_POOL, CtEntry, CtState, CtTuple, decode
from netvirt.dataplane.nf.nat import pool_key
from netvirt.dataplane.offload.handshake import (
    Syn,
    SynMemo,
    ack_half,
    fresh_walk,
    port_unread,
    records_of,
    template_refusal,
)
from netvirt.dataplane.offload.templates import (
    BLOCK,
    SynTemplates,
    Template,
    made_records,
    template_records,
)
from netvirt.dataplane.pipeline import Verdict
from netvirt.dataplane.segments import SegmentCache
from pipeline.conftest import World, gateway_ip, world  # noqa: F401

CLIENT = "vm3"


def _segmented(w: World) -> _Run:
    run = _Run(w)
    run.pipeline.segments = SegmentCache()
    return run


def _learn(run: _Run, sport: int) -> tuple[Syn, Verdict, Verdict, Verdict | None]:
    """A connection's SYN and SYN-ACK through the slow path, its ACK predicted."""
    syn_frame, first, second = _handshake(run, "snat", sport, 80, [])
    memo = SynMemo()
    memo.templates = True
    memo.note(CLIENT, syn_frame, False, first)
    reply = _reply_entry(second)
    syn = memo.take(frozenset(dep for dep, _ in reply.deps))
    assert syn is not None
    seen: list[Verdict] = []
    found = ack_half(
        syn, reply, run.pipeline, run.ct, run.where(CLIENT), run.iface_of, run.now, seen
    )
    assert found is not None
    return syn, first, second, seen[0] if seen else None


def test_the_snat_path_reads_no_varying_port(world: World) -> None:  # noqa: F811
    run = _segmented(world)
    for sport in (40000, 40001):  # the second replays cached segments
        syn, first, second, ack = _learn(run, sport)
        assert fresh_walk(first)
        assert syn.fresh
        assert syn.sport_unread
        assert port_unread(second, "tp.dst")
        assert ack is not None
        assert template_refusal(syn, second, ack) is None


def test_without_segments_nothing_is_proved(world: World) -> None:  # noqa: F811
    run = _Run(world)  # (no segment cache: the walk's reads are not recorded)
    syn, _first, second, ack = _learn(run, 40000)
    assert not syn.sport_unread
    assert template_refusal(syn, second, ack) == "SYN walk may read the source port"


def test_a_rule_reading_the_source_port_refuses_the_template(world: World) -> None:  # noqa: F811
    """A rule matching the source port in the client's first table (ports no SYN here
    uses): the lookup reads the field, so the proof fails, replayed or recorded."""
    binding = world.binding(CLIENT)
    kind = _Run(world).pipeline.topology.kinds[binding.datapath]
    table = _Run(world).pipeline.topology.first_table[(kind, "ingress")]
    # (source ports below 32768: not these SYNs'; one bit read, so the second SYN
    # replays the first's segment, whose mask has that bit)
    low = FieldMatch("tp.src", 0, 0x8000)
    match = (exact("metadata", binding.datapath), exact("inport", binding.key), low)
    rule = Rule(table, 65000, match, (A.Drop(),))
    world.classifier.apply(add=[rule])
    try:
        run = _segmented(world)
        for sport in (40000, 40001):  # recorded segments, then replayed ones
            syn, _first, second, ack = _learn(run, sport)
            assert not syn.sport_unread
            assert template_refusal(syn, second, ack) == "SYN walk may read the source port"
    finally:
        world.classifier.apply(remove=[rule])


def test_only_a_fresh_syn_is_a_template(world: World) -> None:  # noqa: F811
    """A SYN retransmitted after its record exists finds it (no +new creation)."""
    run = _segmented(world)
    syn_frame, first, _second = _handshake(run, "snat", 40000, 80, [])
    assert fresh_walk(first)
    again = run.send(CLIENT, syn_frame)
    assert not fresh_walk(again)


def _records(run: _Run, verdict: Verdict) -> list[CtEntry]:
    found = []
    for zone, orig, _serial in records_of(verdict.ct):
        raw = run.ct.store.get(run.ct.key(zone, orig))
        assert raw is not None
        found.append(decode(raw.value, raw.version)[0])
    return sorted(found, key=lambda e: e.zone)


def _same(entry: CtEntry) -> tuple[object, ...]:
    """A record without its times, version and serial (a made one is written later)."""
    return (entry.zone, entry.orig, entry.reply, entry.state, entry.mark, entry.flags,
            entry.lb_counter, entry.lb_backend)  # fmt: skip


def _with_port(frame: bytes, at: int, port: int) -> bytes:
    """The kernel's port write (``set_port``): the port, the TCP checksum updated."""
    out = bytearray(frame)
    out[at : at + 2] = port.to_bytes(2, "big")
    out[50:52] = b"\0\0"
    ihl = 20
    tcp = bytes(out[14 + ihl :])
    pseudo = bytes(out[26:34]) + b"\0\x06" + len(tcp).to_bytes(2, "big")
    out[50:52] = internet_checksum(pseudo + tcp).to_bytes(2, "big")
    return bytes(out)


@settings(max_examples=25, deadline=None)
@given(st.integers(1024, 65535), st.booleans())
def test_a_made_connection_is_what_the_slow_path_makes(
    world: World,  # noqa: F811
    sport: int,
    other_port: bool,
) -> None:
    learn = _segmented(world)
    lsport = 40000 if sport != 40000 else 40001
    syn, first, second, _ack = _learn(learn, lsport)
    records = template_records(_records(learn, first), lsport)
    assert isinstance(records, tuple)
    syn_rw = derive(syn.data, syn.out, TCP4, False)
    assert syn_rw is not None
    # the slow path for the new connection, the SNAT port conntrack picks maybe not its own
    spec = _segmented(world)
    if other_port:
        snat_ip = int(ipaddress.ip_address(gateway_ip(world)))
        dest = CtTuple(4, 6, snat_ip, int(ipaddress.ip_address("203.0.113.50")), sport, 80)
        pool = pool_key(spec.ct.prefix, snat_ip, dest)  # (pools are per destination)
        spec.ct.store.allocate(pool, (str(sport),), "someone else", 600.0)
    syn_frame, s_first, s_second = _handshake(spec, "snat", sport, 80, [])
    want = _records(spec, s_first)
    port = next(r.reply.dport for r in want if r.flags & SNAT_POOL)
    assert (port != sport) == other_port
    t = Template(1, b"", b"", records, lsport, "pool")
    made = made_records(t, sport, port, 5.0, 30.0)
    assert {m.state for m in made} == {CtState.SYN_SENT}  # (the SYN-ACK's step: the kernel's)
    assert {w.state for w in want} == {CtState.SYN_RECV}
    stepped = sorted((replace(m, state=CtState.SYN_RECV) for m in made), key=lambda e: e.zone)
    assert [_same(m) for m in stepped] == [_same(w) for w in want]
    # the SYN: the learned SYN's rewrite, then the SNAT port
    assert _with_port(syn_rw.apply(syn_frame), 34, port) == s_first.outputs[0].frame
    # the SYN-ACK: the learned SYN-ACK's rewrite, then the client's port
    learned_sa = bytes(Ether(src="02:00:00:00:00:50", dst=world.mac("r1-gw"))
                       / IP(src="203.0.113.50", dst=gateway_ip(world))
                       / TCP(sport=80, dport=lsport, flags="SA", seq=5000, ack=1001))  # fmt: skip
    sa_rw = derive(learned_sa, second.outputs[0].frame, TCP4, False)
    assert sa_rw is not None
    spec_sa = bytes(Ether(src="02:00:00:00:00:50", dst=world.mac("r1-gw"))
                    / IP(src="203.0.113.50", dst=gateway_ip(world))
                    / TCP(sport=80, dport=port, flags="SA", seq=5000, ack=1001))  # fmt: skip
    assert _with_port(sa_rw.apply(spec_sa), 36, sport) == s_second.outputs[0].frame


def _entry(orig: CtTuple, reply: CtTuple, flags: int = 0, lb: str = "") -> CtEntry:
    return CtEntry(3, orig, reply, CtState.SYN_RECV, 1.0, 1.0, 31.0, flags=flags, lb_counter=lb)


def test_template_records_refuse_what_a_template_cannot_repeat() -> None:
    o = CtTuple(4, 6, 0x0A000001, 0x0A000002, 40000, 80)
    assert isinstance(template_records([_entry(o, o.reversed())], 40000), tuple)
    snat = o.reversed()._replace(dst=0xCB007101, dport=40000)
    assert isinstance(template_records([_entry(o, snat, SNAT_POOL)], 40000), tuple)
    assert template_records([_entry(o, snat)], 40000) == "NAT without a pool"
    dnat = o.reversed()._replace(src=0x0A000009)
    assert template_records([_entry(o, dnat, SNAT_POOL)], 40000) == "load balancing or DNAT"
    assert template_records([_entry(o, o.reversed(), lb="c")], 40000) == "load balancing or DNAT"
    assert template_records([_entry(o, o.reversed())], 40001) == "not IPv4 TCP from the SYN's port"
    udp = o._replace(proto=17)
    assert (
        template_records([_entry(udp, udp.reversed())], 40000) == "not IPv4 TCP from the SYN's port"
    )
    assert template_records([], 40000) == "no records"


class _Lib:
    """libbpf's map calls, recorded (no kernel)."""

    def __init__(self) -> None:
        self.maps: dict[int, dict[bytes, bytes]] = {}
        self.queues: dict[int, list[bytes]] = {}

    def bpf_map_update_elem(self, fd: int, key: Any, value: Any, flags: int) -> int:
        if key is None:
            self.queues.setdefault(fd, []).append(value.raw)
        else:
            self.maps.setdefault(fd, {})[key.raw] = value.raw
        return 0

    def bpf_map_delete_elem(self, fd: int, key: Any) -> int:
        return 0 if self.maps.get(fd, {}).pop(key.raw, None) is not None else -1

    def bpf_map_lookup_elem(self, fd: int, key: Any, value: Any) -> int:
        found = self.maps.get(fd, {}).get(key.raw)
        if found is None:
            return -1
        ctypes.memmove(value, found, len(found))  # (a template's head stays 0: no kernel)
        return 0

    def bpf_map_lookup_and_delete_elem(self, fd: int, key: Any, value: Any) -> int:
        return -1


def test_templates_die_with_a_flush_and_are_refused_when_off(world: World) -> None:  # noqa: F811
    run = _segmented(world)
    lib = _Lib()
    loaded = SimpleNamespace(lib=lib, tpls_fd=1, tpl_ports_fd=2, made_fd=3, next_conn_fd=4)
    kconns = SimpleNamespace(enabled=True, why="", conntrack=run.ct)
    tpl = SynTemplates(loaded, kconns)
    syn, first, _second, _ack = _learn(run, 40000)
    deps = tuple(records_of(first.ct))
    okey = bytes(16) + bytes(60)
    okey = (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + okey[8:]
    args = (okey, bytes(176), okey, bytes(176), deps, 40000, lambda ip: (1024, 65535))
    assert not tpl.learn(*args)  # off: nothing
    tpl.enable(True)
    assert tpl.learn(*args)
    assert len(lib.maps[1]) == 1
    assert tpl.templates
    # the template's own SNAT port supply, claimed in its destination's pool, posted at
    # sequence numbers 0.. of its id
    assert sorted(lib.maps[2]) == sorted(struct.pack("=II", 1, i) for i in range(BLOCK))
    ports = {int.from_bytes(p, "big") for p in lib.maps[2].values()}
    assert len(ports) == BLOCK
    snat_ip = int(ipaddress.ip_address(gateway_ip(world)))
    dest = CtTuple(4, 6, snat_ip, int(ipaddress.ip_address("203.0.113.50")), 1, 80)
    pool = pool_key(run.ct.prefix, snat_ip, dest)
    assert tpl.by_id[1].pool == pool
    assert all(run.ct.store.allocate(pool, (str(p),), "x", 1.0) is None for p in ports)
    tpl.refill()  # (nothing taken: nothing claimed)
    assert len(lib.maps[2]) == BLOCK
    assert not tpl.learn(*args)  # learned once
    tpl.flush()
    assert lib.maps[1] == {}
    assert lib.maps[2] == {}  # the untaken ports left the kernel ...
    assert not tpl.templates
    assert tpl.counters["ports_returned"] == BLOCK
    assert not tpl.supply
    # ... and the pool: every one is free again
    assert all(run.ct.store.allocate(pool, (str(p),), "x", 1.0) == str(p) for p in ports)
    # records gone: refused, counted
    tpl2 = SynTemplates(loaded, SimpleNamespace(enabled=True, why="", conntrack=_Run(world).ct))
    tpl2.enable(True)
    assert not tpl2.learn(*args)
    assert tpl2.refused == {"records gone": 1}


def test_ipv6_and_other_layouts_are_refused() -> None:
    lib = _Lib()
    loaded = SimpleNamespace(lib=lib, tpls_fd=1, tpl_ports_fd=2, made_fd=3, next_conn_fd=4)
    tpl = SynTemplates(loaded, SimpleNamespace(enabled=True, why="", conntrack=None))
    tpl.enable(True)
    key6 = (1).to_bytes(4, "little") + (4).to_bytes(4, "little") + bytes(68)
    assert not tpl.learn(key6, bytes(176), key6, bytes(176), (), 1, lambda ip: None)
    assert tpl.refused == {"not IPv4 TCP": 1}


@pytest.mark.parametrize("state", [CtState.SYN_SENT])
def test_made_records_start_in_syn_sent(state: CtState) -> None:
    o = CtTuple(4, 6, 1, 2, 40000, 80)
    t = Template(1, b"", b"", (_entry(o, o.reversed()),), 40000, "")
    (made,) = made_records(t, 41000, 0, 7.0, 30.0)
    assert (made.state, made.orig.sport, made.reply.dport) == (state, 41000, 41000)
    assert (made.created, made.expiry, made.serial, made.version) == (7.0, 37.0, 0, 0)
    assert replace(made, state=CtState.SYN_RECV).orig == made.orig


class _KConns:
    """KernelConns' side the templates call (recorded)."""

    def __init__(self, ct: Any) -> None:
        self.enabled, self.why, self.conntrack = True, "", ct
        self.adopted: list[tuple[Any, ...]] = []
        self.dropped: list[int] = []

    def adopt_made(self, cid: int, keys: Any, ifindexes: Any, deps: Any, ns: int) -> bool:
        self.adopted.append((cid, keys, ifindexes, deps, ns))
        return True

    def drop_made(self, cid: int, keys: Any, hold: float = 0.0) -> None:
        self.dropped.append(cid)


def _learned(world: World) -> tuple[_Run, SynTemplates, _KConns, int]:  # noqa: F811
    run = _segmented(world)
    kconns = _KConns(run.ct)
    lib = _Lib()
    loaded = SimpleNamespace(lib=lib, tpls_fd=1, tpl_ports_fd=2, made_fd=3, next_conn_fd=4)
    tpl = SynTemplates(loaded, kconns)
    tpl.enable(True)
    _syn, first, _second, _ack = _learn(run, 40000)
    deps = tuple(records_of(first.ct))
    key = (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + bytes(68)
    assert tpl.learn(key, bytes(176), key, bytes(176), deps, 40000, lambda ip: (1024, 65535))
    return run, tpl, kconns, next(iter(tpl.by_id))


def _primary(run: _Run, zone: int, orig: CtTuple) -> CtEntry | None:
    raw = run.ct.store.get(run.ct.key(zone, orig))
    return None if raw is None else decode(raw.value, raw.version)[0]


def test_a_report_writes_the_records_and_moves_the_claim(world: World) -> None:  # noqa: F811
    from netvirt.dataplane.offload.templates import Made

    run, tpl, kconns, tid = _learned(world)
    tpl.defer = False  # (the eager path; deferred records: test_offload_deferred.py)
    port = next(iter(tpl.supply[tid].posted))
    tpl._record(Made(7, 0, tid, 41000, port))
    assert kconns.dropped == []
    ((cid, keys, _ifx, deps, _ns),) = kconns.adopted
    assert cid == 7
    assert keys[0][16 + 28 : 16 + 30] == (41000).to_bytes(2, "big")
    assert keys[1][16 + 30 : 16 + 32] == port.to_bytes(2, "big")
    assert len(deps) == 2  # the VM's zone and the router's SNAT zone
    for zone, orig, serial in deps:
        found = _primary(run, zone, orig)
        assert found is not None
        assert (found.state, found.serial, orig.sport) == (CtState.SYN_SENT, serial, 41000)
        mirror = run.ct.store.get(run.ct.key(zone, found.reply))
        assert mirror is not None
        if found.flags & SNAT_POOL:
            assert found.reply.dport == port
            pool, member = tpl.by_id[tid].pool, str(port)
            # the connection's record holds the claim now, not the block
            assert not run.ct.store.release(pool, member, tpl.supply[tid].owner)
            assert run.ct.store.release(pool, member, run.ct.key(zone, found.orig))
    assert port not in tpl.supply[tid].posted


def test_a_report_over_a_closed_connection_replaces_it(world: World) -> None:  # noqa: F811
    from netvirt.dataplane.offload.templates import Made

    run, tpl, kconns, tid = _learned(world)
    t = tpl.by_id[tid]
    port = next(iter(tpl.supply[tid].posted))
    # the same client port's previous connection, closed (an RST), still in the store
    (old,) = [r for r in made_records(t, 41001, port, 1.0, 600.0) if not r.flags & SNAT_POOL]
    closed = replace(old, state=CtState.CLOSED, expiry=1e12)
    key = run.ct.key(closed.zone, closed.orig)
    from netvirt.dataplane.nf.codec import MIRROR, encode

    run.ct.store.put(key, encode(closed), 600.0)
    run.ct.store.put(run.ct.key(closed.zone, closed.reply), encode(closed, MIRROR), 600.0)
    version = run.ct.store.get(key).version  # type: ignore[union-attr]
    tpl._record(Made(8, 0, tid, 41001, port))
    assert kconns.dropped == []
    found = _primary(run, closed.zone, closed.orig)
    assert found is not None
    assert (found.state, found.serial) == (CtState.SYN_SENT, version)


def test_a_report_over_a_live_connection_is_undone(world: World) -> None:  # noqa: F811
    from netvirt.dataplane.offload.templates import Made

    run, tpl, kconns, tid = _learned(world)
    t = tpl.by_id[tid]
    port = next(iter(tpl.supply[tid].posted))
    (old,) = [r for r in made_records(t, 41002, port, 1.0, 600.0) if not r.flags & SNAT_POOL]
    live = replace(old, state=CtState.ESTABLISHED, expiry=1e12)
    from netvirt.dataplane.nf.codec import encode

    run.ct.store.put(run.ct.key(live.zone, live.orig), encode(live), 600.0)
    tpl._record(Made(9, 0, tid, 41002, port))
    assert kconns.dropped == [9]
    assert kconns.adopted == []
    assert tpl.counters["record_conflicts"] == 1
    found = _primary(run, live.zone, live.orig)
    assert found is not None
    assert found.state is CtState.ESTABLISHED  # untouched
    for rec in made_records(t, 41002, port, 1.0, 600.0):  # nothing of the made one is left
        if rec.flags & SNAT_POOL:
            assert _primary(run, rec.zone, rec.orig) is None


def test_two_templates_sharing_a_destination_pool_never_post_the_same_port() -> None:
    """Two clients to one server: two templates, one SNAT pool (pools are per
    destination). Each supply claims as its own owner, so ``allocate`` (which gives an
    owner its own ports back) never hands one supply's port to the other; a supply
    counts its taken-but-unreported ports until the report comes (backpressure)."""
    from netvirt.dataplane.offload.templates import Supply
    from netvirt.state.memory import MemoryStore

    store = MemoryStore()
    ct = SimpleNamespace(store=store, prefix="ct:")
    lib = _Lib()
    loaded = SimpleNamespace(lib=lib, tpls_fd=1, tpl_ports_fd=2, made_fd=3, next_conn_fd=4)
    tpl = SynTemplates(loaded, SimpleNamespace(enabled=True, why="", conntrack=ct))
    pool = "ct:snat:4:ac180402:6:8080800:80"
    for tid in (1, 2):
        tpl.supply[tid] = Supply(tid, bytes([tid]), pool, (2000, 3999), owner=f"{tpl.owner}:{tid}")
    tpl.refill()
    one, two = set(tpl.supply[1].posted), set(tpl.supply[2].posted)
    assert (len(one), len(two)) == (BLOCK, 2000 - BLOCK)  # (the range's 2,000, shared)
    assert not one & two
    posted = {int.from_bytes(v, "big") for v in lib.maps[2].values()}
    assert posted == one | two
    tpl.refill()  # nothing reported: nothing more claimed
    assert tpl.counters["ports_claimed"] == 2000
    for port in sorted(one)[:600]:  # the kernel took 600, reported (and undone here)
        tpl.supply[1].posted.pop(port)
        store.release(pool, str(port), tpl.supply[1].owner)
    tpl.refill()
    assert len(tpl.supply[1].posted) == BLOCK  # refilled from the ports given back
    assert not set(tpl.supply[1].posted) & set(tpl.supply[2].posted)
