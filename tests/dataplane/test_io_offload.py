"""Software checksum completion and TCP/UDP segmentation, checked against Scapy."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from netvirt.dataplane.drops import ParseError
from netvirt.dataplane.headers.checksum import ones_sum, pseudo_header
from netvirt.dataplane.ports import offload
from netvirt.dataplane.ports.base import (
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    Frame,
    VnetHdr,
)

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def seeded(pkt: Packet, gso: int = GSO_NONE, gso_size: int = 0) -> tuple[bytes, VnetHdr]:
    """The frame as a TAP with offloads hands it over: L4 checksum holds the pseudo sum."""
    raw = bytearray(bytes(pkt))
    ip_layer = pkt[IPv6] if IPv6 in pkt else pkt[IP]
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    start = len(raw) - len(bytes(l4))
    ipv6 = IPv6 in pkt
    src = int.from_bytes(bytes(ip_layer)[8:24] if ipv6 else bytes(ip_layer)[12:16], "big")
    dst = int.from_bytes(bytes(ip_layer)[24:40] if ipv6 else bytes(ip_layer)[16:20], "big")
    proto = 6 if TCP in pkt else 17
    field = 16 if proto == 6 else 6
    seed = ones_sum(b"", pseudo_header(src, dst, proto, len(raw) - start, ipv6))
    struct.pack_into("!H", raw, start + field, seed)
    hdr = VnetHdr(VNET_F_NEEDS_CSUM, gso, start, gso_size, start, field)
    return bytes(raw), hdr


def checksums_ok(frame: bytes) -> bool:
    """Scapy recomputes every checksum; the frame is right when nothing changes."""
    pkt = Ether(frame)
    fresh = pkt.copy()
    for layer in (IP, TCP, UDP):
        if layer in fresh:
            del fresh[layer].chksum
    return bytes(Ether(bytes(fresh))) == frame


def tcp4(payload: bytes, flags: str = "PA", vlan: bool = False) -> Packet:
    eth = Ether(src=MAC_A, dst=MAC_B)
    if vlan:
        eth = eth / Dot1Q(vlan=7)
    ip = IP(src="10.0.0.1", dst="10.0.0.2", id=65530, flags="DF", ttl=64)
    tcp = TCP(sport=40000, dport=5201, seq=0xFFFFFF00, ack=77, flags=flags, window=512)
    return eth / ip / tcp / Raw(payload)


def tcp6(payload: bytes, flags: str = "PA", ext: bool = False) -> Packet:
    ip6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
    inner = IPv6ExtHdrDestOpt() / TCP(sport=1, dport=2, seq=5, flags=flags) if ext else None
    if inner is None:
        inner = TCP(sport=1, dport=2, seq=5, flags=flags)
    return Ether(src=MAC_A, dst=MAC_B) / ip6 / inner / Raw(payload)


payloads = st.binary(min_size=0, max_size=3000)
sizes = st.integers(min_value=150, max_value=1460)


@settings(max_examples=40, deadline=None)
@given(payload=payloads, mss=sizes, vlan=st.booleans(), fin=st.booleans())
def test_tcp4_segments_reassemble_with_valid_headers(
    payload: bytes, mss: int, vlan: bool, fin: bool
) -> None:
    frame, hdr = seeded(tcp4(payload, "FPA" if fin else "PA", vlan), GSO_TCPV4, mss)
    segments = offload.segment(frame, hdr, mss)
    parsed = [Ether(s) for s in segments]
    assert b"".join(bytes(p[TCP].payload) for p in parsed) == payload
    assert len(segments) == max(1, -(-len(payload) // mss))
    for index, (raw, pkt) in enumerate(zip(segments, parsed, strict=True)):
        assert checksums_ok(raw)
        assert len(bytes(pkt[TCP].payload)) <= mss
        assert pkt[TCP].seq == (0xFFFFFF00 + index * mss) & 0xFFFFFFFF  # wraps
        assert pkt[IP].id == (65530 + index) & 0xFFFF
        assert pkt[IP].flags == "DF"
        last = index == len(segments) - 1
        assert bool(pkt[TCP].flags & 0x01) == (fin and last)
        assert bool(pkt[TCP].flags & 0x08) == last


@settings(max_examples=25, deadline=None)
@given(payload=payloads, mss=sizes, ext=st.booleans())
def test_tcp6_segments_with_extension_headers(payload: bytes, mss: int, ext: bool) -> None:
    frame, hdr = seeded(tcp6(payload, ext=ext), GSO_TCPV6, mss)
    segments = offload.segment(frame, hdr, mss)
    parsed = [Ether(s) for s in segments]
    assert b"".join(bytes(p[TCP].payload) for p in parsed) == payload
    for raw, pkt in zip(segments, parsed, strict=True):
        assert checksums_ok(raw)
        assert pkt[IPv6].plen == len(bytes(pkt[IPv6].payload))


def test_cwr_only_on_first_segment() -> None:
    frame, hdr = seeded(tcp4(b"x" * 3000, "PAC"), GSO_TCPV4 | GSO_ECN, 1000)
    flags = [Ether(s)[TCP].flags for s in offload.segment(frame, hdr, 1000)]
    assert [bool(f & 0x80) for f in flags] == [True, False, False]


def test_udp_gso_segments() -> None:
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(b"u" * 2500)
    frame, hdr = seeded(pkt, GSO_UDP_L4, 1000)
    segments = offload.segment(frame, hdr, 1000)
    assert [len(Ether(s)[UDP].payload) for s in segments] == [1000, 1000, 500]
    assert all(checksums_ok(s) for s in segments)


def test_complete_checksum_matches_scapy_and_ignores_padding() -> None:
    for pkt in (tcp4(b"hello world"), tcp6(b"abc"), Ether() / IP() / UDP() / Raw(b"q")):
        frame, hdr = seeded(pkt)
        padded = frame + b"\x00" * max(0, 60 - len(frame))
        done = offload.complete_checksum(padded, hdr)
        assert done == bytes(pkt) + padded[len(frame) :]


def test_refresh_partial_after_address_rewrite() -> None:
    frame, hdr = seeded(tcp4(b"n" * 4000), GSO_TCPV4, 1400)
    rewritten = tcp4(b"n" * 4000)
    rewritten[IP].src = "192.0.2.9"
    expected, _ = seeded(rewritten, GSO_TCPV4, 1400)
    field = hdr.csum_start + hdr.csum_offset
    stale = expected[:field] + frame[field : field + 2] + expected[field + 2 :]
    assert stale != expected
    fixed = offload.refresh_partial(stale, hdr)
    assert fixed == expected
    assert all(checksums_ok(s) for s in offload.segment(fixed, hdr, 1400))


def test_prepare_chooses_per_destination() -> None:
    frame, hdr = seeded(tcp4(b"z" * 5000), GSO_TCPV4, 1448)
    superframe = Frame(frame, hdr)
    assert offload.prepare(superframe, offload=True) == [superframe]
    wire = offload.prepare(superframe, offload=False, max_len=1014)
    assert all(len(f.data) <= 1014 and f.vnet is None for f in wire)
    assert b"".join(bytes(Ether(f.data)[TCP].payload) for f in wire) == b"z" * 5000
    assert len(offload.prepare(superframe, offload=False)) == 4  # the sender's own MSS
    small, small_hdr = seeded(tcp4(b"abc"))
    assert offload.prepare(Frame(small, small_hdr), offload=False)[0].data == bytes(tcp4(b"abc"))
    plain = Frame(bytes(tcp4(b"abc")), VnetHdr(flags=2))
    assert offload.prepare(plain, offload=False) == [Frame(plain.data)]


@given(
    data=st.binary(max_size=200),
    hdr=st.builds(VnetHdr, *[st.integers(0, 255)] * 2, *[st.integers(0, 0xFFFF)] * 4),
    mss=st.integers(-1, 2000),
)
@settings(max_examples=300, deadline=None)
def test_garbage_raises_only_parse_error(data: bytes, hdr: VnetHdr, mss: int) -> None:
    for action in (
        lambda: offload.segment(data, hdr, mss),
        lambda: offload.complete_checksum(data, hdr),
        lambda: offload.refresh_partial(data, hdr),
        lambda: offload.prepare(Frame(data, hdr), offload=False, max_len=mss),
        lambda: offload.split(Frame(data, hdr), mss),
        lambda: offload.carry(Frame(data, hdr), data[:-1]),
    ):
        with contextlib.suppress(ParseError):
            action()


def test_vnet_header_round_trip() -> None:
    hdr = VnetHdr(1, GSO_TCPV4, 66, 1448, 34, 16)
    assert VnetHdr.unpack(hdr.pack(12)) == hdr
    assert len(hdr.pack(10)) == 10
    assert hdr.gso == GSO_TCPV4
    assert hdr.needs_csum
    assert not hdr.trivial
    with pytest.raises(ParseError):
        offload.segment(bytes(Ether() / IP() / Raw(b"x" * 40)), hdr, 10)


def test_carry_reseeds_after_nat_of_addresses_and_ports() -> None:
    frame, hdr = seeded(tcp4(b"c" * 3000), GSO_TCPV4, 1000)
    natted = tcp4(b"c" * 3000)
    natted[IP].dst = "172.24.4.10"
    natted[TCP].dport = 8080
    wrong, _ = seeded(natted, GSO_TCPV4, 1000)
    wrong = wrong[:50] + frame[50:52] + wrong[52:]  # headers rewritten, seed left stale
    out = offload.carry(Frame(frame, hdr), wrong)
    assert out.vnet == hdr
    assert all(checksums_ok(s) for s in offload.segment(out.data, hdr, 1000))
    untouched = offload.carry(Frame(frame, hdr), frame)
    assert untouched.data is frame


def test_carry_shifts_offsets_when_a_vlan_tag_is_pushed() -> None:
    frame, hdr = seeded(tcp4(b"v" * 100))
    tagged, tagged_hdr = seeded(tcp4(b"v" * 100, vlan=True))
    out = offload.carry(Frame(frame, hdr), tagged)
    assert out.vnet is not None
    assert out.vnet.csum_start == tagged_hdr.csum_start
    assert checksums_ok(offload.complete_checksum(out.data, out.vnet))


@settings(max_examples=30, deadline=None)
@given(payload=st.integers(1, 40000), max_len=st.integers(3000, 20000), ecn=st.booleans())
def test_split_keeps_whole_segments_and_seeds(payload: int, max_len: int, ecn: bool) -> None:
    data = bytes(range(256)) * (payload // 256) + b"t" * (payload % 256)
    gso = GSO_TCPV4 | (GSO_ECN if ecn else 0)
    frame, hdr = seeded(tcp4(data, "PAC" if ecn else "PA"), gso, 1000)
    pieces = offload.split(Frame(frame, hdr), max_len)
    assert all(len(p.data) <= max_len for p in pieces)
    wire = [seg for p in pieces for seg in offload.prepare(p, offload=False)]
    parsed = [Ether(w.data) for w in wire]
    assert b"".join(bytes(p[TCP].payload) for p in parsed) == data
    assert all(len(p[TCP].payload) <= 1000 for p in parsed)
    assert all(checksums_ok(w.data) for w in wire)
    assert [p[IP].id for p in parsed] == [(65530 + i) & 0xFFFF for i in range(len(parsed))]
    assert [bool(p[TCP].flags & 0x80) for p in parsed] == [ecn] + [False] * (len(parsed) - 1)
    for piece in pieces:
        assert piece.vnet is not None
        assert piece.vnet.needs_csum
        assert piece.is_super == (len(piece.data) - 54 > 1000)
        if piece.is_super:
            expected_ecn = GSO_ECN if ecn and piece is pieces[0] else 0
            assert piece.vnet.gso_type & GSO_ECN == expected_ecn
