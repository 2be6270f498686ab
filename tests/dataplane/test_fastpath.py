"""The flow cache's key and byte rewrites, checked against Scapy's own checksums.

A rewrite is learned from one packet of a flow (input, output) and must give
exactly what Scapy computes for any other packet of the same flow: other
payload, sequence numbers, IP id, lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fastpath import (
    ConnEpochs,
    Entry,
    FlowCache,
    Layout,
    Rewrite,
    _generate,
    derive,
    flow_key,
)
from netvirt.dataplane.nf.codec import CtEntry, CtState, CtTuple

MACS = st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:02", "0a:1b:2c:3d:4e:5f"])
V4 = st.sampled_from(["10.0.0.10", "10.0.1.20", "192.0.2.7", "203.0.113.9"])
V6 = st.sampled_from(["fd00::10", "fd00:1::20", "2001:db8::7"])
PORTS = st.integers(1, 65535)
PAYLOAD = st.binary(max_size=64)


@dataclass
class Flow:
    """One flow before and after a rewrite, as Scapy layers to fill per packet."""

    v6: bool
    proto: str
    src: str
    dst: str
    sport: int
    dport: int
    ttl: int
    macs: tuple[str, str]


def build(flow: Flow, payload: bytes, seq: int, ident: int, flags: str = "A") -> bytes:
    eth = Ether(src=flow.macs[0], dst=flow.macs[1])
    if flow.v6:
        ip: Packet = IPv6(src=flow.src, dst=flow.dst, hlim=flow.ttl, fl=7)
    else:
        ip = IP(src=flow.src, dst=flow.dst, ttl=flow.ttl, id=ident, flags="DF")
    if flow.proto == "tcp":
        l4: Packet = TCP(sport=flow.sport, dport=flow.dport, seq=seq, ack=seq // 2, flags=flags)
    elif flow.proto == "udp":
        l4 = UDP(sport=flow.sport, dport=flow.dport)
    elif flow.v6:
        l4 = ICMPv6EchoRequest(id=flow.sport, seq=seq & 0xFFFF)
    else:
        l4 = ICMP(type=8, id=flow.sport, seq=seq & 0xFFFF)
    return bytes(eth / ip / l4 / payload)


@st.composite
def rewritten_flows(draw: st.DrawFn) -> tuple[Flow, Flow]:
    v6 = draw(st.booleans())
    addrs = V6 if v6 else V4
    proto = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    before = Flow(
        v6,
        proto,
        draw(addrs),
        draw(addrs),
        draw(PORTS),
        draw(PORTS),
        draw(st.integers(2, 255)),
        (draw(MACS), draw(MACS)),
    )
    # what a router + NAT does: new MACs, TTL - 1, maybe new addresses and ports
    after = Flow(
        v6,
        proto,
        draw(st.one_of(st.just(before.src), addrs)),
        draw(st.one_of(st.just(before.dst), addrs)),
        draw(st.one_of(st.just(before.sport), PORTS)),
        before.dport if proto == "icmp" else draw(st.one_of(st.just(before.dport), PORTS)),
        draw(st.sampled_from([before.ttl, before.ttl - 1])),
        (draw(MACS), draw(MACS)),
    )
    return before, after


@settings(max_examples=300, deadline=None)
@given(
    rewritten_flows(),
    PAYLOAD,
    PAYLOAD,
    st.integers(0, 2**31),
    st.integers(0, 2**31),
    st.integers(0, 65535),
    st.integers(0, 65535),
)
def test_a_learned_rewrite_gives_scapy_bytes_for_other_packets_of_the_flow(
    flows: tuple[Flow, Flow],
    payload1: bytes,
    payload2: bytes,
    seq1: int,
    seq2: int,
    id1: int,
    id2: int,
) -> None:
    before, after = flows
    first_in, first_out = build(before, payload1, seq1, id1), build(after, payload1, seq1, id1)
    found = flow_key(first_in)
    assert found is not None
    key, layout = found
    rewrite = derive(first_in, first_out, layout, seeded=False)
    if rewrite is None:  # only a UDP datagram whose checksum is 0 may be refused
        assert before.proto == "udp"
        return
    second_in = build(before, payload2, seq2, id2)
    found2 = flow_key(second_in)
    assert found2 is not None
    assert found2[0] == key
    expected = build(after, payload2, seq2, id2)
    assert rewrite.apply(second_in) == expected  # interpreted (a fresh rewrite) ...
    compiled = _generate(rewrite.patches, rewrite.sums)
    assert compiled(second_in) == expected  # ... and compiled (a busy one): the same bytes


@given(rewritten_flows(), PAYLOAD, st.integers(0, 2**31))
def test_the_key_is_exactly_the_covered_bytes(
    flows: tuple[Flow, Flow], payload: bytes, seq: int
) -> None:
    frame = build(flows[0], payload, seq, 1)
    found = flow_key(frame)
    assert found is not None
    key, layout = found
    assert key == b"".join(frame[a:b] for a, b in layout.covered)
    assert layout.end <= len(frame)


def test_frames_the_cache_never_serves_have_no_key() -> None:
    flow = Flow(False, "tcp", "10.0.0.1", "10.0.0.2", 1000, 80, 64, ("02:00:00:00:00:01",) * 2)
    assert flow_key(build(flow, b"", 1, 1, flags="S")) is None  # connection setup
    assert flow_key(build(flow, b"", 1, 1, flags="FA")) is None  # and teardown
    assert flow_key(build(flow, b"", 1, 1, flags="RA")) is None
    assert flow_key(build(flow, b"", 1, 1, flags="PA")) is not None
    broadcast = Flow(False, "udp", "10.0.0.1", "10.0.0.2", 1, 2, 64, ("02:00:00:00:00:01",) * 2)
    broadcast.macs = ("02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff")
    assert flow_key(build(broadcast, b"x", 1, 1)) is None
    eth = Ether(dst="02:00:00:00:00:02")
    options = eth / IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01" * 4) / UDP() / b"x"
    assert flow_key(bytes(eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / b"x")) is not None
    assert flow_key(bytes(options)) is None
    fragment = eth / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / UDP() / b"x"
    assert flow_key(bytes(fragment)) is None
    error = eth / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=3, code=1) / (b"x" * 28)
    assert flow_key(bytes(error)) is None
    reply6 = eth / IPv6(src="fd00::1", dst="fd00::2") / ICMPv6EchoReply(id=5)
    assert flow_key(bytes(reply6)) is not None
    assert flow_key(bytes(Ether(dst="02:00:00:00:00:01", type=0x88B5) / (b"\x00" * 60))) is None


def test_an_output_that_is_not_a_rewrite_is_refused() -> None:
    flow = Flow(False, "tcp", "10.0.0.1", "10.0.0.2", 1000, 80, 64, ("02:00:00:00:00:01",) * 2)
    frame = build(flow, b"payload", 1, 1)
    found = flow_key(frame)
    assert found is not None
    layout: Layout = found[1]
    assert derive(frame, frame + b"x", layout, False) is None  # other length
    assert derive(frame, frame[:-1] + b"X", layout, False) is None  # other payload
    new_id = bytearray(frame)
    new_id[18:20] = b"\x12\x34"  # the IP id is not in the key: it must pass through
    assert derive(frame, bytes(new_id), layout, False) is None
    same = derive(frame, frame, layout, False)
    assert same is not None
    assert same.apply(frame) is frame


def test_a_seeded_checksum_is_adjusted_without_the_complement() -> None:
    """NEEDS_CSUM frames hold the pseudo-header sum; NAT changes it by the address delta."""
    before = Flow(False, "tcp", "10.0.0.1", "10.0.0.2", 1000, 80, 64, ("02:00:00:00:00:01",) * 2)
    after = Flow(False, "tcp", "192.0.2.1", "10.0.0.2", 1000, 80, 63, before.macs)

    def seeded(flow: Flow, size: int) -> bytes:
        frame = bytearray(build(flow, b"\x00" * size, 5, 9))
        src, dst = (int.from_bytes(frame[o : o + 4], "big") for o in (26, 30))
        total = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 + 20 + size
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        frame[50:52] = total.to_bytes(2, "big")  # what the kernel leaves for the NIC
        return bytes(frame)

    first_in, first_out = seeded(before, 10), seeded(after, 10)
    found = flow_key(first_in)
    assert found is not None
    rewrite = derive(first_in, first_out, found[1], seeded=True)
    assert rewrite is not None
    assert rewrite.apply(seeded(before, 1400)) == seeded(after, 1400)


def conn(state: CtState, serial: int = 0) -> object:
    t = CtTuple(4, 6, 1, 2, 3, 4)

    @dataclass
    class Result:
        state: int
        entry: CtEntry | None
        drop: DropReason | None = None

    entry = CtEntry(1, t, t.reversed(), state, 0.0, 0.0, 10.0, serial=serial)
    settled = (CtState.ESTABLISHED, CtState.UNREPLIED, CtState.REPLIED)
    return Result(0x22 if state in settled else 0x21, entry)  # trk+est or trk+new


def test_connection_epochs_invalidate_what_a_state_change_touches() -> None:
    epochs = ConnEpochs()
    deps = epochs.observe([conn(CtState.ESTABLISHED)])
    assert deps is not None
    assert epochs.valid(deps)
    assert epochs.observe([conn(CtState.FIN_WAIT)]) is None  # the FIN: not cached ...
    assert not epochs.valid(deps)  # ... and what the connection's ACKs cached is gone
    other = epochs.observe([conn(CtState.ESTABLISHED, serial=7)])
    assert other is not None
    assert epochs.valid(other)
    assert epochs.observe([None]) is None  # no connection (untracked result): not cached
    unreplied = epochs.observe([conn(CtState.UNREPLIED, serial=9)])
    assert unreplied is not None  # a datagram flow without replies yet is cached ...
    assert epochs.observe([conn(CtState.REPLIED, serial=9)]) is not None
    assert not epochs.valid(unreplied)  # ... until its first reply changes its state


def test_the_cache_expires_evicts_and_flushes() -> None:
    cache = FlowCache(capacity=2, max_age=0.5)
    cache.sync("v1")
    entry = Entry((), (DropReason.EXPLICIT_DROP,), (), born=10.0)
    cache.insert("a", entry)
    assert cache.lookup("a", 10.4) == (entry, None)
    assert cache.lookup("a", 10.6) == (None, entry)  # too old: the slow path runs again
    cache.insert("b", entry)
    cache.insert("c", entry)
    assert "a" not in cache.entries
    assert cache.counters.evictions == 1
    cache.sync("v1")
    assert len(cache.entries) == 2
    cache.sync("v2")  # the installed state moved
    assert not cache.entries
    assert cache.counters.flushes == 1
    assert cache.lookup("b", 10.0) == (None, None)
    assert cache.stats()["misses"] == 1


def test_a_busy_rewrite_is_compiled_once_and_shared() -> None:
    flow = Flow(False, "udp", "10.0.0.1", "10.0.0.2", 1000, 53, 64, ("02:00:00:00:00:01",) * 2)
    routed = Flow(False, "udp", "10.0.0.1", "10.0.0.2", 1000, 53, 63, ("02:00:00:00:00:09",) * 2)
    frame, out = build(flow, b"q", 1, 1), build(routed, b"q", 1, 1)
    found = flow_key(frame)
    assert found is not None
    rewrite = derive(frame, out, found[1], seeded=False)
    assert rewrite is not None
    interpreted = rewrite.apply
    for _ in range(40):
        assert rewrite.apply(frame) == out
    assert rewrite.apply is not interpreted  # compiled after COMPILE_AFTER packets
    again = Rewrite(rewrite.patches, rewrite.sums, rewrite.end)
    assert again.apply is rewrite.apply  # a re-learned flow reuses the generated function
    assert again == rewrite


def test_frames_the_parser_refuses_get_no_key_even_in_a_known_flow() -> None:
    """The slow path must see them, to drop them under their reason."""
    flow = Flow(False, "udp", "10.0.0.1", "10.0.0.2", 1000, 53, 64, ("02:00:00:00:00:01",) * 2)
    good = build(flow, b"payload!", 1, 1)
    assert flow_key(good) is not None
    bad_length = bytearray(good)
    bad_length[38:40] = (200).to_bytes(2, "big")  # UDP length beyond the packet
    assert flow_key(bytes(bad_length)) is None
    bad_total = bytearray(good)
    bad_total[16:18] = (1000).to_bytes(2, "big")  # IP total length beyond the frame
    assert flow_key(bytes(bad_total)) is None
    bad_sum = bytearray(good)
    bad_sum[24] ^= 0xFF  # IPv4 header checksum
    assert flow_key(bytes(bad_sum)) is None
    tcp = Flow(False, "tcp", "10.0.0.1", "10.0.0.2", 1000, 80, 64, flow.macs)
    short = bytearray(build(tcp, b"", 1, 1))
    short[46] = 0xF0  # a 60-byte TCP header in a 20-byte segment
    assert flow_key(bytes(short)) is None
    v6 = Flow(True, "udp", "fd00::1", "fd00::2", 1000, 53, 64, flow.macs)
    truncated = bytearray(build(v6, b"x" * 8, 1, 1))
    truncated[18:20] = (500).to_bytes(2, "big")
    assert flow_key(bytes(truncated)) is None
