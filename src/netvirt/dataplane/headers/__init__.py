"""Packet header codecs, one small module per protocol, each citing its RFC.

Every header is a slots dataclass with ``parse(buf, offset) -> (header,
next_offset)`` and ``pack() -> bytes``. Addresses are ints (MAC 48-bit, IPv4
32-bit, IPv6 128-bit) so that classifiers can mask them; ``addr`` converts to
and from text. Malformed input raises only ``ParseError`` with a
``DropReason``. See docs/dataplane-headers.md.
"""

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer

__all__ = ["Buffer", "DropReason", "ParseError"]
