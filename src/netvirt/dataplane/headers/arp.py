"""ARP for IPv4 over Ethernet (RFC 826).

Only hardware type 1 (Ethernet, 6-byte addresses) and protocol type 0x0800
(IPv4, 4-byte addresses) are accepted: that is the only combination a virtual
switch answers or forwards, and fixing the sizes lets one ``struct`` call decode
the whole packet. Anything else is ``MALFORMED_ARP``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer

ARP_LEN = 28
ARP_HTYPE_ETHERNET = 1
ARP_PTYPE_IPV4 = 0x0800
ARP_REQUEST = 1
ARP_REPLY = 2

_ARP = struct.Struct("!HHBBHHIIHII")
_FIXED = struct.Struct("!HHBB")
_ETHER_IPV4 = (ARP_HTYPE_ETHERNET, ARP_PTYPE_IPV4, 6, 4)


@dataclass(slots=True)
class ArpHeader:
    """An Ethernet/IPv4 ARP packet: operation, sender and target addresses."""

    op: int
    sha: int
    spa: int
    tha: int
    tpa: int

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[ArpHeader, int]:
        """Decode the 28-byte packet at ``offset``; returns it and the offset after it."""
        if len(buf) < offset + ARP_LEN:
            if len(buf) >= offset + 6 and _FIXED.unpack_from(buf, offset) != _ETHER_IPV4:
                raise ParseError(DropReason.MALFORMED_ARP)
            raise ParseError(DropReason.TRUNCATED_ARP)
        htype, ptype, hlen, plen, op, sha_hi, sha_lo, spa, tha_hi, tha_lo, tpa = _ARP.unpack_from(
            buf, offset
        )
        if (htype, ptype, hlen, plen) != _ETHER_IPV4:
            raise ParseError(DropReason.MALFORMED_ARP)
        header = cls(op, (sha_hi << 32) | sha_lo, spa, (tha_hi << 32) | tha_lo, tpa)
        return header, offset + ARP_LEN

    def pack(self) -> bytes:
        """Encode the 28-byte packet."""
        return _ARP.pack(
            ARP_HTYPE_ETHERNET,
            ARP_PTYPE_IPV4,
            6,
            4,
            self.op,
            self.sha >> 32,
            self.sha & 0xFFFFFFFF,
            self.spa,
            self.tha >> 32,
            self.tha & 0xFFFFFFFF,
            self.tpa,
        )
