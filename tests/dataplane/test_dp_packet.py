"""parse_packet's flat view and the build_* helpers, against Scapy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from dataplane.dp_strategies import FAST, SCAPY, ip4s, ip6s, macs, u8, u16
from dataplane.frames import CORPUS, scapy_corpus
from netvirt.dataplane import packet as pk
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.addr import ip4, ip4_str, ip6, ip6_str, mac, mac_str
from netvirt.dataplane.headers.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from netvirt.dataplane.headers.icmpv6 import build_echo as build_echo6
from netvirt.dataplane.packet import parse_packet

VM1, VM2 = mac("fa:16:3e:00:00:01"), mac("fa:16:3e:00:00:02")


def test_corpus_ipv4_tcp_with_vlan() -> None:
    pkt = parse_packet(CORPUS["tcp4_vlan"])
    scapy = scapy_corpus()["tcp4_vlan"]
    assert (pkt.eth_src, pkt.eth_dst, pkt.eth_type) == (VM1, VM2, ETHERTYPE_IPV4)
    assert (pkt.vlan_vid, pkt.vlan_pcp, pkt.l3_offset) == (10, 2, 18)
    assert (pkt.ip_version, pkt.ip_src, pkt.ip_dst) == (4, ip4("10.0.0.1"), ip4("10.0.0.2"))
    assert (pkt.ip_proto, pkt.ip_ttl, pkt.ip_tos, pkt.ip_frag) == (6, 63, 0x10, 0)
    assert (pkt.l4_sport, pkt.l4_dport) == (40000, 443)
    assert pkt.tcp_flags == int(scapy[TCP].flags) == 0x02
    assert pkt.l4_offset == 38
    assert pkt.payload == b"hello"
    assert pk.l4_checksum_ok(pkt)


def test_corpus_ipv6_extension_headers_reach_tcp() -> None:
    pkt = parse_packet(CORPUS["tcp6_ext"])
    assert pkt.vlan_vid is None
    assert (pkt.ip_version, pkt.ip_proto, pkt.ip_ttl, pkt.ip_tos) == (6, 6, 62, 0x20)
    assert (pkt.ip_src, pkt.ip_dst) == (ip6("2001:db8::1"), ip6("2001:db8::2"))
    assert pkt.l4_offset == 14 + 40 + 8 + 8
    assert (pkt.l4_sport, pkt.l4_dport, pkt.tcp_flags) == (1234, 22, 0x18)
    assert pkt.payload == b"ssh"
    assert pk.l4_checksum_ok(pkt)


def test_corpus_arp() -> None:
    pkt = parse_packet(CORPUS["arp_request"])
    assert pkt.eth_type == ETHERTYPE_ARP
    assert (pkt.arp_op, pkt.arp_sha, pkt.arp_spa, pkt.arp_tpa) == (
        1,
        VM1,
        ip4("10.0.0.1"),
        ip4("10.0.0.2"),
    )
    assert pkt.arp_tha == 0
    assert pkt.ip_version == 0
    assert pkt.l4 is None


@pytest.mark.parametrize(("name", "sll", "tll"), [("ns", VM1, 0), ("na", 0, VM2)])
def test_corpus_neighbor_discovery(name: str, sll: int, tll: int) -> None:
    pkt = parse_packet(CORPUS[name])
    assert pkt.icmp_type == (135 if name == "ns" else 136)
    assert pkt.nd_target == ip6("fe80::2")
    assert (pkt.nd_sll, pkt.nd_tll) == (sll, tll)
    assert pkt.nd is not None
    assert pk.l4_checksum_ok(pkt)


def test_corpus_icmp_and_echo6() -> None:
    pkt = parse_packet(CORPUS["icmp4"])
    assert (pkt.ip_proto, pkt.icmp_type, pkt.icmp_code) == (1, 8, 0)
    assert pk.l4_checksum_ok(pkt)
    pkt6 = parse_packet(CORPUS["echo6"])
    assert (pkt6.ip_proto, pkt6.icmp_type) == (58, 128)
    assert pk.l4_checksum_ok(pkt6)


@pytest.mark.parametrize(
    ("name", "frag", "has_l4"),
    [
        ("ip4_first_fragment", pk.FRAG_ANY, True),
        ("ip4_later_fragment", pk.FRAG_ANY | pk.FRAG_LATER, False),
        ("udp6_fragment", pk.FRAG_ANY, True),
        ("ip6_later_fragment", pk.FRAG_ANY | pk.FRAG_LATER, False),
    ],
)
def test_fragments(name: str, frag: int, has_l4: bool) -> None:
    pkt = parse_packet(CORPUS[name])
    assert pkt.ip_frag == frag
    assert pkt.ip_proto == 17
    assert (pkt.l4 is not None) == has_l4
    assert pk.l4_checksum_ok(pkt)  # fragments cannot be verified alone


@pytest.mark.parametrize("name", ["lldp", "llc", "ip4_gre"])
def test_unhandled_protocols_are_not_errors(name: str) -> None:
    pkt = parse_packet(CORPUS[name])
    assert pkt.l4 is None
    assert pkt.l4_offset is None
    assert pkt.payload == b""


def test_ethernet_padding_is_outside_the_ip_packet() -> None:
    pkt = parse_packet(CORPUS["udp4_padded"])
    assert len(CORPUS["udp4_padded"]) == 60
    assert pkt.l3_end == len(CORPUS["udp4_short"])
    assert pkt.payload == b"x"
    assert pk.l4_checksum_ok(pkt)


def test_ipv4_header_checksum_is_verified_by_default() -> None:
    frame = bytearray(CORPUS["udp4"])
    frame[14 + 8] -= 1  # TTL
    with pytest.raises(ParseError) as info:
        parse_packet(frame)
    assert info.value.reason is DropReason.BAD_CHECKSUM
    assert parse_packet(frame, verify_checksum=False).ip_ttl == 62


def test_l4_checksum_detects_corruption() -> None:
    for name in ("udp4", "tcp4_vlan", "icmp4", "echo6", "tcp6_ext"):
        frame = bytearray(CORPUS[name])
        frame[-1] ^= 0x01
        assert not pk.l4_checksum_ok(parse_packet(frame)), name


def test_short_l4_inside_ip_length() -> None:
    # IPv4 says 30 bytes: a TCP header cannot fit in the 10 left.
    frame = pk.build_ethernet(VM2, VM1, ETHERTYPE_IPV4, pk.build_ipv4(1, 2, 6, bytes(10)))
    with pytest.raises(ParseError) as info:
        parse_packet(frame + bytes(20))
    assert info.value.reason is DropReason.TRUNCATED_TCP


def test_builders_match_scapy_udp_tcp_icmp() -> None:
    src, dst = ip4("10.0.0.1"), ip4("10.0.0.2")
    udp = pk.build_udp(src, dst, 68, 67, b"dhcp")
    frame = pk.build_ethernet(VM2, VM1, ETHERTYPE_IPV4, pk.build_ipv4(src, dst, 17, udp, ttl=64))
    scapy = (
        Ether(dst=mac_str(VM2), src=mac_str(VM1))
        / IP(src="10.0.0.1", dst="10.0.0.2", flags="DF", ttl=64, id=0)
        / UDP(sport=68, dport=67)
        / Raw(b"dhcp")
    )
    assert frame == bytes(scapy)
    tcp = pk.build_tcp(src, dst, 1, 2, b"data", seq=10, ack=20, flags=0x18, window=512)
    scapy_tcp = (
        IP(src="10.0.0.1", dst="10.0.0.2", flags="DF", tos=4, id=9)
        / TCP(sport=1, dport=2, seq=10, ack=20, flags="PA", window=512)
        / Raw(b"data")
    )
    assert pk.build_ipv4(src, dst, 6, tcp, tos=4, ident=9) == bytes(scapy_tcp)
    icmp = pk.build_icmp(8, 0, b"abc", rest=(1 << 16) | 2)
    assert icmp == bytes(ICMP(type=8, id=1, seq=2) / Raw(b"abc"))


def test_builders_match_scapy_ipv6_vlan_arp() -> None:
    src, dst = ip6("2001:db8::1"), ip6("2001:db8::2")
    echo = pk.build_icmpv6(src, dst, 128, 0, b"\x00\x01\x00\x02hi")
    assert echo == build_echo6(src, dst, 1, 2, b"hi")
    ip = pk.build_ipv6(src, dst, 58, echo, hop_limit=255, flow_label=7)
    frame = pk.build_ethernet(VM2, VM1, ETHERTYPE_IPV6, ip, vlan=100, pcp=5)
    scapy = (
        Ether(dst=mac_str(VM2), src=mac_str(VM1))
        / Dot1Q(vlan=100, prio=5)
        / IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=255, fl=7)
        / ICMPv6EchoRequest(id=1, seq=2, data=b"hi")
    )
    assert frame == bytes(scapy)
    arp = pk.build_ethernet(
        VM2,
        VM1,
        ETHERTYPE_ARP,
        pk.build_arp(2, VM1, ip4("10.0.0.1"), VM2, ip4("10.0.0.2")),
        pad=True,
    )
    scapy_arp = Ether(dst=mac_str(VM2), src=mac_str(VM1)) / ARP(
        op=2, hwsrc=mac_str(VM1), psrc="10.0.0.1", hwdst=mac_str(VM2), pdst="10.0.0.2"
    )
    assert arp == bytes(scapy_arp).ljust(60, b"\0")


@SCAPY
@given(macs, macs, ip6s, ip6s, u16, u16, st.binary(max_size=32))
def test_built_udp6_equals_scapy(
    eth_dst: int, eth_src: int, src: int, dst: int, sport: int, dport: int, data: bytes
) -> None:
    udp = pk.build_udp(src, dst, sport, dport, data, ipv6=True)
    frame = pk.build_ethernet(eth_dst, eth_src, ETHERTYPE_IPV6, pk.build_ipv6(src, dst, 17, udp))
    scapy = (
        Ether(dst=mac_str(eth_dst), src=mac_str(eth_src))
        / IPv6(src=ip6_str(src), dst=ip6_str(dst))
        / UDP(sport=sport, dport=dport)
        / Raw(data)
    )
    assert frame == bytes(scapy)


@FAST
@given(
    macs,
    macs,
    st.none() | st.integers(0, 4095),
    ip4s,
    ip4s,
    u8,
    st.sampled_from([6, 17]),
    u16,
    u16,
    st.integers(0, 0xFF),
    st.binary(max_size=40),
)
def test_parse_of_built_ipv4_frames_gives_back_the_fields(
    eth_dst: int,
    eth_src: int,
    vlan: int | None,
    src: int,
    dst: int,
    ttl: int,
    proto: int,
    sport: int,
    dport: int,
    flags: int,
    data: bytes,
) -> None:
    if proto == 6:
        l4 = pk.build_tcp(src, dst, sport, dport, data, flags=flags)
    else:
        l4 = pk.build_udp(src, dst, sport, dport, data)
    frame = pk.build_ethernet(
        eth_dst,
        eth_src,
        ETHERTYPE_IPV4,
        pk.build_ipv4(src, dst, proto, l4, ttl=ttl),
        vlan=vlan,
        pad=True,
    )
    pkt = parse_packet(frame)
    assert (pkt.eth_dst, pkt.eth_src, pkt.vlan_vid) == (eth_dst, eth_src, vlan)
    assert (pkt.ip_src, pkt.ip_dst, pkt.ip_ttl, pkt.ip_proto) == (src, dst, ttl, proto)
    assert (pkt.l4_sport, pkt.l4_dport) == (sport, dport)
    assert pkt.tcp_flags == (flags if proto == 6 else 0)
    assert pkt.payload == data
    assert pk.l4_checksum_ok(pkt)


@FAST
@given(ip6s, ip6s, u8, u16, u16, st.binary(max_size=40))
def test_parse_of_built_ipv6_frames_gives_back_the_fields(
    src: int, dst: int, hop_limit: int, sport: int, dport: int, data: bytes
) -> None:
    l4 = pk.build_tcp(src, dst, sport, dport, data, ipv6=True)
    frame = pk.build_ethernet(
        VM2, VM1, ETHERTYPE_IPV6, pk.build_ipv6(src, dst, 6, l4, hop_limit=hop_limit)
    )
    pkt = parse_packet(frame)
    assert (pkt.ip_version, pkt.ip_src, pkt.ip_dst, pkt.ip_ttl) == (6, src, dst, hop_limit)
    assert (pkt.l4_sport, pkt.l4_dport, pkt.payload) == (sport, dport, data)
    assert pk.l4_checksum_ok(pkt)


def test_ipv4_addresses_round_trip_through_text() -> None:
    assert ip4_str(parse_packet(CORPUS["udp4"]).ip_src) == "10.0.0.1"
