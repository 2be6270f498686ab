"""Robustness: on any input, codecs and parse_packet raise ParseError and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.dp_strategies import FAST
from dataplane.frames import CORPUS
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers import dhcp, icmpv6
from netvirt.dataplane.headers.arp import ArpHeader
from netvirt.dataplane.headers.ethernet import EthernetHeader
from netvirt.dataplane.headers.geneve import GeneveHeader
from netvirt.dataplane.headers.icmp import IcmpHeader
from netvirt.dataplane.headers.ipv4 import Ipv4Header
from netvirt.dataplane.headers.ipv6 import Ipv6Header, walk_extensions
from netvirt.dataplane.headers.tcp import TcpHeader
from netvirt.dataplane.headers.udp import UdpHeader
from netvirt.dataplane.headers.vxlan import VxlanHeader
from netvirt.dataplane.packet import Packet, parse_packet

CORPUS_NAMES = sorted(CORPUS)
DHCP_PREFIX = dhcp.DhcpMessage(1, 1, bytes(6)).pack()[: dhcp.DHCP_MIN_LEN]

PARSERS: dict[str, Callable[[bytes, int], Any]] = {
    "ethernet": EthernetHeader.parse,
    "arp": ArpHeader.parse,
    "ipv4": Ipv4Header.parse,
    "ipv6": Ipv6Header.parse,
    "ipv6_ext_hbh": lambda b, o: walk_extensions(b, o, 0),
    "ipv6_ext_frag": lambda b, o: walk_extensions(b, o, 44),
    "ipv6_ext_ah": lambda b, o: walk_extensions(b, o, 51),
    "icmp": IcmpHeader.parse,
    "icmpv6": icmpv6.Icmpv6Header.parse,
    "ns": lambda b, o: icmpv6.parse_nd(b, o, 135),
    "na": lambda b, o: icmpv6.parse_nd(b, o, 136),
    "rs": lambda b, o: icmpv6.parse_nd(b, o, 133),
    "ra": lambda b, o: icmpv6.parse_nd(b, o, 134),
    "echo6": icmpv6.echo_fields,
    "udp": UdpHeader.parse,
    "tcp": TcpHeader.parse,
    "dhcp": dhcp.DhcpMessage.parse,
    "dhcp_options": dhcp.DhcpOptions.parse,
    "dhcp_after_cookie": lambda b, o: dhcp.DhcpMessage.parse(DHCP_PREFIX + b, 0),
    "geneve": GeneveHeader.parse,
    "vxlan": VxlanHeader.parse,
}


def _reason(error: ParseError) -> DropReason:
    assert isinstance(error.reason, DropReason)
    assert str(error).startswith(error.reason.value)
    return error.reason


def parse_or_reason(frame: bytes | bytearray, verify: bool = True) -> Packet | DropReason:
    """parse_packet's result, or the reason of its ParseError; anything else fails the test."""
    try:
        packet = parse_packet(frame, verify_checksum=verify)
    except ParseError as error:
        return _reason(error)
    assert 0 < packet.l3_offset <= packet.l3_end <= len(frame)
    if packet.l4_offset is not None:
        assert packet.payload_offset is not None
        assert packet.l3_offset < packet.l4_offset < packet.payload_offset <= packet.l3_end
    return packet


@pytest.mark.parametrize("name", sorted(PARSERS))
@FAST
@given(data=st.binary(max_size=400), offset=st.integers(0, 64))
def test_codecs_only_raise_parse_error(name: str, data: bytes, offset: int) -> None:
    try:
        PARSERS[name](data, min(offset, len(data)))
    except ParseError as error:
        _reason(error)


@FAST
@given(st.binary(max_size=300))
def test_random_frames(frame: bytes) -> None:
    parse_or_reason(frame)


@FAST
@given(
    st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x81\x00", b"\x88\xa8"]),
    st.sampled_from(
        [b"", b"\x45", b"\x46", b"\x60", b"\x00\x0a\x08\x00\x45", b"\x00\x0a\x86\xdd\x60"]
    ),
    st.binary(max_size=200),
    st.booleans(),
)
def test_random_bodies_behind_plausible_headers(
    ethertype: bytes, lead: bytes, body: bytes, verify: bool
) -> None:
    parse_or_reason(bytes(12) + ethertype + lead + body, verify)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_every_truncation_of_valid_frames(name: str) -> None:
    frame = CORPUS[name]
    assert isinstance(parse_or_reason(frame), Packet)
    for size in range(len(frame)):
        result = parse_or_reason(frame[:size])
        if size < 14:
            assert result is DropReason.TRUNCATED_ETHERNET


@FAST
@given(
    st.sampled_from(CORPUS_NAMES),
    st.lists(st.integers(0, 8 * 200), min_size=1, max_size=3),
    st.booleans(),
)
def test_bit_flipped_valid_frames(name: str, bits: list[int], verify: bool) -> None:
    frame = bytearray(CORPUS[name])
    for bit in bits:
        bit %= 8 * len(frame)
        frame[bit // 8] ^= 1 << (bit % 8)
    parse_or_reason(frame, verify)


@FAST
@given(st.sampled_from(CORPUS_NAMES), st.integers(0, 199), st.binary(min_size=1, max_size=4))
def test_overwritten_bytes_in_valid_frames(name: str, position: int, junk: bytes) -> None:
    frame = bytearray(CORPUS[name])
    position %= len(frame)
    frame[position : position + len(junk)] = junk
    parse_or_reason(frame, verify=False)
