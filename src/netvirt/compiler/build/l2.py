"""L2 lookup (``ls_in_l2_lkup``): destination MAC → outport.

* broadcast and multicast (70) → the ``_MC_flood`` group (every port but the
  inport; VIPs are not members);
* a port's MAC (50) → that port, for VM, router and VIP ports alike; an
  allowed address pair's MAC → its port too, unless several ports share it
  (VRRP): then it is flooded like unknown unicast and reaches exactly the
  ports whose egress port security admits that MAC;
* anything else (0): unknown unicast is flooded as well. Every Neutron port
  has a known MAC, so this only matters for ports without port security
  (nested bridges, appliances); egress port security keeps flooded unicast
  away from the other VMs.

The load balancer builder adds the delivery of balanced packets here (110).
"""

from __future__ import annotations

from collections import Counter
from functools import partial

from netvirt.compiler.build import (
    LPort,
    Switch,
    add_defaults,
    mac_value,
    per_port,
    port_provenance,
    switches,
)
from netvirt.compiler.expr.ast import BoolSym, Cmp, conj
from netvirt.compiler.lflow import FlowSink
from netvirt.compiler.nb import NBSnapshot
from netvirt.compiler.topology import FLOOD_KEY
from netvirt.dataplane.actions import Output, SetField
from netvirt.southbound.model import SBState

BUILDER = "l2"


def flood() -> tuple[object, ...]:
    return (SetField("outport", FLOOD_KEY), Output())


def build(nb: NBSnapshot, sb: SBState, sink: FlowSink) -> None:
    for switch in switches(nb, sb):
        stage = "ls_in_l2_lkup"
        prov = switch.provenance(BUILDER, "broadcast/multicast")
        sink.add(switch.key, stage, 70, BoolSym("eth.mcast"), flood(), prov)
        _unicast(switch, sink)
        add_defaults(sink, switch, BUILDER, {stage: flood()})


def _unicast(switch: Switch, sink: FlowSink) -> None:
    owners = Counter(m for port in switch.ports for m in port.macs)
    shared = frozenset(m for m, n in owners.items() if n > 1)
    inputs = (switch.key, shared)  # all _port reads of the switch
    for port in switch.ports:
        per_port(sink, BUILDER, switch, port, inputs, partial(_port, switch, port, shared, sink))


def _port(switch: Switch, port: LPort, shared: frozenset[int], sink: FlowSink) -> None:
    """A port's MACs → the port; a pair MAC other ports also have (``shared``) floods."""
    for mac in port.macs:
        if mac != port.mac and mac in shared:
            continue
        match = conj(Cmp("eth.dst", "==", (mac_value(mac),)))
        acts = (port.set_outport(), Output())
        prov = port_provenance(BUILDER, port)
        sink.add(switch.key, "ls_in_l2_lkup", 50, match, acts, prov)
