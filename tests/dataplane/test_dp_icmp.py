"""ICMPv4 (RFC 792) and ICMPv6/ND (RFC 4443, RFC 4861), byte-exact against Scapy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    IPv6,
)
from scapy.packet import Raw

from dataplane.dp_strategies import FAST, SCAPY, icmps, icmpv6s, ip6s, macs, nd_messages, u16
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers import icmp, icmpv6
from netvirt.dataplane.headers.addr import ip6, ip6_str, mac, mac_str
from netvirt.dataplane.headers.icmp import IcmpHeader
from netvirt.dataplane.headers.icmpv6 import Icmpv6Header, NdMessage

SRC6 = ip6("fe80::1")
DST6 = ip6("ff02::1")


def _v6(payload: object) -> bytes:
    """The ICMPv6 bytes Scapy produces between SRC6 and DST6."""
    return bytes(IPv6(src=ip6_str(SRC6), dst=ip6_str(DST6), hlim=255) / payload)[40:]  # type: ignore[operator]


@FAST
@given(icmps)
def test_icmp_round_trip(header: IcmpHeader) -> None:
    assert IcmpHeader.parse(header.pack()) == (header, 8)


@SCAPY
@given(u16, u16, st.binary(max_size=64), st.booleans())
def test_echo_matches_scapy(ident: int, seq: int, data: bytes, reply: bool) -> None:
    wire = bytes(ICMP(type=0 if reply else 8, id=ident, seq=seq) / Raw(data))
    assert icmp.build_echo(ident, seq, data, reply) == wire
    header, offset = IcmpHeader.parse(wire)
    assert (header.ident, header.seq, offset) == (ident, seq, 8)
    assert header.checksum == ICMP(wire).chksum


def test_unreachable_frag_needed_matches_scapy() -> None:
    original = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(b"q" * 30))
    wire = bytes(ICMP(type=3, code=4, nexthopmtu=1400) / Raw(original))
    assert icmp.build_unreachable(icmp.UNREACH_FRAG_NEEDED, original, mtu=1400) == wire
    header, _ = IcmpHeader.parse(wire)
    assert (header.type, header.code, header.mtu) == (3, 4, 1400)


def test_time_exceeded_matches_scapy_and_truncates_quote() -> None:
    original = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / Raw(b"p" * 1000))
    wire = bytes(ICMP(type=11, code=0) / Raw(original[: icmp.ERROR_QUOTE_LIMIT]))
    built = icmp.build_time_exceeded(original)
    assert built == wire
    assert 20 + len(built) == 576  # RFC 1812 4.3.2.3


def test_icmp_truncated() -> None:
    with pytest.raises(ParseError) as info:
        IcmpHeader.parse(b"\x08\x00\x00\x00\x00\x00\x00")
    assert info.value.reason is DropReason.TRUNCATED_ICMP


@FAST
@given(icmpv6s)
def test_icmpv6_header_round_trip(header: Icmpv6Header) -> None:
    assert Icmpv6Header.parse(header.pack()) == (header, 4)


@FAST
@given(nd_messages)
def test_nd_round_trip(message: NdMessage) -> None:
    body = message.pack()
    assert icmpv6.parse_nd(body, 0, message.icmp_type) == message
    wire = icmpv6.build_nd(SRC6, DST6, message)
    header, offset = Icmpv6Header.parse(wire)
    assert header.type == message.icmp_type
    assert icmpv6.parse_nd(wire, offset, header.type) == message


@SCAPY
@given(u16, u16, st.binary(max_size=40), st.booleans())
def test_icmpv6_echo_matches_scapy(ident: int, seq: int, data: bytes, reply: bool) -> None:
    layer = ICMPv6EchoReply if reply else ICMPv6EchoRequest
    wire = _v6(layer(id=ident, seq=seq, data=data))
    assert icmpv6.build_echo(SRC6, DST6, ident, seq, data, reply) == wire
    header, offset = Icmpv6Header.parse(wire)
    assert icmpv6.echo_fields(wire, offset) == (ident, seq)


def test_icmpv6_errors_match_scapy() -> None:
    original = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / Raw(b"o" * 1400))
    too_big = _v6(ICMPv6PacketTooBig(mtu=1280) / Raw(original[: icmpv6.ERROR_QUOTE_LIMIT]))
    built = icmpv6.build_error(SRC6, DST6, icmpv6.ICMPV6_PACKET_TOO_BIG, 0, original, rest=1280)
    assert built == too_big
    assert 40 + len(built) == 1280
    unreach = _v6(ICMPv6DestUnreach(code=4) / Raw(original[:100]))
    assert icmpv6.build_error(SRC6, DST6, 1, 4, original[:100]) == unreach


@SCAPY
@given(ip6s, macs)
def test_neighbor_solicitation_matches_scapy(target: int, lladdr: int) -> None:
    wire = _v6(ICMPv6ND_NS(tgt=ip6_str(target)) / ICMPv6NDOptSrcLLAddr(lladdr=mac_str(lladdr)))
    message = icmpv6.NeighborSolicitation(target, (icmpv6.LinkLayerOption(1, lladdr),))
    assert icmpv6.build_nd(SRC6, DST6, message) == wire
    assert icmpv6.parse_nd(wire, 4, 135) == message


@SCAPY
@given(ip6s, macs, st.booleans(), st.booleans(), st.booleans())
def test_neighbor_advertisement_matches_scapy(
    target: int, lladdr: int, router: bool, solicited: bool, override: bool
) -> None:
    layer = ICMPv6ND_NA(tgt=ip6_str(target), R=int(router), S=int(solicited), O=int(override))
    wire = _v6(layer / ICMPv6NDOptDstLLAddr(lladdr=mac_str(lladdr)))
    flags = (router and icmpv6.NA_ROUTER) | (solicited and icmpv6.NA_SOLICITED)
    flags |= override and icmpv6.NA_OVERRIDE
    message = icmpv6.NeighborAdvertisement(target, flags, (icmpv6.LinkLayerOption(2, lladdr),))
    assert icmpv6.build_nd(SRC6, DST6, message) == wire
    assert icmpv6.parse_nd(wire, 4, 136) == message


def test_router_solicitation_and_advertisement_match_scapy() -> None:
    lladdr = mac("fa:16:3e:00:00:01")
    rs = _v6(ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=mac_str(lladdr)))
    rs_message = icmpv6.RouterSolicitation((icmpv6.LinkLayerOption(1, lladdr),))
    assert icmpv6.build_nd(SRC6, DST6, rs_message) == rs
    ra = _v6(
        ICMPv6ND_RA(
            chlim=64, M=1, O=1, prf=0, routerlifetime=1800, reachabletime=30000, retranstimer=1000
        )
        / ICMPv6NDOptSrcLLAddr(lladdr=mac_str(lladdr))
        / ICMPv6NDOptMTU(mtu=1450)
        / ICMPv6NDOptPrefixInfo(
            prefix="2001:db8:1::", prefixlen=64, validlifetime=86400, preferredlifetime=14400
        )
    )
    ra_message = icmpv6.RouterAdvertisement(
        64,
        icmpv6.RA_MANAGED | icmpv6.RA_OTHER,
        1800,
        30000,
        1000,
        (
            icmpv6.LinkLayerOption(1, lladdr),
            icmpv6.MtuOption(1450),
            icmpv6.PrefixInfoOption(64, ip6("2001:db8:1::"), 0xC0, 86400, 14400),
        ),
    )
    assert icmpv6.build_nd(SRC6, DST6, ra_message) == ra
    assert icmpv6.parse_nd(ra, 4, 134) == ra_message


@pytest.mark.parametrize(
    "options",
    [
        b"\x01\x00" + bytes(6),  # zero length: RFC 4861 4.6 says discard
        b"\x01\x02" + bytes(6),  # runs past the end
        b"\x03\x01" + bytes(6),  # prefix information must be 4 units
        b"\x05\x02" + bytes(14),  # MTU must be 1 unit
        b"\x01",  # no length byte
    ],
)
def test_malformed_nd_options(options: bytes) -> None:
    body = bytes(4) + ip6("fe80::2").to_bytes(16, "big") + options
    with pytest.raises(ParseError) as info:
        icmpv6.parse_nd(body, 0, icmpv6.ND_NEIGHBOR_SOLICIT)
    assert info.value.reason is DropReason.MALFORMED_ND


def test_truncated_nd_and_other_types() -> None:
    with pytest.raises(ParseError) as info:
        icmpv6.parse_nd(bytes(19), 0, icmpv6.ND_NEIGHBOR_ADVERT)
    assert info.value.reason is DropReason.TRUNCATED_ICMPV6
    assert icmpv6.parse_nd(bytes(8), 0, icmpv6.ICMPV6_ECHO_REQUEST) is None
    with pytest.raises(ParseError) as info:
        Icmpv6Header.parse(b"\x80\x00\x00")
    assert info.value.reason is DropReason.TRUNCATED_ICMPV6
