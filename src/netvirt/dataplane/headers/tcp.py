"""TCP header (RFC 9293) with options kept as raw bytes.

The data offset is derived from the options, which must already be padded to
a multiple of 4 bytes (at most 40). The 4 reserved bits between data offset
and flags are kept so that a parsed header packs back unchanged. The
checksum covers an IPv4 or IPv6 pseudo header (RFC 9293 3.1, RFC 8200 8.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer, l4_checksum

TCP_HLEN = 20
TCP_MAX_OPTIONS = 40
IPPROTO_TCP = 6

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80

_TCP = struct.Struct("!HHIIBBHHH")


@dataclass(slots=True)
class TcpHeader:
    """TCP header; ``checksum`` is as given, see ``finalized``."""

    sport: int
    dport: int
    seq: int = 0
    ack: int = 0
    flags: int = 0
    window: int = 0
    checksum: int = 0
    urgent: int = 0
    options: bytes = b""
    reserved: int = 0

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[TcpHeader, int]:
        """Decode the header; returns it and the offset of the payload."""
        available = len(buf) - offset
        if available < TCP_HLEN:
            raise ParseError(DropReason.TRUNCATED_TCP)
        sport, dport, seq, ack, off_res, flags, window, csum, urgent = _TCP.unpack_from(buf, offset)
        hlen = (off_res >> 4) * 4
        if hlen < TCP_HLEN:
            raise ParseError(DropReason.BAD_TCP_OFFSET)
        if hlen > available:
            raise ParseError(DropReason.TRUNCATED_TCP, "options")
        options = bytes(buf[offset + TCP_HLEN : offset + hlen]) if hlen > TCP_HLEN else b""
        header = cls(sport, dport, seq, ack, flags, window, csum, urgent, options, off_res & 0xF)
        return header, offset + hlen

    def pack(self) -> bytes:
        """Encode exactly as held."""
        return self._pack(self.checksum)

    def _pack(self, checksum: int) -> bytes:
        if len(self.options) % 4 or len(self.options) > TCP_MAX_OPTIONS:
            raise ValueError("TCP options must be padded to 4 bytes and at most 40 bytes")
        off_res = ((self.header_length // 4) << 4) | self.reserved
        fixed = _TCP.pack(
            self.sport,
            self.dport,
            self.seq,
            self.ack,
            off_res,
            self.flags,
            self.window,
            checksum,
            self.urgent,
        )
        return fixed + self.options

    def finalized(self, payload: Buffer, src: int, dst: int, ipv6: bool = False) -> TcpHeader:
        """A copy whose checksum is correct for ``payload`` between ``src`` and ``dst``."""
        segment = self._pack(0) + bytes(payload)
        csum = l4_checksum(src, dst, IPPROTO_TCP, segment, ipv6)
        return TcpHeader(
            self.sport,
            self.dport,
            self.seq,
            self.ack,
            self.flags,
            self.window,
            csum,
            self.urgent,
            self.options,
            self.reserved,
        )

    @property
    def header_length(self) -> int:
        """Header length in bytes (data offset * 4)."""
        return TCP_HLEN + len(self.options)


def checksum_ok(segment: Buffer, src: int, dst: int, ipv6: bool = False) -> bool:
    """True when the TCP ``segment`` (header + payload) verifies."""
    return l4_checksum(src, dst, IPPROTO_TCP, segment, ipv6) == 0
