"""Text form of DHCPv4 options inside ``dhcp_reply(…, opts={…})``.

Options are bytes in the action (:class:`DhcpOption`), but a golden full of
hex is unreadable, so each option is spelled by what its code carries
(RFC 2132 and RFC 3442): addresses (``3:10.0.0.1``, ``6:{8.8.8.8, 8.8.4.4}``),
integers of the option's fixed width (``26:1450``, ``51:43200``), strings
(``15:"example.org"``) and classless static routes
(``121:{10.1.0.0/16->10.0.0.1, 0.0.0.0/0->10.0.0.254}``). Whatever does not
decode and re-encode to the very same bytes is printed raw (``0x0a0b``),
which any code accepts, so printing then parsing gives back the same bytes.
"""

from __future__ import annotations

import ipaddress

from netvirt.compiler.expr.lexer import Scanner
from netvirt.compiler.expr.spelling import quote
from netvirt.dataplane.actions import DhcpOption

_ADDRESS_CODES = frozenset({1, 3, 4, 5, 6, 7, 9, 28, 41, 42, 44, 45, 48, 49, 54, 65, 69, 150})
_INT_WIDTHS: dict[int, int] = {
    13: 2,  # boot file size
    19: 1,  # IP forwarding
    22: 2,  # max datagram reassembly size
    23: 1,  # default TTL
    24: 4,  # path MTU aging timeout
    26: 2,  # interface MTU
    27: 1,  # all subnets are local
    35: 4,  # ARP cache timeout
    37: 1,  # TCP default TTL
    38: 4,  # TCP keepalive interval
    51: 4,  # lease time
    57: 2,  # max DHCP message size
    58: 4,  # renewal (T1) time
    59: 4,  # rebinding (T2) time
}
_STRING_CODES = frozenset({12, 14, 15, 17, 18, 40, 47, 56, 60, 64, 66, 67})
_ROUTE_CODES = frozenset({121, 249})
_MAX_RAW = 2 + 2 * 255  # "0x" and 255 bytes


# --- printing ---------------------------------------------------------------------------


def _addresses(value: bytes) -> str | None:
    if not value or len(value) % 4:
        return None
    ips = [str(ipaddress.IPv4Address(value[i : i + 4])) for i in range(0, len(value), 4)]
    return ips[0] if len(ips) == 1 else "{" + ", ".join(ips) + "}"


def _routes(value: bytes) -> str | None:
    """RFC 3442: width byte, the significant octets of the destination, the router."""
    out: list[str] = []
    i = 0
    while i < len(value):
        width = value[i]
        octets = (width + 7) // 8
        if width > 32 or i + 1 + octets + 4 > len(value):
            return None
        dest = value[i + 1 : i + 1 + octets].ljust(4, b"\0")
        router = value[i + 1 + octets : i + 5 + octets]
        out.append(f"{ipaddress.IPv4Address(dest)}/{width}->{ipaddress.IPv4Address(router)}")
        i += 5 + octets
    if not out:
        return None
    return out[0] if len(out) == 1 else "{" + ", ".join(out) + "}"


def _typed(code: int, value: bytes) -> str | None:
    if code in _ADDRESS_CODES:
        return _addresses(value)
    if code in _INT_WIDTHS:
        return str(int.from_bytes(value)) if len(value) == _INT_WIDTHS[code] else None
    if code in _STRING_CODES:
        try:
            text = value.decode()
        except UnicodeDecodeError:
            return None
        return quote(text) if text.isprintable() else None
    if code in _ROUTE_CODES:
        return _routes(value)
    return None


def format_option(option: DhcpOption) -> str:
    text = _typed(option.code, option.value)
    if text is None:
        text = "0x" + option.value.hex() if option.value else '""'
    return f"{option.code}:{text}"


def format_options(options: tuple[DhcpOption, ...]) -> str:
    return "{" + ", ".join(format_option(o) for o in options) + "}"


# --- parsing ----------------------------------------------------------------------------


def parse_options(sc: Scanner) -> tuple[DhcpOption, ...]:
    """``{code:value, …}`` (the caller has not consumed the ``{``)."""
    sc.expect("{", "'{'")
    options: list[DhcpOption] = []
    if sc.accept("}"):
        return ()
    while True:
        start = sc.mark()
        code = sc.digits("an option code")
        if code > 255:
            raise sc.error("DHCP option codes are 0..255", start)
        sc.expect(":", "':' after the option code")
        options.append(DhcpOption(code, _option_value(sc, code)))
        if sc.accept("}"):
            return tuple(options)
        sc.expect(",", "',' or '}'")


def _option_value(sc: Scanner, code: int) -> bytes:
    if not sc.accept("{"):
        return _element(sc, code)
    parts = [_element(sc, code)]
    while sc.accept(","):
        parts.append(_element(sc, code))
    sc.expect("}", "',' or '}'")
    return b"".join(parts)


def _element(sc: Scanner, code: int) -> bytes:
    if sc.peek('"'):
        return sc.string().encode()
    token, start = sc.run(_MAX_RAW)
    if token[:2] in ("0x", "0X"):
        digits = token[2:]
        if len(digits) % 2:
            raise sc.error("raw option bytes need an even number of hex digits", start)
        try:
            return bytes.fromhex(digits)
        except ValueError:
            raise sc.error("invalid hex bytes", start) from None
    kind, value = sc.classify(token, start)
    if kind == "ipv4":
        if sc.text.startswith("/", sc.pos):
            sc.pos += 1
            return _route(sc, value)
        return value.to_bytes(4)
    if kind == "int":
        width = _INT_WIDTHS.get(code)
        if width is None:
            raise sc.error(f"option {code} takes no integer (write raw 0x… bytes)", start)
        if value >= 1 << (8 * width):
            raise sc.error(f"option {code} is {width} bytes wide", start)
        return value.to_bytes(width)
    raise sc.error("option values are IPv4 addresses, integers, strings or 0x bytes", start)


def _route(sc: Scanner, dest: int) -> bytes:
    start = sc.mark()
    width = sc.digits("a prefix length")
    if width > 32:
        raise sc.error("prefix length must be 0..32", start)
    sc.expect("->", "'->' and the router")
    token, gw_start = sc.run()
    kind, router = sc.classify(token, gw_start)
    if kind != "ipv4":
        raise sc.error("the router must be an IPv4 address", gw_start)
    octets = (width + 7) // 8
    return bytes([width]) + dest.to_bytes(4)[:octets] + router.to_bytes(4)
