"""ICMP for IPv4 (RFC 792): echo, destination unreachable, time exceeded.

All ICMPv4 messages share an 8-byte header: type, code, checksum and a
32-bit "rest of header" whose meaning depends on the type (echo identifier and
sequence number, the next-hop MTU of "fragmentation needed" from RFC 1191, a
parameter-problem pointer). ``rest`` keeps it as one int with typed accessors.
The checksum covers the whole ICMP message, without a pseudo header.

Error messages quote the offending IP header and as much of its payload as
fits in 576 bytes in total (RFC 1812 4.3.2.3; RFC 792 asked for 64 bits).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer, internet_checksum

ICMP_HLEN = 8
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAM_PROBLEM = 12

UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_FRAG_NEEDED = 4
UNREACH_ADMIN_PROHIBITED = 13
TIME_EXCEEDED_TTL = 0
TIME_EXCEEDED_REASSEMBLY = 1

ERROR_QUOTE_LIMIT = 576 - 20 - ICMP_HLEN

_ICMP = struct.Struct("!BBHI")


@dataclass(slots=True)
class IcmpHeader:
    """The 8-byte ICMPv4 header; ``checksum`` is as given, see ``finalized``."""

    type: int
    code: int = 0
    checksum: int = 0
    rest: int = 0

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[IcmpHeader, int]:
        """Decode the header at ``offset``; returns it and the offset of the message data."""
        if len(buf) < offset + ICMP_HLEN:
            raise ParseError(DropReason.TRUNCATED_ICMP)
        icmp_type, code, csum, rest = _ICMP.unpack_from(buf, offset)
        return cls(icmp_type, code, csum, rest), offset + ICMP_HLEN

    def pack(self) -> bytes:
        """Encode the header exactly as held."""
        return _ICMP.pack(self.type, self.code, self.checksum, self.rest)

    def finalized(self, data: Buffer) -> IcmpHeader:
        """A copy whose checksum is correct for this header followed by ``data``."""
        raw = _ICMP.pack(self.type, self.code, 0, self.rest)
        csum = internet_checksum(raw + bytes(data))
        return IcmpHeader(self.type, self.code, csum, self.rest)

    @classmethod
    def echo(cls, ident: int, seq: int, reply: bool = False) -> IcmpHeader:
        """An echo request (or reply) header."""
        return cls(ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST, 0, 0, (ident << 16) | seq)

    @property
    def ident(self) -> int:
        """Echo identifier."""
        return self.rest >> 16

    @property
    def seq(self) -> int:
        """Echo sequence number."""
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """Next-hop MTU of "fragmentation needed" (RFC 1191)."""
        return self.rest & 0xFFFF


def build_echo(ident: int, seq: int, data: bytes = b"", reply: bool = False) -> bytes:
    """A complete echo request or reply message with its checksum."""
    return IcmpHeader.echo(ident, seq, reply).finalized(data).pack() + data


def build_error(icmp_type: int, code: int, original: Buffer, rest: int = 0) -> bytes:
    """A complete error message quoting ``original`` (an IP packet), truncated per RFC 1812."""
    quote = bytes(original[:ERROR_QUOTE_LIMIT])
    return IcmpHeader(icmp_type, code, 0, rest).finalized(quote).pack() + quote


def build_unreachable(code: int, original: Buffer, mtu: int = 0) -> bytes:
    """Destination unreachable; ``mtu`` is the next-hop MTU for code 4 (RFC 1191)."""
    return build_error(ICMP_DEST_UNREACH, code, original, mtu & 0xFFFF)


def build_time_exceeded(original: Buffer, code: int = TIME_EXCEEDED_TTL) -> bytes:
    """Time exceeded, by default "TTL exceeded in transit"."""
    return build_error(ICMP_TIME_EXCEEDED, code, original)
