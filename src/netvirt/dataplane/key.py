"""Packet → flow key: copy the parsed fields into the key slots of ``fields.py``."""

from __future__ import annotations

from netvirt.dataplane.fields import F, new_key
from netvirt.dataplane.packet import Packet

_ETH_SRC, _ETH_DST, _ETH_TYPE = F("eth.src"), F("eth.dst"), F("eth.type")
_VLAN_VID, _VLAN_PRESENT = F("vlan.vid"), F("vlan.present")
_ARP = (F("arp.op"), F("arp.spa"), F("arp.tpa"), F("arp.sha"), F("arp.tha"))
_IP_PROTO, _IP_TTL, _IP_DSCP, _IP_ECN, _IP_FRAG = (
    F("ip.proto"),
    F("ip.ttl"),
    F("ip.dscp"),
    F("ip.ecn"),
    F("ip.frag"),
)
_IP4_SRC, _IP4_DST, _IP6_SRC, _IP6_DST = F("ip4.src"), F("ip4.dst"), F("ip6.src"), F("ip6.dst")
_TP_SRC, _TP_DST, _TCP_FLAGS = F("tp.src"), F("tp.dst"), F("tcp.flags")
_ICMP_TYPE, _ICMP_CODE = F("icmp.type"), F("icmp.code")
_ND_TARGET, _ND_SLL, _ND_TLL = F("nd.target"), F("nd.sll"), F("nd.tll")
_METADATA, _INPORT = F("metadata"), F("inport")


_ECHO = {(4, 1): (0, 8), (6, 58): (128, 129)}


def _is_echo(packet: Packet) -> bool:
    types = _ECHO.get((packet.ip_version, packet.ip_proto))
    return (
        types is not None
        and packet.icmp_type in types
        and packet.l4_offset is not None
        and packet.l4_offset + 6 <= packet.l3_end
    )


def extract(packet: Packet, datapath: int = 0, inport: int = 0) -> list[int]:
    """The flow key of ``packet`` entering ``datapath`` on logical port ``inport``."""
    key = new_key()
    key[_METADATA] = datapath
    key[_INPORT] = inport
    key[_ETH_SRC] = packet.eth_src
    key[_ETH_DST] = packet.eth_dst
    key[_ETH_TYPE] = packet.eth_type
    if packet.vlan_vid is not None:
        key[_VLAN_VID] = packet.vlan_vid
        key[_VLAN_PRESENT] = 1
    if packet.arp_op:
        op, spa, tpa, sha, tha = _ARP
        key[op] = packet.arp_op
        key[spa] = packet.arp_spa
        key[tpa] = packet.arp_tpa
        key[sha] = packet.arp_sha
        key[tha] = packet.arp_tha
    if packet.ip_version:
        key[_IP_PROTO] = packet.ip_proto
        key[_IP_TTL] = packet.ip_ttl
        key[_IP_DSCP] = packet.ip_tos >> 2
        key[_IP_ECN] = packet.ip_tos & 3
        key[_IP_FRAG] = packet.ip_frag
        if packet.ip_version == 4:
            key[_IP4_SRC] = packet.ip_src
            key[_IP4_DST] = packet.ip_dst
        else:
            key[_IP6_SRC] = packet.ip_src
            key[_IP6_DST] = packet.ip_dst
        key[_TP_SRC] = packet.l4_sport
        key[_TP_DST] = packet.l4_dport
        key[_TCP_FLAGS] = packet.tcp_flags
        key[_ICMP_TYPE] = packet.icmp_type
        key[_ICMP_CODE] = packet.icmp_code
        if _is_echo(packet):
            # conntrack/NAT treat the echo identifier as the "port" of a ping
            off = packet.l4_offset
            assert off is not None
            key[_TP_SRC] = int.from_bytes(packet.frame[off + 4 : off + 6], "big")
        key[_ND_TARGET] = packet.nd_target
        key[_ND_SLL] = packet.nd_sll
        key[_ND_TLL] = packet.nd_tll
    return key
