"""Text <-> int conversions for MAC, IPv4 and IPv6 addresses.

Codecs keep addresses as ints (cheap to parse with ``struct``, maskable by a
classifier, hashable); these helpers are for configuration, traces and tests.
"""

from __future__ import annotations

import ipaddress

MAC_BROADCAST = 0xFFFF_FFFF_FFFF
MAC_MULTICAST_BIT = 0x0100_0000_0000


def mac(text: str) -> int:
    """Parse ``aa:bb:cc:dd:ee:ff`` (or with ``-``) into a 48-bit int."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"invalid MAC address: {text!r}")
    return int("".join(p.zfill(2) for p in parts), 16)


def mac_str(value: int) -> str:
    """Format a 48-bit int as lowercase ``aa:bb:cc:dd:ee:ff``."""
    raw = value.to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


def is_multicast_mac(value: int) -> bool:
    """True for group addresses (I/G bit set), broadcast included."""
    return bool(value & MAC_MULTICAST_BIT)


def ip4(text: str) -> int:
    """Parse dotted-quad IPv4 text into a 32-bit int."""
    return int(ipaddress.IPv4Address(text))


def ip4_str(value: int) -> str:
    """Format a 32-bit int as dotted-quad text."""
    return str(ipaddress.IPv4Address(value))


def ip6(text: str) -> int:
    """Parse IPv6 text into a 128-bit int."""
    return int(ipaddress.IPv6Address(text))


def ip6_str(value: int) -> str:
    """Format a 128-bit int as compressed IPv6 text."""
    return str(ipaddress.IPv6Address(value))
