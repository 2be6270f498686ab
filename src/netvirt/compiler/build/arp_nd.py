"""ARP and IPv6 neighbor discovery responder (``ls_in_arp_rsp``).

The switch knows every address on it (VM fixed IPs, router interfaces, load
balancer VIPs), so it answers ARP requests and neighbor solicitations for them
on the host where the request enters, instead of flooding them:

* ARP (50): ``arp.op == 1 && arp.tpa == {port's IPv4 addresses}`` → the
  request is turned into the reply in place: ``eth.dst = eth.src; eth.src =
  MAC; arp.op = 2; arp.tha = arp.sha; arp.sha = MAC; arp.tpa <-> arp.spa``
  (the sender becomes the target and the requested address the sender), then
  sent back out of the inport (``flags.loopback``).
* ND (50): ``nd_ns && nd.target == IP`` → ``nd_na`` built by the datapath,
  with the router flag for router ports.
* A port's own request for its own address (duplicate address detection,
  gratuitous ARP probes) is not answered (100): it continues to the flood.

Allowed-address-pair addresses are not answered: they may move between ports
(VRRP), so their owner answers itself. Link-local addresses of VMs are
answered by the VMs.
"""

from __future__ import annotations

import ipaddress
from functools import partial

from netvirt.compiler.build import (
    LPort,
    Switch,
    add_defaults,
    ips_cmp,
    per_port,
    port_provenance,
    reply_to_sender,
    switches,
)
from netvirt.compiler.expr.ast import BoolSym, Cmp, Value, conj
from netvirt.compiler.lflow import FlowSink
from netvirt.compiler.nb import NBSnapshot
from netvirt.dataplane.actions import Exchange, Move, NdAdvert, Next, SetField
from netvirt.southbound.model import SBState

BUILDER = "arp_nd"
ARP_REQUEST, ARP_REPLY = 1, 2
SENDERS = ("vif", "localnet")  # ports whose own requests for their address are not answered


def build(nb: NBSnapshot, sb: SBState, sink: FlowSink) -> None:
    for switch in switches(nb, sb):
        inputs = (switch.key,)  # all _port reads of the switch
        for port in switch.ports:
            per_port(sink, BUILDER, switch, port, inputs, partial(_port, switch, port, sink))
        add_defaults(sink, switch, BUILDER, {"ls_in_arp_rsp": (Next(),)})


def _port(switch: Switch, port: LPort, sink: FlowSink) -> None:
    _arp(switch, port, sink)
    _nd(switch, port, sink)


def arp_reply_actions(mac: int) -> tuple[object, ...]:
    """Rewrite an ARP request for an address owned by ``mac`` into its reply."""
    return (
        Move("eth.dst", "eth.src"),
        SetField("eth.src", mac),
        SetField("arp.op", ARP_REPLY),
        Move("arp.tha", "arp.sha"),
        SetField("arp.sha", mac),
        Exchange("arp.tpa", "arp.spa"),
        *reply_to_sender(),
    )


def _arp(switch: Switch, port: LPort, sink: FlowSink) -> None:
    v4 = port.fixed_of(4)
    if not v4:
        return
    stage, prov = "ls_in_arp_rsp", port_provenance(BUILDER, port)
    request = conj(Cmp("arp.op", "==", (Value(ARP_REQUEST),)), ips_cmp("arp.tpa", v4))
    if port.pb.type in SENDERS:
        sink.add(switch.key, stage, 100, conj(port.inport(), request), (Next(),), prov)
    sink.add(switch.key, stage, 50, request, arp_reply_actions(port.mac), prov)


def _nd(switch: Switch, port: LPort, sink: FlowSink) -> None:
    stage, prov = "ls_in_arp_rsp", port_provenance(BUILDER, port)
    router = port.pb.type == "patch"
    for address in port.fixed_of(6):
        solicit = conj(BoolSym("nd_ns"), ips_cmp("nd.target", [address]))
        if port.pb.type in SENDERS:
            sink.add(switch.key, stage, 100, conj(port.inport(), solicit), (Next(),), prov)
        target = int(ipaddress.IPv6Address(address))
        advert = NdAdvert(target, port.mac, router, reply_to_sender())
        sink.add(switch.key, stage, 50, solicit, (advert,), prov)
