"""Tenant isolation matrix: every resource type x read / list / update / delete from
another project. Another project's object must look exactly like a missing one (404),
must never appear in a list, and must be unchanged afterwards; admins see it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Api


@dataclass
class Case:
    path: str  # collection path, e.g. /v2.0/networks
    member: str
    collection: str
    update: dict[str, Any] | None  # a valid update body for the owner


def _world(admin: Api, alice: Api) -> dict[str, str]:
    """Alice's full topology; returns ids by resource name."""
    ext = admin.ok("POST", "/v2.0/networks", {"network": {"router:external": True}})["network"]
    admin.ok(
        "POST", "/v2.0/subnets", {"subnet": {"network_id": ext["id"], "cidr": "172.24.4.0/24"}}
    )
    net = alice.ok("POST", "/v2.0/networks", {"network": {"name": "a"}})["network"]["id"]
    sub = alice.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.0.0.0/24"}})[
        "subnet"
    ]["id"]
    port = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net}})["port"]["id"]
    router = alice.ok(
        "POST",
        "/v2.0/routers",
        {"router": {"name": "r", "external_gateway_info": {"network_id": ext["id"]}}},
    )["router"]["id"]
    alice.ok("PUT", f"/v2.0/routers/{router}/add_router_interface", {"subnet_id": sub}, expect=200)
    fip = alice.ok(
        "POST",
        "/v2.0/floatingips",
        {"floatingip": {"floating_network_id": ext["id"], "port_id": port}},
    )["floatingip"]["id"]
    sg = alice.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "web"}})[
        "security_group"
    ]["id"]
    rule = alice.ok(
        "POST",
        "/v2.0/security-group-rules",
        {
            "security_group_rule": {
                "security_group_id": sg,
                "direction": "ingress",
                "protocol": "tcp",
                "port_range_min": 80,
                "port_range_max": 80,
            }
        },
    )["security_group_rule"]["id"]
    qos = alice.ok("POST", "/v2.0/qos/policies", {"policy": {"name": "q"}})["policy"]["id"]
    bw = alice.ok(
        "POST",
        f"/v2.0/qos/policies/{qos}/bandwidth_limit_rules",
        {"bandwidth_limit_rule": {"max_kbps": 1000}},
    )["bandwidth_limit_rule"]["id"]
    lb = alice.ok("POST", "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": sub}})[
        "loadbalancer"
    ]["id"]
    listener = alice.ok(
        "POST",
        "/v2/lbaas/listeners",
        {"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80}},
    )["listener"]["id"]
    pool = alice.ok(
        "POST",
        "/v2/lbaas/pools",
        {"pool": {"listener_id": listener, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}},
    )["pool"]["id"]
    member = alice.ok(
        "POST",
        f"/v2/lbaas/pools/{pool}/members",
        {"member": {"address": "10.0.0.10", "protocol_port": 80}},
    )["member"]["id"]
    hm = alice.ok(
        "POST",
        "/v2/lbaas/healthmonitors",
        {
            "healthmonitor": {
                "pool_id": pool,
                "type": "TCP",
                "delay": 5,
                "timeout": 3,
                "max_retries": 3,
            }
        },
    )["healthmonitor"]["id"]
    return {
        "network": net,
        "subnet": sub,
        "port": port,
        "router": router,
        "floatingip": fip,
        "security_group": sg,
        "security_group_rule": rule,
        "policy": qos,
        "bandwidth_limit_rule": bw,
        "loadbalancer": lb,
        "listener": listener,
        "pool": pool,
        "member": member,
        "healthmonitor": hm,
    }


def _cases(ids: dict[str, str]) -> dict[str, Case]:
    qos = f"/v2.0/qos/policies/{ids['policy']}"
    return {
        "network": Case("/v2.0/networks", "network", "networks", {"name": "x"}),
        "subnet": Case("/v2.0/subnets", "subnet", "subnets", {"name": "x"}),
        "port": Case("/v2.0/ports", "port", "ports", {"name": "x"}),
        "router": Case("/v2.0/routers", "router", "routers", {"name": "x"}),
        "floatingip": Case("/v2.0/floatingips", "floatingip", "floatingips", {"description": "x"}),
        "security_group": Case(
            "/v2.0/security-groups", "security_group", "security_groups", {"name": "x"}
        ),
        "security_group_rule": Case(
            "/v2.0/security-group-rules", "security_group_rule", "security_group_rules", None
        ),
        "policy": Case("/v2.0/qos/policies", "policy", "policies", {"name": "x"}),
        "bandwidth_limit_rule": Case(
            f"{qos}/bandwidth_limit_rules",
            "bandwidth_limit_rule",
            "bandwidth_limit_rules",
            {"max_kbps": 5},
        ),
        "loadbalancer": Case(
            "/v2/lbaas/loadbalancers", "loadbalancer", "loadbalancers", {"name": "x"}
        ),
        "listener": Case("/v2/lbaas/listeners", "listener", "listeners", {"name": "x"}),
        "pool": Case("/v2/lbaas/pools", "pool", "pools", {"name": "x"}),
        "member": Case(
            f"/v2/lbaas/pools/{ids['pool']}/members", "member", "members", {"name": "x"}
        ),
        "healthmonitor": Case(
            "/v2/lbaas/healthmonitors", "healthmonitor", "healthmonitors", {"name": "x"}
        ),
    }


KINDS = [
    "network",
    "subnet",
    "port",
    "router",
    "floatingip",
    "security_group",
    "security_group_rule",
    "policy",
    "bandwidth_limit_rule",
    "loadbalancer",
    "listener",
    "pool",
    "member",
    "healthmonitor",
]


@pytest.fixture
def world(admin: Api, alice: Api) -> dict[str, str]:
    return _world(admin, alice)


@pytest.mark.parametrize("kind", KINDS)
def test_other_project_cannot_read_list_update_or_delete(
    kind: str, world: dict[str, str], admin: Api, alice: Api, bob: Api
) -> None:
    case = _cases(world)[kind]
    ident = world[kind]
    url = f"{case.path}/{ident}"
    before = alice.ok("GET", url)[case.member]

    status, body = bob.get(url)
    assert status == 404, (kind, status, body)
    assert body["NeutronError"]["type"].endswith("NotFound")

    status, body = bob.get(case.path)
    if status == 200:
        assert ident not in {item["id"] for item in body[case.collection]}
    else:  # nested collections under another project's parent are themselves invisible
        assert status == 404

    if case.update is not None:
        status, body = bob.put(url, {case.member: case.update})
        assert status == 404, (kind, status, body)
    status, body = bob.delete(url)
    assert status == 404, (kind, status, body)

    after = alice.ok("GET", url)[case.member]
    assert after == before  # nothing changed by the attempts
    assert admin.ok("GET", url)[case.member]["id"] == ident


def test_owner_can_still_update_everything(world: dict[str, str], alice: Api) -> None:
    for kind, case in _cases(world).items():
        if case.update is None:
            continue
        status, body = alice.put(f"{case.path}/{world[kind]}", {case.member: case.update})
        assert status == 200, (kind, body)


def test_member_cannot_plug_into_or_take_foreign_objects(
    world: dict[str, str], alice: Api, bob: Api
) -> None:
    bob_net = bob.ok("POST", "/v2.0/networks", {"network": {}})["network"]["id"]
    bob.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": bob_net, "cidr": "10.0.0.0/24"}})
    bob_port = bob.ok("POST", "/v2.0/ports", {"port": {"network_id": bob_net}})["port"]["id"]
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v2.0/ports", {"port": {"network_id": world["network"]}}),
        (
            "POST",
            "/v2.0/subnets",
            {"subnet": {"network_id": world["network"], "cidr": "10.9.0.0/24"}},
        ),
        ("PUT", f"/v2.0/floatingips/{world['floatingip']}", {"floatingip": {"port_id": bob_port}}),
        ("PUT", f"/v2.0/routers/{world['router']}/add_router_interface", {"port_id": bob_port}),
        (
            "POST",
            "/v2.0/ports",
            {"port": {"network_id": bob_net, "security_groups": [world["security_group"]]}},
        ),
        (
            "POST",
            "/v2.0/security-group-rules",
            {
                "security_group_rule": {
                    "security_group_id": world["security_group"],
                    "direction": "ingress",
                }
            },
        ),
        ("PUT", f"/v2.0/ports/{bob_port}", {"port": {"qos_policy_id": world["policy"]}}),
        ("POST", "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": world["subnet"]}}),
        (
            "POST",
            f"/v2/lbaas/pools/{world['pool']}/members",
            {"member": {"address": "10.0.0.9", "protocol_port": 80}},
        ),
    ]
    call: Callable[..., tuple[int, Any]] = bob.request
    for method, path, body in attempts:
        status, resp = call(method, path, body)
        assert status == 404, (method, path, status, resp)
