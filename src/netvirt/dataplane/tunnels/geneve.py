"""Geneve tunnel (RFC 8926, UDP 6081) carrying netvirt's logical ports option.

Every packet carries the critical ports option of ``headers/geneve.py``
(ingress and egress logical port keys) so the receiving host knows the
logical egress port without running the pipeline again.

Super-frames cross whole when they fit: if the inner frame has offload
metadata (a TCP super-frame or a seeded checksum, see ``ports/offload.py``)
and the datagram fits the underlay MTU, netvirt adds a second critical
option, class 0x0102 type 0x81, holding the virtio-net header fields
(gso_type, flags, hdr_len, gso_size, csum_start, csum_offset; 12 bytes,
network order). The receiver gives the frame back its ``VnetHdr`` and the
destination TAP takes it as the sender's TAP produced it. With a 1500-byte
underlay a super-frame never fits and is segmented on the sending host; a
9000-byte underlay carries it as smaller super-frames (``offload.split``);
an underlay MTU of 65535 (possible on veths, as in the lab) carries Linux's
largest TCP super-frames (about 65.2 KB) whole, end to end. The option is
critical because a receiver that ignored it would deliver a 64 KB frame
with an unfinished checksum.

A datagram the kernel offload encapsulated (``offload/flows.bpf.c``) carries a
third critical option, class 0x0102 type 0x82 with no data, instead of the
offload option: the kernel cannot tell whether the frame's L4 checksum is
finished or a CHECKSUM_PARTIAL seed (a veth underlay carries the seed across;
a NIC finishes it). The receiver takes a frame with that mark whose TCP/UDP
checksum field holds exactly the pseudo-header seed as needing its checksum
(``VNET_F_NEEDS_CSUM``); finishing a checksum that happened to equal its seed
gives that same checksum back, so the rule never damages a finished frame.

Received packets whose protocol is not Ethernet, with the OAM bit, with a
critical option netvirt does not know, without the ports option, or with an
offload option that does not fit the frame are counted as
``MALFORMED_TUNNEL`` and dropped.
"""

from __future__ import annotations

import struct

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import ones_sum, pseudo_header
from netvirt.dataplane.headers.geneve import (
    GENEVE_PORT,
    NETVIRT_OPTION_CLASS,
    NETVIRT_PORTS_TYPE,
    PROTO_ETHERNET,
    GeneveHeader,
    GeneveOption,
    netvirt_header,
    ports,
)
from netvirt.dataplane.ports.base import (
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    Frame,
    VnetHdr,
)
from netvirt.dataplane.ports.offload import locate
from netvirt.dataplane.tunnels.udp import TunnelPacket, UdpTunnel

NETVIRT_OFFLOAD_TYPE = 0x81
NETVIRT_SEED_TYPE = 0x82  # sent by the kernel offload: the L4 checksum may be a seed
OFFLOAD_OPTION_LEN = 4 + 12
KNOWN_GSO = frozenset({GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4})

_OFFLOAD = struct.Struct("!BBHHHH2x")
_CACHE_LIMIT = 4096


def offload_option(hdr: VnetHdr) -> GeneveOption:
    """netvirt's option carrying a frame's virtio-net header fields."""
    data = _OFFLOAD.pack(
        hdr.gso_type, hdr.flags, hdr.hdr_len, hdr.gso_size, hdr.csum_start, hdr.csum_offset
    )
    return GeneveOption(NETVIRT_OPTION_CLASS, NETVIRT_OFFLOAD_TYPE, data)


def parse_offload(option: GeneveOption, frame_len: int) -> VnetHdr:
    """Decode and sanity-check the offload option against the inner frame."""
    if len(option.data) != _OFFLOAD.size:
        raise ParseError(DropReason.MALFORMED_TUNNEL, "offload option length")
    gso_type, flags, hdr_len, gso_size, start, offset = _OFFLOAD.unpack(option.data)
    hdr = VnetHdr(flags, gso_type, hdr_len, gso_size, start, offset)
    if hdr.gso not in KNOWN_GSO or (hdr.gso != GSO_NONE and gso_size == 0):
        raise ParseError(DropReason.MALFORMED_TUNNEL, "offload option GSO")
    if hdr.needs_csum and (start < 14 or start + offset + 2 > frame_len):
        raise ParseError(DropReason.MALFORMED_TUNNEL, "offload option checksum offsets")
    return hdr


def kernel_header(vni: int, ingress: int, egress: int) -> bytes:
    """The Geneve header the kernel offload sends: netvirt's, plus the seed mark."""
    header = netvirt_header(vni, ingress, egress)
    header.options += (GeneveOption(NETVIRT_OPTION_CLASS, NETVIRT_SEED_TYPE),)
    return header.pack()


def seeded(frame: bytes) -> VnetHdr | None:
    """NEEDS_CSUM metadata for a TCP/UDP frame whose checksum field holds its seed."""
    try:
        lay = locate(frame)
    except ParseError:
        return None
    offset = {6: 16, 17: 6}.get(lay.proto)
    field = lay.l4 + offset if offset is not None else 0
    if offset is None or field + 2 > lay.end:
        return None
    seed = ones_sum(b"", pseudo_header(lay.src, lay.dst, lay.proto, lay.end - lay.l4, lay.ipv6))
    if int.from_bytes(frame[field : field + 2], "big") != seed:
        return None
    return VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, lay.l4, offset)


class GeneveTunnel(UdpTunnel):
    """Geneve endpoint bound to ``(local_ip, 6081)``."""

    default_port = GENEVE_PORT

    def __init__(self, local_ip: str, port: int | None = None, *, underlay_mtu: int = 1500) -> None:
        super().__init__(local_ip, port, underlay_mtu=underlay_mtu)
        self._headers: dict[tuple[int, int, int], bytes] = {}

    @property
    def header_overhead(self) -> int:
        """Geneve base header plus the ports option."""
        return len(self._encap(0, 0, 0))

    def _encap(self, vni: int, ingress: int, egress: int) -> bytes:
        key = (vni, ingress, egress)
        header = self._headers.get(key)
        if header is None:
            if len(self._headers) >= _CACHE_LIMIT:
                self._headers.clear()
            header = netvirt_header(vni, ingress, egress).pack()
            self._headers[key] = header
        return header

    @property
    def offload_room(self) -> int:
        """Largest inner frame that fits with the offload option."""
        return self.max_datagram - self.header_overhead - OFFLOAD_OPTION_LEN

    def _encap_offload(self, vni: int, ingress: int, egress: int, hdr: VnetHdr) -> bytes:
        header = netvirt_header(vni, ingress, egress)
        header.options += (offload_option(hdr),)
        return header.pack()

    def _decap(self, payload: bytes, remote: str) -> TunnelPacket:
        header, offset = GeneveHeader.parse(payload)
        if header.protocol != PROTO_ETHERNET or header.oam:
            raise ParseError(DropReason.MALFORMED_TUNNEL, "not an Ethernet payload")
        known = {NETVIRT_PORTS_TYPE, NETVIRT_OFFLOAD_TYPE, NETVIRT_SEED_TYPE}
        for option in header.options:
            if option.critical and not (
                option.opt_class == NETVIRT_OPTION_CLASS and option.type in known
            ):
                raise ParseError(DropReason.MALFORMED_TUNNEL, "unknown critical option")
        keys = ports(header)
        if keys is None:
            raise ParseError(DropReason.MALFORMED_TUNNEL, "no ports option")
        data = payload[offset:]
        vnet: VnetHdr | None = None
        extra = header.option(NETVIRT_OPTION_CLASS, NETVIRT_OFFLOAD_TYPE)
        if extra is not None:
            vnet = parse_offload(extra, len(data))
        elif header.option(NETVIRT_OPTION_CLASS, NETVIRT_SEED_TYPE) is not None:
            vnet = seeded(data)
        return TunnelPacket(remote, header.vni, keys[0], keys[1], Frame(data, vnet))
