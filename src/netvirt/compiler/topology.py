"""Datapaths, port bindings and multicast groups from the NB snapshot.

* one switch datapath per network (key = its VNI) and one router datapath per
  router (key = ROUTER_KEY_BASE + n);
* one port binding per NB port on a network, typed by ``device_owner``:
  router interface/gateway ports become ``patch`` ports whose peer is the
  router side ``lrp-<port id>``; load balancer VIP ports are ``vip`` (answered
  by the ARP responder, never bound to a host); floating IP ports are not
  logical ports (the router owns those addresses); the port an admin made
  for the upstream router of an external network (``device_owner``
  ``network:external_gateway``, holding the subnet's gateway IP) is
  ``localnet``: the network's connection to the physical network, plugged on
  the uplink of every gateway chassis at once (docs/gateways.md);
* a ``_MC_flood`` group per switch with every port that receives broadcast;
* VIF ports carry the bandwidth limits of their effective QoS policy
  (``build.qos.port_limits``), which the host's datapath enforces.

Port keys are a stable hash of the port id (with deterministic probing), so
adding or removing one port does not renumber the others and agents'
installed flows for untouched ports stay valid.
"""

from __future__ import annotations

import ipaddress
import zlib
from functools import lru_cache

from netvirt.compiler.build.qos import policy_id, port_limits
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.southbound.model import (
    BandwidthLimit,
    Datapath,
    MulticastGroup,
    PortBinding,
    PortType,
    SBState,
)

ROUTER_KEY_BASE = 1 << 24
MAX_PORT_KEY = 0x7FFF
FLOOD = "_MC_flood"
FLOOD_KEY = 0x8000
ROUTER_OWNERS = ("network:router_interface", "network:router_gateway")
SKIPPED_OWNERS = ("network:floatingip",)
EXTERNAL_GATEWAY_OWNER = "network:external_gateway"


def mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def router_port_name(port_id: str) -> str:
    return f"lrp-{port_id}"


def stable_keys(names: list[str], limit: int) -> dict[str, int]:
    """Hash names to keys in 1..limit; collisions probe to the next free key."""
    keys: dict[str, int] = {}
    used: set[int] = set()
    for name in sorted(names):
        key = zlib.crc32(name.encode()) % limit + 1
        while key in used:
            key = key % limit + 1
        used.add(key)
        keys[name] = key
    return keys


def router_keys(nb: NBSnapshot) -> dict[str, int]:
    """Routers keep their key while they exist: hash of the uuid above 2**24."""
    return {
        rid: ROUTER_KEY_BASE + k
        for rid, k in stable_keys([r["id"] for r in nb.routers], 0xFFFFFF).items()
    }


def port_cidrs(nb: NBSnapshot, port: Obj) -> tuple[str, ...]:
    subnets = nb.by_id("subnets")
    out = []
    for fixed in port["fixed_ips"]:
        subnet = subnets.get(fixed["subnet_id"])
        prefix = _prefixlen(subnet["cidr"]) if subnet else 32
        out.append(f"{fixed['ip_address']}/{prefix}")
    return tuple(out)


@lru_cache(maxsize=65536)
def _prefixlen(cidr: str) -> int:
    return ipaddress.ip_network(cidr).prefixlen


def _port_type(port: Obj, net: Obj) -> PortType:
    owner = port["device_owner"]
    if owner in ROUTER_OWNERS:
        return "patch"
    if owner == "Octavia":
        return "vip"
    if owner == EXTERNAL_GATEWAY_OWNER and net.get("router:external"):
        return "localnet"
    return "vif"


def _limits(
    port: Obj, net: Obj, policies: dict[str, Obj]
) -> tuple[BandwidthLimit | None, BandwidthLimit | None]:
    """(egress, ingress) bandwidth limits of a VM port."""
    return port_limits(policies.get(policy_id(port, net) or ""))


def build_topology(
    nb: NBSnapshot,
    sb: SBState,
    reuse: SBState | None = None,
    scope: frozenset[int] = frozenset(),
    drop: set[str] | None = None,
) -> None:
    """Fill ``sb`` with datapaths, port bindings and multicast groups.

    ``reuse``: a previous result whose bindings and groups of every switch outside
    ``scope`` are still right (the incremental compiler's promise): they are copied
    instead of computed again, without looking at those switches' NB ports. ``drop``:
    the names of ``reuse``'s bindings of the switches in ``scope`` and of routers, if
    known: everything else is then copied whole (dict copies, no walk over the ports)."""
    networks = nb.network_by_key()
    if reuse is not None and drop is not None:
        _patch_topology(nb, sb, reuse, scope, drop, networks)
        return
    kept = _kept_switches(networks, reuse, scope)
    for key, net in networks.items():
        old = reuse.datapaths.get(key) if reuse is not None and key in kept else None
        sb.datapaths[key] = old or Datapath(
            key, "switch", net["id"], net["project_id"], net["name"]
        )
    rkeys = router_keys(nb)
    for router in nb.routers:
        key = rkeys[router["id"]]
        sb.datapaths[key] = Datapath(
            key, "router", router["id"], router["project_id"], router["name"]
        )
    if reuse is not None and kept:
        sb.ports.update({n: pb for n, pb in reuse.ports.items() if pb.datapath in kept})
        sb.groups.update({(dp, FLOOD): reuse.groups[(dp, FLOOD)] for dp in sorted(kept)})
    policies = nb.by_id("qos_policies")
    for dp_key, net in networks.items():
        if dp_key not in kept:
            _switch_ports(nb, sb, net, dp_key, policies)
    _router_ports(nb, sb, rkeys)


def _patch_topology(
    nb: NBSnapshot,
    sb: SBState,
    reuse: SBState,
    scope: frozenset[int],
    drop: set[str],
    networks: dict[int, Obj],
) -> None:
    """``reuse`` with the switches of ``scope`` and every router built again."""
    sb.datapaths.update(reuse.datapaths)
    for key in [k for k in sb.datapaths if k >= ROUTER_KEY_BASE or k in scope]:
        del sb.datapaths[key]
    for key in sorted(scope):
        net = networks.get(key)
        if net is not None:
            sb.datapaths[key] = Datapath(key, "switch", net["id"], net["project_id"], net["name"])
    rkeys = router_keys(nb)
    for router in nb.routers:
        key = rkeys[router["id"]]
        sb.datapaths[key] = Datapath(
            key, "router", router["id"], router["project_id"], router["name"]
        )
    sb.ports.update(reuse.ports)
    for name in drop:
        sb.ports.pop(name, None)
    sb.groups.update(reuse.groups)
    for key in scope:
        sb.groups.pop((key, FLOOD), None)
    policies = nb.by_id("qos_policies")
    for key in sorted(scope):
        net = networks.get(key)
        if net is not None:
            _switch_ports(nb, sb, net, key, policies)
    _router_ports(nb, sb, rkeys)


def _router_ports(nb: NBSnapshot, sb: SBState, rkeys: dict[str, int]) -> None:
    for router in nb.routers:
        dp_key = rkeys[router["id"]]
        rports = nb.router_ports(router["id"])
        keys = stable_keys([router_port_name(p["id"]) for p in rports], MAX_PORT_KEY)
        for port in rports:
            name = router_port_name(port["id"])
            sb.ports[name] = PortBinding(
                name=name,
                key=keys[name],
                datapath=dp_key,
                type="patch",
                mac=mac_int(port["mac_address"]),
                ips=port_cidrs(nb, port),
                peer=port["id"],
                nb_id=port["id"],
            )


def _kept_switches(
    networks: dict[int, Obj], reuse: SBState | None, scope: frozenset[int]
) -> frozenset[int]:
    """The switches whose bindings and flood group ``reuse`` holds and may give."""
    if reuse is None:
        return frozenset()
    return frozenset(
        dp for dp, name in reuse.groups if name == FLOOD and dp not in scope and dp in networks
    )


def _switch_ports(
    nb: NBSnapshot, sb: SBState, net: Obj, dp_key: int, policies: dict[str, Obj]
) -> None:
    """The bindings and flood group of one switch."""
    members = [p for p in nb.ports_of(net["id"]) if p["device_owner"] not in SKIPPED_OWNERS]
    keys = stable_keys([p["id"] for p in members], MAX_PORT_KEY)
    for port in members:
        kind = _port_type(port, net)
        peer = router_port_name(port["id"]) if kind == "patch" else None
        egress, ingress = _limits(port, net, policies) if kind == "vif" else (None, None)
        sb.ports[port["id"]] = PortBinding(
            name=port["id"],
            key=keys[port["id"]],
            datapath=dp_key,
            type=kind,
            mac=mac_int(port["mac_address"]),
            ips=port_cidrs(nb, port),
            peer=peer,
            requested_chassis=port.get("binding:host_id", ""),
            up=port["status"] == "ACTIVE",
            nb_id=port["id"],
            egress_limit=egress,
            ingress_limit=ingress,
        )
    flood = tuple(sorted(p["id"] for p in members if _port_type(p, net) != "vip"))
    sb.groups[(dp_key, FLOOD)] = MulticastGroup(dp_key, FLOOD, FLOOD_KEY, flood)
