"""Ethernet/802.1Q and ARP codecs, byte-exact against Scapy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from dataplane.dp_strategies import FAST, SCAPY, arps, ethernets, macs, u16
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.addr import ip4, ip4_str, mac, mac_str
from netvirt.dataplane.headers.arp import ARP_REPLY, ARP_REQUEST, ArpHeader
from netvirt.dataplane.headers.ethernet import EthernetHeader, VlanTag


@FAST
@given(ethernets)
def test_ethernet_round_trip(header: EthernetHeader) -> None:
    raw = header.pack()
    assert len(raw) == header.length
    assert EthernetHeader.parse(raw + b"payload") == (header, header.length)


@SCAPY
@given(macs, macs, u16.filter(lambda t: t >= 0x0600 and t not in (0x8100, 0x88A8, 0x9100)))
def test_ethernet_matches_scapy(dst: int, src: int, ethertype: int) -> None:
    pkt = Ether(dst=mac_str(dst), src=mac_str(src), type=ethertype)
    ours = EthernetHeader(dst, src, ethertype)
    assert ours.pack() == bytes(pkt)
    assert EthernetHeader.parse(bytes(pkt)) == (ours, 14)


@SCAPY
@given(st.integers(0, 4095), st.integers(0, 7), st.integers(0, 1))
def test_single_tag_matches_scapy(vid: int, pcp: int, dei: int) -> None:
    pkt = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / Dot1Q(
        vlan=vid, prio=pcp, dei=dei, type=0x0800
    )
    ours = EthernetHeader(mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"), 0x0800)
    ours.vlans = (VlanTag(vid, pcp, dei),)
    assert ours.pack() == bytes(pkt)
    parsed, offset = EthernetHeader.parse(bytes(pkt))
    assert parsed == ours
    assert offset == 18


def test_qinq_tags_outermost_first() -> None:
    pkt = (
        Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:02")
        / Dot1AD(vlan=100)
        / Dot1Q(vlan=7, prio=5, type=0x86DD)
    )
    parsed, offset = EthernetHeader.parse(bytes(pkt))
    assert offset == 22
    assert parsed.ethertype == 0x86DD
    assert parsed.vlans == (VlanTag(100, 0, 0, 0x88A8), VlanTag(7, 5, 0, 0x8100))
    assert parsed.pack() == bytes(pkt)


@pytest.mark.parametrize("size", [0, 1, 13, 14 + 3])
def test_ethernet_truncation(size: int) -> None:
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / Dot1Q(vlan=1))
    with pytest.raises(ParseError) as info:
        EthernetHeader.parse(frame[:size])
    assert info.value.reason is DropReason.TRUNCATED_ETHERNET


@FAST
@given(arps)
def test_arp_round_trip(header: ArpHeader) -> None:
    assert ArpHeader.parse(header.pack()) == (header, 28)


@SCAPY
@given(st.sampled_from([ARP_REQUEST, ARP_REPLY]), macs, st.integers(0, 2**32 - 1), macs)
def test_arp_matches_scapy(op: int, sha: int, spa: int, tha: int) -> None:
    tpa = ip4("10.0.0.254")
    pkt = ARP(op=op, hwsrc=mac_str(sha), psrc=ip4_str(spa), hwdst=mac_str(tha), pdst=ip4_str(tpa))
    ours = ArpHeader(op, sha, spa, tha, tpa)
    assert ours.pack() == bytes(pkt)
    assert ArpHeader.parse(bytes(pkt)) == (ours, 28)


def test_arp_rejects_non_ethernet_ipv4() -> None:
    raw = bytes(ARP(hwtype=6, psrc="10.0.0.1", pdst="10.0.0.2"))
    with pytest.raises(ParseError) as info:
        ArpHeader.parse(raw)
    assert info.value.reason is DropReason.MALFORMED_ARP
    valid = bytes(ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
    with pytest.raises(ParseError) as info:
        ArpHeader.parse(valid[:27])
    assert info.value.reason is DropReason.TRUNCATED_ARP


def test_address_helpers_round_trip() -> None:
    assert mac_str(mac("02:AB:cd:00:00:0f")) == "02:ab:cd:00:00:0f"
    assert mac("2-0-0-0-0-1") == 0x020000000001
    with pytest.raises(ValueError, match="invalid MAC"):
        mac("02:00:00:00:00")
