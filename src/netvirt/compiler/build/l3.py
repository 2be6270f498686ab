"""Logical router pipelines: admission, neighbors, the router's own IPs, routing.

Theory of operation
-------------------
Every NB router is one router datapath whose ports are the ``lrp-<port id>``
patch ports of its interfaces and gateway (``topology.py``). A packet a
switch hands to the router runs the ingress stages below, then (on
``output``) the egress stages, then enters the switch behind ``outport``.
NAT stages (lr_in_unsnat, lr_in_dnat, lr_out_undnat, lr_out_snat) are filled
by ``build/nat.py``; this module writes their priority-0 ``next`` defaults.

Registers (see ``compiler/regs.py``): routing leaves the IPv4 next hop in
``reg0`` (IPv6: ``xreg0``), the output port's own IPv4 address in ``reg1``
(the ARP request's sender), the output port's MAC in ``eth.src`` and the port
in ``outport``; ``reg7`` says whether the next hop's MAC is known; ``reg2``/
``reg3`` carry an ECMP group and the member ``SelectEcmp`` picked.

lr_in_admission
    100 ``vlan.present`` or a multicast source MAC: drop.
     50 ``inport == P && eth.dst == P.mac``; ``inport == P && eth.bcast && arp``;
        ``inport == P && eth.mcast && nd_ns``: next.  0: drop.
lr_in_lookup_neighbor
    100 ARP from the port's subnet to the port's IP, and ND NA for a target in
        the port's IPv6 subnets (or link-local): put_mac_binding; next.  0: next.
lr_in_ip_input
    100 martian or multicast sources (0/8, 127/8, 224/4, 255.255.255.255, ::1,
        ff00::/8), martian destinations (0/8, 127/8), sources that are the
        router's own addresses: drop.
     90 ICMP echo to any router IP: swap addresses, ``ip.ttl = 255``, echo reply
        type, then ``next(lr_in_ip_routing)`` -- the reply is routed like any
        packet (so it takes the route back even when the sender is not on the
        port it came in by) and skips the NAT stages, which have nothing to do
        for an address the router owns. ARP requests / ND NS for a port's
        address from that port's link: ARP reply / NA out of the inport.
     85 ARP and ND not answered above (learned already), IPv4 multicast,
        limited and subnet-directed broadcasts, IPv6 multicast and link-local
        destinations, link-local sources: drop (never forwarded).
     80 UDP to a router IP: ICMP port unreachable (TCP is dropped at 60: no
        TCP reset action exists).
     60 anything else to a router IP: drop -- except the gateway SNAT address,
        whose traffic may be replies to masqueraded connections (lr_in_unsnat
        translates those; what is left is dropped in lr_in_ip_routing at 300).
     41 TTL 0/1 on ICMP errors or non-first fragments: drop (no error about an
        error, RFC 1812 4.3.2.7).
     40 ``inport == P && ip.ttl == {0, 1}``: ICMP time exceeded from P's address,
        sent back out P to the previous hop's MAC.  0: next.
lr_in_ip_routing
    Longest prefix match as OVN orders it, shifted by ``ROUTE_BASE`` so that a
    static default route stays above the "no route" flows: connected subnets
    ``ROUTE_BASE + 2 * prefixlen + 1``, static and gateway routes
    ``ROUTE_BASE + 2 * prefixlen``. Actions: ``ip.ttl--; reg0 = <next hop>;
    reg1 = <port IPv4>; eth.src = <port MAC>; outport = <port>;
    flags.loopback = 1; next;`` (connected: ``reg0 = ip4.dst``; IPv6 fills
    ``xreg0``). ``flags.loopback`` lets a route send a packet back out the
    port it came in by (next hop on the sender's own subnet). Several routes
    to one destination form an ECMP group: ``reg2 = <group>; select_ecmp(n)``.
    300: anything still addressed to a router IP after NAT: drop. 1: per
    inport, ICMP destination unreachable (net) back to the sender. 0: drop.
lr_in_ip_routing_ecmp
    150 ``reg2 == 0``: next.  100 ``reg2 == g && reg3 == m``: member m's next
    hop, port MAC/IP and outport; next.  0: drop.
lr_in_arp_resolve
    100 ``outport == P && reg0 == <address of a port on P's network>`` (VIFs,
    VIPs, other routers' ports, from the SB port bindings): ``eth.dst = MAC;
    reg7 = 1; next``.  0: ``lookup_mac_binding; next`` (sets reg7).
lr_in_arp_request
    100 ``reg7 == 0``: replace the packet with an ARP request (IPv6: an NS from
    the port's link-local address) and output it; the original packet is lost,
    as in OVN, and the sender's retransmission finds the learned binding.
    0: output.
lr_out_delivery
    100 ``outport == P``: output.  0: drop.

IPv6 covers connected and static routes, ND (NS answers, NA learning, NS
generation), echo, hop-limit and no-route errors; a port's link-local
address is the EUI-64 one of its MAC. Echo replies to a link-local sender
use a per-port ``inport == P && ip6.dst == fe80::/64`` route back out P
(nothing else reaches it: lr_in_ip_input drops link-local traffic).
Routers with ``admin_state_up`` false get only the defaults, so their
admission drops everything.

Drop reasons: ``port_security_mac``/``port_security_ip`` for bad sources,
``ttl_expired``, ``no_route``, ``unknown_port`` (egress default), and the
plain ``drop`` (explicit_drop) for traffic not for this router's MAC or for
the router itself; provenance notes say which rule it was.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netvirt.compiler.expr.ast import TRUE, BoolSym, Cmp, Expr, Value, conj
from netvirt.compiler.lflow import FlowSink, Provenance
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.compiler.stages import pipeline_stages, stage
from netvirt.dataplane.actions import (
    DecTTL,
    Drop,
    EmitArpRequest,
    EmitIcmpError,
    Exchange,
    LookupMacBinding,
    Move,
    NdAdvert,
    Next,
    Output,
    PutMacBinding,
    SelectEcmp,
    SetField,
)
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import FLAG_LOOPBACK
from netvirt.southbound.model import PortBinding, SBState

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address
IPAny = IPv4 | IPv6
NetAny = ipaddress.IPv4Network | ipaddress.IPv6Network
IfaceAny = ipaddress.IPv4Interface | ipaddress.IPv6Interface
GATEWAY_OWNER = "network:router_gateway"

ROUTE_BASE = 2  # keeps a static default route (prefix 0) above the no-route flows
PRIO_OWN_IP_AFTER_NAT = 300
PRIO_NO_ROUTE = 1
LINK_LOCAL = ipaddress.IPv6Network("fe80::/64")
MARTIAN_V4_SRC = ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32")
MARTIAN_V6_SRC = ("::1/128", "ff00::/8")
ICMP4_ERRORS = (3, 4, 5, 11, 12)
ICMP6_ERRORS = (1, 2, 3, 4)


# ---------------------------------------------------------------- router view


@dataclass(frozen=True, slots=True)
class RouterPort:
    """The router side of one interface or gateway port."""

    binding: PortBinding
    gateway: bool
    v4: tuple[ipaddress.IPv4Interface, ...]
    v6: tuple[ipaddress.IPv6Interface, ...]

    @property
    def name(self) -> str:
        return self.binding.name

    @property
    def mac(self) -> int:
        return self.binding.mac

    @property
    def link_local(self) -> IPv6:
        """EUI-64 link-local address of the port's MAC (RFC 4291 appendix A)."""
        mac = self.mac
        eui = ((mac >> 24) << 40) | (0xFFFE << 24) | (mac & 0xFFFFFF)
        return IPv6((0xFE80 << 112) | (eui ^ (1 << 57)))

    @property
    def v6_addresses(self) -> tuple[IPv6, ...]:
        """Global addresses, then the link-local one (only for IPv6 ports)."""
        if not self.v6:
            return ()
        return (*(i.ip for i in self.v6), self.link_local)

    @property
    def v6_source(self) -> IPv6:
        """Source of ICMPv6 errors: a global address when there is one."""
        return self.v6[0].ip if self.v6 else self.link_local


@dataclass(frozen=True, slots=True)
class RouterView:
    """One router with everything the L3 and NAT builders need."""

    router: Obj
    dp: int
    ports: tuple[RouterPort, ...]

    @property
    def id(self) -> str:
        return str(self.router["id"])

    @property
    def gateway(self) -> RouterPort | None:
        return next((p for p in self.ports if p.gateway), None)

    @property
    def snat_enabled(self) -> bool:
        info = self.router.get("external_gateway_info") or {}
        return self.gateway is not None and bool(info.get("enable_snat"))

    def own_v4(self) -> list[IPv4]:
        return [i.ip for p in self.ports for i in p.v4]

    def own_v6(self) -> list[IPv6]:
        return [a for p in self.ports for a in p.v6_addresses]

    def snat_ips(self) -> list[IPv4]:
        """Gateway addresses used for masquerading (their traffic may be replies)."""
        gw = self.gateway
        return [gw.v4[0].ip] if gw is not None and gw.v4 and self.snat_enabled else []

    def port_for(self, hop: IPAny) -> RouterPort | None:
        """The port whose subnet contains ``hop`` (a static route's next hop)."""
        for port in self.ports:
            ifaces: tuple[IfaceAny, ...] = (*port.v4, *port.v6)
            if any(hop in i.network and hop != i.ip for i in ifaces):
                return port
        return None


def _router_port(binding: PortBinding, nb_ports: dict[str, Obj]) -> RouterPort:
    ifaces = [ipaddress.ip_interface(c) for c in binding.ips]
    nb_port = nb_ports.get(binding.nb_id, {})
    return RouterPort(
        binding=binding,
        gateway=nb_port.get("device_owner") == GATEWAY_OWNER,
        v4=tuple(i for i in ifaces if isinstance(i, ipaddress.IPv4Interface)),
        v6=tuple(i for i in ifaces if isinstance(i, ipaddress.IPv6Interface)),
    )


def ports_by_datapath(sb: SBState) -> dict[int, list[PortBinding]]:
    by_dp: dict[int, list[PortBinding]] = defaultdict(list)
    for binding in sorted(sb.ports.values(), key=lambda b: b.name):
        by_dp[binding.datapath].append(binding)
    return by_dp


def router_views(nb: NBSnapshot, sb: SBState) -> list[RouterView]:
    """Router datapaths of ``sb`` (filled by ``build_topology``) with their NB router."""
    routers = nb.by_id("routers")
    scope = nb.scope
    dps = [
        dp
        for dp in sorted(sb.datapaths.values(), key=lambda d: d.key)
        if dp.kind == "router" and dp.name in routers and (scope is None or dp.key in scope)
    ]
    if not dps:
        return []  # no router to build: skip sorting every port binding of the cloud
    nb_ports = nb.by_id("ports")
    by_dp = ports_by_datapath(sb)
    views = []
    for dp in dps:
        router = routers[dp.name]
        ports = tuple(_router_port(b, nb_ports) for b in by_dp.get(dp.key, []))
        views.append(RouterView(router, dp.key, ports))
    return views


# ---------------------------------------------------------------- match helpers


def port_is(symbol: str, port: PortBinding) -> Cmp:
    """``inport == "name"``: the name is the value's text, its key the value."""
    return Cmp(symbol, "==", (Value(port.key, None, port.name),))


def mac_is(symbol: str, mac: int) -> Cmp:
    return Cmp(symbol, "==", (Value(mac),))


def addr_value(addr: IPAny) -> Value:
    return Value(int(addr))


def net_value(net: NetAny) -> Value:
    if net.prefixlen == net.max_prefixlen:
        return addr_value(net.network_address)
    return Value(int(net.network_address), int(net.netmask))


def addrs_in(symbol: str, addrs: Iterable[IPAny]) -> Cmp:
    """``symbol == {a, b, …}`` (set membership), sorted so the text is stable."""
    return Cmp(symbol, "==", tuple(addr_value(a) for a in sorted(set(addrs), key=int)))


def nets_in(symbol: str, nets: Iterable[NetAny]) -> Cmp:
    ordered = sorted(set(nets), key=lambda n: (int(n.network_address), n.prefixlen))
    return Cmp(symbol, "==", tuple(net_value(n) for n in ordered))


def dst_in(net: NetAny) -> Expr:
    """``ip4.dst == net`` (a /0 becomes plain ``ip4``: no mask of zero bits)."""
    family = "ip4" if net.version == 4 else "ip6"
    if net.prefixlen == 0:
        return BoolSym(family)
    return nets_in(f"{family}.dst", [net])


def num_is(symbol: str, *values: int) -> Cmp:
    return Cmp(symbol, "==", tuple(Value(v) for v in values))


# ---------------------------------------------------------------- action helpers

LOOPBACK = SetField("flags", FLAG_LOOPBACK, FLAG_LOOPBACK)
BACK_OUT_INPORT: tuple[object, ...] = (Move("outport", "inport"), LOOPBACK, Output())


def arp_reply(mac: int, ip: IPv4) -> tuple[object, ...]:
    """Turn an ARP request into the reply for ``ip`` at ``mac``, out of the inport."""
    return (
        Move("eth.dst", "eth.src"),
        SetField("eth.src", mac),
        SetField("arp.op", 2),
        Move("arp.tha", "arp.sha"),
        SetField("arp.sha", mac),
        Move("arp.tpa", "arp.spa"),
        SetField("arp.spa", int(ip)),
        *BACK_OUT_INPORT,
    )


def icmp_error_back(icmp_type: int, code: int, source: IPAny | int) -> EmitIcmpError:
    """An ICMP(v6) error to the packet's sender, back out of its inport.

    ``source`` an address: the error comes from that router address (time
    exceeded, no route); an int (4 or 6): from the address the packet was
    sent to (port unreachable). The generator copies the offending packet's
    addresses; these nested actions turn them around.
    """
    if isinstance(source, int):
        family = ip_prefix(source)
        addressing: tuple[object, ...] = (Exchange(f"{family}.dst", f"{family}.src"),)
    else:
        family = ip_prefix(source.version)
        addressing = (
            Move(f"{family}.dst", f"{family}.src"),
            SetField(f"{family}.src", int(source)),
        )
    return EmitIcmpError(
        icmp_type, code, then=(Exchange("eth.dst", "eth.src"), *addressing, *BACK_OUT_INPORT)
    )


def to_port(
    port: RouterPort, hop: IPAny | None, family: int, src: IPv4 | None = None
) -> tuple[object, ...]:
    """Routing actions after the TTL: next hop (``None`` = the destination itself),
    the port's address on the next hop's subnet in ``reg1`` (or ``src``), source
    MAC, output port."""
    if family == 4:
        if src is None:
            src = next((i.ip for i in port.v4 if hop in i.network), port.v4[0].ip)
        reg: tuple[object, ...] = (
            Move("reg0", "ip4.dst") if hop is None else SetField("reg0", int(hop)),
            SetField("reg1", int(src)),
        )
    else:
        reg = (Move("xreg0", "ip6.dst") if hop is None else SetField("xreg0", int(hop)),)
    return (
        *reg,
        SetField("eth.src", port.mac),
        SetField("outport", port.binding.key),
        LOOPBACK,
        Next(),
    )


def ip_prefix(family: int) -> str:
    return "ip4" if family == 4 else "ip6"


# ---------------------------------------------------------------- builder


class Emitter:
    """Adds flows for one router datapath with the right provenance."""

    def __init__(self, sink: FlowSink, view: RouterView, builder: str = "l3") -> None:
        self.sink = sink
        self.view = view
        self.builder = builder

    def router(
        self, stage_name: str, prio: int, match: Expr, acts: Sequence[object], note: str = ""
    ) -> None:
        prov = Provenance(self.builder, "router", self.view.id, note)
        self.sink.add(self.view.dp, stage_name, prio, match, tuple(acts), prov)

    def port(
        self,
        port: RouterPort,
        stage_name: str,
        prio: int,
        match: Expr,
        acts: Sequence[object],
        note: str = "",
    ) -> None:
        prov = Provenance(self.builder, "port", port.binding.nb_id, note)
        self.sink.add(self.view.dp, stage_name, prio, match, tuple(acts), prov)


def build(nb: NBSnapshot, sb: SBState, sink: FlowSink) -> None:
    """Emit the logical flows of every router datapath."""
    views = router_views(nb, sb)
    by_dp = ports_by_datapath(sb) if views else {}
    for view in views:
        out = Emitter(sink, view)
        _defaults(out)
        if not view.router.get("admin_state_up", True):
            continue
        _admission(out)
        _lookup_neighbor(out)
        _ip_input(out)
        _routing(out, nb)
        _arp_resolve(out, sb, by_dp)
        _arp_request(out)
        _delivery(out)


def _defaults(out: Emitter) -> None:
    """Priority-0 flows of every router stage (NAT stages and lookups continue)."""
    special: dict[str, tuple[object, ...]] = {
        "lr_in_admission": (Drop(DropReason.EXPLICIT_DROP),),
        "lr_in_ip_routing": (Drop(DropReason.NO_ROUTE),),
        "lr_in_ip_routing_ecmp": (Drop(DropReason.NO_ROUTE),),
        "lr_in_arp_resolve": (LookupMacBinding(), Next()),
        "lr_in_arp_request": (Output(),),
        "lr_out_delivery": (Drop(DropReason.UNKNOWN_PORT),),
    }
    stages = [*pipeline_stages("router", "ingress"), *pipeline_stages("router", "egress")]
    for st in stages:
        out.router(st.name, 0, TRUE, special.get(st.name, (Next(),)), "default")


def _admission(out: Emitter) -> None:
    st = "lr_in_admission"
    drop_mac = (Drop(DropReason.PORT_SECURITY_MAC),)
    out.router(st, 100, BoolSym("vlan.present"), drop_mac, "VLAN-tagged frame")
    group_bit = Value(1 << 40, 1 << 40)
    out.router(st, 100, Cmp("eth.src", "==", (group_bit,)), drop_mac, "multicast source MAC")
    for port in out.view.ports:
        inport = port_is("inport", port.binding)
        out.port(port, st, 50, conj(inport, mac_is("eth.dst", port.mac)), (Next(),))
        if port.v4:
            match = conj(inport, BoolSym("eth.bcast"), BoolSym("arp"))
            out.port(port, st, 50, match, (Next(),), "ARP broadcast")
        if port.v6:
            match = conj(inport, BoolSym("eth.mcast"), BoolSym("nd_ns"))
            out.port(port, st, 50, match, (Next(),), "neighbor solicitation")


def _lookup_neighbor(out: Emitter) -> None:
    st = "lr_in_lookup_neighbor"
    learn = (PutMacBinding(), Next())
    for port in out.view.ports:
        inport = port_is("inport", port.binding)
        for iface in port.v4:
            match = conj(
                inport,
                BoolSym("arp"),
                nets_in("arp.spa", [iface.network]),
                addrs_in("arp.tpa", [iface.ip]),
            )
            out.port(port, st, 100, match, learn, f"ARP to {iface.ip}")
        if port.v6:
            nets = [*(i.network for i in port.v6), LINK_LOCAL]
            match = conj(inport, BoolSym("nd_na"), nets_in("nd.target", nets))
            out.port(port, st, 100, match, learn, "neighbor advertisement")


ROUTING_TABLE = stage("lr_in_ip_routing").table


def _ip_input(out: Emitter) -> None:
    _sanity(out)
    _answers(out)
    _not_forwarded(out)
    _to_router(out)
    _ttl(out)


def _sanity(out: Emitter) -> None:
    """Sources no router accepts: martians, multicast, the router's own addresses."""
    st, view = "lr_in_ip_input", out.view
    bad_ip = (Drop(DropReason.PORT_SECURITY_IP),)
    martian4 = [ipaddress.IPv4Network(n) for n in MARTIAN_V4_SRC]
    out.router(st, 100, nets_in("ip4.src", martian4), bad_ip, "martian source")
    loop4 = [ipaddress.IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8")]
    out.router(st, 100, nets_in("ip4.dst", loop4), bad_ip, "martian destination")
    martian6 = [ipaddress.IPv6Network(n) for n in MARTIAN_V6_SRC]
    out.router(st, 100, nets_in("ip6.src", martian6), bad_ip, "martian source")
    if view.own_v4():
        out.router(st, 100, addrs_in("ip4.src", view.own_v4()), bad_ip, "router's own source")
    if view.own_v6():
        out.router(st, 100, addrs_in("ip6.src", view.own_v6()), bad_ip, "router's own source")


def _answers(out: Emitter) -> None:
    """ICMP echo to any router address; ARP and NS for a port's addresses."""
    st, view = "lr_in_ip_input", out.view
    if view.own_v4():
        match = conj(
            addrs_in("ip4.dst", view.own_v4()), num_is("icmp4.type", 8), num_is("icmp4.code", 0)
        )
        acts = (
            Exchange("ip4.dst", "ip4.src"),
            SetField("ip.ttl", 255),
            SetField("icmp.type", 0),
            Next(ROUTING_TABLE),
        )
        out.router(st, 90, match, acts, "ICMP echo reply")
    if view.own_v6():
        match = conj(
            addrs_in("ip6.dst", view.own_v6()),
            num_is("icmp6.type", 128),
            num_is("icmp6.code", 0),
        )
        acts = (
            Exchange("ip6.dst", "ip6.src"),
            SetField("ip.ttl", 255),
            SetField("icmp.type", 129),
            Next(ROUTING_TABLE),
        )
        out.router(st, 90, match, acts, "ICMPv6 echo reply")
    for port in view.ports:
        inport = port_is("inport", port.binding)
        for iface in port.v4:
            match = conj(
                inport,
                num_is("arp.op", 1),
                addrs_in("arp.tpa", [iface.ip]),
                nets_in("arp.spa", [iface.network]),
            )
            out.port(port, st, 90, match, arp_reply(port.mac, iface.ip), "ARP reply")
        for addr in port.v6_addresses:
            match = conj(inport, BoolSym("nd_ns"), addrs_in("nd.target", [addr]))
            advert = NdAdvert(int(addr), port.mac, router=True, then=BACK_OUT_INPORT)
            out.port(port, st, 90, match, (advert,), "neighbor advertisement")


def _not_forwarded(out: Emitter) -> None:
    """ARP/ND left over, broadcasts, multicast and link-local traffic stay on the link."""
    st, view = "lr_in_ip_input", out.view
    drop = (Drop(DropReason.EXPLICIT_DROP),)
    out.router(st, 85, BoolSym("arp"), drop, "ARP not answered by the router")
    out.router(st, 85, BoolSym("nd"), drop, "ND not answered by the router")
    local4 = [ipaddress.IPv4Network("224.0.0.0/4"), ipaddress.IPv4Network("255.255.255.255/32")]
    for port in view.ports:
        for iface in port.v4:
            if iface.network.prefixlen <= 30:
                local4.append(ipaddress.IPv4Network(iface.network.broadcast_address))
    out.router(st, 85, nets_in("ip4.dst", local4), drop, "multicast or broadcast")
    local6 = [ipaddress.IPv6Network("ff00::/8"), ipaddress.IPv6Network("fe80::/10")]
    out.router(st, 85, nets_in("ip6.dst", local6), drop, "multicast or link-local")
    out.router(st, 85, nets_in("ip6.src", local6[1:]), drop, "link-local source")


def _to_router(out: Emitter) -> None:
    """Other traffic to the router: UDP gets port unreachable, the rest is dropped."""
    st, view = "lr_in_ip_input", out.view
    drop = (Drop(DropReason.EXPLICIT_DROP),)
    snat = set(view.snat_ips())
    own4 = [ip for ip in view.own_v4() if ip not in snat]
    if own4:
        unreachable = (icmp_error_back(3, 3, 4),)
        match = conj(addrs_in("ip4.dst", own4), BoolSym("udp"))
        out.router(st, 80, match, unreachable, "port unreachable")
        out.router(st, 60, addrs_in("ip4.dst", own4), drop, "addressed to the router")
    if view.own_v6():
        unreachable = (icmp_error_back(1, 4, 6),)
        match = conj(addrs_in("ip6.dst", view.own_v6()), BoolSym("udp"))
        out.router(st, 80, match, unreachable, "port unreachable")
        out.router(st, 60, addrs_in("ip6.dst", view.own_v6()), drop, "addressed to the router")


def _ttl(out: Emitter) -> None:
    """Packets that would be forwarded with TTL 0/1 get time exceeded from the inport."""
    st = "lr_in_ip_input"
    expired = (Drop(DropReason.TTL_EXPIRED),)
    later_fragment = Cmp("ip.frag", "==", (Value(2, 2),))
    for family, errors in ((4, ICMP4_ERRORS), (6, ICMP6_ERRORS)):
        ip, ttl = BoolSym(ip_prefix(family)), num_is("ip.ttl", 0, 1)
        icmp_error = num_is(f"icmp{family}.type", *errors)
        out.router(st, 41, conj(ip, ttl, icmp_error), expired, "no error about an error")
        out.router(st, 41, conj(ip, ttl, later_fragment), expired, "not the first fragment")
    for port in out.view.ports:
        inport = port_is("inport", port.binding)
        if port.v4:
            match = conj(inport, BoolSym("ip4"), num_is("ip.ttl", 0, 1))
            err = icmp_error_back(11, 0, port.v4[0].ip)
            out.port(port, st, 40, match, (err,), "time exceeded")
        if port.v6:
            match = conj(inport, BoolSym("ip6"), num_is("ip.ttl", 0, 1))
            err = icmp_error_back(3, 0, port.v6_source)
            out.port(port, st, 40, match, (err,), "hop limit exceeded")


# ---------------------------------------------------------------- routing


def _routing(out: Emitter, nb: NBSnapshot) -> None:
    st, view = "lr_in_ip_routing", out.view
    drop = (Drop(DropReason.EXPLICIT_DROP),)
    if view.own_v4():
        match = addrs_in("ip4.dst", view.own_v4())
        out.router(st, PRIO_OWN_IP_AFTER_NAT, match, drop, "router address after NAT")
    if view.own_v6():
        match = addrs_in("ip6.dst", view.own_v6())
        out.router(st, PRIO_OWN_IP_AFTER_NAT, match, drop, "router address after NAT")
    _connected(out)
    _static(out, nb)
    _no_route(out)
    ecmp_pass = (Next(),)
    out.router("lr_in_ip_routing_ecmp", 150, num_is("reg2", 0), ecmp_pass, "not ECMP")


def connected_priority(prefixlen: int) -> int:
    return ROUTE_BASE + 2 * prefixlen + 1


def static_priority(prefixlen: int) -> int:
    return ROUTE_BASE + 2 * prefixlen


def _connected(out: Emitter) -> None:
    st = "lr_in_ip_routing"
    for port in out.view.ports:
        for iface in port.v4:
            net = iface.network
            acts = (DecTTL(), *to_port(port, None, 4, iface.ip))
            prio = connected_priority(net.prefixlen)
            out.port(port, st, prio, dst_in(net), acts, f"connected {net}")
        for iface6 in port.v6:
            net6 = iface6.network
            acts = (DecTTL(), *to_port(port, None, 6))
            prio = connected_priority(net6.prefixlen)
            out.port(port, st, prio, dst_in(net6), acts, f"connected {net6}")
        if port.v6:
            # Only the router's own replies get here (ip_input drops link-local
            # traffic): they go back to the link they came from.
            match = conj(port_is("inport", port.binding), dst_in(LINK_LOCAL))
            acts = (DecTTL(), *to_port(port, None, 6))
            prio = connected_priority(LINK_LOCAL.prefixlen)
            out.port(port, st, prio, match, acts, "link-local reply")


@dataclass(frozen=True, slots=True)
class Route:
    dest: NetAny
    hop: IPAny
    port: RouterPort
    note: str


def routes_of(view: RouterView, nb: NBSnapshot) -> dict[NetAny, list[Route]]:
    """Extra routes and the gateway's default routes, grouped by destination.

    A next hop no port's subnet contains (a stale route) is left out; the API
    refuses such routes, so this only happens while a change is in flight.
    """
    found: dict[NetAny, list[Route]] = defaultdict(list)
    candidates = [
        (ipaddress.ip_network(r["destination"], strict=False), ipaddress.ip_address(r["nexthop"]))
        for r in view.router.get("routes") or []
    ]
    defaults = [
        (ipaddress.ip_network(f"{'::' if h.version == 6 else '0.0.0.0'}/0"), h)
        for h in gateway_hops(view, nb)
    ]
    for dest, hop in candidates + defaults:
        port = view.port_for(hop)
        if port is None or dest.version != hop.version:
            continue
        if any(r.hop == hop for r in found[dest]):
            continue
        note = f"route {dest} via {hop}" if (dest, hop) in candidates else f"gateway {hop}"
        found[dest].append(Route(dest, hop, port, note))
    return {d: found[d] for d in sorted(found, key=lambda n: (n.version, n.prefixlen, n))}


def gateway_hops(view: RouterView, nb: NBSnapshot) -> list[IPAny]:
    """One upstream gateway per IP version: the external subnet's ``gateway_ip``."""
    gw = view.gateway
    if gw is None:
        return []
    port = nb.by_id("ports").get(gw.binding.nb_id, {})
    subnets = nb.by_id("subnets")
    hops: dict[int, IPAny] = {}
    for fixed in port.get("fixed_ips", []):
        subnet = subnets.get(fixed["subnet_id"])
        if subnet is None or not subnet.get("gateway_ip"):
            continue
        hop = ipaddress.ip_address(subnet["gateway_ip"])
        if str(hop) != fixed["ip_address"]:
            hops.setdefault(hop.version, hop)
    return [hops[v] for v in sorted(hops)]


def _static(out: Emitter, nb: NBSnapshot) -> None:
    st = "lr_in_ip_routing"
    group = 0
    for dest, members in routes_of(out.view, nb).items():
        prio = static_priority(dest.prefixlen)
        if len(members) == 1:
            route = members[0]
            acts = (DecTTL(), *to_port(route.port, route.hop, dest.version))
            out.router(st, prio, dst_in(dest), acts, route.note)
            continue
        group += 1
        acts = (DecTTL(), SetField("reg2", group), SelectEcmp(len(members)), LOOPBACK, Next())
        out.router(st, prio, dst_in(dest), acts, f"ECMP group {group} to {dest}")
        for index, route in enumerate(members, start=1):
            match = conj(num_is("reg2", group), num_is("reg3", index))
            member = to_port(route.port, route.hop, dest.version)
            out.router("lr_in_ip_routing_ecmp", 100, match, member, route.note)


def _no_route(out: Emitter) -> None:
    st = "lr_in_ip_routing"
    for port in out.view.ports:
        inport = port_is("inport", port.binding)
        if port.v4:
            err = icmp_error_back(3, 0, port.v4[0].ip)
            out.port(port, st, PRIO_NO_ROUTE, conj(inport, BoolSym("ip4")), (err,), "no route")
        if port.v6:
            err = icmp_error_back(1, 0, port.v6_source)
            out.port(port, st, PRIO_NO_ROUTE, conj(inport, BoolSym("ip6")), (err,), "no route")


# ---------------------------------------------------------------- next hop MAC


def _arp_resolve(out: Emitter, sb: SBState, by_dp: dict[int, list[PortBinding]]) -> None:
    """Static bindings for every address on the networks the router is plugged into."""
    st = "lr_in_arp_resolve"
    for port in out.view.ports:
        peer = sb.ports.get(port.binding.peer or "")
        if peer is None:
            continue
        outport = port_is("outport", port.binding)
        for neighbor in by_dp.get(peer.datapath, []):
            if neighbor.name == peer.name:
                continue
            for cidr in neighbor.ips:
                match = _hop_is(outport, port, ipaddress.ip_interface(cidr).ip)
                if match is None:
                    continue
                acts = (SetField("eth.dst", neighbor.mac), SetField("reg7", 1), Next())
                prov = Provenance("l3", "port", neighbor.nb_id, f"neighbor of {port.name}")
                out.sink.add(out.view.dp, st, 100, match, acts, prov)


def _hop_is(outport: Expr, port: RouterPort, ip: IPAny) -> Expr | None:
    if ip.version == 4:
        return conj(outport, BoolSym("ip4"), addrs_in("reg0", [ip])) if port.v4 else None
    return conj(outport, BoolSym("ip6"), addrs_in("xreg0", [ip])) if port.v6 else None


def _arp_request(out: Emitter) -> None:
    st = "lr_in_arp_request"
    unknown = num_is("reg7", 0)
    request = EmitArpRequest(then=(Output(),))
    out.router(st, 100, conj(BoolSym("ip4"), unknown), (request,), "ARP for the next hop")
    for port in out.view.ports:
        if port.v6:
            match = conj(port_is("outport", port.binding), BoolSym("ip6"), unknown)
            acts = (SetField("ip6.src", int(port.link_local)), request)
            out.port(port, st, 100, match, acts, "NS for the next hop")


def _delivery(out: Emitter) -> None:
    for port in out.view.ports:
        match = port_is("outport", port.binding)
        out.port(port, "lr_out_delivery", 100, match, (Output(),))
