"""Shared fixtures for compiler tests: NB snapshots built without a database.

``nbb`` is an :class:`NBBuilder`: it creates API-shaped dicts (the same keys
the services return) with deterministic ids (uuid5 of kind and name) and MACs
(``fa:16:3e:00:00:NN`` in creation order), so compiled flows and goldens are
stable. Everything is optional keyword arguments with Neutron's defaults;
tests state only what they are about.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import pytest

from netvirt.compiler.nb import NBSnapshot

Obj = dict[str, Any]
NAMESPACE = uuid.UUID("6f1c3a52-2f3e-4c55-9d0e-0c1a2b3c4d5e")


def make_id(kind: str, name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{name}"))


class NBBuilder:
    """Builds an :class:`NBSnapshot` object by object (see the module docstring)."""

    def __init__(self) -> None:
        self.nb = NBSnapshot(generation=1)
        self._macs = 0

    def snapshot(self) -> NBSnapshot:
        return self.nb

    def _mac(self) -> str:
        self._macs += 1
        return f"fa:16:3e:00:{self._macs >> 8:02x}:{self._macs & 0xFF:02x}"

    @staticmethod
    def _std(kind: str, name: str, project: str) -> Obj:
        return {"id": make_id(kind, name), "name": name, "project_id": project}

    # -- L2 -------------------------------------------------------------------------------
    def network(self, name: str, vni: int, project: str = "p1", **kw: Any) -> Obj:
        net = self._std("network", name, project) | {
            "admin_state_up": True,
            "mtu": 1442,
            "port_security_enabled": True,
            "router:external": False,
            "shared": False,
            "qos_policy_id": None,
            "dns_domain": "",
            "subnets": [],
            "provider:network_type": "geneve",
            "provider:segmentation_id": vni,
        }
        net |= kw
        self.nb.networks.append(net)
        return net

    def subnet(self, net: Obj, name: str, cidr: str, **kw: Any) -> Obj:
        block = ipaddress.ip_network(cidr)
        first, last = block.network_address + 1, block[-1] - (1 if block.version == 4 else 0)
        gateway = str(first)
        sub = self._std("subnet", name, net["project_id"]) | {
            "network_id": net["id"],
            "ip_version": block.version,
            "cidr": cidr,
            "gateway_ip": gateway,
            "allocation_pools": [{"start": str(first + 1), "end": str(last)}],
            "dns_nameservers": [],
            "host_routes": [],
            "enable_dhcp": True,
            "ipv6_ra_mode": None,
            "ipv6_address_mode": None,
        }
        sub |= kw
        net["subnets"].append(sub["id"])
        self.nb.subnets.append(sub)
        return sub

    def port(
        self,
        net: Obj,
        name: str,
        ips: list[tuple[Obj, str]] | None = None,
        *,
        sgs: list[Obj] | None = None,
        pairs: list[Obj] | None = None,
        **kw: Any,
    ) -> Obj:
        mac = kw.pop("mac_address", None) or self._mac()
        port = self._std("port", name, net["project_id"]) | {
            "network_id": net["id"],
            "mac_address": mac,
            "admin_state_up": True,
            "status": "ACTIVE",
            "device_id": "",
            "device_owner": "compute:nova",
            "fixed_ips": [{"subnet_id": s["id"], "ip_address": a} for s, a in ips or []],
            "security_groups": [g["id"] for g in sgs or []],
            "port_security_enabled": True,
            "allowed_address_pairs": [
                {"ip_address": p["ip_address"], "mac_address": p.get("mac_address") or mac}
                for p in pairs or []
            ],
            "binding:host_id": "",
            "qos_policy_id": None,
        }
        port |= kw
        self.nb.ports.append(port)
        return port

    # -- security groups -------------------------------------------------------------------
    def security_group(self, name: str, project: str = "p1", *, stateful: bool = True) -> Obj:
        group = self._std("security_group", name, project) | {
            "stateful": stateful,
            "security_group_rules": [],
        }
        self.nb.security_groups.append(group)
        return group

    def rule(self, group: Obj, direction: str, ethertype: str = "IPv4", **kw: Any) -> Obj:
        index = len(group["security_group_rules"])
        rule = {
            "id": make_id("rule", f"{group['name']}:{index}"),
            "project_id": group["project_id"],
            "security_group_id": group["id"],
            "direction": direction,
            "ethertype": ethertype,
            "protocol": None,
            "port_range_min": None,
            "port_range_max": None,
            "remote_ip_prefix": None,
            "remote_group_id": None,
        } | kw
        group["security_group_rules"].append(rule)
        return rule

    def default_group(self, project: str = "p1", name: str = "default") -> Obj:
        """Neutron's default group: egress anything, ingress from the same group."""
        group = self.security_group(name, project)
        for ethertype in ("IPv4", "IPv6"):
            self.rule(group, "egress", ethertype)
            self.rule(group, "ingress", ethertype, remote_group_id=group["id"])
        return group

    # -- routers -------------------------------------------------------------------------------
    def router(self, name: str, project: str = "p1", **kw: Any) -> Obj:
        router = self._std("router", name, project) | {
            "admin_state_up": True,
            "status": "ACTIVE",
            "external_gateway_info": None,
            "routes": [],
            "distributed": True,
            "ha": False,
        }
        router |= kw
        self.nb.routers.append(router)
        return router

    def router_interface(self, router: Obj, net: Obj, subnet: Obj, ip: str | None = None) -> Obj:
        return self.port(
            net,
            f"{router['name']}-{subnet['name']}",
            [(subnet, ip or subnet["gateway_ip"])],
            device_owner="network:router_interface",
            device_id=router["id"],
            port_security_enabled=False,
        )

    # -- QoS --------------------------------------------------------------------------------
    def qos_policy(self, name: str, dscp: int | None = None, project: str = "p1") -> Obj:
        policy = self._std("qos_policy", name, project) | {"shared": False, "rules": []}
        if dscp is not None:
            policy["rules"].append(
                {
                    "id": make_id("qos_rule", f"{name}:dscp"),
                    "qos_policy_id": policy["id"],
                    "type": "dscp_marking",
                    "dscp_mark": dscp,
                }
            )
        self.nb.qos_policies.append(policy)
        return policy

    # -- load balancers -------------------------------------------------------------------------
    def loadbalancer(self, name: str, net: Obj, subnet: Obj, vip: str) -> Obj:
        lb = self._std("loadbalancer", name, net["project_id"]) | {
            "vip_address": vip,
            "vip_subnet_id": subnet["id"],
            "vip_network_id": net["id"],
            "admin_state_up": True,
            "provisioning_status": "ACTIVE",
            "operating_status": "ONLINE",
        }
        port = self.port(
            net,
            f"vip-{name}",
            [(subnet, vip)],
            device_owner="Octavia",
            device_id=lb["id"],
            port_security_enabled=False,
        )
        lb["vip_port_id"] = port["id"]
        self.nb.loadbalancers.append(lb)
        return lb

    def listener(self, lb: Obj, name: str, protocol: str, port: int, **kw: Any) -> Obj:
        listener = self._std("listener", name, lb["project_id"]) | {
            "protocol": protocol,
            "protocol_port": port,
            "default_pool_id": None,
            "admin_state_up": True,
            "loadbalancers": [{"id": lb["id"]}],
        }
        listener |= kw
        self.nb.listeners.append(listener)
        return listener

    def pool(self, listener: Obj, name: str, algorithm: str = "ROUND_ROBIN", **kw: Any) -> Obj:
        pool = self._std("pool", name, listener["project_id"]) | {
            "protocol": listener["protocol"],
            "lb_algorithm": algorithm,
            "session_persistence": None,
            "admin_state_up": True,
        }
        pool |= kw
        listener["default_pool_id"] = pool["id"]
        self.nb.pools.append(pool)
        return pool

    def member(self, pool: Obj, address: str, port: int, **kw: Any) -> Obj:
        member = {
            "id": make_id("member", f"{pool['name']}:{address}:{port}"),
            "pool_id": pool["id"],
            "address": address,
            "protocol_port": port,
            "subnet_id": None,
            "weight": 1,
            "admin_state_up": True,
            "backup": False,
            "operating_status": "NO_MONITOR",
        } | kw
        self.nb.members.append(member)
        return member


@pytest.fixture
def nbb() -> NBBuilder:
    return NBBuilder()
