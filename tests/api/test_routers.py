"""Routers: gateways on external networks, interfaces, extra routes, tenancy."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Api
from netvirt.northbound.errors import BadRequest
from netvirt.northbound.routers import validate_routes

EXT_CIDR = "203.0.113.0/24"


def _external(admin: Api, cidr: str = EXT_CIDR) -> tuple[str, str]:
    """An external network with one subnet, created by the admin as a provider would."""
    net = admin.ok("POST", "/v2.0/networks", {"network": {"router:external": True}})["network"]
    sub = admin.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": cidr}})
    return net["id"], sub["subnet"]["id"]


def _network(api: Api, cidr: str | None = None, **attrs: Any) -> tuple[str, str | None]:
    net = api.ok("POST", "/v2.0/networks", {"network": attrs})["network"]["id"]
    if cidr is None:
        return net, None
    return net, _subnet(api, net, cidr)


def _subnet(api: Api, net: str, cidr: str, **attrs: Any) -> str:
    body = {"subnet": {"network_id": net, "cidr": cidr, **attrs}}
    if ipaddress.ip_network(cidr).version == 6:
        body["subnet"]["ip_version"] = 6
    return str(api.ok("POST", "/v2.0/subnets", body)["subnet"]["id"])


def _router(api: Api, **attrs: Any) -> dict[str, Any]:
    router: dict[str, Any] = api.ok("POST", "/v2.0/routers", {"router": attrs})["router"]
    return router


def _add(api: Api, router: str, **body: str) -> tuple[int, Any]:
    return api.put(f"/v2.0/routers/{router}/add_router_interface", body)


def _remove(api: Api, router: str, **body: str) -> tuple[int, Any]:
    return api.put(f"/v2.0/routers/{router}/remove_router_interface", body)


def _error(resp: tuple[int, Any], status: int, type_: str) -> str:
    code, body = resp
    assert code == status, body
    assert body["NeutronError"]["type"] == type_, body
    return str(body["NeutronError"]["message"])


def _port_ids(api: Api) -> set[str]:
    return {p["id"] for p in api.ok("GET", "/v2.0/ports")["ports"]}


# ---------------------------------------------------------------- basics


def test_create_router_defaults(alice: Api) -> None:
    router = _router(alice, name="r1")
    assert router["name"] == "r1"
    assert router["status"] == "ACTIVE"
    assert router["admin_state_up"] is True
    assert router["external_gateway_info"] is None
    assert router["routes"] == []
    assert router["distributed"] is True
    assert router["ha"] is False
    assert router["flavor_id"] is None
    assert router["project_id"] == router["tenant_id"] == alice.project_id
    assert router["revision_number"] == 0
    assert router["created_at"].endswith("Z")
    assert alice.ok("GET", f"/v2.0/routers/{router['id']}")["router"] == router


def test_update_name_bumps_revision_and_refuses_unknown_fields(alice: Api) -> None:
    router = _router(alice)
    upd = alice.ok("PUT", f"/v2.0/routers/{router['id']}", {"router": {"name": "new"}})["router"]
    assert upd["name"] == "new"
    assert upd["revision_number"] == router["revision_number"] + 1
    status, _ = alice.put(f"/v2.0/routers/{router['id']}", {"router": {"bogus": 1}})
    assert status == 400
    status, _ = alice.post("/v2.0/routers", {"router": {"ha": True}})
    assert status == 400
    status, _ = alice.post("/v2.0/routers", {"router": {"routes": []}})
    assert status == 400


def test_tenancy_routers_are_private(alice: Api, bob: Api, admin: Api) -> None:
    router = _router(alice)
    path = f"/v2.0/routers/{router['id']}"
    _error(bob.get(path), 404, "RouterNotFound")
    _error(bob.put(path, {"router": {"name": "x"}}), 404, "RouterNotFound")
    _error(bob.delete(path), 404, "RouterNotFound")
    _, sub = _network(bob, "10.9.0.0/24")
    assert sub is not None
    _error(_add(bob, router["id"], subnet_id=sub), 404, "RouterNotFound")
    assert bob.ok("GET", "/v2.0/routers")["routers"] == []
    assert [r["id"] for r in admin.ok("GET", "/v2.0/routers")["routers"]] == [router["id"]]
    admin.ok("PUT", path, {"router": {"name": "by-admin"}})
    assert alice.ok("GET", path)["router"]["name"] == "by-admin"


# ---------------------------------------------------------------- gateway


def test_gateway_port_hidden_from_tenant(admin: Api, alice: Api) -> None:
    ext, ext_sub = _external(admin)
    assert ext in {n["id"] for n in alice.ok("GET", "/v2.0/networks")["networks"]}
    router = _router(alice, external_gateway_info={"network_id": ext})
    info = router["external_gateway_info"]
    assert info["network_id"] == ext
    assert info["enable_snat"] is True
    [fixed] = info["external_fixed_ips"]
    assert fixed["subnet_id"] == ext_sub
    assert ipaddress.ip_address(fixed["ip_address"]) in ipaddress.ip_network(EXT_CIDR)
    gw_ports = admin.ok("GET", "/v2.0/ports", None)["ports"]
    [gw] = [p for p in gw_ports if p["device_owner"] == "network:router_gateway"]
    assert gw["device_id"] == router["id"]
    assert gw["project_id"] == ""
    assert gw["fixed_ips"] == [fixed]
    assert gw["id"] not in _port_ids(alice)
    _error(alice.get(f"/v2.0/ports/{gw['id']}"), 404, "PortNotFound")


def test_gateway_with_requested_ip_and_snat_off(admin: Api, alice: Api) -> None:
    ext, ext_sub = _external(admin)
    gw = {
        "network_id": ext,
        "enable_snat": False,
        "external_fixed_ips": [{"subnet_id": ext_sub, "ip_address": "203.0.113.77"}],
    }
    router = _router(alice, external_gateway_info=gw)
    info = router["external_gateway_info"]
    assert info["enable_snat"] is False
    assert info["external_fixed_ips"] == [{"subnet_id": ext_sub, "ip_address": "203.0.113.77"}]
    status, _ = alice.post("/v2.0/routers", {"router": {"external_gateway_info": gw}})
    assert status == 409  # the address is taken by the first router
    # same network, new address: the gateway port is renumbered, SNAT setting kept
    moved = {**gw, "external_fixed_ips": [{"ip_address": "203.0.113.78"}]}
    del moved["enable_snat"]
    path = f"/v2.0/routers/{router['id']}"
    info = alice.ok("PUT", path, {"router": {"external_gateway_info": moved}})["router"][
        "external_gateway_info"
    ]
    assert info["external_fixed_ips"] == [{"subnet_id": ext_sub, "ip_address": "203.0.113.78"}]
    assert info["enable_snat"] is False
    assert _router(alice, external_gateway_info=gw)["external_gateway_info"] is not None


def test_gateway_must_be_external(admin: Api, alice: Api) -> None:
    net, _ = _network(alice, "10.0.0.0/24")
    msg = _error(
        alice.post("/v2.0/routers", {"router": {"external_gateway_info": {"network_id": net}}}),
        400,
        "BadRequest",
    )
    assert f"Network {net} is not an external network" in msg
    assert alice.ok("GET", "/v2.0/routers")["routers"] == []  # nothing half-created
    missing = "00000000-0000-0000-0000-000000000000"
    body = {"router": {"external_gateway_info": {"network_id": missing}}}
    _error(alice.post("/v2.0/routers", body), 404, "NetworkNotFound")


def test_change_and_clear_gateway_replace_the_port(admin: Api, alice: Api) -> None:
    ext1, _ = _external(admin)
    ext2, _ = _external(admin, "198.51.100.0/24")
    router = _router(alice, external_gateway_info={"network_id": ext1})
    path = f"/v2.0/routers/{router['id']}"

    def gateway_ports() -> list[dict[str, Any]]:
        return [
            p
            for p in admin.ok("GET", "/v2.0/ports")["ports"]
            if p["device_owner"] == "network:router_gateway"
        ]

    [old] = gateway_ports()
    upd = alice.ok("PUT", path, {"router": {"external_gateway_info": {"network_id": ext2}}})
    assert upd["router"]["external_gateway_info"]["network_id"] == ext2
    [new] = gateway_ports()
    assert new["id"] != old["id"]
    assert new["network_id"] == ext2
    # same network, only SNAT changes: the port (and its address) stays
    body = {"router": {"external_gateway_info": {"network_id": ext2, "enable_snat": False}}}
    alice.ok("PUT", path, body)
    assert [p["id"] for p in gateway_ports()] == [new["id"]]
    upd = alice.ok("PUT", path, {"router": {"external_gateway_info": None}})
    assert upd["router"]["external_gateway_info"] is None
    assert gateway_ports() == []
    alice.ok("PUT", path, {"router": {"external_gateway_info": {"network_id": ext1}}})
    upd = alice.ok("PUT", path, {"router": {"external_gateway_info": {}}})
    assert upd["router"]["external_gateway_info"] is None
    assert gateway_ports() == []


def test_clearing_gateway_used_by_floating_ip_conflicts(admin: Api, alice: Api) -> None:
    ext, _ = _external(admin)
    ext2, _ = _external(admin, "198.51.100.0/24")
    net, sub = _network(alice, "10.0.0.0/24")
    router = _router(alice, external_gateway_info={"network_id": ext})
    assert sub is not None
    _add(alice, router["id"], subnet_id=sub)
    vm = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net}})["port"]
    fip = alice.ok(
        "POST",
        "/v2.0/floatingips",
        {"floatingip": {"floating_network_id": ext, "port_id": vm["id"]}},
    )["floatingip"]
    assert fip["router_id"] == router["id"]
    path = f"/v2.0/routers/{router['id']}"
    for gw in (None, {"network_id": ext2}):
        resp = alice.put(path, {"router": {"external_gateway_info": gw}})
        _error(resp, 409, "RouterExternalGatewayInUseByFloatingIp")
    alice.ok("PUT", f"/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
    alice.ok("PUT", path, {"router": {"external_gateway_info": None}})


def test_gateway_subnet_may_not_overlap_an_interface(admin: Api, alice: Api) -> None:
    ext, _ = _external(admin)
    _, sub = _network(alice, EXT_CIDR)
    router = _router(alice)
    assert sub is not None
    assert _add(alice, router["id"], subnet_id=sub)[0] == 200
    resp = alice.put(
        f"/v2.0/routers/{router['id']}", {"router": {"external_gateway_info": {"network_id": ext}}}
    )
    assert "overlaps" in _error(resp, 400, "BadRequest")


def test_delete_router_removes_gateway_port(admin: Api, alice: Api) -> None:
    ext, _ = _external(admin)
    router = _router(alice, external_gateway_info={"network_id": ext})
    before = {p["id"] for p in admin.ok("GET", "/v2.0/ports")["ports"]}
    assert len(before) == 1
    alice.ok("DELETE", f"/v2.0/routers/{router['id']}")
    assert admin.ok("GET", "/v2.0/ports")["ports"] == []
    _error(alice.get(f"/v2.0/routers/{router['id']}"), 404, "RouterNotFound")
    admin.ok("DELETE", f"/v2.0/networks/{ext}")  # nothing holds the network any more


# ---------------------------------------------------------------- interfaces


def test_add_interface_by_subnet(alice: Api) -> None:
    net, sub = _network(alice, "10.0.0.0/24")
    router = _router(alice)
    status, info = _add(alice, router["id"], subnet_id=str(sub))
    assert status == 200
    assert set(info) == {
        "id",
        "tenant_id",
        "project_id",
        "port_id",
        "subnet_id",
        "subnet_ids",
        "network_id",
    }
    assert info["id"] == router["id"]
    assert info["project_id"] == info["tenant_id"] == alice.project_id
    assert info["subnet_id"] == sub
    assert info["subnet_ids"] == [sub]
    assert info["network_id"] == net
    port = alice.ok("GET", f"/v2.0/ports/{info['port_id']}")["port"]
    assert port["device_owner"] == "network:router_interface"
    assert port["device_id"] == router["id"]
    assert port["fixed_ips"] == [{"subnet_id": sub, "ip_address": "10.0.0.1"}]
    assert port["project_id"] == alice.project_id
    after = alice.ok("GET", f"/v2.0/routers/{router['id']}")["router"]
    assert after["revision_number"] > router["revision_number"]
    _error(alice.delete(f"/v2.0/ports/{info['port_id']}"), 409, "ServicePortInUse")


def test_add_interface_body_must_name_exactly_one(alice: Api) -> None:
    _, sub = _network(alice, "10.0.0.0/24")
    net2, _ = _network(alice)
    port = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net2}})["port"]
    router = _router(alice)["id"]
    _error(_add(alice, router), 400, "HTTPBadRequest")
    _error(_add(alice, router, subnet_id=str(sub), port_id=port["id"]), 400, "HTTPBadRequest")
    status, body = alice.put(f"/v2.0/routers/{router}/add_router_interface", {"subnet": "x"})
    assert status == 400
    assert "Unrecognized attribute" in body["NeutronError"]["message"]


def test_subnet_without_gateway_or_with_gateway_taken(alice: Api) -> None:
    net, _ = _network(alice)
    no_gw = _subnet(alice, net, "10.0.0.0/24", gateway_ip=None)
    r1, r2 = _router(alice)["id"], _router(alice)["id"]
    assert "gateway IP" in _error(_add(alice, r1, subnet_id=no_gw), 400, "BadRequest")
    _, sub = _network(alice, "10.1.0.0/24")
    assert _add(alice, r1, subnet_id=str(sub))[0] == 200
    _error(_add(alice, r2, subnet_id=str(sub)), 409, "IpAddressAlreadyAllocated")


def test_same_overlapping_or_second_ipv4_subnet_refused(alice: Api) -> None:
    net, sub = _network(alice, "10.0.0.0/24")
    assert sub is not None
    router = _router(alice)["id"]
    assert _add(alice, router, subnet_id=sub)[0] == 200
    assert "already has a port" in _error(_add(alice, router, subnet_id=sub), 400, "BadRequest")
    _, overlapping = _network(alice, "10.0.0.0/16")
    resp = _add(alice, router, subnet_id=str(overlapping))
    assert "overlaps" in _error(resp, 400, "BadRequest")
    second_v4 = _subnet(alice, net, "10.5.0.0/24")
    resp = _add(alice, router, subnet_id=second_v4)
    assert "IPv4" in _error(resp, 400, "BadRequest")
    # one IPv6 interface next to the IPv4 one is fine, a second IPv6 one is not
    v6 = _subnet(alice, net, "2001:db8:1::/64")
    assert _add(alice, router, subnet_id=v6)[0] == 200
    v6b = _subnet(alice, net, "2001:db8:2::/64")
    assert "IPv6" in _error(_add(alice, router, subnet_id=v6b), 400, "BadRequest")


def test_add_interface_by_port(alice: Api, bob: Api) -> None:
    net, sub = _network(alice, "10.0.0.0/24")
    port = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net}})["port"]
    router = _router(alice)["id"]
    status, info = _add(alice, router, port_id=port["id"])
    assert status == 200
    assert info["port_id"] == port["id"]
    assert info["subnet_ids"] == [sub]
    after = alice.ok("GET", f"/v2.0/ports/{port['id']}")["port"]
    assert after["device_owner"] == "network:router_interface"
    assert after["device_id"] == router
    assert after["fixed_ips"] == port["fixed_ips"]
    # a port already attached elsewhere is in use
    other = _router(alice)["id"]
    _error(_add(alice, other, port_id=port["id"]), 409, "PortInUse")
    vm = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net, "device_id": "vm-1"}})
    _error(_add(alice, other, port_id=vm["port"]["id"]), 409, "PortInUse")
    bare_net, _ = _network(alice)
    bare = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": bare_net}})["port"]
    assert "fixed IP" in _error(_add(alice, other, port_id=bare["id"]), 400, "BadRequest")
    bob_net, _ = _network(bob, "10.7.0.0/24")
    bob_port = bob.ok("POST", "/v2.0/ports", {"port": {"network_id": bob_net}})["port"]
    _error(_add(alice, other, port_id=bob_port["id"]), 404, "PortNotFound")


def test_member_cannot_attach_foreign_subnet_but_can_use_shared(
    admin: Api, alice: Api, bob: Api
) -> None:
    _, bob_sub = _network(bob, "10.8.0.0/24")
    router = _router(alice)["id"]
    _error(_add(alice, router, subnet_id=str(bob_sub)), 404, "SubnetNotFound")
    _, shared_sub = _network(admin, "10.50.0.0/24", shared=True)
    status, info = _add(alice, router, subnet_id=str(shared_sub))
    assert status == 200
    assert info["project_id"] == alice.project_id
    assert info["port_id"] in _port_ids(alice)
    # an external network's subnet is visible but not usable by a tenant
    _, ext_sub = _external(admin)
    _error(_add(alice, router, subnet_id=ext_sub), 404, "SubnetNotFound")


def test_remove_interface_by_subnet_and_by_port(alice: Api) -> None:
    _, sub1 = _network(alice, "10.0.0.0/24")
    net2, sub2 = _network(alice, "10.1.0.0/24")
    router = _router(alice)["id"]
    _, by_subnet = _add(alice, router, subnet_id=str(sub1))
    port = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net2}})["port"]
    _add(alice, router, port_id=port["id"])
    _error(alice.delete(f"/v2.0/routers/{router}"), 409, "RouterInUse")
    status, info = _remove(alice, router, subnet_id=str(sub1))
    assert status == 200
    assert info == by_subnet
    status, info = _remove(alice, router, port_id=port["id"])
    assert status == 200
    assert info["subnet_ids"] == [sub2]
    assert _port_ids(alice) == set()  # both interface ports are gone, as in Neutron
    alice.ok("DELETE", f"/v2.0/routers/{router}")


def test_remove_interface_errors(alice: Api) -> None:
    net, sub = _network(alice, "10.0.0.0/24")
    _, sub2 = _network(alice, "10.1.0.0/24")
    router = _router(alice)["id"]
    _, info = _add(alice, router, subnet_id=str(sub))
    _error(_remove(alice, router, subnet_id=str(sub2)), 404, "RouterInterfaceNotFoundForSubnet")
    vm = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net}})["port"]
    _error(_remove(alice, router, port_id=vm["id"]), 404, "RouterInterfaceNotFound")
    resp = _remove(alice, router, port_id=info["port_id"], subnet_id=str(sub2))
    _error(resp, 404, "RouterInterfaceNotFoundForSubnet")
    _error(_remove(alice, router), 400, "HTTPBadRequest")
    assert info["port_id"] in _port_ids(alice)


def test_remove_interface_used_by_floating_ip_conflicts(admin: Api, alice: Api) -> None:
    ext, _ = _external(admin)
    net, sub = _network(alice, "10.0.0.0/24")
    router = _router(alice, external_gateway_info={"network_id": ext})["id"]
    _add(alice, router, subnet_id=str(sub))
    vm = alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net}})["port"]
    body = {"floatingip": {"floating_network_id": ext, "port_id": vm["id"]}}
    fip = alice.ok("POST", "/v2.0/floatingips", body)["floatingip"]
    _error(_remove(alice, router, subnet_id=str(sub)), 409, "RouterInterfaceInUseByFloatingIP")
    alice.ok("DELETE", f"/v2.0/floatingips/{fip['id']}")
    assert _remove(alice, router, subnet_id=str(sub))[0] == 200


# ---------------------------------------------------------------- extra routes


def test_routes_through_interface_and_gateway_subnets(admin: Api, alice: Api) -> None:
    ext, _ = _external(admin)
    _, sub = _network(alice, "10.0.0.0/24")
    router = _router(alice, external_gateway_info={"network_id": ext})["id"]
    _add(alice, router, subnet_id=str(sub))
    routes = [
        {"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"},
        {"destination": "0.0.0.0/0", "nexthop": "203.0.113.254"},
    ]
    body = alice.ok("PUT", f"/v2.0/routers/{router}", {"router": {"routes": routes}})
    assert body["router"]["routes"] == routes
    assert alice.ok("GET", f"/v2.0/routers/{router}")["router"]["routes"] == routes
    _error(_remove(alice, router, subnet_id=str(sub)), 409, "RouterInterfaceInUseByRoute")
    resp = alice.put(f"/v2.0/routers/{router}", {"router": {"external_gateway_info": None}})
    _error(resp, 409, "RouterInterfaceInUseByRoute")
    body = alice.ok("PUT", f"/v2.0/routers/{router}", {"router": {"routes": []}})
    assert body["router"]["routes"] == []
    assert _remove(alice, router, subnet_id=str(sub))[0] == 200


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ({"destination": "192.168.0.0/16", "nexthop": "10.9.0.5"}, "not connected"),
        ({"destination": "192.168.0.0/16", "nexthop": "10.0.0.1"}, "used by router"),
        ({"destination": "2001:db8::/64", "nexthop": "10.0.0.5"}, "IP versions"),
    ],
)
def test_invalid_routes(alice: Api, route: dict[str, str], reason: str) -> None:
    _, sub = _network(alice, "10.0.0.0/24")
    router = _router(alice)["id"]
    _add(alice, router, subnet_id=str(sub))
    resp = alice.put(f"/v2.0/routers/{router}", {"router": {"routes": [route]}})
    assert reason in _error(resp, 400, "InvalidRoutes")


def test_duplicate_and_malformed_routes(alice: Api) -> None:
    _, sub = _network(alice, "10.0.0.0/24")
    router = _router(alice)["id"]
    _add(alice, router, subnet_id=str(sub))
    route = {"destination": "192.168.0.0/16", "nexthop": "10.0.0.9"}
    path = f"/v2.0/routers/{router}"
    _error(alice.put(path, {"router": {"routes": [route, route]}}), 400, "InvalidRoutes")
    bad = {"destination": "192.168.0.1/16", "nexthop": "10.0.0.9"}
    status, body = alice.put(path, {"router": {"routes": [bad]}})
    assert status == 400
    assert "CIDR" in body["NeutronError"]["message"]
    status, _ = alice.put(path, {"router": {"routes": [{"destination": "10.1.0.0/24"}]}})
    assert status == 400
    assert alice.ok("GET", path)["router"]["routes"] == []


@given(
    prefix=st.integers(min_value=8, max_value=30),
    host=st.integers(min_value=0, max_value=(1 << 32) - 2),
    dest=st.integers(min_value=0, max_value=(1 << 24) - 1),
)
def test_validate_routes_accepts_exactly_connected_nexthops(
    prefix: int, host: int, dest: int
) -> None:
    """A nexthop is accepted iff it lies in a connected subnet and is not the router's IP."""
    connected = ipaddress.ip_network(f"{ipaddress.IPv4Address(host)}/{prefix}", strict=False)
    own = str(connected.network_address + 1)
    destination = str(ipaddress.IPv4Network(((dest << 8), 24)))
    hop = str(ipaddress.IPv4Address(host))
    route = {"destination": destination, "nexthop": hop}
    if hop == own:
        with pytest.raises(BadRequest, match="used by router"):
            validate_routes([route], [str(connected)], {own})
    else:
        validate_routes([route], [str(connected)], {own})
    if int(connected.broadcast_address) < (1 << 32) - 1:
        outside = {"destination": destination, "nexthop": str(connected.broadcast_address + 1)}
        with pytest.raises(BadRequest, match="not connected") as err:
            validate_routes([outside], [str(connected)], {own})
        assert err.value.type == "InvalidRoutes"
