"""IPv4 header (RFC 791) with options kept as raw bytes.

Parsing checks what a forwarder must (RFC 1812 5.2.2): version 4, header
length of at least five words and within the buffer, total length covering the
header and not exceeding the buffer (Ethernet padding may follow the packet;
callers cut it using ``total_length``). The header checksum is verified
separately by ``checksum_ok`` so that callers choose when to pay for it.

``flags`` holds the three flag bits (reserved, DF, MF) as on the wire and
``frag_offset`` counts 8-octet units.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer, internet_checksum

IPV4_HLEN = 20
IPV4_MAX_OPTIONS = 40
IP_DF = 0x2
IP_MF = 0x1
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6_ICMP = 58

_IPV4 = struct.Struct("!BBHHHBBHII")


@dataclass(slots=True)
class Ipv4Header:
    """An IPv4 header; ``checksum`` and ``total_length`` are as given, see ``finalized``."""

    src: int
    dst: int
    proto: int
    ttl: int = 64
    tos: int = 0
    total_length: int = 0
    ident: int = 0
    flags: int = 0
    frag_offset: int = 0
    checksum: int = 0
    options: bytes = b""

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[Ipv4Header, int]:
        """Decode the header at ``offset``; returns it and the offset of the payload."""
        available = len(buf) - offset
        if available < IPV4_HLEN:
            raise ParseError(DropReason.TRUNCATED_IPV4)
        vihl, tos, total, ident, frag, ttl, proto, csum, src, dst = _IPV4.unpack_from(buf, offset)
        if vihl >> 4 != 4:
            raise ParseError(DropReason.BAD_IPV4_VERSION)
        hlen = (vihl & 0x0F) * 4
        if hlen < IPV4_HLEN or hlen > available:
            raise ParseError(DropReason.BAD_IPV4_IHL)
        if total < hlen or total > available:
            raise ParseError(DropReason.BAD_IPV4_TOTAL_LENGTH)
        options = bytes(buf[offset + IPV4_HLEN : offset + hlen]) if hlen > IPV4_HLEN else b""
        header = cls(
            src, dst, proto, ttl, tos, total, ident, frag >> 13, frag & 0x1FFF, csum, options
        )
        return header, offset + hlen

    def pack(self) -> bytes:
        """Encode the header exactly as held (no length or checksum computation)."""
        if len(self.options) % 4 or len(self.options) > IPV4_MAX_OPTIONS:
            raise ValueError("IPv4 options must be padded to 4 bytes and at most 40 bytes")
        fixed = _IPV4.pack(
            0x40 | (self.header_length // 4),
            self.tos,
            self.total_length,
            self.ident,
            (self.flags << 13) | self.frag_offset,
            self.ttl,
            self.proto,
            self.checksum,
            self.src,
            self.dst,
        )
        return fixed + self.options

    def finalized(self, payload_length: int) -> Ipv4Header:
        """A copy with ``total_length`` set for ``payload_length`` and a correct checksum."""
        header = dataclasses.replace(
            self, total_length=self.header_length + payload_length, checksum=0
        )
        header.checksum = internet_checksum(header.pack())
        return header

    @property
    def header_length(self) -> int:
        """Header length in bytes (IHL * 4)."""
        return IPV4_HLEN + len(self.options)

    @property
    def dont_fragment(self) -> bool:
        """DF flag."""
        return bool(self.flags & IP_DF)

    @property
    def more_fragments(self) -> bool:
        """MF flag."""
        return bool(self.flags & IP_MF)

    @property
    def is_fragment(self) -> bool:
        """True for any fragment, first included (MF set or non-zero offset)."""
        return bool(self.flags & IP_MF) or self.frag_offset != 0


def checksum_ok(buf: Buffer, offset: int, header_length: int) -> bool:
    """True when the header checksum at ``offset`` verifies (RFC 1071: the sum is all ones)."""
    return internet_checksum(buf[offset : offset + header_length]) == 0
