"""A load balancer whose pool has a health monitor, built through the API (shared by the
southbound and API tests of member health reports).

    net 10.0.0.0/24: web1 .11 (bound to hv1), web2 .12 (bound to hv2), VIP .100
    lb1: listener TCP 80 → pool (ROUND_ROBIN) → members web1:8080, web2:8080
    healthmonitor: TCP, delay 2, timeout 1, max_retries 1
"""

from __future__ import annotations

from typing import Any

from conftest import Api
from southbound.topo import create, network

Obj = dict[str, Any]


def monitored_pool(admin: Api, alice: Api, kind: str = "TCP") -> dict[str, Obj]:
    net, sub = network(alice, "net", "10.0.0.0/24")
    ports = {}
    for index, host in ((1, "hv1"), (2, "hv2")):
        body = {
            "name": f"web{index}",
            "network_id": net["id"],
            "fixed_ips": [{"subnet_id": sub["id"], "ip_address": f"10.0.0.1{index}"}],
        }
        port = create(alice, "/v2.0/ports", "port", body)
        admin.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"binding:host_id": host}})
        ports[f"web{index}"] = port
    lb = create(
        alice,
        "/v2/lbaas/loadbalancers",
        "loadbalancer",
        {"name": "lb1", "vip_subnet_id": sub["id"], "vip_address": "10.0.0.100"},
    )
    listener = create(
        alice,
        "/v2/lbaas/listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80},
    )
    pool = create(
        alice,
        "/v2/lbaas/pools",
        "pool",
        {"listener_id": listener["id"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"},
    )
    members = {}
    for name, port in ports.items():
        address = port["fixed_ips"][0]["ip_address"]
        body = {"address": address, "protocol_port": 8080, "subnet_id": sub["id"]}
        members[name] = create(alice, f"/v2/lbaas/pools/{pool['id']}/members", "member", body)
    hm = create(
        alice,
        "/v2/lbaas/healthmonitors",
        "healthmonitor",
        {"pool_id": pool["id"], "type": kind, "delay": 2, "timeout": 1, "max_retries": 1},
    )
    return {
        "net": net,
        "lb": lb,
        "pool": pool,
        "hm": hm,
        "web1": ports["web1"],
        "web2": ports["web2"],
        "m1": members["web1"],
        "m2": members["web2"],
    }
