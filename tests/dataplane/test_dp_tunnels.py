"""Geneve (RFC 8926) and VXLAN (RFC 7348) headers, byte-exact against Scapy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from dataplane.dp_strategies import FAST, SCAPY, geneves, vxlans
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers import geneve
from netvirt.dataplane.headers.geneve import GeneveHeader, GeneveOption
from netvirt.dataplane.headers.vxlan import VxlanHeader

INNER = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02", type=0x0800))


@FAST
@given(geneves)
def test_geneve_round_trip(header: GeneveHeader) -> None:
    raw = header.pack()
    assert GeneveHeader.parse(raw + INNER) == (header, len(raw))


@SCAPY
@given(geneves)
def test_geneve_matches_scapy(header: GeneveHeader) -> None:
    scapy = GENEVE(
        vni=header.vni,
        proto=header.protocol,
        oam=int(header.oam),
        critical=int(header.critical),
        options=[
            GeneveOptions(classid=o.opt_class, type=o.type, data=o.data) for o in header.options
        ],
    )
    assert header.pack() == bytes(scapy)
    assert GeneveHeader.parse(bytes(scapy)) == (header, len(bytes(scapy)))


def test_netvirt_ports_option() -> None:
    header = geneve.netvirt_header(0x00ABCD, ingress=7, egress=0x1234)
    wire = header.pack() + INNER
    parsed, offset = GeneveHeader.parse(wire)
    assert wire[offset:] == INNER
    assert geneve.ports(parsed) == (7, 0x1234)
    option = parsed.option(geneve.NETVIRT_OPTION_CLASS, geneve.NETVIRT_PORTS_TYPE)
    assert option is not None
    assert option.critical
    assert parsed.critical
    assert parsed.protocol == geneve.PROTO_ETHERNET
    scapy = GENEVE(
        vni=0xABCD,
        proto=0x6558,
        critical=1,
        options=[GeneveOptions(classid=0x0102, type=0x80, data=b"\x00\x07\x12\x34")],
    )
    assert header.pack() == bytes(scapy)


def test_ports_absent_or_malformed() -> None:
    assert geneve.ports(GeneveHeader(1)) is None
    odd = GeneveHeader(1, options=(GeneveOption(0x0102, 0x80, bytes(8)),))
    assert geneve.ports(odd) is None


@pytest.mark.parametrize(
    "wire",
    [
        b"\x00\x00\x65\x58\x00\x00\x01",  # short header
        b"\x40\x00\x65\x58\x00\x00\x01\x00",  # version 1
        b"\x01\x00\x65\x58\x00\x00\x01\x00",  # one option word missing
        b"\x01\x00\x65\x58\x00\x00\x01\x00\x01\x02\x80\x01",  # option data beyond options
        b"\x02\x00\x65\x58\x00\x00\x01\x00\x01\x02\x80\x00\x01\x02",  # option header cut
    ],
)
def test_geneve_malformed(wire: bytes) -> None:
    with pytest.raises(ParseError) as info:
        GeneveHeader.parse(wire)
    assert info.value.reason is DropReason.MALFORMED_TUNNEL


@FAST
@given(vxlans)
def test_vxlan_round_trip(header: VxlanHeader) -> None:
    assert VxlanHeader.parse(header.pack()) == (header, 8)


@SCAPY
@given(st.integers(0, 0xFFFFFF))
def test_vxlan_matches_scapy(vni: int) -> None:
    scapy = bytes(VXLAN(vni=vni, flags=0x08) / INNER)
    assert VxlanHeader(vni).pack() + INNER == scapy
    assert VxlanHeader.parse(scapy) == (VxlanHeader(vni), 8)


def test_vxlan_malformed() -> None:
    for wire in (bytes(7), bytes(8)):  # short; I flag clear
        with pytest.raises(ParseError) as info:
            VxlanHeader.parse(wire)
        assert info.value.reason is DropReason.MALFORMED_TUNNEL
