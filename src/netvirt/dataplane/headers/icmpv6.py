"""ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861).

Every ICMPv6 message starts with type, code and a checksum computed over an
IPv6 pseudo header (RFC 8200 8.1) plus the whole message. ``Icmpv6Header`` is
those 4 bytes; the message body that follows is decoded by the ND message
classes (router/neighbor solicitation and advertisement) or, for echo and
error messages, read by the helpers at the end of this module.

ND options are type, length in 8-octet units, data. Decoded kinds: source and
target link-layer address for Ethernet (1, 2 with length 1), prefix
information (3) and MTU (5); anything else is kept as ``RawOption``. A zero
option length makes the whole message invalid (RFC 4861 4.6), as do prefix
and MTU options of the wrong size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer, l4_checksum

ICMPV6_HLEN = 4
ICMPV6_DEST_UNREACH = 1
ICMPV6_PACKET_TOO_BIG = 2
ICMPV6_TIME_EXCEEDED = 3
ICMPV6_PARAM_PROBLEM = 4
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136

ND_OPT_SOURCE_LL = 1
ND_OPT_TARGET_LL = 2
ND_OPT_PREFIX_INFO = 3
ND_OPT_MTU = 5

NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20
RA_MANAGED = 0x80
RA_OTHER = 0x40
PREFIX_ON_LINK = 0x80
PREFIX_AUTONOMOUS = 0x40

IPPROTO_ICMPV6 = 58
ERROR_QUOTE_LIMIT = 1280 - 40 - 8  # RFC 4443 2.4(c): fit the IPv6 minimum MTU

_HDR = struct.Struct("!BBH")
_PREFIX = struct.Struct("!BBBBIII")
_MTU = struct.Struct("!BBHI")
_RA = struct.Struct("!BBHII")
_LL = struct.Struct("!BBHI")


@dataclass(slots=True)
class Icmpv6Header:
    """Type, code, checksum; ``checksum`` is as given, see ``finalized``."""

    type: int
    code: int = 0
    checksum: int = 0

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[Icmpv6Header, int]:
        """Decode the 4 bytes at ``offset``; returns them and the offset of the body."""
        if len(buf) < offset + ICMPV6_HLEN:
            raise ParseError(DropReason.TRUNCATED_ICMPV6)
        icmp_type, code, csum = _HDR.unpack_from(buf, offset)
        return cls(icmp_type, code, csum), offset + ICMPV6_HLEN

    def pack(self) -> bytes:
        """Encode exactly as held."""
        return _HDR.pack(self.type, self.code, self.checksum)

    def finalized(self, body: Buffer, src: int, dst: int) -> Icmpv6Header:
        """A copy whose checksum is correct for ``body`` sent from ``src`` to ``dst``."""
        message = _HDR.pack(self.type, self.code, 0) + bytes(body)
        csum = l4_checksum(src, dst, IPPROTO_ICMPV6, message, ipv6=True)
        return Icmpv6Header(self.type, self.code, csum)


@dataclass(slots=True)
class LinkLayerOption:
    """Source (1) or target (2) link-layer address option for Ethernet."""

    kind: int
    mac: int

    def pack(self) -> bytes:
        """Encode as one 8-byte unit."""
        return _LL.pack(self.kind, 1, self.mac >> 32, self.mac & 0xFFFFFFFF)


@dataclass(slots=True)
class PrefixInfoOption:
    """Prefix information (RFC 4861 4.6.2); ``flags`` holds L, A (and RFC 6275's R)."""

    prefix_length: int
    prefix: int
    flags: int = PREFIX_ON_LINK | PREFIX_AUTONOMOUS
    valid_lifetime: int = 0xFFFFFFFF
    preferred_lifetime: int = 0xFFFFFFFF

    def pack(self) -> bytes:
        """Encode as four 8-byte units."""
        fixed = _PREFIX.pack(
            ND_OPT_PREFIX_INFO,
            4,
            self.prefix_length,
            self.flags,
            self.valid_lifetime,
            self.preferred_lifetime,
            0,
        )
        return fixed + self.prefix.to_bytes(16, "big")


@dataclass(slots=True)
class MtuOption:
    """Link MTU option (RFC 4861 4.6.4)."""

    mtu: int

    def pack(self) -> bytes:
        """Encode as one 8-byte unit."""
        return _MTU.pack(ND_OPT_MTU, 1, 0, self.mtu)


@dataclass(slots=True)
class RawOption:
    """Any other option; ``data`` excludes type and length and pads the option to 8 bytes."""

    kind: int
    data: bytes

    def pack(self) -> bytes:
        """Encode; the option length must be a non-zero multiple of 8."""
        size = len(self.data) + 2
        if size % 8:
            raise ValueError("ND option length must be a multiple of 8 bytes")
        return bytes((self.kind, size // 8)) + self.data


NdOption = LinkLayerOption | PrefixInfoOption | MtuOption | RawOption


def parse_options(buf: Buffer, offset: int) -> tuple[NdOption, ...]:
    """Decode ND options from ``offset`` to the end of ``buf``."""
    options: list[NdOption] = []
    end = len(buf)
    while offset < end:
        if end - offset < 2:
            raise ParseError(DropReason.MALFORMED_ND, "option header")
        kind, units = buf[offset], buf[offset + 1]
        size = units * 8
        if units == 0 or offset + size > end:
            raise ParseError(DropReason.MALFORMED_ND, "option length")
        options.append(_decode_option(buf, offset, kind, units))
        offset += size
    return tuple(options)


def _decode_option(buf: Buffer, offset: int, kind: int, units: int) -> NdOption:
    """Decode one option whose bounds are already checked."""
    if kind in (ND_OPT_SOURCE_LL, ND_OPT_TARGET_LL) and units == 1:
        _, _, hi, lo = _LL.unpack_from(buf, offset)
        return LinkLayerOption(kind, (hi << 32) | lo)
    if kind == ND_OPT_PREFIX_INFO:
        if units != 4:
            raise ParseError(DropReason.MALFORMED_ND, "prefix information length")
        _, _, plen, flags, valid, preferred, _ = _PREFIX.unpack_from(buf, offset)
        prefix = int.from_bytes(buf[offset + 16 : offset + 32], "big")
        return PrefixInfoOption(plen, prefix, flags, valid, preferred)
    if kind == ND_OPT_MTU:
        if units != 1:
            raise ParseError(DropReason.MALFORMED_ND, "MTU option length")
        return MtuOption(_MTU.unpack_from(buf, offset)[3])
    return RawOption(kind, bytes(buf[offset + 2 : offset + units * 8]))


def pack_options(options: tuple[NdOption, ...]) -> bytes:
    """Encode ND options in order."""
    return b"".join(option.pack() for option in options)


def _address(buf: Buffer, offset: int) -> int:
    return int.from_bytes(buf[offset : offset + 16], "big")


def _need(buf: Buffer, offset: int, size: int) -> None:
    if len(buf) < offset + size:
        raise ParseError(DropReason.TRUNCATED_ICMPV6, "ND message body")


@dataclass(slots=True)
class NeighborSolicitation:
    """NS body (RFC 4861 4.3): reserved word, target address, options."""

    target: int
    options: tuple[NdOption, ...] = ()

    icmp_type: ClassVar[int] = ND_NEIGHBOR_SOLICIT

    @classmethod
    def parse(cls, buf: Buffer, offset: int) -> tuple[NeighborSolicitation, int]:
        """Decode the body at ``offset`` up to the end of ``buf``."""
        _need(buf, offset, 20)
        return cls(_address(buf, offset + 4), parse_options(buf, offset + 20)), len(buf)

    def pack(self) -> bytes:
        """Encode the body (everything after the 4-byte ICMPv6 header)."""
        return bytes(4) + self.target.to_bytes(16, "big") + pack_options(self.options)


@dataclass(slots=True)
class NeighborAdvertisement:
    """NA body (RFC 4861 4.4); ``flags`` holds R/S/O as the top bits of the first byte."""

    target: int
    flags: int = 0
    options: tuple[NdOption, ...] = ()

    icmp_type: ClassVar[int] = ND_NEIGHBOR_ADVERT

    @classmethod
    def parse(cls, buf: Buffer, offset: int) -> tuple[NeighborAdvertisement, int]:
        """Decode the body at ``offset`` up to the end of ``buf``; reserved bits are dropped."""
        _need(buf, offset, 20)
        flags = buf[offset] & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE)
        options = parse_options(buf, offset + 20)
        return cls(_address(buf, offset + 4), flags, options), len(buf)

    def pack(self) -> bytes:
        """Encode the body."""
        head = bytes((self.flags, 0, 0, 0)) + self.target.to_bytes(16, "big")
        return head + pack_options(self.options)


@dataclass(slots=True)
class RouterSolicitation:
    """RS body (RFC 4861 4.1): reserved word and options."""

    options: tuple[NdOption, ...] = ()

    icmp_type: ClassVar[int] = ND_ROUTER_SOLICIT

    @classmethod
    def parse(cls, buf: Buffer, offset: int) -> tuple[RouterSolicitation, int]:
        """Decode the body at ``offset`` up to the end of ``buf``."""
        _need(buf, offset, 4)
        return cls(parse_options(buf, offset + 4)), len(buf)

    def pack(self) -> bytes:
        """Encode the body."""
        return bytes(4) + pack_options(self.options)


@dataclass(slots=True)
class RouterAdvertisement:
    """RA body (RFC 4861 4.2); ``flags`` is the whole M/O/... byte."""

    cur_hop_limit: int = 64
    flags: int = 0
    router_lifetime: int = 1800
    reachable_time: int = 0
    retrans_timer: int = 0
    options: tuple[NdOption, ...] = ()

    icmp_type: ClassVar[int] = ND_ROUTER_ADVERT

    @classmethod
    def parse(cls, buf: Buffer, offset: int) -> tuple[RouterAdvertisement, int]:
        """Decode the body at ``offset`` up to the end of ``buf``."""
        _need(buf, offset, _RA.size)
        hop_limit, flags, lifetime, reachable, retrans = _RA.unpack_from(buf, offset)
        options = parse_options(buf, offset + _RA.size)
        return cls(hop_limit, flags, lifetime, reachable, retrans, options), len(buf)

    def pack(self) -> bytes:
        """Encode the body."""
        fixed = _RA.pack(
            self.cur_hop_limit,
            self.flags,
            self.router_lifetime,
            self.reachable_time,
            self.retrans_timer,
        )
        return fixed + pack_options(self.options)


NdMessage = NeighborSolicitation | NeighborAdvertisement | RouterSolicitation | RouterAdvertisement

_ND_CLASSES: dict[
    int,
    type[NeighborSolicitation]
    | type[NeighborAdvertisement]
    | type[RouterSolicitation]
    | type[RouterAdvertisement],
] = {
    ND_NEIGHBOR_SOLICIT: NeighborSolicitation,
    ND_NEIGHBOR_ADVERT: NeighborAdvertisement,
    ND_ROUTER_SOLICIT: RouterSolicitation,
    ND_ROUTER_ADVERT: RouterAdvertisement,
}


def parse_nd(buf: Buffer, offset: int, icmp_type: int) -> NdMessage | None:
    """Decode the body of an ND message of ``icmp_type``; None for other types."""
    cls = _ND_CLASSES.get(icmp_type)
    if cls is None:
        return None
    return cls.parse(buf, offset)[0]


def build_message(src: int, dst: int, icmp_type: int, code: int, body: Buffer) -> bytes:
    """A complete ICMPv6 message with its checksum over the pseudo header."""
    header = Icmpv6Header(icmp_type, code).finalized(body, src, dst)
    return header.pack() + bytes(body)


def build_nd(src: int, dst: int, message: NdMessage) -> bytes:
    """A complete ND message (code 0) with its checksum."""
    return build_message(src, dst, message.icmp_type, 0, message.pack())


def build_echo(
    src: int, dst: int, ident: int, seq: int, data: bytes = b"", reply: bool = False
) -> bytes:
    """A complete echo request or reply (RFC 4443 4.1, 4.2)."""
    icmp_type = ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST
    body = struct.pack("!HH", ident, seq) + data
    return build_message(src, dst, icmp_type, 0, body)


def build_error(
    src: int, dst: int, icmp_type: int, code: int, original: Buffer, rest: int = 0
) -> bytes:
    """A complete error message quoting as much of ``original`` as fits in 1280 bytes."""
    body = rest.to_bytes(4, "big") + bytes(original[:ERROR_QUOTE_LIMIT])
    return build_message(src, dst, icmp_type, code, body)


def echo_fields(buf: Buffer, offset: int) -> tuple[int, int]:
    """Identifier and sequence number of an echo body at ``offset``."""
    if len(buf) < offset + 4:
        raise ParseError(DropReason.TRUNCATED_ICMPV6, "echo body")
    ident, seq = struct.unpack_from("!HH", buf, offset)
    return ident, seq
