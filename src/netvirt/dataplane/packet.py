"""A flat, classifier-friendly view of a frame, and builders for well-formed frames.

``parse_packet`` decodes Ethernet (with VLAN tags), then ARP, IPv4 or IPv6
(walking extension headers), then TCP, UDP, ICMP or ICMPv6 (with neighbor
solicitation/advertisement fields), using the codecs in ``headers``. The
result keeps the header objects and copies the fields a classifier matches on
into plain int attributes, in the spirit of Open vSwitch's ``struct flow``.
A field is meaningful only when its prerequisite holds (``arp_*`` when
``eth_type`` is ARP, ``ip_*`` when ``ip_version`` is 4 or 6, ``l4_*`` when
``ip_proto`` is TCP or UDP, ...); otherwise it is 0.

Malformed input raises ``ParseError`` with a ``DropReason``, never anything
else. What is not malformed is not rejected: unknown ethertypes, 802.3 length
frames, unknown IP protocols and non-first fragments parse with the deeper
layers absent; dropping them is the pipeline's policy. The IPv4 header
checksum is verified by default (RFC 1812 5.2.2); L4 checksums are not,
because frames from a TAP with checksum offload carry partial checksums, but
``l4_checksum_ok`` checks them on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers import icmpv6, ipv4, tcp, udp
from netvirt.dataplane.headers.arp import ArpHeader
from netvirt.dataplane.headers.checksum import Buffer, internet_checksum, l4_checksum
from netvirt.dataplane.headers.ethernet import (
    ETH_MIN_FRAME,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    EthernetHeader,
    VlanTag,
)
from netvirt.dataplane.headers.icmp import IcmpHeader
from netvirt.dataplane.headers.icmpv6 import (
    ND_NEIGHBOR_ADVERT,
    ND_NEIGHBOR_SOLICIT,
    ND_OPT_SOURCE_LL,
    ND_OPT_TARGET_LL,
    Icmpv6Header,
    LinkLayerOption,
    NdMessage,
)
from netvirt.dataplane.headers.ipv4 import IP_DF, Ipv4Header
from netvirt.dataplane.headers.ipv6 import Ipv6Header, walk_extensions
from netvirt.dataplane.headers.tcp import TCP_ACK, TcpHeader
from netvirt.dataplane.headers.udp import UdpHeader

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

FRAG_ANY = 1  # the packet is a fragment (first or later)
FRAG_LATER = 2  # a non-first fragment: no L4 header

L3Header = ArpHeader | Ipv4Header | Ipv6Header
L4Header = TcpHeader | UdpHeader | IcmpHeader | Icmpv6Header


@dataclass(slots=True, eq=False)
class Packet:
    """Flat view of one frame; offsets index into ``frame``.

    ``l3_end`` is where the IP packet ends (Ethernet padding may follow);
    ``l4_offset``/``payload_offset`` are None when there is no L4 header.
    """

    frame: Buffer
    eth: EthernetHeader
    eth_dst: int
    eth_src: int
    eth_type: int
    vlan_vid: int | None
    vlan_pcp: int
    l3_offset: int
    l3_end: int
    l3: L3Header | None = None
    arp_op: int = 0
    arp_sha: int = 0
    arp_spa: int = 0
    arp_tha: int = 0
    arp_tpa: int = 0
    ip_version: int = 0
    ip_src: int = 0
    ip_dst: int = 0
    ip_proto: int = 0
    ip_ttl: int = 0
    ip_tos: int = 0
    ip_frag: int = 0
    l4_offset: int | None = None
    payload_offset: int | None = None
    l4: L4Header | None = None
    l4_sport: int = 0
    l4_dport: int = 0
    tcp_flags: int = 0
    icmp_type: int = 0
    icmp_code: int = 0
    nd: NdMessage | None = None
    nd_target: int = 0
    nd_sll: int = 0
    nd_tll: int = 0

    @property
    def payload(self) -> bytes:
        """Bytes after the L4 header up to the end of the IP packet (empty without L4)."""
        if self.payload_offset is None:
            return b""
        return bytes(self.frame[self.payload_offset : self.l3_end])


def parse_packet(frame: Buffer, *, verify_checksum: bool = True) -> Packet:
    """Decode ``frame`` into a ``Packet``; raises only ``ParseError``."""
    eth, offset = EthernetHeader.parse(frame, 0)
    outer = eth.vlans[0] if eth.vlans else None
    packet = Packet(
        frame,
        eth,
        eth.dst,
        eth.src,
        eth.ethertype,
        outer.vid if outer else None,
        outer.pcp if outer else 0,
        offset,
        len(frame),
    )
    if eth.ethertype == ETHERTYPE_IPV4:
        _parse_ipv4(packet, frame, offset, verify_checksum)
    elif eth.ethertype == ETHERTYPE_IPV6:
        _parse_ipv6(packet, frame, offset)
    elif eth.ethertype == ETHERTYPE_ARP:
        _parse_arp(packet, frame, offset)
    return packet


def _parse_arp(packet: Packet, frame: Buffer, offset: int) -> None:
    arp, end = ArpHeader.parse(frame, offset)
    packet.l3 = arp
    packet.l3_end = end
    packet.arp_op = arp.op
    packet.arp_sha, packet.arp_spa = arp.sha, arp.spa
    packet.arp_tha, packet.arp_tpa = arp.tha, arp.tpa


def _parse_ipv4(packet: Packet, frame: Buffer, offset: int, verify: bool) -> None:
    ip, l4_offset = Ipv4Header.parse(frame, offset)
    if verify and not ipv4.checksum_ok(frame, offset, l4_offset - offset):
        raise ParseError(DropReason.BAD_CHECKSUM, "IPv4 header")
    packet.l3 = ip
    packet.l3_end = end = offset + ip.total_length
    packet.ip_version = 4
    packet.ip_src, packet.ip_dst, packet.ip_proto = ip.src, ip.dst, ip.proto
    packet.ip_ttl, packet.ip_tos = ip.ttl, ip.tos
    if ip.frag_offset:
        packet.ip_frag = FRAG_ANY | FRAG_LATER
        return
    if ip.flags & ipv4.IP_MF:
        packet.ip_frag = FRAG_ANY
    _parse_l4(packet, _upto(frame, end), l4_offset)


def _parse_ipv6(packet: Packet, frame: Buffer, offset: int) -> None:
    ip, ext_offset = Ipv6Header.parse(frame, offset)
    packet.l3 = ip
    packet.l3_end = end = ext_offset + ip.payload_length
    view = _upto(frame, end)
    walk = walk_extensions(view, ext_offset, ip.next_header)
    packet.ip_version = 6
    packet.ip_src, packet.ip_dst, packet.ip_proto = ip.src, ip.dst, walk.proto
    packet.ip_ttl, packet.ip_tos = ip.hop_limit, ip.traffic_class
    if walk.fragment is not None:
        packet.ip_frag = FRAG_ANY
        if walk.fragment.offset:
            packet.ip_frag |= FRAG_LATER
            return
    _parse_l4(packet, view, walk.offset)


def _upto(frame: Buffer, end: int) -> Buffer:
    """``frame`` cut at ``end`` without copying, so L4 codecs see the IP payload's end."""
    return frame if end == len(frame) else memoryview(frame)[:end]


def _parse_l4(packet: Packet, view: Buffer, offset: int) -> None:
    proto = packet.ip_proto
    header: L4Header
    if proto == IPPROTO_TCP:
        header, packet.payload_offset = TcpHeader.parse(view, offset)
        packet.l4_sport, packet.l4_dport = header.sport, header.dport
        packet.tcp_flags = header.flags
    elif proto == IPPROTO_UDP:
        partial = bool(packet.ip_frag)
        header, packet.payload_offset = UdpHeader.parse(view, offset, partial=partial)
        packet.l4_sport, packet.l4_dport = header.sport, header.dport
    elif proto == IPPROTO_ICMP and packet.ip_version == 4:
        header, packet.payload_offset = IcmpHeader.parse(view, offset)
        packet.icmp_type, packet.icmp_code = header.type, header.code
    elif proto == IPPROTO_ICMPV6 and packet.ip_version == 6:
        header, packet.payload_offset = Icmpv6Header.parse(view, offset)
        packet.icmp_type, packet.icmp_code = header.type, header.code
        _parse_nd(packet, view, packet.payload_offset)
    else:
        return
    packet.l4 = header
    packet.l4_offset = offset


def _parse_nd(packet: Packet, view: Buffer, offset: int) -> None:
    """Neighbor solicitation/advertisement fields, for ND port security and responders."""
    if packet.icmp_type not in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT):
        return
    message = icmpv6.parse_nd(view, offset, packet.icmp_type)
    if not isinstance(message, icmpv6.NeighborSolicitation | icmpv6.NeighborAdvertisement):
        return
    packet.nd = message
    packet.nd_target = message.target
    for option in message.options:
        if isinstance(option, LinkLayerOption):
            if option.kind == ND_OPT_SOURCE_LL and not packet.nd_sll:
                packet.nd_sll = option.mac
            elif option.kind == ND_OPT_TARGET_LL and not packet.nd_tll:
                packet.nd_tll = option.mac


def l4_checksum_ok(packet: Packet) -> bool:
    """Verify the L4 checksum; True when there is nothing to verify (no L4, fragments).

    For IPv6 with a routing header the pseudo header should use the final
    destination (RFC 8200 8.1); this checks against ``ip_dst`` as received.
    """
    if packet.l4_offset is None or packet.ip_frag:
        return True
    segment = packet.frame[packet.l4_offset : packet.l3_end]
    ipv6 = packet.ip_version == 6
    src, dst = packet.ip_src, packet.ip_dst
    if packet.ip_proto == IPPROTO_UDP:
        return udp.checksum_ok(segment, src, dst, ipv6)
    if packet.ip_proto == IPPROTO_TCP:
        return tcp.checksum_ok(segment, src, dst, ipv6)
    if ipv6:
        return l4_checksum(src, dst, IPPROTO_ICMPV6, segment, ipv6=True) == 0
    return internet_checksum(segment) == 0


# Builders: each returns the bytes of one layer with lengths and checksums filled in.


def build_ethernet(
    dst: int,
    src: int,
    ethertype: int,
    payload: Buffer,
    *,
    vlan: int | None = None,
    pcp: int = 0,
    pad: bool = False,
) -> bytes:
    """An Ethernet frame, optionally 802.1Q tagged and padded to the 60-byte minimum."""
    vlans = (VlanTag(vlan, pcp),) if vlan is not None else ()
    frame = EthernetHeader(dst, src, ethertype, vlans).pack() + bytes(payload)
    if pad and len(frame) < ETH_MIN_FRAME:
        frame = frame.ljust(ETH_MIN_FRAME, b"\0")
    return frame


def build_arp(op: int, sha: int, spa: int, tha: int, tpa: int) -> bytes:
    """An Ethernet/IPv4 ARP packet (without the Ethernet header)."""
    return ArpHeader(op, sha, spa, tha, tpa).pack()


def build_ipv4(
    src: int,
    dst: int,
    proto: int,
    payload: Buffer,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    flags: int = IP_DF,
    options: bytes = b"",
) -> bytes:
    """An IPv4 packet with total length and header checksum."""
    header = Ipv4Header(src, dst, proto, ttl, tos, 0, ident, flags, 0, 0, options)
    return header.finalized(len(payload)).pack() + bytes(payload)


def build_ipv6(
    src: int,
    dst: int,
    next_header: int,
    payload: Buffer,
    *,
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
) -> bytes:
    """An IPv6 packet; ``payload`` includes any extension headers."""
    header = Ipv6Header(src, dst, next_header, hop_limit, traffic_class, flow_label, len(payload))
    return header.pack() + bytes(payload)


def build_udp(
    src: int, dst: int, sport: int, dport: int, payload: Buffer, *, ipv6: bool = False
) -> bytes:
    """A UDP datagram with length and checksum for the given IP addresses."""
    header = UdpHeader(sport, dport).finalized(payload, src, dst, ipv6)
    return header.pack() + bytes(payload)


def build_tcp(
    src: int,
    dst: int,
    sport: int,
    dport: int,
    payload: Buffer = b"",
    *,
    seq: int = 0,
    ack: int = 0,
    flags: int = TCP_ACK,
    window: int = 65535,
    options: bytes = b"",
    ipv6: bool = False,
) -> bytes:
    """A TCP segment with its checksum for the given IP addresses."""
    header = TcpHeader(sport, dport, seq, ack, flags, window, 0, 0, options)
    return header.finalized(payload, src, dst, ipv6).pack() + bytes(payload)


def build_icmp(icmp_type: int, code: int, data: Buffer = b"", rest: int = 0) -> bytes:
    """An ICMPv4 message with its checksum; ``rest`` is the 32-bit rest-of-header word."""
    return IcmpHeader(icmp_type, code, 0, rest).finalized(data).pack() + bytes(data)


def build_icmpv6(src: int, dst: int, icmp_type: int, code: int, body: Buffer) -> bytes:
    """An ICMPv6 message with its checksum over the pseudo header."""
    return icmpv6.build_message(src, dst, icmp_type, code, body)
