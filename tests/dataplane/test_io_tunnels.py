"""Geneve and VXLAN tunnels over loopback UDP (no root needed), decoding checked by Scapy."""

from __future__ import annotations

import select
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.headers.checksum import ones_sum, pseudo_header
from netvirt.dataplane.ports.base import GSO_TCPV4, VNET_F_NEEDS_CSUM, Frame, VnetHdr
from netvirt.dataplane.tunnels import GeneveTunnel, TunnelPacket, UdpTunnel, VxlanTunnel

INNER = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP() / Raw(b"i" * 50))


def pair(kind: type[UdpTunnel], mtu: int = 1500) -> tuple[UdpTunnel, UdpTunnel]:
    a, b = kind("127.0.0.1", 0, underlay_mtu=mtu), kind("127.0.0.1", 0, underlay_mtu=mtu)
    a.remote_port, b.remote_port = b.port, a.port
    return a, b


@pytest.fixture
def geneve() -> Iterator[tuple[UdpTunnel, UdpTunnel]]:
    a, b = pair(GeneveTunnel)
    yield a, b
    a.close()
    b.close()


def receive(tunnel: UdpTunnel, count: int) -> list[TunnelPacket]:
    got: list[TunnelPacket] = []
    while len(got) < count and select.select([tunnel], [], [], 2.0)[0]:
        got += tunnel.recv_batch()
    return got


def superframe(payload: int = 20000) -> Frame:
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(seq=1) / Raw(b"s" * payload)
    raw = bytearray(bytes(pkt))
    seed = ones_sum(b"", pseudo_header(0x0A000001, 0x0A000002, 6, len(raw) - 34, False))
    struct.pack_into("!H", raw, 50, seed)
    return Frame(bytes(raw), VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16))


def test_geneve_carries_vni_and_ports(geneve: tuple[UdpTunnel, UdpTunnel]) -> None:
    a, b = geneve
    assert a.send("127.0.0.1", 0x123456, INNER, 3, 0x8001) == 1
    [packet] = receive(b, 1)
    assert (packet.remote, packet.vni, packet.ingress, packet.egress) == (
        "127.0.0.1",
        0x123456,
        3,
        0x8001,
    )
    assert packet.frame == Frame(INNER)
    assert b.counters.rx_packets == 1


def test_geneve_wire_format_is_what_scapy_reads() -> None:
    a = GeneveTunnel("127.0.0.1", 0)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    a.remote_port = sink.getsockname()[1]
    try:
        a.send("127.0.0.1", 77, INNER, 1, 2)
        sink.settimeout(2)
        wire = GENEVE(sink.recv(65535))
        assert wire.vni == 77
        assert wire.critical == 1
        assert wire.options[0].classid == 0x0102
        assert bytes(wire.payload) == INNER
    finally:
        a.close()
        sink.close()


def test_vxlan_round_trip() -> None:
    a, b = pair(VxlanTunnel)
    try:
        a.send("127.0.0.1", 5000, INNER)
        [packet] = receive(b, 1)
        assert (packet.vni, packet.ingress, packet.egress) == (5000, None, None)
        assert packet.frame.data == INNER
        assert a.max_inner == 1500 - 20 - 8 - 8
    finally:
        a.close()
        b.close()


def test_superframe_is_split_into_smaller_superframes_on_a_jumbo_underlay() -> None:
    a, b = pair(GeneveTunnel, mtu=9000)
    frame = superframe(30000)
    try:
        sent = a.send("127.0.0.1", 9, frame, 1, 2)
        packets = receive(b, sent)
        assert len(packets) == sent == 4  # 6 segments of 1448 bytes in each 9000-byte datagram
        assert all(p.frame.is_super for p in packets)
        data = b"".join(bytes(Ether(p.frame.data)[TCP].payload) for p in packets)
        assert data == b"s" * 30000
    finally:
        a.close()
        b.close()


def test_superframe_crosses_geneve_whole_when_the_underlay_fits_it() -> None:
    a, b = pair(GeneveTunnel, mtu=65000)
    frame = superframe()
    try:
        assert a.send("127.0.0.1", 9, frame, 1, 2) == 1
        [packet] = receive(b, 1)
        assert packet.frame == frame
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("kind", [GeneveTunnel, VxlanTunnel])
def test_superframe_is_segmented_to_the_underlay_mtu(kind: type[UdpTunnel]) -> None:
    a, b = pair(kind, mtu=1500)
    try:
        sent = a.send("127.0.0.1", 9, superframe(5000), 1, 2)
        packets = receive(b, sent)
        assert len(packets) == sent >= 4
        assert all(p.frame.vnet is None and len(p.frame.data) <= a.max_inner for p in packets)
        data = b"".join(bytes(Ether(p.frame.data)[TCP].payload) for p in packets)
        assert data == b"s" * 5000
        for p in packets:
            pkt = Ether(p.frame.data)
            chk = pkt[TCP].chksum
            del pkt[TCP].chksum
            assert Ether(bytes(pkt))[TCP].chksum == chk
    finally:
        a.close()
        b.close()


def test_oversized_plain_frame_is_dropped_as_mtu_exceeded(
    geneve: tuple[UdpTunnel, UdpTunnel],
) -> None:
    a, _ = geneve
    assert a.send("127.0.0.1", 1, INNER + b"x" * 1500) == 0
    assert a.counters.drops[DropReason.MTU_EXCEEDED] == 1


MALFORMED = [
    b"",
    b"\x00\x00\x65\x58",  # cut short
    b"\xc0\x00\x65\x58\x00\x00\x01\x00" + INNER,  # version 3
    b"\x00\x00\x65\x58\x00\x00\x01\x00" + INNER,  # no ports option
    b"\x00\x00\x08\x00\x00\x00\x01\x00" + INNER,  # IPv4 payload, not Ethernet
    b"\x02\x00\x65\x58\x00\x00\x01\x00\x01\x02\x80\x01",  # option cut short
    b"\x02\x00\x65\x58\x00\x00\x01\x00\x01\x03\x80\x01\x00\x01\x00\x02" + INNER,  # unknown crit
    b"\x02\x00\x65\x58\x00\x00\x01\x00\x01\x02\x80\x01\x00\x01\x00\x02" + INNER[:10],
]


def test_malformed_datagrams_are_counted_not_raised(geneve: tuple[UdpTunnel, UdpTunnel]) -> None:
    a, b = geneve
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for payload in MALFORMED:
            raw.sendto(payload, ("127.0.0.1", b.port))
        a.send("127.0.0.1", 1, INNER, 1, 2)
        good = receive(b, 1)
        assert len(good) == 1
        assert b.counters.drops[DropReason.MALFORMED_TUNNEL] == len(MALFORMED)
        assert b.counters.rx_dropped == len(MALFORMED)
    finally:
        raw.close()


@pytest.fixture(scope="module")
def decoders() -> Iterator[list[UdpTunnel]]:
    tunnels = [GeneveTunnel("127.0.0.1", 0), VxlanTunnel("127.0.0.1", 0)]
    yield tunnels
    for tunnel in tunnels:
        tunnel.close()


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=120))
def test_any_bytes_decode_or_count(decoders: list[UdpTunnel], payload: bytes) -> None:
    for tunnel in decoders:
        dropped = tunnel.counters.rx_dropped
        packet = tunnel._decode(payload, "127.0.0.1")
        assert (packet is None) == (tunnel.counters.rx_dropped == dropped + 1)


def test_vxlan_wire_format_is_what_scapy_reads() -> None:
    a = VxlanTunnel("127.0.0.1", 0)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    a.remote_port = sink.getsockname()[1]
    try:
        a.send("127.0.0.1", 4242, INNER)
        sink.settimeout(2)
        wire = VXLAN(sink.recv(65535))
        assert wire.vni == 4242
        assert bytes(wire.payload) == INNER
    finally:
        a.close()
        sink.close()
