"""DHCPv4 messages (RFC 2131) and the options netvirt's DHCP responder uses (RFC 2132).

A message is the 236-byte BOOTP fixed part (RFC 951), the magic cookie
99.130.83.99 and options. Options decoded into typed fields: subnet mask (1),
router (3), DNS servers (6), host name (12), domain name (15), interface MTU
(26), requested IP (50), lease time (51), message type (53), server id (54),
parameter request list (55) and classless static routes (121, RFC 3442).
Every other option is kept raw in ``DhcpOptions.other``.

Encoding writes the message type first (some clients expect it) and then the
typed options in code order, then ``other`` in the order given; values longer
than 255 bytes are split and the decoder concatenates repeated codes (RFC
3396). Text options are decoded as Latin-1, which maps bytes one to one, so
odd host names survive a round trip. Option overload (52) is not interpreted:
``sname`` and ``file`` stay opaque. Minimum BOOTP length padding (RFC 1542) is
left to the sender.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import Buffer

DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
MAGIC_COOKIE = 0x63825363
BOOTP_FIXED_LEN = 236
DHCP_MIN_LEN = BOOTP_FIXED_LEN + 4
BOOTREQUEST = 1
BOOTREPLY = 2
FLAG_BROADCAST = 0x8000

DHCPDISCOVER = 1
DHCPOFFER = 2
DHCPREQUEST = 3
DHCPDECLINE = 4
DHCPACK = 5
DHCPNAK = 6
DHCPRELEASE = 7
DHCPINFORM = 8

OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN_NAME = 15
OPT_MTU = 26
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAM_REQUEST = 55
OPT_CLASSLESS_ROUTES = 121
OPT_END = 255

_FIXED = struct.Struct("!BBBBIHHIIII")


class ClasslessRoute(NamedTuple):
    """One RFC 3442 route: destination prefix (int), its length, next-hop router."""

    prefix: int
    prefix_len: int
    router: int


@dataclass(slots=True)
class DhcpOptions:
    """Typed view of the options; None or an empty tuple means absent."""

    message_type: int | None = None
    subnet_mask: int | None = None
    routers: tuple[int, ...] = ()
    dns_servers: tuple[int, ...] = ()
    hostname: str | None = None
    domain_name: str | None = None
    mtu: int | None = None
    requested_ip: int | None = None
    lease_time: int | None = None
    server_id: int | None = None
    parameter_request_list: tuple[int, ...] = ()
    classless_routes: tuple[ClasslessRoute, ...] = ()
    other: tuple[tuple[int, bytes], ...] = ()

    @classmethod
    def parse(cls, buf: Buffer, offset: int) -> DhcpOptions:
        """Decode options from ``offset`` to the End option or the end of ``buf``."""
        raw = _collect(buf, offset)
        values: dict[str, Any] = {}
        for name, (code, kind) in _TYPED.items():
            data = raw.pop(code, None)
            if data is not None:
                values[name] = kind.decode(bytes(data))
        values["other"] = tuple((code, bytes(data)) for code, data in raw.items())
        return cls(**values)

    def pack(self) -> bytes:
        """Encode the options followed by End."""
        parts: list[bytes] = []
        if self.message_type is not None:
            parts.append(_option(OPT_MESSAGE_TYPE, _U8.encode(self.message_type)))
        for name, (code, kind) in _TYPED.items():
            value = getattr(self, name)
            if code != OPT_MESSAGE_TYPE and value is not None and value != ():
                parts.append(_option(code, kind.encode(value)))
        for code, data in self.other:
            if code in _TYPED_CODES or not 0 < code < OPT_END:
                raise ValueError(f"option {code} cannot be given as raw bytes")
            parts.append(_option(code, data))
        parts.append(bytes((OPT_END,)))
        return b"".join(parts)


def _collect(buf: Buffer, offset: int) -> dict[int, bytearray]:
    """Option code -> value, with repeated codes concatenated (RFC 3396)."""
    raw: dict[int, bytearray] = {}
    end = len(buf)
    while offset < end:
        code = buf[offset]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            offset += 1
            continue
        if offset + 2 > end or offset + 2 + buf[offset + 1] > end:
            raise ParseError(DropReason.TRUNCATED_DHCP, f"option {code}")
        size = buf[offset + 1]
        raw.setdefault(code, bytearray()).extend(buf[offset + 2 : offset + 2 + size])
        offset += 2 + size
    return raw


def _option(code: int, data: bytes) -> bytes:
    """Encode one option, split into 255-byte pieces when longer (RFC 3396)."""
    if not data:
        return bytes((code, 0))
    chunks = (data[i : i + 255] for i in range(0, len(data), 255))
    return b"".join(bytes((code, len(chunk))) + chunk for chunk in chunks)


def _malformed(what: str) -> ParseError:
    return ParseError(DropReason.MALFORMED_DHCP, what)


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one option value is decoded and encoded."""

    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]


def _fixed_int(size: int, minimum: int = 0) -> _Kind:
    def decode(data: bytes) -> int:
        if len(data) != size:
            raise _malformed(f"{size}-byte option has {len(data)} bytes")
        value = int.from_bytes(data, "big")
        if value < minimum:
            raise _malformed(f"value below {minimum}")
        return value

    return _Kind(decode, lambda value: int(value).to_bytes(size, "big"))


def _decode_ips(data: bytes) -> tuple[int, ...]:
    if len(data) % 4:
        raise _malformed("address list length")
    return tuple(int.from_bytes(data[i : i + 4], "big") for i in range(0, len(data), 4))


def _encode_ips(values: tuple[int, ...]) -> bytes:
    return b"".join(value.to_bytes(4, "big") for value in values)


def _decode_routes(data: bytes) -> tuple[ClasslessRoute, ...]:
    """RFC 3442: width, significant octets of the destination, router."""
    routes: list[ClasslessRoute] = []
    i = 0
    while i < len(data):
        width = data[i]
        octets = (width + 7) // 8
        if width > 32 or i + 1 + octets + 4 > len(data):
            raise _malformed("classless static route")
        dest = int.from_bytes(data[i + 1 : i + 1 + octets], "big") << (8 * (4 - octets))
        router = int.from_bytes(data[i + 1 + octets : i + 5 + octets], "big")
        routes.append(ClasslessRoute(dest, width, router))
        i += 5 + octets
    return tuple(routes)


def _encode_routes(routes: tuple[ClasslessRoute, ...]) -> bytes:
    parts: list[bytes] = []
    for prefix, width, router in routes:
        octets = (width + 7) // 8
        dest = (prefix >> (8 * (4 - octets))).to_bytes(octets, "big") if octets else b""
        parts.append(bytes((width,)) + dest + router.to_bytes(4, "big"))
    return b"".join(parts)


_U8 = _fixed_int(1)
_IP = _fixed_int(4)
_IPS = _Kind(_decode_ips, _encode_ips)
_TEXT = _Kind(lambda data: data.decode("latin-1"), lambda value: value.encode("latin-1"))
_CODES = _Kind(tuple, bytes)
_ROUTES = _Kind(_decode_routes, _encode_routes)

_TYPED: dict[str, tuple[int, _Kind]] = {
    "subnet_mask": (OPT_SUBNET_MASK, _IP),
    "routers": (OPT_ROUTER, _IPS),
    "dns_servers": (OPT_DNS, _IPS),
    "hostname": (OPT_HOSTNAME, _TEXT),
    "domain_name": (OPT_DOMAIN_NAME, _TEXT),
    "mtu": (OPT_MTU, _fixed_int(2, minimum=68)),
    "requested_ip": (OPT_REQUESTED_IP, _IP),
    "lease_time": (OPT_LEASE_TIME, _fixed_int(4)),
    "message_type": (OPT_MESSAGE_TYPE, _U8),
    "server_id": (OPT_SERVER_ID, _IP),
    "parameter_request_list": (OPT_PARAM_REQUEST, _CODES),
    "classless_routes": (OPT_CLASSLESS_ROUTES, _ROUTES),
}
_TYPED_CODES = frozenset(code for code, _ in _TYPED.values())
assert set(_TYPED) == {f.name for f in fields(DhcpOptions)} - {"other"}


@dataclass(slots=True)
class DhcpMessage:
    """A DHCP message: BOOTP fixed fields and options.

    ``chaddr`` holds ``hlen`` bytes (6 for Ethernet); ``sname`` and ``file``
    are stored without their trailing NUL padding.
    """

    op: int
    xid: int
    chaddr: bytes
    options: DhcpOptions = field(default_factory=DhcpOptions)
    htype: int = 1
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: int = 0
    yiaddr: int = 0
    siaddr: int = 0
    giaddr: int = 0
    sname: bytes = b""
    file: bytes = b""

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0) -> tuple[DhcpMessage, int]:
        """Decode a message that runs to the end of ``buf`` (the UDP payload)."""
        if len(buf) < offset + DHCP_MIN_LEN:
            raise ParseError(DropReason.TRUNCATED_DHCP)
        op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr = (
            _FIXED.unpack_from(buf, offset)
        )
        if hlen > 16:
            raise _malformed("hardware address length")
        if int.from_bytes(buf[offset + 236 : offset + 240], "big") != MAGIC_COOKIE:
            raise ParseError(DropReason.BAD_DHCP_COOKIE)
        chaddr = bytes(buf[offset + 28 : offset + 28 + hlen])
        sname = bytes(buf[offset + 44 : offset + 108]).rstrip(b"\0")
        bootfile = bytes(buf[offset + 108 : offset + 236]).rstrip(b"\0")
        options = DhcpOptions.parse(buf, offset + DHCP_MIN_LEN)
        message = cls(
            op=op,
            xid=xid,
            chaddr=chaddr,
            options=options,
            htype=htype,
            hops=hops,
            secs=secs,
            flags=flags,
            ciaddr=ciaddr,
            yiaddr=yiaddr,
            siaddr=siaddr,
            giaddr=giaddr,
            sname=sname,
            file=bootfile,
        )
        return message, len(buf)

    def pack(self) -> bytes:
        """Encode fixed part, cookie and options."""
        if len(self.chaddr) > 16 or len(self.sname) > 64 or len(self.file) > 128:
            raise ValueError("chaddr, sname or file too long")
        fixed = _FIXED.pack(
            self.op,
            self.htype,
            len(self.chaddr),
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr,
            self.yiaddr,
            self.siaddr,
            self.giaddr,
        )
        return b"".join(
            (
                fixed,
                self.chaddr.ljust(16, b"\0"),
                self.sname.ljust(64, b"\0"),
                self.file.ljust(128, b"\0"),
                MAGIC_COOKIE.to_bytes(4, "big"),
                self.options.pack(),
            )
        )

    @property
    def client_mac(self) -> int | None:
        """The client's MAC as an int for Ethernet hardware addresses, else None."""
        if self.htype != 1 or len(self.chaddr) != 6:
            return None
        return int.from_bytes(self.chaddr, "big")
