"""DHCPv4 server and IPv6 router advertisements (``ls_in_dhcp_rsp``).

DHCPv4: each VM port with an IPv4 fixed IP on a subnet with ``enable_dhcp``
gets one flow (100) matching its DHCP client messages (from its MAC, from
0.0.0.0 or its address, to the broadcast or the server address, udp 68 → 67).
The ``dhcp_reply`` action answers DISCOVER with OFFER and REQUEST with ACK (or
NAK for another address), then the reply goes back out of the inport. The
first IPv4 fixed IP of a port is the one offered.

Per subnet:

* server address: the subnet's gateway IP; a subnet without gateway uses the
  first address of its first allocation pool (Neutron would allocate a DHCP
  port; this address is still free unless a VM was given it explicitly);
* server MAC: ``0a:58:`` + the network's VNI in 4 bytes, stable and never a
  port's MAC (port MACs use ``fa:16:3e``);
* options: netmask (1), router (3) if there is a gateway, DNS (6) from
  ``dns_nameservers`` (IPv4 ones; none when empty), domain name (15) from the
  network's ``dns_domain``, MTU (26) from the network, lease 43200 s, and
  classless static routes (121, RFC 3442) when the subnet has host routes:
  the host routes plus the default route via the gateway, since a client that
  gets option 121 ignores option 3 (RFC 3442 section 3).

The reply enters the egress pipeline of the client's port, whose security
groups would drop it as a new inbound connection: the builder allows it in
``ls_out_acl`` (2000) by the server's MAC and address, which no VM can spoof
through port security.

IPv6: a router solicitation (``nd_rs``) from a VM port on a network with IPv6
subnets that have an ``ipv6_ra_mode`` and a router interface is answered with
a router advertisement from the router port's MAC and link-local address:
prefix with on-link + autonomous flags for ``slaac``/``dhcpv6-stateless``,
on-link only and the managed flag for ``dhcpv6-stateful``, the other-config
flag for ``dhcpv6-stateless``. Left out: unsolicited periodic RAs and the
DHCPv6 server itself (stateful/stateless DHCPv6 requests go unanswered).
"""

from __future__ import annotations

import ipaddress
from functools import partial

from netvirt.compiler.build import (
    LPort,
    Switch,
    add_defaults,
    inport_in,
    ip_value,
    link_local,
    mac_value,
    per_port,
    port_provenance,
    reply_to_sender,
    switches,
)
from netvirt.compiler.expr.ast import BoolSym, Cmp, Value, conj
from netvirt.compiler.lflow import FlowSink, Provenance
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.dataplane.actions import DhcpOption, DhcpReply, Next, RouterAdvert
from netvirt.southbound.model import SBState

BUILDER = "dhcp"
LEASE_TIME = 43200
SERVER_MAC_BASE = 0x0A58_0000_0000
PREFIX_ON_LINK, PREFIX_AUTONOMOUS = 0x80, 0x40
OPT_ROUTER, OPT_DNS, OPT_DOMAIN, OPT_MTU, OPT_ROUTES = 3, 6, 15, 26, 121


def build(nb: NBSnapshot, sb: SBState, sink: FlowSink) -> None:
    for switch in switches(nb, sb):
        subnets = {s["id"]: s for s in switch.subnets}
        served = [s for s in switch.subnets if s["ip_version"] == 4 and s.get("enable_dhcp")]
        for subnet in served:
            _allow_reply(switch, subnet, sink)
        inputs = (switch.key, switch.net, switch.subnets)  # all _port reads of the switch
        for port in switch.vifs():
            emit = partial(_port, switch, port, subnets, sink)
            per_port(sink, BUILDER, switch, port, inputs, emit)
        _router_adverts(switch, sink)
        add_defaults(sink, switch, BUILDER, {"ls_in_dhcp_rsp": (Next(),)})


def _port(switch: Switch, port: LPort, subnets: dict[str, Obj], sink: FlowSink) -> None:
    chosen = _dhcp_subnet(port, subnets)
    if chosen is not None:
        _dhcpv4(switch, port, chosen, sink)


def server_mac(vni: int) -> int:
    return SERVER_MAC_BASE | (vni & 0xFFFFFFFF)


def server_ip(subnet: Obj) -> str:
    if subnet.get("gateway_ip"):
        return str(subnet["gateway_ip"])
    pools = subnet.get("allocation_pools") or []
    if pools:
        return str(pools[0]["start"])
    return str(next(ipaddress.ip_network(subnet["cidr"]).hosts()))


def _dhcp_subnet(port: LPort, subnets: dict[str, Obj]) -> Obj | None:
    for fixed in port.nb.get("fixed_ips", []):
        subnet = subnets.get(fixed["subnet_id"])
        if subnet is not None and subnet["ip_version"] == 4:
            return subnet if subnet.get("enable_dhcp") else None
    return None


def _offered(port: LPort, subnet: Obj) -> str:
    return next(
        str(f["ip_address"]) for f in port.nb["fixed_ips"] if f["subnet_id"] == subnet["id"]
    )


def _dhcpv4(switch: Switch, port: LPort, subnet: Obj, sink: FlowSink) -> None:
    offer = _offered(port, subnet)
    server = server_ip(subnet)
    match = conj(
        port.inport(),
        Cmp("eth.src", "==", (mac_value(port.mac),)),
        Cmp("ip4.src", "==", (ip_value("0.0.0.0"), ip_value(offer))),
        Cmp("ip4.dst", "==", (ip_value("255.255.255.255"), ip_value(server))),
        Cmp("udp.src", "==", (Value(68),)),
        Cmp("udp.dst", "==", (Value(67),)),
    )
    reply = DhcpReply(
        offer_ip=int(ipaddress.IPv4Address(offer)),
        server_ip=int(ipaddress.IPv4Address(server)),
        server_mac=server_mac(switch.key),
        netmask=int(ipaddress.ip_network(subnet["cidr"]).netmask),
        lease_time=LEASE_TIME,
        options=dhcp_options(switch.net, subnet),
        then=reply_to_sender(),
    )
    sink.add(switch.key, "ls_in_dhcp_rsp", 100, match, (reply,), port_provenance(BUILDER, port))


def dhcp_options(net: Obj, subnet: Obj) -> tuple[DhcpOption, ...]:
    """Options in code order, encoded as on the wire (RFC 2132, RFC 3442)."""
    options: list[DhcpOption] = []
    gateway = subnet.get("gateway_ip")
    if gateway:
        options.append(DhcpOption(OPT_ROUTER, ipaddress.IPv4Address(gateway).packed))
    dns = [ipaddress.ip_address(a) for a in subnet.get("dns_nameservers") or []]
    if v4 := [a.packed for a in dns if a.version == 4]:
        options.append(DhcpOption(OPT_DNS, b"".join(v4)))
    if net.get("dns_domain"):
        options.append(DhcpOption(OPT_DOMAIN, str(net["dns_domain"]).rstrip(".").encode()))
    if net.get("mtu"):
        options.append(DhcpOption(OPT_MTU, int(net["mtu"]).to_bytes(2, "big")))
    routes = classless_routes(subnet)
    if routes:
        options.append(DhcpOption(OPT_ROUTES, routes))
    return tuple(options)


def classless_routes(subnet: Obj) -> bytes:
    """RFC 3442 encoding of the host routes plus the default route via the gateway;
    empty when the subnet has no IPv4 host routes."""
    routes = [
        (ipaddress.IPv4Network(r["destination"]), ipaddress.IPv4Address(r["nexthop"]))
        for r in subnet.get("host_routes") or []
        if ipaddress.ip_network(r["destination"]).version == 4
    ]
    if not routes:
        return b""
    gateway = subnet.get("gateway_ip")
    if gateway and not any(dest.prefixlen == 0 for dest, _ in routes):
        routes.append((ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv4Address(gateway)))
    out = bytearray()
    for dest, hop in routes:
        significant = (dest.prefixlen + 7) // 8
        out.append(dest.prefixlen)
        out += dest.network_address.packed[:significant]
        out += hop.packed
    return bytes(out)


def _allow_reply(switch: Switch, subnet: Obj, sink: FlowSink) -> None:
    match = conj(
        Cmp("eth.src", "==", (mac_value(server_mac(switch.key)),)),
        Cmp("ip4.src", "==", (ip_value(server_ip(subnet)),)),
        Cmp("udp.src", "==", (Value(67),)),
        Cmp("udp.dst", "==", (Value(68),)),
    )
    prov = Provenance(BUILDER, "subnet", str(subnet["id"]), "DHCP reply")
    sink.add(switch.key, "ls_out_acl", 2000, match, (Next(),), prov)


# -- IPv6 router advertisements ----------------------------------------------------------------


def _router_adverts(switch: Switch, sink: FlowSink) -> None:
    ra_subnets = [s for s in switch.subnets if s["ip_version"] == 6 and s.get("ipv6_ra_mode")]
    router = _router_port(switch, ra_subnets)
    if router is None:
        return
    prefixes = []
    for subnet in ra_subnets:
        net = ipaddress.IPv6Network(subnet["cidr"])
        flags = PREFIX_ON_LINK
        if subnet["ipv6_ra_mode"] in ("slaac", "dhcpv6-stateless"):
            flags |= PREFIX_AUTONOMOUS
        prefixes.append((int(net.network_address), net.prefixlen, flags))
    modes = {s["ipv6_ra_mode"] for s in ra_subnets}
    advert = RouterAdvert(
        mac=router.mac,
        src_ip=int(link_local(router.mac)),
        prefixes=tuple(prefixes),
        mtu=int(switch.net.get("mtu") or 0),
        managed="dhcpv6-stateful" in modes,
        other="dhcpv6-stateless" in modes,
        then=reply_to_sender(),
    )
    vifs = switch.vifs()
    if vifs:
        match = conj(inport_in(vifs), BoolSym("nd_rs"))
        prov = port_provenance(BUILDER, router, "router advertisement")
        sink.add(switch.key, "ls_in_dhcp_rsp", 100, match, (advert,), prov)


def _router_port(switch: Switch, subnets: list[Obj]) -> LPort | None:
    """The first router interface with an address on one of ``subnets``."""
    ids = {s["id"] for s in subnets}
    for port in switch.ports:
        if port.pb.type == "patch" and any(f["subnet_id"] in ids for f in port.nb["fixed_ips"]):
            return port
    return None
