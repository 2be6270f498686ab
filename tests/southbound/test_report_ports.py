"""Bulk port reports: one request and one transaction for many claims, with the
semantics of single reports (rebinding bumps the generation, status alone does not,
a stale "down" never pulls a migrated port back); unknown ports are skipped."""

from __future__ import annotations

from conftest import Api
from netvirt.northbound.db import Database
from netvirt.southbound.memory import InMemorySB
from southbound.topo import create, network


def _ports(api: Api, net: str, n: int, host: str = "") -> list[str]:
    body = {"network_id": net, "binding:host_id": host}
    return [
        str(create(api, "/v2.0/ports", "port", body | {"name": f"p{i}"})["id"]) for i in range(n)
    ]


def test_bulk_claims_bind_and_activate(service: InMemorySB, db: Database, admin: Api) -> None:
    net, _ = network(admin, "a", "10.1.0.0/24")
    ids = _ports(admin, net["id"], 3)
    before = db.generation()
    service.report_ports([(i, True) for i in ids] + [("no-such-port", True)], "hv1")
    assert db.generation() == before + 1  # binding:host_id is desired state: one bump
    for port_id in ids:
        port = admin.ok("GET", f"/v2.0/ports/{port_id}")["port"]
        assert (port["binding:host_id"], port["status"]) == ("hv1", "ACTIVE")
    assert service.bindings()[ids[0]] == ("hv1", True)


def test_bulk_status_only_does_not_bump(service: InMemorySB, db: Database, admin: Api) -> None:
    net, _ = network(admin, "a", "10.1.0.0/24")
    ids = _ports(admin, net["id"], 2, host="hv1")
    before = db.generation()
    service.report_ports([(i, True) for i in ids], "hv1")
    assert db.generation() == before
    assert admin.ok("GET", f"/v2.0/ports/{ids[1]}")["port"]["status"] == "ACTIVE"


def test_bulk_stale_down_keeps_a_migrated_port(service: InMemorySB, admin: Api) -> None:
    net, _ = network(admin, "a", "10.1.0.0/24")
    (moved,) = _ports(admin, net["id"], 1, host="hv2")
    service.report_ports([(moved, False)], "hv1")
    assert admin.ok("GET", f"/v2.0/ports/{moved}")["port"]["binding:host_id"] == "hv2"


def test_route_takes_bulk_reports(host: Api, admin: Api) -> None:
    net, _ = network(admin, "a", "10.1.0.0/24")
    ids = _ports(admin, net["id"], 2)
    body = {"chassis": "hv1", "ports": [{"port": i, "up": True} for i in ids]}
    status, _ = host.post("/v2.0/netvirt/sb/ports", body)
    assert status == 204
    assert admin.ok("GET", f"/v2.0/ports/{ids[0]}")["port"]["binding:host_id"] == "hv1"
