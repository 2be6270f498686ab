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
    nb: NBSnapshot, sb: SBState, reuse: SBState | None = None, scope: frozenset[int] = frozenset()
) -> None:
    """Fill ``sb`` with datapaths, port bindings and multicast groups.

    ``reuse``: a previous result whose bindings and groups of every switch outside
    ``scope`` are still right (the incremental compiler's promise): they are copied
    instead of computed again."""
    kept: dict[int, list[PortBinding]] = {}
    if reuse is not None:
        for pb in reuse.ports.values():
            if pb.datapath < ROUTER_KEY_BASE and pb.datapath not in scope:
                kept.setdefault(pb.datapath, []).append(pb)
    for net in nb.networks:
        key = int(net["provider:segmentation_id"])
        sb.datapaths[key] = Datapath(key, "switch", net["id"], net["project_id"], net["name"])
    rkeys = router_keys(nb)
    for router in nb.routers:
        key = rkeys[router["id"]]
        sb.datapaths[key] = Datapath(
            key, "router", router["id"], router["project_id"], router["name"]
        )
    policies = nb.by_id("qos_policies")
    for net in nb.networks:
        net_id, dp_key = net["id"], int(net["provider:segmentation_id"])
        if reuse is not None and dp_key not in scope and (dp_key, FLOOD) in reuse.groups:
            for pb in kept.get(dp_key, ()):
                sb.ports[pb.name] = pb
            sb.groups[(dp_key, FLOOD)] = reuse.groups[(dp_key, FLOOD)]
            continue
        members = [p for p in nb.ports_of(net_id) if p["device_owner"] not in SKIPPED_OWNERS]
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
