"""Named reasons for every packet the data plane drops, and the parse error that carries one.

One enum is shared by the header codecs, the drop action, the counters, the
datapath trace and the API, so a drop counted on a host can be explained with
the same word everywhere. Values are stable lowercase strings: they appear in
counters and API responses, so renaming a member is a breaking change, adding
one is not.
"""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    """Why a packet was dropped; ``description`` gives a one-line explanation."""

    # Malformed input found by the header codecs.
    TRUNCATED_ETHERNET = "truncated_ethernet"
    TRUNCATED_ARP = "truncated_arp"
    MALFORMED_ARP = "malformed_arp"
    TRUNCATED_IPV4 = "truncated_ipv4"
    BAD_IPV4_VERSION = "bad_ipv4_version"
    BAD_IPV4_IHL = "bad_ipv4_ihl"
    BAD_IPV4_TOTAL_LENGTH = "bad_ipv4_total_length"
    TRUNCATED_IPV6 = "truncated_ipv6"
    BAD_IPV6_VERSION = "bad_ipv6_version"
    BAD_IPV6_EXTENSION = "bad_ipv6_extension"
    TRUNCATED_TCP = "truncated_tcp"
    BAD_TCP_OFFSET = "bad_tcp_offset"
    TRUNCATED_UDP = "truncated_udp"
    BAD_UDP_LENGTH = "bad_udp_length"
    TRUNCATED_ICMP = "truncated_icmp"
    TRUNCATED_ICMPV6 = "truncated_icmpv6"
    MALFORMED_ND = "malformed_nd"
    TRUNCATED_DHCP = "truncated_dhcp"
    BAD_DHCP_COOKIE = "bad_dhcp_cookie"
    MALFORMED_DHCP = "malformed_dhcp"
    BAD_CHECKSUM = "bad_checksum"
    MALFORMED_TUNNEL = "malformed_tunnel"
    UNKNOWN_ETHERTYPE = "unknown_ethertype"
    # Forwarding decisions.
    TTL_EXPIRED = "ttl_expired"
    NO_ROUTE = "no_route"
    MTU_EXCEEDED = "mtu_exceeded"
    UNKNOWN_PORT = "unknown_port"
    PORT_DOWN = "port_down"
    UNKNOWN_VNI = "unknown_vni"
    LOOP_LIMIT = "loop_limit"
    NO_GATEWAY = "no_gateway"
    # Policy.
    ACL_DENY = "acl_deny"
    PORT_SECURITY_MAC = "port_security_mac"
    PORT_SECURITY_IP = "port_security_ip"
    ARP_SPOOF = "arp_spoof"
    ND_SPOOF = "nd_spoof"
    INVALID_CT_STATE = "invalid_ct_state"
    NO_LB_BACKEND = "no_lb_backend"
    QOS_POLICED = "qos_policed"
    STATE_UNAVAILABLE = "state_unavailable"
    STATE_BACKLOG = "state_backlog"
    INTERNAL_ERROR = "internal_error"
    EXPLICIT_DROP = "explicit_drop"

    @property
    def description(self) -> str:
        """A one-line explanation for traces and API responses."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[DropReason, str] = {
    DropReason.TRUNCATED_ETHERNET: "frame shorter than its Ethernet/802.1Q header",
    DropReason.TRUNCATED_ARP: "ARP packet shorter than 28 bytes",
    DropReason.MALFORMED_ARP: "ARP not for Ethernet/IPv4 (RFC 826 hardware/protocol fields)",
    DropReason.TRUNCATED_IPV4: "IPv4 header cut short",
    DropReason.BAD_IPV4_VERSION: "IPv4 ethertype but version field is not 4",
    DropReason.BAD_IPV4_IHL: "IPv4 header length below 20 bytes or beyond the packet",
    DropReason.BAD_IPV4_TOTAL_LENGTH: "IPv4 total length smaller than the header or the frame",
    DropReason.TRUNCATED_IPV6: "IPv6 header or payload cut short",
    DropReason.BAD_IPV6_VERSION: "IPv6 ethertype but version field is not 6",
    DropReason.BAD_IPV6_EXTENSION: "IPv6 extension header chain is malformed",
    DropReason.TRUNCATED_TCP: "TCP header cut short",
    DropReason.BAD_TCP_OFFSET: "TCP data offset below 5 words",
    DropReason.TRUNCATED_UDP: "UDP header cut short",
    DropReason.BAD_UDP_LENGTH: "UDP length below 8 or beyond the IP payload",
    DropReason.TRUNCATED_ICMP: "ICMP header cut short",
    DropReason.TRUNCATED_ICMPV6: "ICMPv6 message cut short",
    DropReason.MALFORMED_ND: "neighbor discovery message or option is malformed (RFC 4861)",
    DropReason.TRUNCATED_DHCP: "DHCP/BOOTP message cut short",
    DropReason.BAD_DHCP_COOKIE: "BOOTP message without the DHCP magic cookie",
    DropReason.MALFORMED_DHCP: "DHCP option with an invalid length or value",
    DropReason.BAD_CHECKSUM: "header checksum does not verify",
    DropReason.MALFORMED_TUNNEL: "Geneve/VXLAN header is malformed or cut short",
    DropReason.UNKNOWN_ETHERTYPE: "ethertype the pipeline does not handle",
    DropReason.TTL_EXPIRED: "IPv4 TTL or IPv6 hop limit reached zero while routing",
    DropReason.NO_ROUTE: "no route to the destination",
    DropReason.MTU_EXCEEDED: "packet larger than the egress MTU and may not be fragmented",
    DropReason.UNKNOWN_PORT: "ingress or egress logical port is not known here",
    DropReason.PORT_DOWN: "logical port is administratively or operationally down",
    DropReason.UNKNOWN_VNI: "tunnel VNI maps to no local datapath",
    DropReason.LOOP_LIMIT: "pipeline recursion or resubmit limit reached",
    DropReason.NO_GATEWAY: "no live gateway chassis serves the external network (localnet port)",
    DropReason.ACL_DENY: "denied by a security group or ACL",
    DropReason.PORT_SECURITY_MAC: "source MAC not allowed on the port",
    DropReason.PORT_SECURITY_IP: "source IP not allowed on the port",
    DropReason.ARP_SPOOF: "ARP sender address not allowed on the port",
    DropReason.ND_SPOOF: "neighbor discovery target or link-layer address not allowed",
    DropReason.INVALID_CT_STATE: "connection tracking marked the packet invalid",
    DropReason.NO_LB_BACKEND: "load balancer VIP has no healthy member",
    DropReason.QOS_POLICED: "dropped by a QoS rate limit",
    DropReason.STATE_UNAVAILABLE: "the connection state store could not be reached (fail closed)",
    DropReason.STATE_BACKLOG: "too many packets of one connection waiting for the state store",
    DropReason.INTERNAL_ERROR: "the datapath failed on the packet (a bug: see its log)",
    DropReason.EXPLICIT_DROP: "a flow asked for the drop with no more specific reason",
}


class ParseError(Exception):
    """Raised by every codec for malformed input; carries the drop reason.

    Codecs raise nothing else for any input bytes, so the pipeline needs one
    ``except ParseError`` to count and trace a malformed packet.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
