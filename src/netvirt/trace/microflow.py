"""Turning a microflow description into a frame sent from a logical port.

``netvirt trace --from vm1 'ip4.dst == 8.8.8.8 && tcp.dst == 443'`` names
only what matters; everything else is filled in as the VM's own stack would:
source MAC and IP from the port, destination MAC of the addressed port when
the destination is on-link or of the network's router port otherwise, TCP SYN
for TCP, echo request for ICMP, a DHCPDISCOVER for ``udp.dst == 67``, an ARP
request for ``arp``. Commas separate terms as well as ``&&``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netvirt.dataplane.headers import dhcp, icmp, icmpv6
from netvirt.dataplane.headers.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from netvirt.dataplane.headers.tcp import TCP_SYN
from netvirt.dataplane.packet import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    build_arp,
    build_ethernet,
    build_ipv4,
    build_ipv6,
    build_tcp,
    build_udp,
)
from netvirt.southbound.model import PortBinding, SBState

BROADCAST = 0xFFFFFFFFFFFF
SETTABLE = {
    "eth.src",
    "eth.dst",
    "ip4.src",
    "ip4.dst",
    "ip6.src",
    "ip6.dst",
    "ip.ttl",
    "ip.dscp",
    "tcp.src",
    "tcp.dst",
    "tcp.flags",
    "udp.src",
    "udp.dst",
    "icmp4.type",
    "icmp4.code",
    "icmp6.type",
    "icmp6.code",
    "arp.op",
    "arp.spa",
    "arp.tpa",
    "arp.sha",
    "arp.tha",
}
PROTOCOLS = {"tcp", "udp", "icmp", "icmp4", "icmp6", "arp", "ip4", "ip6"}


class MicroflowError(ValueError):
    """The description cannot be turned into a packet; the message says why."""


@dataclass
class Microflow:
    fields: dict[str, int]
    protocols: set[str]


def parse_microflow(text: str) -> Microflow:
    """``a == v, b == w && c`` → field values and bare protocol names."""
    from netvirt.compiler.expr.ast import And, BoolSym, Cmp, Expr
    from netvirt.compiler.expr.parser import parse_match

    try:
        expr: Expr = parse_match(text.replace(",", " && ")) if text.strip() else And(())
    except Exception as err:  # the parser's own error names the position
        raise MicroflowError(str(err)) from None
    terms = expr.terms if isinstance(expr, And) else (expr,)
    flow = Microflow({}, set())
    for term in terms:
        if isinstance(term, BoolSym) and term.symbol in PROTOCOLS:
            flow.protocols.add(term.symbol)
        elif isinstance(term, Cmp) and term.op == "==" and len(term.values) == 1:
            if term.symbol not in SETTABLE:
                raise MicroflowError(f"cannot set {term.symbol} in a microflow")
            flow.fields[term.symbol] = term.values[0].value
        else:
            raise MicroflowError("a microflow is a list of 'field == value' and protocol names")
    return flow


def _port_ip(
    port: PortBinding, version: int
) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    for cidr in port.ips:
        iface = ipaddress.ip_interface(cidr)
        if iface.version == version:
            return iface
    return None


def _next_hop_mac(sb: SBState, port: PortBinding, dst: int, version: int) -> int:
    """MAC of the port owning ``dst`` on the same network, else of the router port."""
    addr = ipaddress.ip_address(dst)
    own = [i for i in map(ipaddress.ip_interface, port.ips) if i.version == version]
    on_link = any(addr in i.network for i in own)
    for other in sb.ports.values():
        if other.datapath != port.datapath or other.name == port.name:
            continue
        ifaces = [ipaddress.ip_interface(c) for c in other.ips]
        if on_link and any(i.ip == addr for i in ifaces):
            return other.mac
        if (
            not on_link
            and other.type == "patch"
            and any(i.network == o.network for i in ifaces for o in own)
        ):
            return other.mac
    return BROADCAST


def build_frame(sb: SBState, port: PortBinding, flow: Microflow) -> bytes:
    f = flow.fields
    src_mac = f.get("eth.src", port.mac)
    if "arp" in flow.protocols or any(k.startswith("arp.") for k in f):
        v4 = _port_ip(port, 4)
        spa = f.get("arp.spa", int(v4.ip) if v4 else 0)
        arp = build_arp(
            f.get("arp.op", 1),
            f.get("arp.sha", src_mac),
            spa,
            f.get("arp.tha", 0),
            f.get("arp.tpa", 0),
        )
        return build_ethernet(f.get("eth.dst", BROADCAST), src_mac, ETHERTYPE_ARP, arp, pad=True)
    version = (
        6
        if (
            "ip6" in flow.protocols
            or "icmp6" in flow.protocols
            or any(k.startswith(("ip6.", "icmp6.")) for k in f)
        )
        else 4
    )
    own = _port_ip(port, version)
    dhcp_discover = version == 4 and f.get("udp.dst") == 67
    if dhcp_discover:
        src = f.get("ip4.src", 0)
        dst = f.get("ip4.dst", 0xFFFFFFFF)
    else:
        src = f.get(f"ip{version}.src", int(own.ip) if own else 0)
        if f"ip{version}.dst" not in f:
            raise MicroflowError(f"say where the packet goes: ip{version}.dst == …")
        dst = f[f"ip{version}.dst"]
    payload, proto = _l4(flow, version, src, dst, src_mac)
    ttl = f.get("ip.ttl", 64)
    if version == 4:
        ip = build_ipv4(src, dst, proto, payload, ttl=ttl, tos=f.get("ip.dscp", 0) << 2)
        ethertype = ETHERTYPE_IPV4
    else:
        ip = build_ipv6(
            src, dst, proto, payload, hop_limit=ttl, traffic_class=f.get("ip.dscp", 0) << 2
        )
        ethertype = ETHERTYPE_IPV6
    default_dst = BROADCAST if dhcp_discover else _next_hop_mac(sb, port, dst, version)
    return build_ethernet(f.get("eth.dst", default_dst), src_mac, ethertype, ip, pad=True)


def _l4(flow: Microflow, version: int, src: int, dst: int, mac: int) -> tuple[bytes, int]:
    f = flow.fields
    v6 = version == 6
    if "tcp" in flow.protocols or any(k.startswith("tcp.") for k in f):
        seg = build_tcp(
            src,
            dst,
            f.get("tcp.src", 40000),
            f.get("tcp.dst", 80),
            flags=f.get("tcp.flags", TCP_SYN),
            ipv6=v6,
        )
        return seg, IPPROTO_TCP
    if "udp" in flow.protocols or any(k.startswith("udp.") for k in f):
        body = b""
        if f.get("udp.dst") == 67:
            message = dhcp.DhcpMessage(
                op=1,
                xid=0x1234,
                chaddr=mac.to_bytes(6, "big"),
                options=dhcp.DhcpOptions(message_type=1),
                flags=0x8000,
            )
            body = message.pack()
        return build_udp(
            src, dst, f.get("udp.src", 40000), f.get("udp.dst", 53), body, ipv6=v6
        ), IPPROTO_UDP
    if v6:
        itype = f.get("icmp6.type", icmpv6.ICMPV6_ECHO_REQUEST)
        return icmpv6.build_message(
            src, dst, itype, f.get("icmp6.code", 0), b"\0\1\0\1"
        ), IPPROTO_ICMPV6
    itype = f.get("icmp4.type", icmp.ICMP_ECHO_REQUEST)
    body = (
        icmp.IcmpHeader(itype, f.get("icmp4.code", 0), 0, 0x00010001).finalized(b"netvirt").pack()
        + b"netvirt"
    )
    return body, IPPROTO_ICMP
