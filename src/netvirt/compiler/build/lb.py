"""Load balancers: VIP → member selection with conntrack DNAT, on the VIP's switch.

Design (like OVN's switch load balancers, adapted to zones per port)
-------------------------------------------------------------------
The balancing happens in the ingress pipeline of the VIP network's switch,
i.e. on the host where the client's packet enters that switch: the client's
own port, or the router's patch port for a routed client. Conntrack zones are
per (datapath, port) and the same in both directions, which is what makes the
reverse translation work:

1. ``ls_in_pre_lb`` (100): ``ip.dst == VIP && <proto>.dst == listener port``
   sets REGBIT_LB; ``ls_in_pre_stateful`` (100) sends it through ``ct_next``.
2. ``ls_in_lb`` (100): ``ct_lb(backends; algorithm)`` picks a member, DNATs
   ip/port and commits the connection in the *client port's* zone. The same
   flow handles later packets of the connection: ``ct_lb`` on a known
   connection reuses its backend (the conntrack contract). With no usable
   member the packet is dropped (no_lb_backend).
   ``ls_in_stateful`` (110) skips the ACL commit: ``ct_lb`` committed already.
3. ``ls_in_l2_lkup`` (110): the client addressed the VIP's MAC; after DNAT the
   frame must go to the chosen member, so REGBIT_LB && ``ip.dst == member``
   rewrites ``eth.dst`` and picks the outport: the member's port when the
   member is on this network, else the router port on the VIP subnet (the
   router then routes to the member).
4. Replies come back from the member's address and port and leave the switch
   towards the client: ``ls_out_pre_stateful`` (110) marks REGBIT_LB and
   tracks them in the client port's zone (``ct_next``, so security groups of
   the client see ``ct.est``), and ``ls_out_stateful`` (110) un-DNATs them
   (``ct_dnat`` without an address: reverse the connection's NAT), so the
   client sees the VIP as the source.

Members: enabled, weight > 0, operating status not OFFLINE/ERROR; backup
members are used only when no primary member is usable. SOURCE_IP session
persistence becomes conntrack affinity (``persistence_timeout``, 360 s by
default).

Limitations: only clients whose traffic enters the VIP's own switch are
balanced (clients on that network, or routed through a router attached to
it); a VIP is not reachable by ICMP; a member cannot reach its own VIP
(hairpin); an off-network member needs a router interface on the VIP subnet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from netvirt.compiler.build import (
    LPort,
    Switch,
    add_defaults,
    ip_value,
    reg0_bit,
    set_reg0_bit,
    switches,
)
from netvirt.compiler.expr.ast import BoolSym, Cmp, Value, conj
from netvirt.compiler.lflow import FlowSink, Provenance
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.compiler.regs import REGBIT_LB
from netvirt.dataplane.actions import Backend, CtDnat, CtLb, CtNext, Drop, Next, Output, SetField
from netvirt.dataplane.drops import DropReason
from netvirt.southbound.model import SBState

BUILDER = "lb"
TRANSPORT = {"TCP": "tcp", "HTTP": "tcp", "UDP": "udp"}
UNUSABLE_STATUS = ("OFFLINE", "ERROR")
DEFAULT_PERSISTENCE_TIMEOUT = 360


@dataclass(frozen=True, slots=True)
class Vip:
    listener: Obj
    address: str
    version: int
    proto: str
    port: int
    backends: tuple[Backend, ...]
    algorithm: str
    affinity: int


def build(nb: NBSnapshot, sb: SBState, sink: FlowSink) -> None:
    for switch in switches(nb, sb):
        vips = vips_of(nb, switch)
        if vips:
            _common(switch, sink)
        for vip in vips:
            _vip_flows(switch, vip, sink)
        _members(switch, vips, sink)
        add_defaults(sink, switch, BUILDER, {"ls_in_pre_lb": (Next(),), "ls_in_lb": (Next(),)})


def vips_of(nb: NBSnapshot, switch: Switch) -> list[Vip]:
    """Every enabled listener of every enabled load balancer whose VIP is on this network."""
    pools = nb.by_id("pools")
    out = []
    for lb in sorted(nb.loadbalancers, key=lambda o: str(o["id"])):
        if lb.get("vip_network_id") != switch.id or not lb.get("admin_state_up", True):
            continue
        for listener in sorted(nb.listeners, key=lambda o: str(o["id"])):
            owners = [ref["id"] for ref in listener.get("loadbalancers", [])]
            if lb["id"] not in owners or not listener.get("admin_state_up", True):
                continue
            pool = pools.get(listener.get("default_pool_id") or "")
            out.append(_vip(nb, lb, listener, pool))
    return out


def _vip(nb: NBSnapshot, lb: Obj, listener: Obj, pool: Obj | None) -> Vip:
    address = str(lb["vip_address"])
    version = ipaddress.ip_address(address).version
    backends: tuple[Backend, ...] = ()
    algorithm, affinity = "ROUND_ROBIN", 0
    if pool is not None and pool.get("admin_state_up", True):
        backends = usable_backends(nb, pool, version)
        algorithm = str(pool.get("lb_algorithm") or "ROUND_ROBIN")
        persistence = pool.get("session_persistence") or {}
        if persistence.get("type") == "SOURCE_IP":
            affinity = int(persistence.get("persistence_timeout") or DEFAULT_PERSISTENCE_TIMEOUT)
    proto = TRANSPORT[str(listener["protocol"])]
    port = int(listener["protocol_port"])
    return Vip(listener, address, version, proto, port, backends, algorithm, affinity)


def usable_backends(nb: NBSnapshot, pool: Obj, version: int) -> tuple[Backend, ...]:
    members = sorted(
        (m for m in nb.members if m["pool_id"] == pool["id"]),
        key=lambda m: (ipaddress.ip_address(m["address"]).packed, int(m["protocol_port"])),
    )
    usable = [
        m
        for m in members
        if m.get("admin_state_up", True)
        and int(m.get("weight", 1)) > 0
        and m.get("operating_status") not in UNUSABLE_STATUS
        and ipaddress.ip_address(m["address"]).version == version
    ]
    chosen = [m for m in usable if not m.get("backup")] or [m for m in usable if m.get("backup")]
    return tuple(
        Backend(int(ipaddress.ip_address(m["address"])), int(m["protocol_port"]), version)
        for m in chosen
    )


def _common(switch: Switch, sink: FlowSink) -> None:
    prov = switch.provenance(BUILDER, "load balancing")
    marked = reg0_bit(REGBIT_LB)
    sink.add(switch.key, "ls_in_pre_stateful", 100, marked, (CtNext(),), prov)
    sink.add(switch.key, "ls_in_stateful", 110, marked, (Next(),), prov)


def _vip_match(vip: Vip) -> list[Cmp | BoolSym]:
    return [
        Cmp(f"ip{vip.version}.dst", "==", (ip_value(vip.address),)),
        BoolSym(vip.proto),
        Cmp(f"{vip.proto}.dst", "==", (Value(vip.port),)),
    ]


def _vip_flows(switch: Switch, vip: Vip, sink: FlowSink) -> None:
    prov = Provenance(BUILDER, "listener", str(vip.listener["id"]))
    match = _vip_match(vip)
    sink.add(switch.key, "ls_in_pre_lb", 100, conj(*match), (set_reg0_bit(REGBIT_LB), Next()), prov)
    action: object = Drop(DropReason.NO_LB_BACKEND)
    if vip.backends:
        action = CtLb(vip.backends, vip.algorithm, vip.affinity)
    sink.add(switch.key, "ls_in_lb", 100, conj(reg0_bit(REGBIT_LB), *match), (action,), prov)


def _members(switch: Switch, vips: list[Vip], sink: FlowSink) -> None:
    """Delivery of balanced packets to members, and the reverse NAT of members' replies."""
    by_ip = {
        addr: port for port in switch.ports for addr in port.fixed_ips if port.pb.type != "vip"
    }
    delivered: set[tuple[int, int]] = set()
    replies: set[tuple[int, int, str, int]] = set()
    for vip in vips:
        prov = Provenance(BUILDER, "listener", str(vip.listener["id"]))
        for backend in vip.backends:
            address = str(ipaddress.ip_address(backend.ip))
            if (backend.ip_version, backend.ip) not in delivered:
                target = by_ip.get(address) or _gateway_port(switch, vip)
                if target is not None:
                    delivered.add((backend.ip_version, backend.ip))
                    _deliver(switch, backend, address, target, prov, sink)
            reply = (backend.ip_version, backend.ip, vip.proto, backend.port or 0)
            if reply not in replies:
                replies.add(reply)
                _unnat(switch, backend, address, vip.proto, prov, sink)
    for version in sorted({r[0] for r in replies}):
        unnat = conj(reg0_bit(REGBIT_LB), BoolSym(f"ip{version}"))
        reverse = (CtDnat(None, version),)
        prov = switch.provenance(BUILDER, "reverse NAT of member replies")
        sink.add(switch.key, "ls_out_stateful", 110, unnat, reverse, prov)


def _gateway_port(switch: Switch, vip: Vip) -> LPort | None:
    """The router port on the VIP's subnet, through which off-network members are reached."""
    vip_addr = ipaddress.ip_address(vip.address)
    for port in switch.ports:
        if port.pb.type != "patch":
            continue
        for subnet in switch.subnets:
            net = ipaddress.ip_network(subnet["cidr"])
            mine = [a for a in port.fixed_ips if ipaddress.ip_address(a) in net]
            if mine and vip_addr in net:
                return port
    return None


def _deliver(
    switch: Switch, backend: Backend, address: str, target: LPort, prov: Provenance, sink: FlowSink
) -> None:
    match = conj(
        reg0_bit(REGBIT_LB), Cmp(f"ip{backend.ip_version}.dst", "==", (ip_value(address),))
    )
    acts = (SetField("eth.dst", target.mac), target.set_outport(), Output())
    sink.add(switch.key, "ls_in_l2_lkup", 110, match, acts, prov)


def _unnat(
    switch: Switch, backend: Backend, address: str, proto: str, prov: Provenance, sink: FlowSink
) -> None:
    match = conj(
        Cmp(f"ip{backend.ip_version}.src", "==", (ip_value(address),)),
        BoolSym(proto),
        Cmp(f"{proto}.src", "==", (Value(backend.port or 0),)),
    )
    mark = (set_reg0_bit(REGBIT_LB), CtNext())
    sink.add(switch.key, "ls_out_pre_stateful", 110, match, mark, prov)
