"""End to end: objects created through the API, loaded with nb.load(db), compiled.

The golden covers a whole tenant switch as a user builds it: a network with a
DHCP subnet, two VMs in the project's default security group (created by the
API on first use), one with an extra group and a QoS policy, a router interface
and a load balancer. MACs are random, so the dump replaces them by port names.
"""

from __future__ import annotations

from typing import Any

from compiler.golden import check_golden, dump
from conftest import Api
from netvirt.compiler import nb as nbmod
from netvirt.compiler.compile import compile_nb, conflicts
from netvirt.northbound.db import Database


def _create(api: Api, path: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = api.ok("POST", path, {kind: body})[kind]
    return created


def _tenant(alice: Api) -> dict[str, Any]:
    net = _create(alice, "/v2.0/networks", "network", {"name": "web-net"})
    sub = _create(
        alice,
        "/v2.0/subnets",
        "subnet",
        {
            "name": "web-sub",
            "network_id": net["id"],
            "cidr": "10.0.0.0/24",
            "dns_nameservers": ["10.0.0.2"],
        },
    )
    web = _create(alice, "/v2.0/security-groups", "security_group", {"name": "web"})
    rule = {"security_group_id": web["id"], "direction": "ingress", "protocol": "tcp"}
    rule |= {"port_range_min": 443, "port_range_max": 443, "ethertype": "IPv4"}
    _create(alice, "/v2.0/security-group-rules", "security_group_rule", rule)
    policy = _create(alice, "/v2.0/qos/policies", "policy", {"name": "gold"})
    alice.ok(
        "POST",
        f"/v2.0/qos/policies/{policy['id']}/dscp_marking_rules",
        {"dscp_marking_rule": {"dscp_mark": 26}},
    )
    vm1 = _create(alice, "/v2.0/ports", "port", {"name": "vm1", "network_id": net["id"]})
    groups = [*vm1["security_groups"], web["id"]]
    _create(
        alice,
        "/v2.0/ports",
        "port",
        {"name": "vm2", "network_id": net["id"], "security_groups": groups},
    )
    alice.ok("PUT", f"/v2.0/ports/{vm1['id']}", {"port": {"qos_policy_id": policy["id"]}})
    router = _create(alice, "/v2.0/routers", "router", {"name": "r1"})
    alice.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    lb = alice.ok(
        "POST",
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"name": "lb1", "vip_subnet_id": sub["id"]}},
    )["loadbalancer"]
    listener = alice.ok(
        "POST",
        "/v2/lbaas/listeners",
        {
            "listener": {
                "name": "https",
                "loadbalancer_id": lb["id"],
                "protocol": "TCP",
                "protocol_port": 443,
            }
        },
    )["listener"]
    pool = alice.ok(
        "POST",
        "/v2/lbaas/pools",
        {
            "pool": {
                "name": "pool",
                "listener_id": listener["id"],
                "protocol": "TCP",
                "lb_algorithm": "ROUND_ROBIN",
            }
        },
    )["pool"]
    alice.ok(
        "POST",
        f"/v2/lbaas/pools/{pool['id']}/members",
        {"member": {"address": vm1["fixed_ips"][0]["ip_address"], "protocol_port": 8443}},
    )
    return net


def test_api_tenant_switch_golden(db: Database, alice: Api) -> None:
    net = _tenant(alice)
    nb = nbmod.load(db)
    sb = compile_nb(nb)
    assert conflicts(sb.flows) == []
    key = sb.datapath_by_name(net["id"]).key
    text = dump(sb, nb, key, hide_macs=True)
    check_golden("switch_api_tenant", text)
    assert "ct_lb(10.0.0." in text
    assert "ip.dscp = 26" in text
    assert "tcp.dst == 443" in text


def test_api_overlapping_tenants(db: Database, alice: Api, bob: Api) -> None:
    """Two projects, same CIDR, same fixed IPs: separate datapaths, no shared port."""
    for api in (alice, bob):
        net = _create(api, "/v2.0/networks", "network", {"name": "net"})
        body = {"network_id": net["id"], "cidr": "10.0.0.0/24"}
        _create(api, "/v2.0/subnets", "subnet", body)
        _create(api, "/v2.0/ports", "port", {"name": "vm", "network_id": net["id"]})
    sb = compile_nb(nbmod.load(db))
    switches = [dp for dp in sb.datapaths.values() if dp.kind == "switch"]
    assert len({dp.key for dp in switches}) == 2
    assert {dp.project_id for dp in switches} == {alice.project_id, bob.project_id}
    for dp in switches:
        own = {p.name for p in sb.ports.values() if p.datapath == dp.key}
        others = {p.name for p in sb.ports.values() if p.datapath != dp.key}
        for flow in (f for f in sb.flows if f.datapath == dp.key):
            text = repr(flow.match) + repr(flow.actions)
            assert not any(name in text for name in others)
        assert own
