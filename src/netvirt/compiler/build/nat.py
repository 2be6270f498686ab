"""NAT on logical routers: floating IPs (1:1) and gateway SNAT (masquerade).

Theory of operation
-------------------
Only routers with a gateway port that has an IPv4 address do NAT; ``G`` below
is that port, ``gw`` its first IPv4 address. Floating IPs are IPv4 only (the
API refuses others) and count only when associated (``port_id`` set) with
this router (``router_id``, resolved by the API) on ``G``'s network.

Conntrack semantics the pipeline implements (one zone per router):
``ct_dnat(X)`` / ``ct_snat(X[, lo-hi])`` translate a new connection to X
(allocating a source port in lo-hi for masquerade) and commit it, and apply
the existing translation to later packets of the same connection;
``ct_dnat`` / ``ct_snat`` without an address apply the destination/source
translation of the connection the packet belongs to -- for a reply that
restores the original address -- and leave a packet of no such connection
untouched. Every ct action continues at the next table by itself, so these
flows have no ``next;``. As routing is distributed, each router's NAT runs
on the host that sends the packet; one zone per router keeps tenants'
overlapping addresses apart.

Flows, per router (FIP = floating address, F = its fixed address)::

  lr_in_ip_input   90  inport == G && arp.op == 1 && arp.tpa == FIP  -> ARP reply, G's MAC
  lr_in_unsnat    100  inport == G && ip4.dst == FIP                 -> ct_snat;
  lr_in_unsnat    100  inport == G && ip4.dst == gw    (SNAT on)     -> ct_snat;
  lr_in_dnat      100  ip4.dst == FIP                                -> ct_dnat(F);
  lr_out_undnat   100  ip4.src == F                                  -> ct_dnat;
  lr_out_snat     100  outport == G && ip4.src == F                  -> ct_snat(FIP);
  lr_out_snat      50  outport == G && ip4.src == <internal subnet>  -> ct_snat(gw, 1024-65535);
  lr_in_arp_resolve 100 outport == G && ip4 && reg0 == FIP of another router on G's network
                                                      -> eth.dst = that router's G MAC; reg7 = 1;

Walk-throughs:

* VM F opens a connection out: undnat finds nothing, ``ct_snat(FIP)`` wins
  over the subnet masquerade by priority. The reply arrives on G for FIP;
  lr_in_unsnat reverses it to F before routing.
* A client connects to FIP: lr_in_unsnat finds no connection, ``ct_dnat(F)``
  translates and commits; routing sends it to F's subnet. F's reply leaves
  through lr_out_undnat, whose reverse turns the source back into FIP, so the
  SNAT flows (which match F) no longer apply.
* A VM of the same router connects to another VM's FIP (hairpin): the DNAT
  flow is not limited to G, so it is translated, and the reply is un-DNATed
  wherever it leaves (lr_out_undnat is not limited to G either).
* A VM without FIP: masqueraded to ``gw``; replies to ``gw`` are un-SNATed in
  lr_in_unsnat. Whatever still targets ``gw`` afterwards (no connection) is
  dropped by the L3 builder in lr_in_ip_routing (priority 300), and ICMP echo
  to ``gw`` is answered in lr_in_ip_input before NAT.

Traffic between tenants only ever crosses here: out of one router's gateway
with its FIP or ``gw`` as source, into another router's gateway to a FIP.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netvirt.compiler.build.l3 import (
    Emitter,
    RouterView,
    addrs_in,
    arp_reply,
    nets_in,
    num_is,
    port_is,
    router_views,
)
from netvirt.compiler.expr.ast import BoolSym, Expr, conj
from netvirt.compiler.lflow import FlowSink, Provenance
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.dataplane.actions import CtDnat, CtSnat, Next, SetField
from netvirt.southbound.model import SBState

PRIO_NAT = 100
PRIO_FIP_SNAT = 100
PRIO_GATEWAY_SNAT = 50
SNAT_PORTS = (1024, 65535)


@dataclass(frozen=True, slots=True)
class FloatingIP:
    id: str
    router_id: str
    network_id: str
    floating: ipaddress.IPv4Address
    fixed: ipaddress.IPv4Address


def floating_ips(nb: NBSnapshot) -> list[FloatingIP]:
    """Associated IPv4 floating IPs, sorted by address."""
    found = []
    for fip in nb.floatingips:
        if not (fip.get("port_id") and fip.get("fixed_ip_address") and fip.get("router_id")):
            continue
        floating = ipaddress.ip_address(fip["floating_ip_address"])
        fixed = ipaddress.ip_address(fip["fixed_ip_address"])
        if isinstance(floating, ipaddress.IPv4Address) and isinstance(fixed, ipaddress.IPv4Address):
            found.append(
                FloatingIP(fip["id"], fip["router_id"], fip["floating_network_id"], floating, fixed)
            )
    return sorted(found, key=lambda f: f.floating)


def gateway_network(view: RouterView, nb_ports: dict[str, Obj]) -> str | None:
    gw = view.gateway
    if gw is None:
        return None
    port = nb_ports.get(gw.binding.nb_id)
    return str(port["network_id"]) if port else None


def build(nb: NBSnapshot, sb: SBState, sink: FlowSink) -> None:
    """Emit the NAT flows of every router with an IPv4 gateway."""
    nb_ports = nb.by_id("ports")
    views = [
        v
        for v in router_views(nb, sb)
        if v.router.get("admin_state_up", True) and v.gateway is not None and v.gateway.v4
    ]
    fips = floating_ips(nb)
    networks = {v.id: gateway_network(v, nb_ports) for v in views}
    for view in views:
        out = Emitter(sink, view, "nat")
        own = [f for f in fips if f.router_id == view.id and f.network_id == networks[view.id]]
        for fip in own:
            _floating_ip(out, fip)
        if view.snat_enabled:
            _gateway_snat(out)
        others = [
            (f, v)
            for v in views
            for f in fips
            if v.id != view.id and f.router_id == v.id and f.network_id == networks[view.id]
        ]
        for fip, owner in others:
            _foreign_floating_ip(out, fip, owner)


def _fip_flow(
    out: Emitter, fip: FloatingIP, stage: str, prio: int, match: Expr, act: object
) -> None:
    prov = Provenance("nat", "floatingip", fip.id, f"{fip.floating} <-> {fip.fixed}")
    out.sink.add(out.view.dp, stage, prio, match, (act,), prov)


def _floating_ip(out: Emitter, fip: FloatingIP) -> None:
    gw = out.view.gateway
    assert gw is not None
    on_gw = port_is("inport", gw.binding)
    to_fip = addrs_in("ip4.dst", [fip.floating])
    arp = conj(on_gw, num_is("arp.op", 1), addrs_in("arp.tpa", [fip.floating]))
    prov = Provenance("nat", "floatingip", fip.id, "ARP reply for the floating IP")
    out.sink.add(out.view.dp, "lr_in_ip_input", 90, arp, arp_reply(gw.mac, fip.floating), prov)
    _fip_flow(out, fip, "lr_in_unsnat", PRIO_NAT, conj(on_gw, to_fip), CtSnat())
    _fip_flow(out, fip, "lr_in_dnat", PRIO_NAT, to_fip, CtDnat(int(fip.fixed)))
    from_fixed = addrs_in("ip4.src", [fip.fixed])
    _fip_flow(out, fip, "lr_out_undnat", PRIO_NAT, from_fixed, CtDnat())
    leaving = conj(port_is("outport", gw.binding), from_fixed)
    _fip_flow(out, fip, "lr_out_snat", PRIO_FIP_SNAT, leaving, CtSnat(int(fip.floating)))


def _gateway_snat(out: Emitter) -> None:
    view = out.view
    gw = view.gateway
    assert gw is not None
    address = gw.v4[0].ip
    match = conj(port_is("inport", gw.binding), addrs_in("ip4.dst", [address]))
    out.router("lr_in_unsnat", PRIO_NAT, match, (CtSnat(),), "replies to masqueraded traffic")
    masquerade = CtSnat(int(address), port_range=SNAT_PORTS)
    leaving = port_is("outport", gw.binding)
    for port in view.ports:
        if port.gateway:
            continue
        for iface in port.v4:
            match = conj(leaving, nets_in("ip4.src", [iface.network]))
            out.port(port, "lr_out_snat", PRIO_GATEWAY_SNAT, match, (masquerade,), "gateway SNAT")


def _foreign_floating_ip(out: Emitter, fip: FloatingIP, owner: RouterView) -> None:
    """Another router's FIP on our external network: its gateway MAC, no ARP needed."""
    gw, other = out.view.gateway, owner.gateway
    assert gw is not None
    assert other is not None
    match = conj(port_is("outport", gw.binding), BoolSym("ip4"), addrs_in("reg0", [fip.floating]))
    acts = (SetField("eth.dst", other.mac), SetField("reg7", 1), Next())
    prov = Provenance("nat", "floatingip", fip.id, f"floating IP of router {owner.id}")
    out.sink.add(out.view.dp, "lr_in_arp_resolve", 100, match, acts, prov)
