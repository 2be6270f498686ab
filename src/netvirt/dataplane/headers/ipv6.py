"""IPv6 fixed header and extension-header walk (RFC 8200).

The walk follows hop-by-hop options (0), routing (43), fragment (44),
destination options (60) and the authentication header (51, RFC 4302, whose
length counts 4-octet words) until an upper-layer protocol, ESP (50) or "no
next header" (59). Hop-by-hop is accepted only directly after the fixed header
(RFC 8200 4.1). A non-first fragment has no upper-layer header, so the walk
stops at its fragment header and reports ``fragment.offset != 0``.

Jumbograms (RFC 2675) are not supported: a zero payload length means an empty
payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer

IPV6_HLEN = 40
EXT_HOP_BY_HOP = 0
EXT_ROUTING = 43
EXT_FRAGMENT = 44
EXT_ESP = 50
EXT_AUTH = 51
EXT_NO_NEXT = 59
EXT_DEST_OPTS = 60
OPTION_EXTENSIONS = frozenset({EXT_HOP_BY_HOP, EXT_ROUTING, EXT_DEST_OPTS, EXT_AUTH})

_FIXED = struct.Struct("!IHBB")
_FRAG = struct.Struct("!BBHI")
_EXT = struct.Struct("!BB")


@dataclass(slots=True)
class Ipv6Header:
    """The 40-byte fixed header; ``payload_length`` is as given, see ``finalized``."""

    src: int
    dst: int
    next_header: int
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    payload_length: int = 0

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[Ipv6Header, int]:
        """Decode the fixed header; the payload must fit in ``buf``."""
        if len(buf) < offset + IPV6_HLEN:
            raise ParseError(DropReason.TRUNCATED_IPV6)
        word, plen, next_header, hop_limit = _FIXED.unpack_from(buf, offset)
        if word >> 28 != 6:
            raise ParseError(DropReason.BAD_IPV6_VERSION)
        if len(buf) < offset + IPV6_HLEN + plen:
            raise ParseError(DropReason.TRUNCATED_IPV6, "payload length")
        src = int.from_bytes(buf[offset + 8 : offset + 24], "big")
        dst = int.from_bytes(buf[offset + 24 : offset + 40], "big")
        tclass = (word >> 20) & 0xFF
        header = cls(src, dst, next_header, hop_limit, tclass, word & 0xFFFFF, plen)
        return header, offset + IPV6_HLEN

    def pack(self) -> bytes:
        """Encode the fixed header exactly as held."""
        word = (6 << 28) | (self.traffic_class << 20) | self.flow_label
        fixed = _FIXED.pack(word, self.payload_length, self.next_header, self.hop_limit)
        return fixed + self.src.to_bytes(16, "big") + self.dst.to_bytes(16, "big")

    def finalized(self, payload_length: int) -> Ipv6Header:
        """A copy whose payload length (extension headers included) is ``payload_length``."""
        return Ipv6Header(
            self.src,
            self.dst,
            self.next_header,
            self.hop_limit,
            self.traffic_class,
            self.flow_label,
            payload_length,
        )


@dataclass(slots=True)
class Ipv6Extension:
    """Hop-by-hop, routing, destination options or AH header; ``data`` follows the 2 lead bytes.

    The options inside are kept raw: the data plane forwards them untouched.
    """

    kind: int
    next_header: int
    data: bytes

    @classmethod
    def parse(cls, buf: Buffer, offset: int, kind: int) -> tuple[Ipv6Extension, int]:
        """Decode an extension header of type ``kind`` at ``offset``."""
        if len(buf) < offset + 2:
            raise ParseError(DropReason.TRUNCATED_IPV6, "extension header")
        next_header, units = _EXT.unpack_from(buf, offset)
        size = (units + 2) * 4 if kind == EXT_AUTH else (units + 1) * 8
        if len(buf) < offset + size:
            raise ParseError(DropReason.TRUNCATED_IPV6, "extension header")
        return cls(kind, next_header, bytes(buf[offset + 2 : offset + size])), offset + size

    def pack(self) -> bytes:
        """Encode; ``data`` must make the header a multiple of 8 bytes (4 for AH)."""
        size = len(self.data) + 2
        if self.kind == EXT_AUTH:
            if size % 4 or size < 12:
                raise ValueError("AH length must be a multiple of 4 bytes, at least 12")
            units = size // 4 - 2
        else:
            if size % 8:
                raise ValueError("extension header length must be a multiple of 8 bytes")
            units = size // 8 - 1
        return _EXT.pack(self.next_header, units) + self.data


@dataclass(slots=True)
class Ipv6Fragment:
    """Fragment header (RFC 8200 4.5); ``offset`` counts 8-octet units."""

    next_header: int
    offset: int
    more: bool
    ident: int

    kind: ClassVar[int] = EXT_FRAGMENT

    @classmethod
    def parse(cls, buf: Buffer, offset: int) -> tuple[Ipv6Fragment, int]:
        """Decode the 8-byte fragment header at ``offset``."""
        if len(buf) < offset + 8:
            raise ParseError(DropReason.TRUNCATED_IPV6, "fragment header")
        next_header, _reserved, word, ident = _FRAG.unpack_from(buf, offset)
        return cls(next_header, word >> 3, bool(word & 1), ident), offset + 8

    def pack(self) -> bytes:
        """Encode the 8-byte fragment header."""
        return _FRAG.pack(self.next_header, 0, (self.offset << 3) | int(self.more), self.ident)


@dataclass(slots=True)
class Ipv6Walk:
    """Result of walking the extension chain.

    ``proto`` is the upper-layer protocol (or 50/59), ``offset`` where it
    starts, ``fragment`` the fragment header if any. When
    ``fragment.offset != 0`` there is no upper-layer header in this packet.
    """

    proto: int
    offset: int
    extensions: tuple[Ipv6Extension | Ipv6Fragment, ...] = ()
    fragment: Ipv6Fragment | None = None


def walk_extensions(buf: Buffer, offset: int, next_header: int) -> Ipv6Walk:
    """Follow extension headers from ``offset`` (just after the fixed header) to the upper layer.

    ``buf`` must end where the IPv6 payload ends.
    """
    extensions: list[Ipv6Extension | Ipv6Fragment] = []
    fragment: Ipv6Fragment | None = None
    while True:
        if next_header in OPTION_EXTENSIONS:
            if next_header == EXT_HOP_BY_HOP and extensions:
                raise ParseError(DropReason.BAD_IPV6_EXTENSION, "hop-by-hop not first")
            ext, offset = Ipv6Extension.parse(buf, offset, next_header)
            extensions.append(ext)
            next_header = ext.next_header
        elif next_header == EXT_FRAGMENT:
            fragment, offset = Ipv6Fragment.parse(buf, offset)
            extensions.append(fragment)
            next_header = fragment.next_header
            if fragment.offset:
                break
        else:
            break
    return Ipv6Walk(next_header, offset, tuple(extensions), fragment)
