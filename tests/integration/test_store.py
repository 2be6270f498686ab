"""The NB store through the API app, on SQLite and on a real PostgreSQL.

Each test runs once per backend (``db`` is the parametrized ``any_db``): IPAM
picks the same addresses, every write bumps the generation exactly once, and
a write that fails leaves no row and no generation bump behind, because the
bump happens inside the write's own transaction.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from netvirt.api.app import create_app
from netvirt.northbound.db import Database
from netvirt.northbound.schema import IPAllocation, Network, Port, PortSecurityGroup, Subnet

if TYPE_CHECKING:  # only the root conftest's class; importing it at run time is
    # ambiguous when several test folders have a conftest module of that name
    from conftest import Api

COUNTED = (Network, Subnet, Port, IPAllocation, PortSecurityGroup)


def counts(db: Database) -> dict[str, int]:
    """Row counts of the L2 tables, to prove a failed write left nothing behind."""
    with db.read() as session:
        return {
            model.__tablename__: session.execute(
                select(func.count()).select_from(model)
            ).scalar_one()
            for model in COUNTED
        }


def make_net(api: Api, cidr: str, **subnet: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    net = api.ok("POST", "/v2.0/networks", {"network": {"name": "n"}})["network"]
    body = {"network_id": net["id"], "cidr": cidr} | subnet
    sub = api.ok("POST", "/v2.0/subnets", {"subnet": body})["subnet"]
    return net, sub


def port(api: Api, net_id: str, **fields: Any) -> tuple[int, Any]:
    return api.post("/v2.0/ports", {"port": {"network_id": net_id} | fields})


def ips(port_body: dict[str, Any]) -> list[str]:
    return [f["ip_address"] for f in port_body["port"]["fixed_ips"]]


def test_ipam_lowest_free_address_gateway_and_pool_bounds(admin: Api) -> None:
    net, sub = make_net(admin, "10.0.0.0/29")
    assert sub["gateway_ip"] == "10.0.0.1"
    assert sub["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.6"}]
    nid = net["id"]
    assert ips(admin.ok("POST", "/v2.0/ports", {"port": {"network_id": nid}})) == ["10.0.0.2"]
    third = port(admin, nid)[1]
    assert ips(third) == ["10.0.0.3"]
    status, body = port(admin, nid, fixed_ips=[{"ip_address": "10.0.0.5"}])
    assert status == 201
    assert body["port"]["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.0.0.5"}]
    assert ips(port(admin, nid)[1]) == ["10.0.0.4"]
    assert ips(port(admin, nid, fixed_ips=[{"subnet_id": sub["id"]}])[1]) == ["10.0.0.6"]
    status, body = port(admin, nid)
    assert (status, body["NeutronError"]["type"]) == (409, "IpAddressGenerationFailure")
    # a freed address is handed out again, lowest first
    admin.ok("DELETE", f"/v2.0/ports/{third['port']['id']}")
    assert ips(port(admin, nid)[1]) == ["10.0.0.3"]
    status, body = port(admin, nid, fixed_ips=[{"ip_address": "10.0.0.1"}])
    assert (status, body["NeutronError"]["type"]) == (409, "IpAddressAlreadyAllocated")
    status, body = port(admin, nid, fixed_ips=[{"ip_address": "10.0.0.7"}])
    assert status == 400
    status, body = port(admin, nid, fixed_ips=[{"ip_address": "10.9.0.7"}])
    assert status == 400


def test_ipam_explicit_pools_and_dual_stack(admin: Api) -> None:
    pools = [{"start": "192.168.5.20", "end": "192.168.5.21"}]
    net, v4 = make_net(admin, "192.168.5.0/24", allocation_pools=pools)
    v6 = admin.ok(
        "POST",
        "/v2.0/subnets",
        {
            "subnet": {
                "network_id": net["id"],
                "cidr": "2001:db8:5::/64",
                "ip_version": 6,
                "ipv6_ra_mode": "slaac",
                "ipv6_address_mode": "slaac",
            }
        },
    )["subnet"]
    body = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})["port"]
    by_subnet = {f["subnet_id"]: f["ip_address"] for f in body["fixed_ips"]}
    assert by_subnet[v4["id"]] == "192.168.5.20"
    mac = body["mac_address"]
    iid = bytes(int(x, 16) for x in mac.split(":"))
    expected = ipaddress.IPv6Address(
        int(ipaddress.IPv6Address("2001:db8:5::"))
        | int.from_bytes(bytes([iid[0] ^ 2, *iid[1:3], 0xFF, 0xFE, *iid[3:]]), "big")
    )
    assert by_subnet[v6["id"]] == str(expected)
    second = port(admin, net["id"])[1]["port"]["fixed_ips"]
    assert {"subnet_id": v4["id"], "ip_address": "192.168.5.21"} in second
    status, body = port(admin, net["id"])
    assert (status, body["NeutronError"]["type"]) == (409, "IpAddressGenerationFailure")


def test_generation_bumps_exactly_once_per_write(admin: Api, db: Database) -> None:
    def gen_of(method: str, path: str, body: Any = None) -> int:
        resp = admin.client.request(method, path, json=body, headers=admin.headers)
        assert resp.status_code < 300, resp.text
        return int(resp.headers["X-Netvirt-Generation"])

    start = db.generation()
    g1 = gen_of("POST", "/v2.0/networks", {"network": {"name": "a"}})
    assert g1 == start + 1 == db.generation()
    bulk = {"networks": [{"name": "b"}, {"name": "c"}, {"name": "d"}]}
    assert gen_of("POST", "/v2.0/networks", bulk) == g1 + 1
    nets = admin.ok("GET", "/v2.0/networks")["networks"]
    assert db.generation() == g1 + 1, "reads must not bump the generation"
    net_id = next(n["id"] for n in nets if n["name"] == "a")
    assert gen_of("PUT", f"/v2.0/networks/{net_id}", {"network": {"name": "z"}}) == g1 + 2
    assert gen_of("DELETE", f"/v2.0/networks/{net_id}") == g1 + 3
    status, _ = admin.delete(f"/v2.0/networks/{net_id}")
    assert status == 404
    assert db.generation() == g1 + 3, "a failed write must roll its bump back"


def test_failed_port_create_leaves_no_row_no_allocation_no_bump(admin: Api, db: Database) -> None:
    net, sub = make_net(admin, "10.1.0.0/24")
    first = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})
    taken = ips(first)[0]
    before, gen = counts(db), db.generation()
    status, body = port(admin, net["id"], fixed_ips=[{"ip_address": taken}])
    assert (status, body["NeutronError"]["type"]) == (409, "IpAddressAlreadyAllocated")
    assert counts(db) == before
    assert db.generation() == gen
    # a bulk create is one transaction: the bad second item undoes the good first one
    bulk = {
        "ports": [
            {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.1.0.50"}]},
            {"network_id": net["id"], "fixed_ips": [{"ip_address": taken}]},
        ]
    }
    status, body = admin.post("/v2.0/ports", bulk)
    assert (status, body["NeutronError"]["type"]) == (409, "IpAddressAlreadyAllocated")
    assert counts(db) == before
    assert db.generation() == gen
    # and the address the failed bulk had picked is still free
    status, body = port(admin, net["id"], fixed_ips=[{"ip_address": "10.1.0.50"}])
    assert status == 201
    assert db.generation() == gen + 1


def test_duplicate_mac_refused_per_network(admin: Api, db: Database) -> None:
    net, _ = make_net(admin, "10.2.0.0/24")
    other, _ = make_net(admin, "10.3.0.0/24")
    mac = "fa:16:3e:00:00:01"
    status, _ = port(admin, net["id"], mac_address=mac)
    assert status == 201
    before, gen = counts(db), db.generation()
    status, body = port(admin, net["id"], mac_address=mac)
    assert (status, body["NeutronError"]["type"]) == (409, "MacAddressInUse")
    assert (counts(db), db.generation()) == (before, gen)
    # Neutron scopes MAC uniqueness to the network
    status, body = port(admin, other["id"], mac_address=mac)
    assert status == 201
    assert body["port"]["mac_address"] == mac
    second = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})["port"]
    status, body = admin.put(f"/v2.0/ports/{second['id']}", {"port": {"mac_address": mac}})
    assert (status, body["NeutronError"]["type"]) == (409, "MacAddressInUse")


def test_network_with_ports_cannot_be_deleted_until_empty(admin: Api, db: Database) -> None:
    net, sub = make_net(admin, "10.4.0.0/24")
    p = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})["port"]
    before, gen = counts(db), db.generation()
    status, body = admin.delete(f"/v2.0/networks/{net['id']}")
    assert (status, body["NeutronError"]["type"]) == (409, "NetworkInUse")
    assert (counts(db), db.generation()) == (before, gen)
    admin.ok("GET", f"/v2.0/subnets/{sub['id']}")
    admin.ok("DELETE", f"/v2.0/ports/{p['id']}")
    admin.ok("DELETE", f"/v2.0/networks/{net['id']}")
    left = counts(db)
    assert (left["networks"], left["subnets"], left["ports"], left["ip_allocations"]) == (
        0,
        0,
        0,
        0,
    )
    status, body = admin.get(f"/v2.0/subnets/{sub['id']}")
    assert (status, body["NeutronError"]["type"]) == (404, "SubnetNotFound")


def insert(db: Database, row: object) -> None:
    with db.write() as session:
        session.add(row)
        session.flush()


def test_unique_constraints_are_the_backstop(admin: Api, db: Database) -> None:
    """Even a write that skips the service checks cannot store a duplicate."""
    net, sub = make_net(admin, "10.5.0.0/24")
    p = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})["port"]
    gen = db.generation()
    ip = p["fixed_ips"][0]["ip_address"]
    dup_ip = IPAllocation(
        network_id=net["id"], ip_address=ip, subnet_id=sub["id"], port_id=p["id"], ordinal=1
    )
    dup_mac = Port(
        project_id="admin", network_id=net["id"], mac_address=p["mac_address"], device_id="x"
    )
    for row in (dup_ip, dup_mac):
        with pytest.raises(IntegrityError):
            insert(db, row)
        assert db.generation() == gen
    assert counts(db)["ports"] == 1
    assert counts(db)["ip_allocations"] == 1


NUL_REASON = (
    "PostgreSQL text cannot hold NUL: psycopg raises DataError, which api/errors.py does not "
    "map, so the request answers 500 (SQLite stores or finds nothing instead)"
)


def raw_client(db: Database, admin: Api) -> TestClient:
    """A client that returns a 500 as a response instead of raising the server's error."""
    return TestClient(create_app(db), raise_server_exceptions=False, headers=admin.headers)


def test_nul_in_a_path_id_is_404_not_500(
    admin: Api, db: Database, request: pytest.FixtureRequest
) -> None:
    with raw_client(db, admin) as client:
        for kind, path in (("Network", "networks"), ("Port", "ports"), ("Subnet", "subnets")):
            resp = client.get(f"/v2.0/{path}/a%00b")
            assert resp.status_code == 404, resp.text
            assert resp.json()["NeutronError"]["type"] == f"{kind}NotFound"


def test_nul_in_a_string_attribute_is_400_on_every_backend(admin: Api, db: Database) -> None:
    with raw_client(db, admin) as client:
        resp = client.post("/v2.0/networks", json={"network": {"name": "a\u0000b"}})
        assert resp.status_code == 400, resp.text
        assert resp.json()["NeutronError"]["type"] == "HTTPBadRequest"
    assert counts(db)["networks"] == 0


@pytest.mark.parametrize("generation", [2**31 - 1, 2**31])
def test_report_of_a_huge_generation_is_never_500(
    admin: Api, db: Database, request: pytest.FixtureRequest, generation: int
) -> None:
    """The report model has no upper bound but the column is a 32-bit INTEGER."""
    report = {"component": "host", "name": "h1", "generation": generation}
    with raw_client(db, admin) as client:
        resp = client.post("/v2.0/netvirt/status/reports", json={"report": report})
    assert resp.status_code in (204, 400), resp.text
