"""Ethernet II header with stacked IEEE 802.1Q / 802.1ad VLAN tags.

Frame layout: destination MAC, source MAC, then zero or more 4-byte tags
(TPID, TCI = PCP:3 DEI:1 VID:12), then the ethertype of the payload (IEEE
802.3 clause 3, IEEE 802.1Q-2018 clause 9). The FCS is not part of frames
seen by software and is not handled. Values below 0x0600 are 802.3 lengths,
not ethertypes; the codec passes them through and leaves the policy to the
pipeline.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer

ETH_HLEN = 14
VLAN_HLEN = 4
ETH_MIN_FRAME = 60  # without FCS; shorter frames are padded by the sender

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_QINQ = 0x88A8
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging: Ethernet inside Geneve
ETHERTYPE_MIN = 0x0600  # below this the field is an 802.3 length

VLAN_TPIDS = frozenset({ETHERTYPE_VLAN, ETHERTYPE_QINQ, 0x9100})

_ETH = struct.Struct("!HIHIH")
_TAG = struct.Struct("!HH")


@dataclass(slots=True)
class VlanTag:
    """One 802.1Q tag; ``tpid`` 0x8100 (C-tag) or 0x88A8 (S-tag)."""

    vid: int
    pcp: int = 0
    dei: int = 0
    tpid: int = ETHERTYPE_VLAN

    @property
    def tci(self) -> int:
        """Tag control information as on the wire."""
        return (self.pcp << 13) | (self.dei << 12) | self.vid


@dataclass(slots=True)
class EthernetHeader:
    """Ethernet II header; ``vlans`` lists tags outermost first, ``ethertype`` is the inner one."""

    dst: int
    src: int
    ethertype: int
    vlans: tuple[VlanTag, ...] = ()

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[EthernetHeader, int]:
        """Decode the header at ``offset``; returns it and the offset of the payload."""
        if len(buf) < offset + ETH_HLEN:
            raise ParseError(DropReason.TRUNCATED_ETHERNET)
        dst_hi, dst_lo, src_hi, src_lo, ethertype = _ETH.unpack_from(buf, offset)
        offset += ETH_HLEN
        vlans: tuple[VlanTag, ...] = ()
        while ethertype in VLAN_TPIDS:
            if len(buf) < offset + VLAN_HLEN:
                raise ParseError(DropReason.TRUNCATED_ETHERNET, "VLAN tag")
            tci, inner = _TAG.unpack_from(buf, offset)
            vlans += (VlanTag(tci & 0x0FFF, tci >> 13, (tci >> 12) & 1, ethertype),)
            ethertype = inner
            offset += VLAN_HLEN
        header = cls((dst_hi << 32) | dst_lo, (src_hi << 32) | src_lo, ethertype, vlans)
        return header, offset

    def pack(self) -> bytes:
        """Encode the header with its tags."""
        parts = [self.dst.to_bytes(6, "big"), self.src.to_bytes(6, "big")]
        parts.extend(_TAG.pack(tag.tpid, tag.tci) for tag in self.vlans)
        parts.append(self.ethertype.to_bytes(2, "big"))
        return b"".join(parts)

    @property
    def length(self) -> int:
        """Header length on the wire."""
        return ETH_HLEN + VLAN_HLEN * len(self.vlans)
