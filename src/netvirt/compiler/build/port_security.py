"""Port security: what a VM may send (ingress) and what it may receive (egress).

Ingress, for ports with ``port_security_enabled`` (VM ports; router, VIP and
unsecured ports skip the checks):

* ``ls_in_port_sec_l2`` admits a packet only from a known inport with one of
  the port's MACs (its own or an allowed address pair's); a multicast source
  MAC and VLAN-tagged frames are never valid; an administratively down port
  (or network) admits nothing.
* ``ls_in_port_sec_ip`` binds source addresses to MACs: the fixed IPs with the
  port's MAC, each allowed address pair's prefix with the pair's MAC, the
  EUI-64 link-local address of each MAC. A DHCP discover from 0.0.0.0 and IPv6
  DAD/MLD/RS from ``::`` are allowed. A port with no address at all is only
  MAC-restricted (as OVN with a MAC-only port security entry).
* ``ls_in_port_sec_nd`` blocks ARP/ND spoofing: an ARP sender (sha, spa) and an
  ND link-layer option or NA target must be the port's.

Egress (``ls_out_port_sec_ip`` then the last stage ``ls_out_port_sec_l2``): a
secured port receives unicast for its own MACs and IPs only, plus broadcast and
multicast; this is what stops flooded unknown unicast from reaching VMs.

Priorities: 100 hard rules, 90 per-port allows, 80/40 per-port catch-alls, 0
the stage default.
"""

from __future__ import annotations

import ipaddress
from functools import partial

from netvirt.compiler.build import (
    LPort,
    Switch,
    add_defaults,
    ip_value,
    ip_version,
    ips_cmp,
    link_local,
    mac_value,
    macs_cmp,
    per_port,
    port_provenance,
    switches,
)
from netvirt.compiler.expr.ast import BoolSym, Cmp, Value, conj, eq
from netvirt.compiler.lflow import FlowSink
from netvirt.compiler.nb import NBSnapshot
from netvirt.dataplane.actions import Drop, Next, Output
from netvirt.dataplane.drops import DropReason
from netvirt.southbound.model import SBState

BUILDER = "port_security"
MULTICAST_BIT = 1 << 40  # group bit of a MAC address
DAD_ICMP6_TYPES = (131, 133, 135, 143)  # MLDv1 report, RS, NS (DAD), MLDv2 report
ZERO_MAC = 0


def build(nb: NBSnapshot, sb: SBState, sink: FlowSink) -> None:
    for switch in switches(nb, sb):
        _l2_switch(switch, sink)
        inputs = (switch.key, switch.admin_up, switch.subnets)  # what _port reads of it
        for port in switch.ports:
            per_port(sink, BUILDER, switch, port, inputs, partial(_port, switch, port, sink))
        add_defaults(
            sink,
            switch,
            BUILDER,
            {
                "ls_in_port_sec_l2": (Drop(DropReason.UNKNOWN_PORT),),
                "ls_in_port_sec_ip": (Next(),),
                "ls_in_port_sec_nd": (Next(),),
                "ls_out_port_sec_ip": (Next(),),
                "ls_out_port_sec_l2": (Output(),),
            },
        )


def _port(switch: Switch, port: LPort, sink: FlowSink) -> None:
    """Every flow of one port (reads the switch's key, admin state and subnets only)."""
    _l2_ingress(switch, port, sink)
    _l2_egress(switch, port, sink)
    if port.secured and not _down(switch, port):
        _ip_ingress(switch, port, sink)
        _nd_ingress(switch, port, sink)
        _ip_egress(switch, port, sink)
    # a down port: nothing gets past ls_in_port_sec_l2 / ls_out_port_sec_l2


def _down(switch: Switch, port: LPort) -> bool:
    return not (port.admin_up and switch.admin_up)


# -- L2 -------------------------------------------------------------------------------------


def _l2_switch(switch: Switch, sink: FlowSink) -> None:
    """The hard rules of the switch: VLAN tags and multicast sources never pass in,
    multicast and broadcast always reach a port."""
    prov = switch.provenance(BUILDER)
    stage = "ls_in_port_sec_l2"
    sink.add(switch.key, stage, 100, BoolSym("vlan.present"), (Drop(),), prov)
    group_bit = Value(MULTICAST_BIT, MULTICAST_BIT, "01:00:00:00:00:00/01:00:00:00:00:00")
    mcast_src = Cmp("eth.src", "==", (group_bit,))
    sink.add(switch.key, stage, 100, mcast_src, (Drop(DropReason.PORT_SECURITY_MAC),), prov)
    sink.add(switch.key, "ls_out_port_sec_l2", 100, BoolSym("eth.mcast"), (Output(),), prov)


def _l2_ingress(switch: Switch, port: LPort, sink: FlowSink) -> None:
    stage = "ls_in_port_sec_l2"
    if port.pb.type == "vip":
        return  # a VIP is never bound to a host: it sends nothing
    pp = port_provenance(BUILDER, port)
    if _down(switch, port):
        sink.add(switch.key, stage, 90, port.inport(), (Drop(DropReason.PORT_DOWN),), pp)
    elif port.secured:
        match = conj(port.inport(), macs_cmp("eth.src", port.macs))
        sink.add(switch.key, stage, 50, match, (Next(),), pp)
        drop = (Drop(DropReason.PORT_SECURITY_MAC),)
        sink.add(switch.key, stage, 40, port.inport(), drop, pp)
    else:
        sink.add(switch.key, stage, 50, port.inport(), (Next(),), pp)


def _l2_egress(switch: Switch, port: LPort, sink: FlowSink) -> None:
    stage = "ls_out_port_sec_l2"
    pp = port_provenance(BUILDER, port)
    if _down(switch, port):
        sink.add(switch.key, stage, 110, port.outport(), (Drop(DropReason.PORT_DOWN),), pp)
    elif port.secured:
        match = conj(port.outport(), macs_cmp("eth.dst", port.macs))
        sink.add(switch.key, stage, 50, match, (Output(),), pp)
        drop = (Drop(DropReason.PORT_SECURITY_MAC),)
        sink.add(switch.key, stage, 40, port.outport(), drop, pp)


# -- IP -------------------------------------------------------------------------------------


def _v4(addrs: list[str]) -> list[str]:
    return [a for a in addrs if ip_version(a) == 4]


def _v6(addrs: list[str]) -> list[str]:
    return [a for a in addrs if ip_version(a) == 6]


def _ip_ingress(switch: Switch, port: LPort, sink: FlowSink) -> None:
    if not port.all_addresses:
        return  # MAC-only port security
    stage = "ls_in_port_sec_ip"
    pp = port_provenance(BUILDER, port)
    for mac, addrs in port.addresses_by_mac().items():
        src = conj(port.inport(), Cmp("eth.src", "==", (mac_value(mac),)))
        if v4 := _v4(addrs):
            sink.add(switch.key, stage, 90, conj(src, ips_cmp("ip4.src", v4)), (Next(),), pp)
        v6 = [*_v6(addrs), str(link_local(mac))]
        sink.add(switch.key, stage, 90, conj(src, ips_cmp("ip6.src", v6)), (Next(),), pp)
    own = conj(port.inport(), Cmp("eth.src", "==", (mac_value(port.mac),)))
    dhcp = conj(
        own,
        eq("ip4.src", 0, "0.0.0.0"),
        eq("ip4.dst", 0xFFFFFFFF, "255.255.255.255"),
        eq("udp.src", 68),
        eq("udp.dst", 67),
    )
    sink.add(switch.key, stage, 90, dhcp, (Next(),), pp)
    unspecified = conj(
        own,
        eq("ip6.src", 0, "::"),
        Cmp("ip6.dst", "==", (ip_value("ff02::/16"),)),
        Cmp("icmp6.type", "==", tuple(Value(t) for t in DAD_ICMP6_TYPES)),
    )
    sink.add(switch.key, stage, 90, unspecified, (Next(),), pp)
    drop = (Drop(DropReason.PORT_SECURITY_IP),)
    sink.add(switch.key, stage, 80, conj(port.inport(), BoolSym("ip")), drop, pp)


def _nd_ingress(switch: Switch, port: LPort, sink: FlowSink) -> None:
    stage = "ls_in_port_sec_nd"
    pp = port_provenance(BUILDER, port)
    restricted = bool(port.all_addresses)
    for mac, addrs in port.addresses_by_mac().items():
        src = conj(port.inport(), Cmp("eth.src", "==", (mac_value(mac),)))
        sha = Cmp("arp.sha", "==", (mac_value(mac),))
        v4 = _v4(addrs)
        if v4 or not restricted:
            spa = ips_cmp("arp.spa", v4) if v4 else conj()
            sink.add(switch.key, stage, 90, conj(src, sha, spa), (Next(),), pp)
        ns = conj(src, BoolSym("nd_ns"), macs_cmp("nd.sll", [ZERO_MAC, mac]))
        sink.add(switch.key, stage, 90, ns, (Next(),), pp)
        targets = [*_v6(addrs), str(link_local(mac))]
        target = ips_cmp("nd.target", targets) if restricted else conj()
        na = conj(src, BoolSym("nd_na"), macs_cmp("nd.tll", [ZERO_MAC, mac]), target)
        sink.add(switch.key, stage, 90, na, (Next(),), pp)
    arp = conj(port.inport(), BoolSym("arp"))
    sink.add(switch.key, stage, 80, arp, (Drop(DropReason.ARP_SPOOF),), pp)
    nd = conj(port.inport(), BoolSym("nd"))
    sink.add(switch.key, stage, 80, nd, (Drop(DropReason.ND_SPOOF),), pp)


def _broadcasts(switch: Switch, port: LPort) -> list[str]:
    """Directed broadcast addresses of the subnets the port has IPv4 addresses on."""
    out = []
    for subnet in switch.subnets:
        net = ipaddress.ip_network(subnet["cidr"])
        mine = any(ipaddress.ip_address(a) in net for a in port.fixed_of(4))
        if net.version == 4 and net.prefixlen < 31 and mine:
            out.append(str(net.broadcast_address))
    return out


def _ip_egress(switch: Switch, port: LPort, sink: FlowSink) -> None:
    if not port.all_addresses:
        return
    stage = "ls_out_port_sec_ip"
    pp = port_provenance(BUILDER, port)
    v4 = [*_v4(port.all_addresses), *_broadcasts(switch, port), "255.255.255.255", "224.0.0.0/4"]
    sink.add(switch.key, stage, 90, conj(port.outport(), ips_cmp("ip4.dst", v4)), (Next(),), pp)
    llas = [str(link_local(m)) for m in port.macs]
    v6 = [*_v6(port.all_addresses), *llas, "ff00::/8"]
    sink.add(switch.key, stage, 90, conj(port.outport(), ips_cmp("ip6.dst", v6)), (Next(),), pp)
    drop = (Drop(DropReason.PORT_SECURITY_IP),)
    sink.add(switch.key, stage, 80, conj(port.outport(), BoolSym("ip")), drop, pp)
