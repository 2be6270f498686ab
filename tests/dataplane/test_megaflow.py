"""Megaflows: the staged lookup's wildcards, their translation to bytes, and the soundness of
a megaflow on the pipeline tests' cloud — every frame agreeing with a walk on the bits it
read gets, from the megaflow, exactly what the slow path gives it."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether

from netvirt.compiler.translate import topology
from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.classifier import Classifier, Wildcards
from netvirt.dataplane.fastpath import flow_key
from netvirt.dataplane.fields import FIELDS, NUM_FIELDS, F
from netvirt.dataplane.flow import FieldMatch, Rule
from netvirt.dataplane.key import extract
from netvirt.dataplane.megaflow import PLACES, MegaflowCache, byte_mask, frame_layout
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.packet import parse_packet
from netvirt.dataplane.pipeline import Pipeline, Verdict
from netvirt.state.memory import MemoryStore
from pipeline.conftest import OUTSIDE_IP, World, gateway_ip, world  # noqa: F401

# ---------------------------------------------------------------- staged lookup

# fields of every stage, with small value ranges so that keys and rules collide
STAGED_FIELDS = ("metadata", "inport", "eth.dst", "eth.type", "ip.proto", "ip4.dst", "tp.src")
RANGES = dict.fromkeys(STAGED_FIELDS, 3)


@st.composite
def staged_rules(draw: st.DrawFn) -> list[Rule]:
    rules = []
    for i in range(draw(st.integers(1, 14))):
        names = draw(st.lists(st.sampled_from(STAGED_FIELDS), min_size=1, max_size=4, unique=True))
        masks = {n: draw(st.sampled_from([3, 1, 2])) for n in names}
        match = tuple(FieldMatch(n, draw(st.integers(0, 3)) & masks[n], masks[n]) for n in names)
        actions = (A.SetField("reg0", i),)
        rules.append(Rule(0, draw(st.integers(0, 5)), match, actions))
    return rules


def small_key(draw: st.DrawFn) -> list[int]:
    key = [0] * NUM_FIELDS
    for name in STAGED_FIELDS:
        key[F(name)] = draw(st.integers(0, RANGES[name]))
    return key


@settings(max_examples=150, deadline=None)
@given(rules=staged_rules(), data=st.data())
def test_staged_wildcards_are_sound_and_no_wider(rules: list[Rule], data: st.DataObject) -> None:
    """The staged answer is the plain one; every key equal on the recorded bits gets it;
    the staged lookup never records a bit the unstaged one does not."""
    cls = Classifier()
    cls.apply(add=rules)
    for _ in range(4):
        key = small_key(data.draw)
        masks = [0] * NUM_FIELDS
        got = cls.lookup_megaflow(0, key, masks)
        assert got == cls.lookup(0, key)
        again = [0] * NUM_FIELDS
        assert cls.lookup_megaflow(0, key, again) == got
        assert again == masks
        plain = Wildcards()
        cls.lookup(0, key, plain)
        assert plain.covers(Wildcards(masks))
        for _ in range(6):
            other = small_key(data.draw)
            mixed = [(k & m) | (o & ~m) for k, o, m in zip(key, other, masks, strict=True)]
            assert cls.lookup(0, mixed) == got


def exact(name: str, value: int) -> FieldMatch:
    return FieldMatch(name, value, FIELDS[F(name)].full_mask)


def test_a_missed_dhcp_subtable_does_not_pin_tcp_ports() -> None:
    """The example of the classifier docstring: a TCP packet misses the DHCP rule at the L3
    stage and its ports stay wildcarded (the unstaged lookup pins them)."""
    dhcp = (exact("ip.proto", 17), exact("tp.src", 68), exact("tp.dst", 67))
    rules = [
        Rule(0, 100, (exact("metadata", 1), *dhcp), (A.Next(),)),
        Rule(0, 1, (exact("metadata", 1),), (A.Next(),)),
    ]
    cls = Classifier()
    cls.apply(add=rules)
    key = [0] * NUM_FIELDS
    key[F("metadata")], key[F("ip.proto")], key[F("tp.src")], key[F("tp.dst")] = 1, 6, 40000, 80
    masks = [0] * NUM_FIELDS
    assert cls.lookup_megaflow(0, key, masks) is rules[1]
    assert Wildcards(masks).as_dict() == {"metadata": 0xFFFFFFFF, "ip.proto": 0xFF}
    plain = Wildcards()
    cls.lookup(0, key, plain)
    assert plain.as_dict()["tp.src"] == 0xFFFF
    cls.apply(remove=[rules[0]])  # the stage indexes follow removals
    masks = [0] * NUM_FIELDS
    assert cls.lookup_megaflow(0, key, masks) is rules[1]
    assert Wildcards(masks).as_dict() == {"metadata": 0xFFFFFFFF}


# ---------------------------------------------------------------- frames and byte masks

MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01")
IPS = ("10.0.0.10", "10.0.0.11", "10.0.1.20", "192.0.2.7")


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    eth = Ether(src=draw(st.sampled_from(MACS[:2])), dst=draw(st.sampled_from(MACS)))
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "arp", "tcp6", "icmp6"]))
    if kind == "arp":
        return bytes(eth / ARP(psrc=draw(st.sampled_from(IPS)), pdst=draw(st.sampled_from(IPS))))
    tos, ttl = draw(st.integers(0, 255)), draw(st.sampled_from([0, 1, 2, 64]))
    sport, dport = draw(st.integers(0, 65535)), draw(st.sampled_from([22, 80, 67, 68]))
    if kind.endswith("6"):
        ip6 = IPv6(src="fd00::1", dst="fd00::2", hlim=ttl, tc=tos)
        if kind == "icmp6":
            return bytes(eth / ip6 / ICMPv6EchoRequest(id=sport) / b"x")
        return bytes(eth / ip6 / TCP(sport=sport, dport=dport, flags=draw(st.integers(0, 63))))
    ip = IP(src=draw(st.sampled_from(IPS)), dst=draw(st.sampled_from(IPS)), ttl=ttl, tos=tos)
    if kind == "tcp":
        options = draw(st.sampled_from([[], [("MSS", 1460), ("NOP", None), ("WScale", 7)]]))
        flags = draw(st.integers(0, 255))
        return bytes(eth / ip / TCP(sport=sport, dport=dport, flags=flags, options=options))
    if kind == "udp":
        return bytes(eth / ip / UDP(sport=sport, dport=dport) / b"data")
    return bytes(eth / ip / ICMP(type=draw(st.sampled_from([0, 8, 3])), id=sport) / b"ping")


@settings(max_examples=300, deadline=None)
@given(data=frames())
def test_frame_layout_is_flow_keys_without_the_flag_check(data: bytes) -> None:
    found = flow_key(data)
    layout = frame_layout(data)
    if found is not None:
        assert layout is found[1]
    elif layout is not None:
        assert layout.name.startswith("tcp")
        assert data[layout.end - 7] & 0x07


@settings(max_examples=300, deadline=None)
@given(data=frames(), seed=st.integers(0, 2**32), density=st.sampled_from([0.0, 0.3, 1.0]))
def test_frames_equal_under_the_byte_mask_have_equal_keys_under_the_wildcards(
    data: bytes, seed: int, density: float
) -> None:
    """PLACES is where key.py reads every header field: mutating any bit outside the byte
    mask leaves the key unchanged on the wildcarded bits."""
    layout = frame_layout(data)
    if layout is None:
        return
    rng = random.Random(seed)
    masks = [
        (rng.getrandbits(f.width) if rng.random() < density else 0) & f.full_mask for f in FIELDS
    ]
    mask = byte_mask(masks, layout)
    header = int.from_bytes(data[: layout.end], "big")
    noise = rng.getrandbits(8 * layout.end) & ~mask
    other = _fix_ipv4((header ^ noise).to_bytes(layout.end, "big") + data[layout.end :])
    if frame_layout(other) is not layout:
        return  # (an ethertype, a length, a protocol outside the mask: another layout)
    key, key2 = extract(parse_packet(data)), extract(parse_packet(other))
    for index in range(NUM_FIELDS):
        assert key[index] & masks[index] == key2[index] & masks[index], FIELDS[index].name


def _fix_ipv4(data: bytes) -> bytes:
    """A valid IPv4 header checksum again after a mutation (the parser checks it)."""
    if data[12:14] != b"\x08\x00" or data[14] != 0x45:
        return data
    header = bytearray(data[14:34])
    header[10:12] = b"\0\0"
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    header[10:12] = (~total & 0xFFFF).to_bytes(2, "big")
    return data[:14] + bytes(header) + data[34:]


# ---------------------------------------------------------------- soundness on a real cloud

SENDERS = ("vm1", "vm2", "www", "vm3", "outside", "m1")


def pipeline(w: World, record: bool) -> Pipeline:
    pipe = Pipeline(w.classifier, topology(w.sb), FlowKeyConntrack(Conntrack(MemoryStore())))
    pipe.record_wildcards = record
    return pipe


def sample_frame(w: World, sender: str, draw: Any) -> bytes:
    router = {"vm3": "r1-db", "outside": "r1-gw"}.get(sender, "r1-web")
    macs = [w.mac(n) for n in (router, "vm2", "vm1", "m1", "vm3")] + ["ff:ff:ff:ff:ff:ff"]
    dsts = [w.ip(n) for n in ("vm1", "vm2", "www", "vm3", "m1", "outside")]
    eth = Ether(src=w.mac(sender), dst=draw(st.sampled_from(macs)))
    ip = IP(
        src=w.ip(sender),
        dst=draw(st.sampled_from([*dsts, gateway_ip(w), OUTSIDE_IP])),
        ttl=draw(st.sampled_from([64, 2, 1, 0])),
    )
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "arp"]))
    if kind == "arp":
        return bytes(eth / ARP(hwsrc=w.mac(sender), psrc=w.ip(sender), pdst=ip.dst))
    sport, dport = draw(st.integers(1, 65535)), draw(st.sampled_from([22, 80, 5201]))
    if kind == "tcp":
        return bytes(eth / ip / TCP(sport=sport, dport=dport, flags=draw(st.integers(0, 63))))
    if kind == "udp":
        return bytes(eth / ip / UDP(sport=sport, dport=dport) / b"data")
    return bytes(eth / ip / ICMP(type=draw(st.sampled_from([8, 0])), id=sport) / b"ping")


def outcome(verdict: Verdict) -> tuple[object, ...]:
    return sorted((e.port_name, e.frame) for e in verdict.outputs), verdict.drops


def replayed(entry: Any, data: bytes) -> tuple[object, ...]:
    outputs = sorted((o.dest, o.rewrite.apply(data)) for o in entry.outputs)
    return outputs, list(entry.drops)


def mutate(data: bytes, mask: int, end: int, seed: int) -> bytes:
    """``data`` with random bits changed where ``mask`` is 0 within the key's header fields."""
    rng = random.Random(seed)
    layout = frame_layout(data)
    assert layout is not None
    fields = 0
    for start, stop, _ in PLACES[layout.name].values():
        fields |= ((1 << 8 * (stop - start)) - 1) << 8 * (end - stop)
    fields &= ~(0xFFFF << 8 * (end - 14))  # keep the ethertype: the layout
    fields &= ~(0xFF << 8 * (end - (23 if data[12:14] == b"\x08\x00" else 21)))  # and proto
    noise = rng.getrandbits(8 * end) & fields & ~mask
    header = int.from_bytes(data[:end], "big") ^ noise
    return _fix_ipv4(header.to_bytes(end, "big") + data[end:])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_megaflow_answers_what_the_slow_path_answers(
    world: World,  # noqa: F811
    data: st.DataObject,
) -> None:
    recording, plain = pipeline(world, True), pipeline(world, False)
    cache, learned, now = MegaflowCache(max_age=1e9), 0, 1.0
    for _ in range(8):
        sender = data.draw(st.sampled_from(SENDERS))
        frame = sample_frame(world, sender, data.draw)
        binding = world.binding(sender)
        now += 1.0
        verdict = recording.process(frame, binding.datapath, binding.key, now)
        if verdict.wildcards is None or verdict.ct or not verdict.cacheable:
            continue
        wires = [(e.port_name, e.frame) for e in verdict.outputs]
        entry = cache.learn(sender, frame, False, verdict.wildcards, wires, verdict.drops, now)
        layout = frame_layout(frame)
        if entry is None or layout is None:
            continue
        learned += 1
        group = cache.groups[(sender, layout.name, False)]
        mask = next(g.mask for g in group if any(e is entry for e in g.entries.values()))
        for seed in range(4):
            other = mutate(frame, mask, layout.end, data.draw(st.integers(0, 2**32)) + seed)
            other_layout = frame_layout(other)
            if other_layout is None:
                continue
            found = cache.lookup(sender, other, False, now, other_layout)
            assert found is not None
            truth = plain.process(other, binding.datapath, binding.key, now)
            if found is entry:
                assert replayed(entry, other) == outcome(truth), (frame.hex(), other.hex())


def test_walks_outside_the_whitelist_leave_no_wildcards(world: World) -> None:  # noqa: F811
    """A connection through security groups (conntrack) is never a megaflow; switching from
    a port without port security is, and reads neither the TCP ports nor the flags."""
    recording = pipeline(world, True)
    vm1, outside = world.binding("vm1"), world.binding("outside")
    ip = IP(src=world.ip("vm1"), dst=world.ip("vm2"))
    syn = Ether(src=world.mac("vm1"), dst=world.mac("vm2")) / ip / TCP(flags="S")
    assert recording.process(bytes(syn), vm1.datapath, vm1.key, 1.0).wildcards is None
    ip = IP(src=OUTSIDE_IP, dst="203.0.113.99")
    frame = Ether(src=world.mac("outside"), dst="02:00:00:00:00:99") / ip / TCP(flags="S")
    verdict = recording.process(bytes(frame), outside.datapath, outside.key, 1.0)
    assert verdict.wildcards is not None
    assert not verdict.ct
    read = Wildcards(verdict.wildcards).as_dict()
    assert "eth.dst" in read
    assert not {"tp.src", "tp.dst", "tcp.flags"} & set(read)
