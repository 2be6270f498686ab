"""VXLAN header (RFC 7348 section 5).

Eight bytes: flags with the I bit (0x08) that marks the VNI as valid, 24
reserved bits, the 24-bit VNI and 8 reserved bits. Receivers ignore reserved
bits (RFC 7348 5); a header without the I bit carries no usable VNI and is
rejected. The payload is always an Ethernet frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer

VXLAN_PORT = 4789
VXLAN_HLEN = 8
VXLAN_FLAG_I = 0x08

_HDR = struct.Struct("!B3xI")


@dataclass(slots=True)
class VxlanHeader:
    """VXLAN header; ``flags`` must include the I bit."""

    vni: int
    flags: int = VXLAN_FLAG_I

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[VxlanHeader, int]:
        """Decode the header; returns it and the offset of the inner Ethernet frame."""
        if len(buf) < offset + VXLAN_HLEN:
            raise ParseError(DropReason.MALFORMED_TUNNEL, "VXLAN header")
        flags, word = _HDR.unpack_from(buf, offset)
        if not flags & VXLAN_FLAG_I:
            raise ParseError(DropReason.MALFORMED_TUNNEL, "VXLAN I flag")
        return cls(word >> 8, flags), offset + VXLAN_HLEN

    def pack(self) -> bytes:
        """Encode with reserved fields zero."""
        return _HDR.pack(self.flags, self.vni << 8)
