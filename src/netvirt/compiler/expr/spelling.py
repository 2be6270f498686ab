"""Canonical spelling of values, shared by the match printer and the action printer.

Values are spelled by the kind of the symbol or field they belong to, never as
they were written: MACs lowercase with colons, IPv4 dotted, IPv6 compressed
(RFC 5952), masks that are prefixes as ``/len``, other masks in the value's
own form (hex for integers). That makes printed flows a function of the data
alone, which the normalized goldens rely on.
"""

from __future__ import annotations

import ipaddress

from netvirt.compiler.expr.symbols import ValueKind


def prefix_mask(length: int, bits: int) -> int:
    return ((1 << length) - 1) << (bits - length)


def prefix_length(mask: int, bits: int) -> int | None:
    """The prefix length if ``mask`` is a CIDR mask over ``bits`` bits, else None."""
    if mask & ~((1 << bits) - 1):
        return None
    inverted = ~mask & ((1 << bits) - 1)
    if inverted & (inverted + 1):
        return None
    return bits - inverted.bit_length()


def quote(name: str) -> str:
    """A port name as a double-quoted string (``"`` and ``\\`` escaped)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mac_text(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def plain(kind: ValueKind, value: int) -> str:
    if kind == "mac":
        return mac_text(value)
    if kind == "ipv4":
        return str(ipaddress.IPv4Address(value))
    if kind == "ipv6":
        return str(ipaddress.IPv6Address(value))
    if kind == "hex":
        return f"{value:#x}"
    return str(value)


def format_value(kind: ValueKind, value: int, mask: int | None = None) -> str:
    """Canonical spelling of ``value`` (and ``mask``) for a symbol or field of ``kind``."""
    if mask is None:
        return plain(kind, value)
    value &= mask
    if kind in ("ipv4", "ipv6"):
        length = prefix_length(mask, 32 if kind == "ipv4" else 128)
        if length is not None:
            return f"{plain(kind, value)}/{length}"
        if mask < 1 << 16:
            # only low bits masked: flag bits in an address-typed register (reg0)
            return f"{value:#x}/{mask:#x}"
        return f"{plain(kind, value)}/{plain(kind, mask)}"
    if kind == "mac":
        return f"{plain(kind, value)}/{plain(kind, mask)}"
    return f"{plain(kind, value)}/{mask:#x}"
