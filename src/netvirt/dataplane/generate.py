"""Packets the datapath builds itself: ICMP errors, ARP/ND requests, DHCP replies,
neighbor and router advertisements.

Each generator takes the packet being processed, its current flow key (after
the pipeline's rewrites so far) and the action's parameters, and returns a new
frame. The pipeline then parses that frame into a fresh key (keeping the
pipeline metadata) and runs the action's nested ``then`` actions on it, which
set addressing and ``output`` it — the same model as OVN's ``icmp4 { … }``.
"""

from __future__ import annotations

from collections.abc import Sequence

from netvirt.dataplane.actions import (
    DhcpOption,
    DhcpReply,
    EmitArpRequest,
    EmitIcmpError,
    NdAdvert,
    RouterAdvert,
)
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.fields import F
from netvirt.dataplane.headers import dhcp, icmp, icmpv6
from netvirt.dataplane.headers.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from netvirt.dataplane.packet import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_UDP,
    Packet,
    build_arp,
    build_ethernet,
    build_ipv4,
    build_ipv6,
    build_udp,
)

BROADCAST_MAC = 0xFFFFFFFFFFFF
BROADCAST_IP = 0xFFFFFFFF
ALL_NODES = 0xFF020000000000000000000000000001
DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68
DHCPDISCOVER, DHCPOFFER, DHCPREQUEST, DHCPACK, DHCPNAK = 1, 2, 3, 5, 6

_ETH_SRC, _ETH_DST = F("eth.src"), F("eth.dst")
_IP4_SRC, _IP4_DST, _IP6_SRC, _IP6_DST = F("ip4.src"), F("ip4.dst"), F("ip6.src"), F("ip6.dst")
_REG0, _REG1, _XREG0 = F("reg0"), F("reg1"), F("xreg0")


def icmp_error(packet: Packet, key: Sequence[int], action: EmitIcmpError) -> bytes:
    """ICMP(v6) error quoting the original IP packet, addressed like the original
    (the nested actions swap/set addresses)."""
    original = bytes(packet.frame[packet.l3_offset : packet.l3_end])
    if packet.ip_version == 4:
        rest = action.mtu & 0xFFFF if action.icmp_type == icmp.ICMP_DEST_UNREACH else 0
        body = icmp.build_error(action.icmp_type, action.icmp_code, original, rest)
        ip = build_ipv4(key[_IP4_SRC], key[_IP4_DST], IPPROTO_ICMP, body, ttl=255, flags=0)
        return build_ethernet(key[_ETH_DST], key[_ETH_SRC], ETHERTYPE_IPV4, ip)
    if packet.ip_version == 6:
        src, dst = key[_IP6_SRC], key[_IP6_DST]
        body = icmpv6.build_error(
            src, dst, action.icmp_type, action.icmp_code, original, action.mtu
        )
        ip = build_ipv6(src, dst, IPPROTO_ICMPV6, body, hop_limit=255)
        return build_ethernet(key[_ETH_DST], key[_ETH_SRC], ETHERTYPE_IPV6, ip)
    raise ParseError(DropReason.EXPLICIT_DROP, "icmp error for a non-IP packet")


def arp_request(key: Sequence[int], _action: EmitArpRequest) -> bytes:
    """ARP request for the next hop in reg0 from the router port address in reg1."""
    arp = build_arp(1, key[_ETH_SRC], key[_REG1], 0, key[_REG0])
    return build_ethernet(BROADCAST_MAC, key[_ETH_SRC], ETHERTYPE_ARP, arp, pad=True)


def neighbor_solicit(key: Sequence[int]) -> bytes:
    """NS for the IPv6 next hop in xreg0, to its solicited-node multicast group."""
    target = key[_XREG0]
    group = 0xFF0200000000000000000001FF000000 | (target & 0xFFFFFF)
    mac = 0x3333FF000000 | (target & 0xFFFFFF)
    message = icmpv6.NeighborSolicitation(
        target, (icmpv6.LinkLayerOption(icmpv6.ND_OPT_SOURCE_LL, key[_ETH_SRC]),)
    )
    src = key[_IP6_SRC]
    body = icmpv6.build_nd(src, group, message)
    return build_ethernet(
        mac,
        key[_ETH_SRC],
        ETHERTYPE_IPV6,
        build_ipv6(src, group, IPPROTO_ICMPV6, body, hop_limit=255),
    )


def dhcp_reply(packet: Packet, action: DhcpReply) -> bytes | None:
    """OFFER for a DISCOVER, ACK (or NAK) for a REQUEST; None for other messages."""
    try:
        request, _ = dhcp.DhcpMessage.parse(packet.payload)
    except ParseError:
        return None
    kind = request.options.message_type
    if kind == DHCPDISCOVER:
        reply_type = DHCPOFFER
    elif kind == DHCPREQUEST:
        wanted = request.options.requested_ip or request.ciaddr
        reply_type = DHCPACK if wanted in (0, action.offer_ip) else DHCPNAK
    else:
        return None
    options = dhcp.DhcpOptions(message_type=reply_type, server_id=action.server_ip)
    if reply_type != DHCPNAK:
        options = _typed_options(action.options)
        options.message_type = reply_type
        options.server_id = action.server_ip
        options.lease_time = action.lease_time
        options.subnet_mask = action.netmask
    reply = dhcp.DhcpMessage(
        op=2,
        xid=request.xid,
        chaddr=request.chaddr,
        options=options,
        flags=request.flags,
        ciaddr=request.ciaddr,
        yiaddr=action.offer_ip if reply_type != DHCPNAK else 0,
        siaddr=action.server_ip if reply_type != DHCPNAK else 0,
        giaddr=request.giaddr,
    )
    payload = reply.pack()
    client_mac = request.client_mac or packet.eth_src
    if request.ciaddr and reply_type == DHCPACK:
        dst_ip, dst_mac = request.ciaddr, client_mac
    elif request.flags & 0x8000 or reply_type == DHCPNAK:
        dst_ip, dst_mac = BROADCAST_IP, BROADCAST_MAC
    else:
        dst_ip, dst_mac = action.offer_ip, client_mac
    udp = build_udp(action.server_ip, dst_ip, DHCP_SERVER_PORT, DHCP_CLIENT_PORT, payload)
    ip = build_ipv4(action.server_ip, dst_ip, IPPROTO_UDP, udp, ttl=64, flags=0)
    return build_ethernet(dst_mac, action.server_mac, ETHERTYPE_IPV4, ip)


def _typed_options(raw: tuple[DhcpOption, ...]) -> dhcp.DhcpOptions:
    """The action carries options in wire encoding; decode them with the codec so
    typed ones (router, DNS, MTU, routes…) land in their fields."""
    blob = b"".join(bytes((o.code, len(o.value))) + o.value for o in raw if len(o.value) < 256)
    try:
        return dhcp.DhcpOptions.parse(blob + bytes((dhcp.OPT_END,)), 0)
    except ParseError:
        return dhcp.DhcpOptions()


def neighbor_advert(packet: Packet, action: NdAdvert) -> bytes:
    """NA answering an NS (solicited, override; router flag for router ports)."""
    flags = icmpv6.NA_SOLICITED | icmpv6.NA_OVERRIDE | (icmpv6.NA_ROUTER if action.router else 0)
    dst = packet.ip_src or ALL_NODES
    if not packet.ip_src:
        flags &= ~icmpv6.NA_SOLICITED
    message = icmpv6.NeighborAdvertisement(
        action.target, flags, (icmpv6.LinkLayerOption(icmpv6.ND_OPT_TARGET_LL, action.mac),)
    )
    body = icmpv6.build_nd(action.target, dst, message)
    ip = build_ipv6(action.target, dst, IPPROTO_ICMPV6, body, hop_limit=255)
    return build_ethernet(packet.eth_src, action.mac, ETHERTYPE_IPV6, ip)


def router_advert(packet: Packet, action: RouterAdvert) -> bytes:
    """RA with source link-layer address, MTU and prefix information options."""
    options: list[icmpv6.NdOption] = [
        icmpv6.LinkLayerOption(icmpv6.ND_OPT_SOURCE_LL, action.mac),
        icmpv6.MtuOption(action.mtu),
    ]
    for prefix, length, flags in action.prefixes:
        options.append(icmpv6.PrefixInfoOption(length, prefix, flags, 2592000, 604800))
    flags = (icmpv6.RA_MANAGED if action.managed else 0) | (icmpv6.RA_OTHER if action.other else 0)
    message = icmpv6.RouterAdvertisement(64, flags, 1800, 0, 0, tuple(options))
    dst = packet.ip_src or ALL_NODES
    body = icmpv6.build_nd(action.src_ip, dst, message)
    ip = build_ipv6(action.src_ip, dst, IPPROTO_ICMPV6, body, hop_limit=255)
    return build_ethernet(packet.eth_src, action.mac, ETHERTYPE_IPV6, ip)
