"""UDP header (RFC 768) with pseudo-header checksums for IPv4 and IPv6.

A computed checksum of zero is sent as 0xFFFF, because zero on the wire means
"no checksum" (RFC 768). Over IPv4 a zero checksum is accepted; over IPv6 it is
invalid (RFC 8200 8.1) except for tunnels that opt in (RFC 6935), a choice left
to the caller of ``checksum_ok``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer, l4_checksum, update16, update32

UDP_HLEN = 8
IPPROTO_UDP = 17

_UDP = struct.Struct("!HHHH")


@dataclass(slots=True)
class UdpHeader:
    """UDP header; ``length`` and ``checksum`` are as given, see ``finalized``."""

    sport: int
    dport: int
    length: int = 0
    checksum: int = 0

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, *, partial: bool = False) -> tuple[UdpHeader, int]:
        """Decode the header; ``buf`` must end where the IP payload ends.

        ``partial`` is for a first fragment: the datagram continues in later
        fragments, so its length may exceed what ``buf`` holds.
        """
        available = len(buf) - offset
        if available < UDP_HLEN:
            raise ParseError(DropReason.TRUNCATED_UDP)
        sport, dport, length, csum = _UDP.unpack_from(buf, offset)
        if length < UDP_HLEN or (length > available and not partial):
            raise ParseError(DropReason.BAD_UDP_LENGTH)
        return cls(sport, dport, length, csum), offset + UDP_HLEN

    def pack(self) -> bytes:
        """Encode exactly as held."""
        return _UDP.pack(self.sport, self.dport, self.length, self.checksum)

    def finalized(self, payload: Buffer, src: int, dst: int, ipv6: bool = False) -> UdpHeader:
        """A copy with the length and checksum for ``payload`` between ``src`` and ``dst``."""
        length = UDP_HLEN + len(payload)
        segment = _UDP.pack(self.sport, self.dport, length, 0) + bytes(payload)
        csum = l4_checksum(src, dst, IPPROTO_UDP, segment, ipv6) or 0xFFFF
        return UdpHeader(self.sport, self.dport, length, csum)


def checksum_ok(segment: Buffer, src: int, dst: int, ipv6: bool = False) -> bool:
    """True when the datagram ``segment`` (header + payload) verifies; see the module note."""
    if len(segment) < UDP_HLEN:
        return False
    if segment[6] == 0 and segment[7] == 0:
        return not ipv6
    return l4_checksum(src, dst, IPPROTO_UDP, segment, ipv6) == 0


def update_checksum16(checksum: int, old: int, new: int) -> int:
    """RFC 1624 update that keeps "no checksum" (0) as is and never produces 0."""
    if checksum == 0:
        return 0
    return update16(checksum, old, new) or 0xFFFF


def update_checksum32(checksum: int, old: int, new: int) -> int:
    """As ``update_checksum16`` for a 32-bit field such as an IPv4 address under NAT."""
    if checksum == 0:
        return 0
    return update32(checksum, old, new) or 0xFFFF
