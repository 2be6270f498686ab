"""Test states: a realistic tenant built through the API, and a tiny hand-made SB.

One project with a dual-stack network, security groups with rules, QoS, a
router with an external gateway, a floating IP and a load balancer, so the
compiled SB state has flows from every builder (ct_lb, ct_snat/dnat,
dhcp_reply, nd_ra, icmp errors, patch ports, flood groups).
"""

from __future__ import annotations

from typing import Any

from conftest import Api
from netvirt.compiler import nb as nbmod
from netvirt.compiler.compile import compile_nb
from netvirt.compiler.expr.ast import Cmp, Value, conj
from netvirt.compiler.lflow import LogicalFlow, Provenance
from netvirt.compiler.stages import stage
from netvirt.dataplane.actions import Output, SetField
from netvirt.northbound.db import Database
from netvirt.southbound.model import Datapath, MulticastGroup, PortBinding, SBState

Obj = dict[str, Any]


def create(api: Api, path: str, kind: str, body: Obj) -> Obj:
    created: Obj = api.ok("POST", path, {kind: body})[kind]
    return created


def compile_db(db: Database) -> SBState:
    nb = nbmod.load(db)
    sb = compile_nb(nb)
    sb.generation = nb.generation
    return sb


def ipv4_of(port: Obj) -> str:
    return str(next(ip["ip_address"] for ip in port["fixed_ips"] if "." in ip["ip_address"]))


def network(api: Api, name: str, cidr: str, **attrs: Any) -> tuple[Obj, Obj]:
    net = create(api, "/v2.0/networks", "network", {"name": name, **attrs})
    body: Obj = {"network_id": net["id"], "cidr": cidr, "name": f"{name}-sub"}
    if ":" in cidr:
        body |= {"ip_version": 6, "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}
    sub = create(api, "/v2.0/subnets", "subnet", body)
    return net, sub


def tenant(admin: Api, alice: Api) -> dict[str, Obj]:
    """Build the tenant; returns the objects tests refer to by name."""
    ext, ext_sub = network(admin, "ext", "172.24.4.0/24", **{"router:external": True})
    net, sub = network(alice, "web", "10.0.0.0/24")
    sub6 = create(
        alice,
        "/v2.0/subnets",
        "subnet",
        {
            "network_id": net["id"],
            "cidr": "fd00:1::/64",
            "ip_version": 6,
            "ipv6_ra_mode": "slaac",
            "ipv6_address_mode": "slaac",
        },
    )
    web = create(alice, "/v2.0/security-groups", "security_group", {"name": "web"})
    rule = {"security_group_id": web["id"], "direction": "ingress", "protocol": "tcp"}
    create(
        alice,
        "/v2.0/security-group-rules",
        "security_group_rule",
        rule
        | {
            "port_range_min": 80,
            "port_range_max": 443,
            "ethertype": "IPv4",
            "remote_ip_prefix": "192.168.0.0/16",
        },
    )
    policy = create(alice, "/v2.0/qos/policies", "policy", {"name": "gold"})
    alice.ok(
        "POST",
        f"/v2.0/qos/policies/{policy['id']}/dscp_marking_rules",
        {"dscp_marking_rule": {"dscp_mark": 26}},
    )
    vm1 = create(alice, "/v2.0/ports", "port", {"name": "vm1", "network_id": net["id"]})
    groups = [*vm1["security_groups"], web["id"]]
    vm2 = create(
        alice,
        "/v2.0/ports",
        "port",
        {
            "name": "vm2",
            "network_id": net["id"],
            "security_groups": groups,
            "qos_policy_id": policy["id"],
        },
    )
    router = create(
        alice,
        "/v2.0/routers",
        "router",
        {"name": "r1", "external_gateway_info": {"network_id": ext["id"]}},
    )
    alice.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    alice.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub6["id"]})
    fip = create(
        alice,
        "/v2.0/floatingips",
        "floatingip",
        {"floating_network_id": ext["id"], "port_id": vm1["id"]},
    )
    lb = create(
        alice,
        "/v2/lbaas/loadbalancers",
        "loadbalancer",
        {"name": "lb1", "vip_subnet_id": sub["id"]},
    )
    listener = create(
        alice,
        "/v2/lbaas/listeners",
        "listener",
        {
            "name": "http",
            "loadbalancer_id": lb["id"],
            "protocol": "TCP",
            "protocol_port": 80,
        },
    )
    pool = create(
        alice,
        "/v2/lbaas/pools",
        "pool",
        {
            "name": "pool",
            "listener_id": listener["id"],
            "protocol": "TCP",
            "lb_algorithm": "SOURCE_IP",
        },
    )
    for vm in (vm1, vm2):
        alice.ok(
            "POST",
            f"/v2/lbaas/pools/{pool['id']}/members",
            {"member": {"address": ipv4_of(vm), "protocol_port": 8080}},
        )
    return {
        "ext": ext,
        "ext_sub": ext_sub,
        "net": net,
        "sub": sub,
        "vm1": vm1,
        "vm2": vm2,
        "router": router,
        "fip": fip,
        "lb": lb,
        "web": web,
    }


def small_state(key_a: int, generation: int = 1) -> SBState:
    """Two ports on one switch; ``a``'s key is chosen by the test."""
    ports = {
        "a": PortBinding("a", key_a, 1, "vif", 0xFA163E000001, ("10.0.0.1/24",)),
        "b": PortBinding("b", 6, 1, "vif", 0xFA163E000002, ("10.0.0.2/24",)),
    }
    match = conj(
        Cmp("inport", "==", (Value(key_a, None, "a"),)),
        Cmp("eth.dst", "==", (Value(0xFA163E000002),)),
    )
    flow = LogicalFlow(
        1,
        stage("ls_in_l2_lkup"),
        50,
        match,
        (SetField("outport", 6), Output()),
        Provenance("l2", "port", "b"),
    )
    return SBState(
        generation=generation,
        datapaths={1: Datapath(1, "switch", "net", "p1")},
        ports=ports,
        groups={(1, "_MC_flood"): MulticastGroup(1, "_MC_flood", 0x8000, ("a", "b"))},
        flows=[flow],
    )
