"""IPv4 and IPv6 codecs (RFC 791, RFC 8200), byte-exact against Scapy."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, IPOption_NOP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.packet import Raw

from dataplane.dp_strategies import (
    FAST,
    SCAPY,
    ip4s,
    ip6s,
    ipv4s,
    ipv6_auth_ext,
    ipv6_fragments,
    ipv6_options_ext,
    ipv6s,
    u8,
)
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers import ipv4
from netvirt.dataplane.headers.addr import ip4_str, ip6, ip6_str
from netvirt.dataplane.headers.ipv4 import Ipv4Header
from netvirt.dataplane.headers.ipv6 import (
    Ipv6Extension,
    Ipv6Fragment,
    Ipv6Header,
    walk_extensions,
)

SCAPY_OPTIONS = [
    [],
    [IPOption_Router_Alert()],
    [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()],
    [IPOption_RR(routers=["10.0.0.1", "10.0.0.2"])],
]


@FAST
@given(ipv4s, st.binary(max_size=64))
def test_ipv4_round_trip(header: Ipv4Header, payload: bytes) -> None:
    header.total_length = header.header_length + len(payload)
    raw = header.pack() + payload
    assert Ipv4Header.parse(raw) == (header, header.header_length)


@SCAPY
@given(
    ip4s,
    ip4s,
    u8,
    st.sampled_from(range(len(SCAPY_OPTIONS))),
    st.integers(0, 7),
    st.integers(0, 0x1FFF),
    st.binary(max_size=40),
)
def test_ipv4_matches_scapy(
    src: int, dst: int, ttl: int, opt: int, flags: int, frag: int, payload: bytes
) -> None:
    pkt = IP(
        src=ip4_str(src),
        dst=ip4_str(dst),
        ttl=ttl,
        tos=0xB8,
        id=0x1234,
        proto=17,
        flags=flags,
        frag=frag,
        options=SCAPY_OPTIONS[opt],
    ) / Raw(payload)
    wire = bytes(pkt)
    options = bytes(wire[20 : (wire[0] & 0xF) * 4])
    ours = Ipv4Header(src, dst, 17, ttl, 0xB8, 0, 0x1234, flags, frag, 0, options)
    assert ours.finalized(len(payload)).pack() + payload == wire
    parsed, offset = Ipv4Header.parse(wire)
    assert parsed == dataclasses.replace(ours, total_length=len(wire), checksum=IP(wire).chksum)
    assert offset == 20 + len(options)
    assert ipv4.checksum_ok(wire, 0, offset)
    assert parsed.dont_fragment == bool(flags & 2)
    assert parsed.is_fragment == bool(flags & 1 or frag)


def test_ipv4_finalized_sets_length_and_checksum() -> None:
    header = Ipv4Header(0x0A000001, 0x0A000002, 6).finalized(100)
    assert header.total_length == 120
    assert ipv4.checksum_ok(header.pack(), 0, 20)
    corrupt = bytearray(header.pack())
    corrupt[8] ^= 1
    assert not ipv4.checksum_ok(corrupt, 0, 20)


def _ipv4_wire(**fields: int) -> bytearray:
    return bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2", **fields) / Raw(b"x" * 8)))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:19], DropReason.TRUNCATED_IPV4),
        (lambda b: bytes([0x65]) + b[1:], DropReason.BAD_IPV4_VERSION),
        (lambda b: bytes([0x44]) + b[1:], DropReason.BAD_IPV4_IHL),
        (lambda b: bytes([0x4F]) + b[1:], DropReason.BAD_IPV4_IHL),
        (lambda b: b[:2] + (19).to_bytes(2, "big") + b[4:], DropReason.BAD_IPV4_TOTAL_LENGTH),
        (lambda b: b[:-1], DropReason.BAD_IPV4_TOTAL_LENGTH),
    ],
)
def test_ipv4_errors(mutate: object, reason: DropReason) -> None:
    wire = bytes(_ipv4_wire())
    with pytest.raises(ParseError) as info:
        Ipv4Header.parse(mutate(wire))  # type: ignore[operator]
    assert info.value.reason is reason


def test_ipv4_ethernet_padding_is_allowed() -> None:
    wire = bytes(_ipv4_wire()) + bytes(10)
    header, _ = Ipv4Header.parse(wire)
    assert header.total_length == len(wire) - 10


@FAST
@given(ipv6s)
def test_ipv6_round_trip(header: Ipv6Header) -> None:
    raw = header.pack() + bytes(header.payload_length)
    assert Ipv6Header.parse(raw) == (header, 40)


@SCAPY
@given(ip6s, ip6s, u8, u8, st.integers(0, 0xFFFFF), st.binary(max_size=40))
def test_ipv6_matches_scapy(
    src: int, dst: int, hlim: int, tclass: int, flow: int, payload: bytes
) -> None:
    pkt = IPv6(src=ip6_str(src), dst=ip6_str(dst), hlim=hlim, tc=tclass, fl=flow, nh=59)
    wire = bytes(pkt / Raw(payload))
    ours = Ipv6Header(src, dst, 59, hlim, tclass, flow, len(payload))
    assert ours.pack() + payload == wire
    assert Ipv6Header.parse(wire) == (ours, 40)


def test_ipv6_extension_walk_matches_scapy() -> None:
    pkt = (
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(addresses=["2001:db8::3"])
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrFragment(offset=0, m=1, id=0xABCDEF01)
        / Raw(b"\x11" * 16)
    )
    wire = bytes(pkt)
    header, offset = Ipv6Header.parse(wire)
    assert header.next_header == 0
    walk = walk_extensions(wire, offset, header.next_header)
    assert [ext.kind for ext in walk.extensions] == [0, 43, 60, 44]
    assert walk.fragment == Ipv6Fragment(59, 0, True, 0xABCDEF01)
    assert walk.proto == 59
    assert walk.offset == len(wire) - 16
    rebuilt = header.pack() + b"".join(ext.pack() for ext in walk.extensions) + b"\x11" * 16
    assert rebuilt == wire


def test_ipv6_later_fragment_stops_the_walk() -> None:
    wire = bytes(
        IPv6(src="::1", dst="::2") / IPv6ExtHdrFragment(nh=6, offset=100, id=9) / Raw(b"y" * 8)
    )
    _, offset = Ipv6Header.parse(wire)
    walk = walk_extensions(wire, offset, 44)
    assert walk.fragment is not None
    assert walk.fragment.offset == 100
    assert walk.proto == 6
    assert walk.offset == 48


@FAST
@given(
    st.lists(st.one_of(ipv6_options_ext, ipv6_auth_ext, ipv6_fragments), max_size=4),
    st.binary(max_size=16),
)
def test_extension_chain_round_trip(chain: list[Ipv6Extension | Ipv6Fragment], tail: bytes) -> None:
    # Link the headers, keep hop-by-hop first and fragments non-final to walk the whole chain.
    chain = [e for i, e in enumerate(chain) if e.kind != 0 or i == 0]
    for ext in chain:
        if isinstance(ext, Ipv6Fragment):
            ext.offset = 0
    kinds = [ext.kind for ext in chain] + [17]
    for ext, following in zip(chain, kinds[1:], strict=True):
        ext.next_header = following
    wire = b"".join(ext.pack() for ext in chain) + tail
    walk = walk_extensions(wire, 0, kinds[0])
    assert list(walk.extensions) == chain
    assert (walk.proto, walk.offset) == (17, len(wire) - len(tail))


def test_ipv6_errors() -> None:
    wire = bytes(IPv6(src="::1", dst="::2", nh=59) / Raw(b"z" * 8))
    cases = [
        (wire[:39], DropReason.TRUNCATED_IPV6),
        (bytes([0x40]) + wire[1:], DropReason.BAD_IPV6_VERSION),
        (wire[:-1], DropReason.TRUNCATED_IPV6),
    ]
    for bad, reason in cases:
        with pytest.raises(ParseError) as info:
            Ipv6Header.parse(bad)
        assert info.value.reason is reason


def test_hop_by_hop_must_come_first() -> None:
    chain = bytes(IPv6ExtHdrDestOpt(nh=0) / IPv6ExtHdrHopByHop(nh=59))
    with pytest.raises(ParseError) as info:
        walk_extensions(chain, 0, 60)
    assert info.value.reason is DropReason.BAD_IPV6_EXTENSION


def test_truncated_extension_header() -> None:
    chain = bytes(IPv6ExtHdrDestOpt(nh=59, len=1))  # claims 16 bytes, has 8
    for size in (1, len(chain)):
        with pytest.raises(ParseError) as info:
            walk_extensions(chain[:size], 0, 60)
        assert info.value.reason is DropReason.TRUNCATED_IPV6


def test_ipv6_address_helpers() -> None:
    assert ip6_str(ip6("2001:DB8::1")) == "2001:db8::1"
