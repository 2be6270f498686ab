"""Segments (megaflows split at conntrack): on the pipeline tests' cloud, a pipeline that
replays cached segments gives every packet exactly what the plain slow path gives it —
outputs, drops, conntrack results, drop counts — over random conversations through
security groups, NAT, floating IPs and the load balancer; and the cache follows changes
of what is installed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from dataplane.test_megaflow import SENDERS, outcome
from netvirt.compiler.translate import topology
from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.classifier import Classifier
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import F
from netvirt.dataplane.flow import FieldMatch, Rule
from netvirt.dataplane.key import extract
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.packet import parse_packet
from netvirt.dataplane.pipeline import Pipeline, Verdict, _Ctx
from netvirt.dataplane.segments import Segment, SegmentCache, segment_reads
from netvirt.state.memory import MemoryStore
from pipeline.conftest import OUTSIDE_IP, VIP, World, gateway_ip, world  # noqa: F401

PORTS = (22, 80, 5201, 8080)


def pair(w: World, classifier: Classifier | None = None) -> tuple[Pipeline, Pipeline]:
    """The same world twice, each with its own conntrack: with segments, and plain."""
    cls = classifier or w.classifier
    made = []
    for segments in (True, False):
        pipe = Pipeline(cls, topology(w.sb), FlowKeyConntrack(Conntrack(MemoryStore())))
        pipe.segments = SegmentCache() if segments else None
        made.append(pipe)
    return made[0], made[1]


def conversation_frame(w: World, sender: str, draw: Any) -> bytes:
    """A frame of a small space of conversations (ports and addresses repeat, so that
    connections are set up, used, answered and torn down, and segments are shared)."""
    router = {"vm3": "r1-db", "outside": "r1-gw"}.get(sender, "r1-web")
    macs = [w.mac(n) for n in (router, "vm2", "vm1", "vm3")]
    dsts = [w.ip(n) for n in ("vm1", "vm2", "vm3", "outside")]
    dsts += [gateway_ip(w), OUTSIDE_IP, w.fip, VIP]
    eth = Ether(src=w.mac(sender), dst=draw(st.sampled_from(macs)))
    src = w.ip(sender) if draw(st.integers(0, 9)) else draw(st.sampled_from(dsts))
    ttl = draw(st.sampled_from([64, 64, 64, 1]))
    ip = IP(src=src, dst=draw(st.sampled_from(dsts)), ttl=ttl)
    kind = draw(st.sampled_from(["tcp", "tcp", "tcp", "udp", "icmp", "arp"]))
    if kind == "arp":
        return bytes(eth / ARP(hwsrc=w.mac(sender), psrc=w.ip(sender), pdst=ip.dst))
    sport, dport = draw(st.sampled_from((*PORTS, 40000, 40001))), draw(st.sampled_from(PORTS))
    if kind == "tcp":
        flags = draw(st.sampled_from(["S", "SA", "A", "PA", "FA", "R", "RA", "F", ""]))
        return bytes(eth / ip / TCP(sport=sport, dport=dport, flags=flags))
    if kind == "udp":
        return bytes(eth / ip / UDP(sport=sport, dport=dport) / b"data")
    return bytes(eth / ip / ICMP(type=draw(st.sampled_from([8, 0, 3])), id=sport) / b"ping")


def result(verdict: Verdict) -> tuple[object, ...]:
    cts = [repr(ct) for ct in verdict.ct]
    return (
        *outcome(verdict),
        cts,
        verdict.cacheable,
        [(e.inport, e.datapath) for e in verdict.outputs],
    )


def send_both(
    seg: Pipeline, plain: Pipeline, frame: bytes, dp: int, port: int, now: float, egress: int | None
) -> tuple[Verdict, Verdict]:
    item = (frame, dp, port, egress, now)
    got, want = seg.process_batch([item])[0], plain.process_batch([item])[0]
    assert result(got) == result(want), frame.hex()
    assert seg.drop_counts == plain.drop_counts
    return got, want


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_segments_answer_what_the_slow_path_answers(
    world: World,  # noqa: F811
    data: st.DataObject,
) -> None:
    seg, plain = pair(world)
    now = 1.0
    for _ in range(30):
        sender = data.draw(st.sampled_from(SENDERS[:5]))
        frame = conversation_frame(world, sender, data.draw)
        binding = world.binding(sender)
        now += 0.25
        send_both(seg, plain, frame, binding.datapath, binding.key, now, None)
    assert seg.segments is not None
    assert seg.segments.counters.inserts


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_batches_and_tunnel_egress_walks_agree(
    world: World,  # noqa: F811
    data: st.DataObject,
) -> None:
    """Batches (conntrack calls answered side by side) and egress walks (a tunnel's
    receiving half) replay segments as the plain pipeline walks them."""
    seg, plain = pair(world)
    now = 1.0
    for _ in range(6):
        items = []
        for _ in range(data.draw(st.integers(1, 6))):
            sender = data.draw(st.sampled_from(SENDERS[:5]))
            target = data.draw(st.sampled_from(["vm1", "vm2", "vm3", None, None]))
            frame = conversation_frame(world, sender, data.draw)
            now += 0.01
            if target is None:
                binding = world.binding(sender)
                items.append((frame, binding.datapath, binding.key, None, now))
            else:
                out = world.binding(target)
                items.append((frame, out.datapath, 0, out.key, now))
        got, want = seg.process_batch(items), plain.process_batch(items)
        assert [result(v) for v in got] == [result(v) for v in want]
        assert seg.drop_counts == plain.drop_counts


def syn(w: World, sport: int, dport: int = 22, src: str = "outside", to: str = "") -> bytes:
    dst = to or w.fip
    ip = IP(src=w.ip(src) if src != "outside" else OUTSIDE_IP, dst=dst)
    return bytes(Ether(src=w.mac(src), dst=w.mac("r1-gw")) / ip / TCP(sport=sport, dport=dport))


def test_new_connections_share_segments(world: World) -> None:  # noqa: F811
    """The point of it all: the second connection's SYN replays what the first one's
    walked (its source port is in no mask), and the answers stay the slow path's."""
    seg, plain = pair(world)
    out = world.binding("outside")
    send_both(seg, plain, syn(world, 40000), out.datapath, out.key, 1.0, None)
    cache = seg.segments
    assert cache is not None
    learned, hits = cache.counters.inserts, cache.counters.hits
    assert learned >= 2  # split at conntrack: at least before and after one ct action
    got, _ = send_both(seg, plain, syn(world, 40001), out.datapath, out.key, 1.1, None)
    assert got.outputs
    assert got.ct
    assert cache.counters.inserts == learned
    assert cache.counters.hits >= hits + learned


def test_segment_reads() -> None:
    """Conntrack actions end a segment (their reads are the next segment's); ct_clear
    writes ct_state; generated packets and learning are never segments."""
    commit = segment_reads((A.SetField("reg0", 1), A.CtCommit(), A.Next()))
    assert commit == ((F("reg0"), 0xFFFFFFFF),)
    assert segment_reads((A.CtClear(), A.Next())) == ((F("ct_state"), 0xFF),)
    assert segment_reads((A.CtNext(),)) == ()
    assert segment_reads((A.PutMacBinding(),)) is None
    assert segment_reads((A.EmitArpRequest(then=()),)) is None


def test_a_rule_change_and_a_learned_binding_flush_segments(world: World) -> None:  # noqa: F811
    """Installed state changes: segments learned before are not replayed after. A drop
    rule above everything at the first table of the outside switch, then removed."""
    classifier = Classifier()
    classifier.apply(add=list(world.classifier.rules()))
    seg, plain = pair(world, classifier)
    out = world.binding("outside")
    table = seg.topology.first_table[("switch", "ingress")]
    block = Rule(
        table,
        65535,
        (FieldMatch("metadata", out.datapath, 0xFFFFFFFF),),
        (A.Drop(DropReason.EXPLICIT_DROP),),
    )
    before, _ = send_both(seg, plain, syn(world, 41000), out.datapath, out.key, 1.0, None)
    assert before.outputs
    classifier.apply(add=[block])
    after, _ = send_both(seg, plain, syn(world, 41001), out.datapath, out.key, 1.1, None)
    assert not after.outputs
    assert after.drops == [DropReason.EXPLICIT_DROP]
    classifier.apply(remove=[block])
    again, _ = send_both(seg, plain, syn(world, 41002), out.datapath, out.key, 1.2, None)
    assert again.outputs
    cache = seg.segments
    assert cache is not None
    flushes = cache.counters.flushes
    assert flushes >= 2
    gw_mac = world.mac("r1-gw")
    for when, mac in ((1.3, "02:00:00:00:99:99"), (1.5, "02:00:00:00:99:98")):
        reply = Ether(src=world.mac("outside"), dst=gw_mac) / ARP(
            op=2, hwsrc=mac, psrc=OUTSIDE_IP, hwdst=gw_mac, pdst=gateway_ip(world)
        )
        send_both(seg, plain, bytes(reply), out.datapath, out.key, when, None)
        flushes += 1  # a new or changed binding: segments looked bindings up
        assert cache.counters.flushes == flushes
        send_both(seg, plain, syn(world, 41003), out.datapath, out.key, when + 0.1, None)
        assert plain.topology.mac_bindings == seg.topology.mac_bindings


# ---------------------------------------------------------------- every mask, checked directly


class KeepingCache(SegmentCache):
    """Keeps the start key of every segment it learns (the cache keeps only masked ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.learned: list[tuple[int, tuple[int, ...], Segment]] = []

    def insert(self, table: int, start: Sequence[int], segment: Segment) -> None:
        self.learned.append((table, tuple(start), segment))
        super().insert(table, start, segment)


def walk_from(pipe: Pipeline, table: int, key: list[int], frame: bytes) -> tuple[object, ...]:
    """The plain walk from ``table`` with ``key`` to its first conntrack call or its end:
    ("ct", zone, action, key there) or ("end", outputs as (datapath, port, key), drops)."""
    verdict = Verdict()
    packet = parse_packet(frame)
    ctx = _Ctx(packet, extract(packet), verdict, 1.0)
    walk = pipe._run(ctx, key, table)
    try:
        call = next(walk)
    except StopIteration:
        outs = [(e.datapath, e.port, e.frame) for e in verdict.outputs]
        return "end", outs, verdict.drops
    return "ct", call.zone, call.action, tuple(call.key)


def replay_from(pipe: Pipeline, segment: Segment, key: list[int]) -> tuple[object, ...]:
    for index, value in segment.writes:
        key[index] = value
    if segment.ct is None:
        outs = [(*segment.emit[:2], repr(tuple(key)).encode())] if segment.emit else []
        return "end", outs, list(segment.drops)
    table, act, _ = segment.ct
    return "ct", pipe._zone(key, table), act, tuple(key)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_segment_is_sound_on_the_bits_it_did_not_read(
    world: World,  # noqa: F811
    data: st.DataObject,
) -> None:
    """Each learned segment, replayed on its start key mixed with another start key where
    its mask is 0, does what the plain walk from there does: the same conntrack call with
    the same key, or the same outputs (their keys) and drops. Leaving out of a mask any
    bit a lookup or an action read makes this fail."""
    seg, plain = pair(world)
    cache = KeepingCache()
    seg.segments = cache
    now = 1.0
    frames = []
    for _ in range(20):
        sender = data.draw(st.sampled_from(SENDERS[:5]))
        frame = conversation_frame(world, sender, data.draw)
        binding = world.binding(sender)
        now += 0.25
        seg.process_batch([(frame, binding.datapath, binding.key, None, now)])
        frames.append(frame)
    learned = cache.learned
    if not learned:
        return
    with patch(
        "netvirt.dataplane.pipeline.rewrite_frame",
        lambda _packet, _orig, key: repr(tuple(key)).encode(),
    ):
        for table, start, segment in learned:
            for _ in range(3):
                donor = data.draw(st.sampled_from(learned))[1]
                mixed = [
                    (s & m) | (d & ~m) for s, d, m in zip(start, donor, segment.wild, strict=True)
                ]
                want = walk_from(plain, table, list(mixed), frames[0])
                assert replay_from(seg, segment, list(mixed)) == want, segment
