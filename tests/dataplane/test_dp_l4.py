"""UDP (RFC 768) and TCP (RFC 9293) with v4/v6 pseudo-header checksums, against Scapy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from dataplane.dp_strategies import FAST, SCAPY, ip4s, ip6s, tcps, u16, u32, udps
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers import checksum, tcp, udp
from netvirt.dataplane.headers.addr import ip4_str, ip6_str
from netvirt.dataplane.headers.tcp import TcpHeader
from netvirt.dataplane.headers.udp import UdpHeader

TCP_OPTIONS = [
    [],
    [("MSS", 1460)],
    [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (12345, 0)), ("NOP", None), ("WScale", 7)],
    [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))],
]


def _ip_layer(src: int, dst: int, ipv6: bool) -> IP | IPv6:
    if ipv6:
        return IPv6(src=ip6_str(src), dst=ip6_str(dst))
    return IP(src=ip4_str(src), dst=ip4_str(dst))


addresses = st.booleans().flatmap(
    lambda v6: st.tuples(ip6s, ip6s, st.just(v6)) if v6 else st.tuples(ip4s, ip4s, st.just(v6))
)


@FAST
@given(udps, st.binary(max_size=32))
def test_udp_round_trip(header: UdpHeader, payload: bytes) -> None:
    header.length = 8 + len(payload)
    assert UdpHeader.parse(header.pack() + payload) == (header, 8)


@SCAPY
@given(addresses, u16, u16, st.binary(max_size=64))
def test_udp_matches_scapy(
    addrs: tuple[int, int, bool], sport: int, dport: int, data: bytes
) -> None:
    src, dst, ipv6 = addrs
    ip = _ip_layer(src, dst, ipv6)
    wire = bytes(ip / UDP(sport=sport, dport=dport) / Raw(data))[len(ip) :]
    ours = UdpHeader(sport, dport).finalized(data, src, dst, ipv6)
    assert ours.pack() + data == wire
    assert UdpHeader.parse(wire) == (ours, 8)
    assert udp.checksum_ok(wire, src, dst, ipv6)
    corrupt = bytes([wire[0] ^ 0x10]) + wire[1:]
    assert not udp.checksum_ok(corrupt, src, dst, ipv6)


def test_udp_zero_checksum_rules() -> None:
    segment = UdpHeader(1, 2, 8, 0).pack()
    assert udp.checksum_ok(segment, 1, 2, ipv6=False)
    assert not udp.checksum_ok(segment, 1, 2, ipv6=True)
    assert not udp.checksum_ok(segment[:7], 1, 2)
    # Pseudo header (proto 17 + length 8) + length 8 + sport sums to 0xFFFF: the checksum
    # computes to zero and is sent as all ones (RFC 768).
    sport = 0xFFFF - 33
    assert checksum.l4_checksum(0, 0, 17, UdpHeader(sport, 0, 8, 0).pack()) == 0
    assert UdpHeader(sport, 0).finalized(b"", 0, 0).checksum == 0xFFFF


def test_udp_incremental_update_keeps_zero_and_matches_recompute() -> None:
    assert udp.update_checksum16(0, 1, 2) == 0
    assert udp.update_checksum32(0, 1, 2) == 0
    before = UdpHeader(1000, 53).finalized(b"query", 0x0A000001, 0x0A000002)
    after = UdpHeader(1000, 53).finalized(b"query", 0xC0A80001, 0x0A000002)
    assert udp.update_checksum32(before.checksum, 0x0A000001, 0xC0A80001) == after.checksum
    moved = UdpHeader(2000, 53).finalized(b"query", 0x0A000001, 0x0A000002)
    assert udp.update_checksum16(before.checksum, 1000, 2000) == moved.checksum


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x00\x01\x00\x02\x00\x08\x00", DropReason.TRUNCATED_UDP),
        (b"\x00\x01\x00\x02\x00\x07\x00\x00", DropReason.BAD_UDP_LENGTH),
        (b"\x00\x01\x00\x02\x00\x10\x00\x00abc", DropReason.BAD_UDP_LENGTH),
    ],
)
def test_udp_errors(wire: bytes, reason: DropReason) -> None:
    with pytest.raises(ParseError) as info:
        UdpHeader.parse(wire)
    assert info.value.reason is reason


@FAST
@given(tcps, st.binary(max_size=32))
def test_tcp_round_trip(header: TcpHeader, payload: bytes) -> None:
    assert TcpHeader.parse(header.pack() + payload) == (header, header.header_length)


@SCAPY
@given(
    addresses,
    u16,
    u16,
    u32,
    u32,
    st.integers(0, 0xFF),
    st.sampled_from(range(len(TCP_OPTIONS))),
    st.binary(max_size=64),
)
def test_tcp_matches_scapy(
    addrs: tuple[int, int, bool],
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    opt: int,
    data: bytes,
) -> None:
    src, dst, ipv6 = addrs
    ip = _ip_layer(src, dst, ipv6)
    segment = TCP(
        sport=sport,
        dport=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=4096,
        options=TCP_OPTIONS[opt],
    )
    wire = bytes(ip / segment / Raw(data))[len(ip) :]
    options = wire[20 : (wire[12] >> 4) * 4]
    ours = TcpHeader(sport, dport, seq, ack, flags, 4096, 0, 0, options)
    ours = ours.finalized(data, src, dst, ipv6)
    assert ours.pack() + data == wire
    assert TcpHeader.parse(wire) == (ours, 20 + len(options))
    assert tcp.checksum_ok(wire, src, dst, ipv6)


def test_tcp_errors() -> None:
    wire = bytes(TCP(sport=1, dport=2, options=[("MSS", 1460)]))
    with pytest.raises(ParseError) as info:
        TcpHeader.parse(wire[:19])
    assert info.value.reason is DropReason.TRUNCATED_TCP
    with pytest.raises(ParseError) as info:
        TcpHeader.parse(wire[:23])
    assert info.value.reason is DropReason.TRUNCATED_TCP
    with pytest.raises(ParseError) as info:
        TcpHeader.parse(wire[:12] + b"\x40" + wire[13:])
    assert info.value.reason is DropReason.BAD_TCP_OFFSET


def test_pack_rejects_unpadded_options() -> None:
    with pytest.raises(ValueError, match="padded"):
        TcpHeader(1, 2, options=b"\x02\x04\x05").pack()
