"""Geneve encapsulation header and option TLVs (RFC 8926).

Header: version (must be 0) and option length in 4-byte words, the O (OAM)
and C (critical options present) bits, the protocol type of the payload
(0x6558 for Ethernet), a 24-bit VNI, then the options. Each option is class
(16 bits), type (8 bits, the high bit marks it critical: a receiver that does
not understand it must drop the packet, RFC 8926 3.5.1), a 5-bit length in
4-byte words and the data. Reserved bits are written as zero and ignored on
receipt.

netvirt carries the logical ingress and egress port of a packet across hosts in
one critical option of class ``NETVIRT_OPTION_CLASS`` (0x0102), type
``NETVIRT_PORTS_TYPE``: 16-bit ingress port key, 16-bit egress port key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer

GENEVE_PORT = 6081
GENEVE_HLEN = 8
GENEVE_OPTION_HLEN = 4
GENEVE_MAX_OPTIONS_LEN = 63 * 4
GENEVE_MAX_OPTION_DATA = 31 * 4
GENEVE_CRITICAL_TYPE_BIT = 0x80
PROTO_ETHERNET = 0x6558

NETVIRT_OPTION_CLASS = 0x0102
NETVIRT_PORTS_TYPE = 0x80
NETVIRT_PORTS_LEN = 4

_HDR = struct.Struct("!BBHI")
_OPT = struct.Struct("!HBB")
_PORTS = struct.Struct("!HH")


@dataclass(slots=True)
class GeneveOption:
    """One option TLV; ``data`` must be a multiple of 4 bytes, at most 124."""

    opt_class: int
    type: int
    data: bytes = b""

    @property
    def critical(self) -> bool:
        """True when receivers that do not know the option must drop the packet."""
        return bool(self.type & GENEVE_CRITICAL_TYPE_BIT)

    def pack(self) -> bytes:
        """Encode the TLV."""
        if len(self.data) % 4 or len(self.data) > GENEVE_MAX_OPTION_DATA:
            raise ValueError("Geneve option data must be a multiple of 4 bytes, at most 124")
        return _OPT.pack(self.opt_class, self.type, len(self.data) // 4) + self.data


@dataclass(slots=True)
class GeneveHeader:
    """The Geneve header with its options; ``protocol`` is the payload's ethertype."""

    vni: int
    protocol: int = PROTO_ETHERNET
    options: tuple[GeneveOption, ...] = ()
    oam: bool = False
    critical: bool = False

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[GeneveHeader, int]:
        """Decode header and options; returns them and the offset of the payload."""
        if len(buf) < offset + GENEVE_HLEN:
            raise ParseError(DropReason.MALFORMED_TUNNEL, "Geneve header")
        first, bits, protocol, vni_word = _HDR.unpack_from(buf, offset)
        if first >> 6 != 0:
            raise ParseError(DropReason.MALFORMED_TUNNEL, "Geneve version")
        end = offset + GENEVE_HLEN + (first & 0x3F) * 4
        if len(buf) < end:
            raise ParseError(DropReason.MALFORMED_TUNNEL, "Geneve options")
        options = _parse_options(buf, offset + GENEVE_HLEN, end)
        header = cls(vni_word >> 8, protocol, options, bool(bits & 0x80), bool(bits & 0x40))
        return header, end

    def pack(self) -> bytes:
        """Encode header and options."""
        options = b"".join(option.pack() for option in self.options)
        if len(options) > GENEVE_MAX_OPTIONS_LEN:
            raise ValueError("Geneve options exceed 252 bytes")
        bits = (0x80 if self.oam else 0) | (0x40 if self.critical else 0)
        return _HDR.pack(len(options) // 4, bits, self.protocol, self.vni << 8) + options

    def option(self, opt_class: int, opt_type: int) -> GeneveOption | None:
        """The first option of this class and type, if any."""
        for option in self.options:
            if option.opt_class == opt_class and option.type == opt_type:
                return option
        return None


def _parse_options(buf: Buffer, offset: int, end: int) -> tuple[GeneveOption, ...]:
    options: list[GeneveOption] = []
    while offset < end:
        if end - offset < GENEVE_OPTION_HLEN:
            raise ParseError(DropReason.MALFORMED_TUNNEL, "Geneve option header")
        opt_class, opt_type, length = _OPT.unpack_from(buf, offset)
        data_end = offset + GENEVE_OPTION_HLEN + (length & 0x1F) * 4
        if data_end > end:
            raise ParseError(DropReason.MALFORMED_TUNNEL, "Geneve option length")
        data = bytes(buf[offset + GENEVE_OPTION_HLEN : data_end])
        options.append(GeneveOption(opt_class, opt_type, data))
        offset = data_end
    return tuple(options)


def ports_option(ingress: int, egress: int) -> GeneveOption:
    """netvirt's option carrying logical ingress and egress port keys."""
    return GeneveOption(NETVIRT_OPTION_CLASS, NETVIRT_PORTS_TYPE, _PORTS.pack(ingress, egress))


def netvirt_header(vni: int, ingress: int, egress: int) -> GeneveHeader:
    """The header netvirt sends between hosts: Ethernet payload plus the ports option."""
    return GeneveHeader(vni, PROTO_ETHERNET, (ports_option(ingress, egress),), critical=True)


def ports(header: GeneveHeader) -> tuple[int, int] | None:
    """(ingress, egress) logical port keys from netvirt's option; None if absent or malformed."""
    option = header.option(NETVIRT_OPTION_CLASS, NETVIRT_PORTS_TYPE)
    if option is None or len(option.data) != NETVIRT_PORTS_LEN:
        return None
    ingress, egress = _PORTS.unpack(option.data)
    return ingress, egress
