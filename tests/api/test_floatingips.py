"""Floating IPs: allocation from external networks, association, tenancy."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Api

EXT_CIDR = "203.0.113.0/24"


@dataclass
class Topology:
    """The usual tenant set-up: external network (admin), tenant subnet, router, VM port."""

    ext: str
    ext_subnet: str
    net: str
    subnet: str
    router: str
    vm: dict[str, Any]


def _external(admin: Api, cidr: str = EXT_CIDR) -> tuple[str, str]:
    net = admin.ok("POST", "/v2.0/networks", {"network": {"router:external": True}})["network"]
    sub = admin.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net["id"], "cidr": cidr}})
    return net["id"], sub["subnet"]["id"]


def _tenant_net(api: Api, cidr: str) -> tuple[str, str]:
    net = api.ok("POST", "/v2.0/networks", {"network": {}})["network"]["id"]
    body = {"subnet": {"network_id": net, "cidr": cidr}}
    return net, api.ok("POST", "/v2.0/subnets", body)["subnet"]["id"]


def _port(api: Api, net: str, **attrs: Any) -> dict[str, Any]:
    port: dict[str, Any] = api.ok("POST", "/v2.0/ports", {"port": {"network_id": net, **attrs}})[
        "port"
    ]
    return port


def _topology(admin: Api, api: Api, ext: tuple[str, str] | None = None) -> Topology:
    ext_net, ext_sub = ext or _external(admin)
    net, sub = _tenant_net(api, "10.0.0.0/24")
    body = {"router": {"external_gateway_info": {"network_id": ext_net}}}
    router = api.ok("POST", "/v2.0/routers", body)["router"]["id"]
    api.ok("PUT", f"/v2.0/routers/{router}/add_router_interface", {"subnet_id": sub})
    return Topology(ext_net, ext_sub, net, sub, router, _port(api, net))


def _fip(api: Api, ext: str, **attrs: Any) -> tuple[int, Any]:
    return api.post("/v2.0/floatingips", {"floatingip": {"floating_network_id": ext, **attrs}})


def _ok_fip(api: Api, ext: str, **attrs: Any) -> dict[str, Any]:
    status, body = _fip(api, ext, **attrs)
    assert status == 201, body
    fip: dict[str, Any] = body["floatingip"]
    return fip


def _error(resp: tuple[int, Any], status: int, type_: str) -> str:
    code, body = resp
    assert code == status, body
    assert body["NeutronError"]["type"] == type_, body
    return str(body["NeutronError"]["message"])


# ---------------------------------------------------------------- allocation


def test_allocate_unassociated(admin: Api, alice: Api) -> None:
    ext, _ = _external(admin)
    fip = _ok_fip(alice, ext, description="web")
    assert fip["status"] == "DOWN"
    assert fip["port_id"] is None
    assert fip["fixed_ip_address"] is None
    assert fip["router_id"] is None
    assert fip["port_details"] is None
    assert fip["port_forwardings"] == []
    assert fip["description"] == "web"
    assert fip["project_id"] == fip["tenant_id"] == alice.project_id
    assert fip["floating_network_id"] == ext
    assert "name" not in fip
    assert ipaddress.ip_address(fip["floating_ip_address"]) in ipaddress.ip_network(EXT_CIDR)
    assert alice.ok("GET", f"/v2.0/floatingips/{fip['id']}")["floatingip"] == fip
    # the address is a project-less port: the admin sees it, the tenant does not
    [port] = admin.ok("GET", "/v2.0/ports")["ports"]
    assert port["device_owner"] == "network:floatingip"
    assert port["device_id"] == fip["id"]
    assert port["project_id"] == ""
    assert port["fixed_ips"][0]["ip_address"] == fip["floating_ip_address"]
    assert alice.ok("GET", "/v2.0/ports")["ports"] == []
    _error(alice.get(f"/v2.0/ports/{port['id']}"), 404, "PortNotFound")
    _error(alice.delete(f"/v2.0/ports/{port['id']}"), 404, "PortNotFound")
    _error(admin.delete(f"/v2.0/ports/{port['id']}"), 409, "ServicePortInUse")


def test_requested_address_and_subnet(admin: Api, alice: Api, bob: Api) -> None:
    ext, ext_sub = _external(admin)
    fip = _ok_fip(alice, ext, floating_ip_address="203.0.113.50")
    assert fip["floating_ip_address"] == "203.0.113.50"
    _error(_fip(bob, ext, floating_ip_address="203.0.113.50"), 409, "IpAddressAlreadyAllocated")
    _error(_fip(bob, ext, floating_ip_address="203.0.113.1"), 409, "IpAddressAlreadyAllocated")
    _error(_fip(bob, ext, floating_ip_address="192.0.2.1"), 400, "InvalidInput")
    resp = _fip(bob, ext, floating_ip_address="2001:db8::5")
    assert "IPv4" in _error(resp, 400, "BadRequest")
    status, _ = _fip(bob, ext, floating_ip_address="not-an-ip")
    assert status == 400
    ext2_sub = admin.ok(
        "POST", "/v2.0/subnets", {"subnet": {"network_id": ext, "cidr": "198.51.100.0/24"}}
    )["subnet"]["id"]
    in_second = _ok_fip(bob, ext, subnet_id=ext2_sub)
    assert in_second["floating_ip_address"].startswith("198.51.100.")
    both = _ok_fip(bob, ext, subnet_id=ext_sub, floating_ip_address="203.0.113.51")
    assert both["floating_ip_address"] == "203.0.113.51"


def test_network_must_be_external_and_visible(admin: Api, alice: Api, bob: Api) -> None:
    net, _ = _tenant_net(alice, "10.0.0.0/24")
    assert "not a valid external network" in _error(_fip(alice, net), 400, "BadRequest")
    _error(_fip(bob, net), 404, "NetworkNotFound")
    ext6 = admin.ok("POST", "/v2.0/networks", {"network": {"router:external": True}})["network"]
    body = {"subnet": {"network_id": ext6["id"], "cidr": "2001:db8::/64", "ip_version": 6}}
    admin.ok("POST", "/v2.0/subnets", body)
    assert "IPv4" in _error(_fip(alice, ext6["id"]), 400, "BadRequest")
    assert alice.ok("GET", "/v2.0/floatingips")["floatingips"] == []


def test_pool_exhaustion_and_release(admin: Api, alice: Api) -> None:
    """A /29 with its gateway leaves five addresses: each handed out once, then 409."""
    ext, _ = _external(admin, "203.0.113.0/29")
    fips = [_ok_fip(alice, ext) for _ in range(5)]
    addresses = {f["floating_ip_address"] for f in fips}
    assert addresses == {f"203.0.113.{i}" for i in range(2, 7)}
    _error(_fip(alice, ext), 409, "IpAddressGenerationFailure")
    alice.ok("DELETE", f"/v2.0/floatingips/{fips[2]['id']}")
    again = _ok_fip(alice, ext)
    assert again["floating_ip_address"] == fips[2]["floating_ip_address"]
    assert len(admin.ok("GET", "/v2.0/ports")["ports"]) == 5


def test_admin_allocates_for_a_project(admin: Api, alice: Api) -> None:
    ext, _ = _external(admin)
    fip = _ok_fip(admin, ext, project_id=alice.project_id)
    assert fip["project_id"] == alice.project_id
    assert [f["id"] for f in alice.ok("GET", "/v2.0/floatingips")["floatingips"]] == [fip["id"]]
    status, _ = _fip(alice, ext, project_id="someone-else")
    assert status == 403


# ---------------------------------------------------------------- association


def test_create_associated(admin: Api, alice: Api) -> None:
    topo = _topology(admin, alice)
    fip = _ok_fip(alice, topo.ext, port_id=topo.vm["id"])
    assert fip["status"] == "ACTIVE"
    assert fip["port_id"] == topo.vm["id"]
    assert fip["fixed_ip_address"] == topo.vm["fixed_ips"][0]["ip_address"]
    assert fip["router_id"] == topo.router
    assert fip["port_details"] == {
        "name": topo.vm["name"],
        "network_id": topo.net,
        "mac_address": topo.vm["mac_address"],
        "admin_state_up": True,
        "status": topo.vm["status"],
        "device_id": topo.vm["device_id"],
        "device_owner": topo.vm["device_owner"],
    }
    status, body = alice.get("/v2.0/floatingips", port_id=topo.vm["id"])
    assert status == 200
    assert [f["id"] for f in body["floatingips"]] == [fip["id"]]
    status, body = alice.get("/v2.0/floatingips", status="DOWN")
    assert body["floatingips"] == []


def test_associate_disassociate_reassociate_by_update(admin: Api, alice: Api) -> None:
    topo = _topology(admin, alice)
    other = _port(alice, topo.net)
    fip = _ok_fip(alice, topo.ext)
    path = f"/v2.0/floatingips/{fip['id']}"
    upd = alice.ok("PUT", path, {"floatingip": {"port_id": topo.vm["id"]}})["floatingip"]
    assert (upd["status"], upd["port_id"], upd["router_id"]) == (
        "ACTIVE",
        topo.vm["id"],
        topo.router,
    )
    assert upd["revision_number"] == fip["revision_number"] + 1
    assert upd["floating_ip_address"] == fip["floating_ip_address"]
    upd = alice.ok("PUT", path, {"floatingip": {"port_id": other["id"]}})["floatingip"]
    assert upd["port_id"] == other["id"]
    assert upd["fixed_ip_address"] == other["fixed_ips"][0]["ip_address"]
    upd = alice.ok("PUT", path, {"floatingip": {"description": "kept"}})["floatingip"]
    assert upd["port_id"] == other["id"]
    assert upd["description"] == "kept"
    upd = alice.ok("PUT", path, {"floatingip": {"port_id": None}})["floatingip"]
    assert upd["status"] == "DOWN"
    assert upd["port_id"] is upd["fixed_ip_address"] is upd["router_id"] is None
    assert upd["port_details"] is None


def test_no_router_between_subnet_and_external_network(admin: Api, alice: Api) -> None:
    ext, _ = _external(admin)
    net, _ = _tenant_net(alice, "10.0.0.0/24")
    vm = _port(alice, net)
    resp = _fip(alice, ext, port_id=vm["id"])
    assert "not reachable" in _error(resp, 404, "ExternalGatewayForFloatingIPNotFound")
    assert alice.ok("GET", "/v2.0/floatingips")["floatingips"] == []  # create rolled back
    # a router with the interface but no gateway is not enough either
    router = alice.ok("POST", "/v2.0/routers", {"router": {}})["router"]["id"]
    subnet = vm["fixed_ips"][0]["subnet_id"]
    alice.ok("PUT", f"/v2.0/routers/{router}/add_router_interface", {"subnet_id": subnet})
    _error(_fip(alice, ext, port_id=vm["id"]), 404, "ExternalGatewayForFloatingIPNotFound")
    # nor a gateway on another external network
    ext2, _ = _external(admin, "198.51.100.0/24")
    gw = {"router": {"external_gateway_info": {"network_id": ext2}}}
    alice.ok("PUT", f"/v2.0/routers/{router}", gw)
    _error(_fip(alice, ext, port_id=vm["id"]), 404, "ExternalGatewayForFloatingIPNotFound")
    assert _ok_fip(alice, ext2, port_id=vm["id"])["router_id"] == router


def test_fixed_ip_already_has_a_floating_ip(admin: Api, alice: Api) -> None:
    topo = _topology(admin, alice)
    _ok_fip(alice, topo.ext, port_id=topo.vm["id"])
    resp = _fip(alice, topo.ext, port_id=topo.vm["id"])
    _error(resp, 409, "FloatingIPPortAlreadyAssociated")
    spare = _ok_fip(alice, topo.ext)
    resp = alice.put(f"/v2.0/floatingips/{spare['id']}", {"floatingip": {"port_id": topo.vm["id"]}})
    _error(resp, 409, "FloatingIPPortAlreadyAssociated")


def test_fixed_ip_address_selection(admin: Api, alice: Api) -> None:
    topo = _topology(admin, alice)
    two = _port(
        alice,
        topo.net,
        fixed_ips=[{"ip_address": "10.0.0.10"}, {"ip_address": "10.0.0.11"}],
    )
    assert "multiple fixed IPv4" in _error(
        _fip(alice, topo.ext, port_id=two["id"]), 400, "BadRequest"
    )
    resp = _fip(alice, topo.ext, port_id=two["id"], fixed_ip_address="10.0.0.99")
    assert "does not have fixed IPv4 address" in _error(resp, 400, "BadRequest")
    first = _ok_fip(alice, topo.ext, port_id=two["id"], fixed_ip_address="10.0.0.11")
    assert first["fixed_ip_address"] == "10.0.0.11"
    second = _ok_fip(alice, topo.ext, port_id=two["id"], fixed_ip_address="10.0.0.10")
    assert second["fixed_ip_address"] == "10.0.0.10"
    status, _ = _fip(alice, topo.ext, fixed_ip_address="10.0.0.10")
    assert status == 400
    path = f"/v2.0/floatingips/{second['id']}"
    status, _ = alice.put(path, {"floatingip": {"fixed_ip_address": "10.0.0.11"}})
    assert status == 400


def test_port_without_ipv4_or_owned_by_the_network(admin: Api, alice: Api) -> None:
    topo = _topology(admin, alice)
    v6 = alice.ok(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": topo.net, "cidr": "2001:db8::/64", "ip_version": 6}},
    )["subnet"]["id"]
    only_v6 = _port(alice, topo.net, fixed_ips=[{"subnet_id": v6}])
    resp = _fip(alice, topo.ext, port_id=only_v6["id"])
    assert "no fixed IPv4" in _error(resp, 400, "BadRequest")
    [iface] = [
        p
        for p in alice.ok("GET", "/v2.0/ports")["ports"]
        if p["device_owner"] == "network:router_interface"
    ]
    resp = _fip(alice, topo.ext, port_id=iface["id"])
    assert "cannot be associated" in _error(resp, 400, "BadRequest")


def test_deleting_the_port_disassociates(admin: Api, alice: Api) -> None:
    topo = _topology(admin, alice)
    fip = _ok_fip(alice, topo.ext, port_id=topo.vm["id"])
    alice.ok("DELETE", f"/v2.0/ports/{topo.vm['id']}")
    after = alice.ok("GET", f"/v2.0/floatingips/{fip['id']}")["floatingip"]
    assert after["status"] == "DOWN"
    assert after["port_id"] is None
    assert after["router_id"] is None


def test_delete_frees_the_address(admin: Api, alice: Api, bob: Api) -> None:
    topo = _topology(admin, alice)
    fip = _ok_fip(alice, topo.ext, port_id=topo.vm["id"])
    port_ids = {p["id"] for p in admin.ok("GET", "/v2.0/ports")["ports"]}
    alice.ok("DELETE", f"/v2.0/floatingips/{fip['id']}")
    _error(alice.get(f"/v2.0/floatingips/{fip['id']}"), 404, "FloatingIPNotFound")
    left = {p["id"] for p in admin.ok("GET", "/v2.0/ports")["ports"]}
    assert len(port_ids - left) == 1  # only the floating IP's own port went away
    again = _ok_fip(bob, topo.ext, floating_ip_address=fip["floating_ip_address"])
    assert again["project_id"] == bob.project_id


# ---------------------------------------------------------------- tenancy


def test_other_projects_floating_ips_are_invisible(admin: Api, alice: Api, bob: Api) -> None:
    topo = _topology(admin, alice)
    fip = _ok_fip(alice, topo.ext, port_id=topo.vm["id"])
    path = f"/v2.0/floatingips/{fip['id']}"
    _error(bob.get(path), 404, "FloatingIPNotFound")
    _error(bob.put(path, {"floatingip": {"port_id": None}}), 404, "FloatingIPNotFound")
    _error(bob.delete(path), 404, "FloatingIPNotFound")
    assert bob.ok("GET", "/v2.0/floatingips")["floatingips"] == []
    assert alice.ok("GET", path)["floatingip"]["status"] == "ACTIVE"
    assert [f["id"] for f in admin.ok("GET", "/v2.0/floatingips")["floatingips"]] == [fip["id"]]


def test_cannot_associate_another_projects_port(admin: Api, alice: Api, bob: Api) -> None:
    ext = _external(admin)
    topo = _topology(admin, alice, ext)
    bob_topo = _topology(admin, bob, ext)
    _error(_fip(bob, ext[0], port_id=topo.vm["id"]), 404, "PortNotFound")
    bob_fip = _ok_fip(bob, ext[0])
    resp = bob.put(f"/v2.0/floatingips/{bob_fip['id']}", {"floatingip": {"port_id": topo.vm["id"]}})
    _error(resp, 404, "PortNotFound")
    # bob's own port on his own router works
    assert _ok_fip(bob, ext[0], port_id=bob_topo.vm["id"])["router_id"] == bob_topo.router


@pytest.mark.parametrize("shared_router_owner", ["alice", "admin"])
def test_router_of_another_project_on_a_shared_network(
    admin: Api, alice: Api, shared_router_owner: str
) -> None:
    """As in Neutron, any router linking the subnet to the external network serves the FIP."""
    ext, _ = _external(admin)
    net = admin.ok("POST", "/v2.0/networks", {"network": {"shared": True}})["network"]["id"]
    body = {"subnet": {"network_id": net, "cidr": "10.60.0.0/24"}}
    sub = admin.ok("POST", "/v2.0/subnets", body)["subnet"]["id"]
    owner = alice if shared_router_owner == "alice" else admin
    gw = {"router": {"external_gateway_info": {"network_id": ext}}}
    router = owner.ok("POST", "/v2.0/routers", gw)["router"]["id"]
    owner.ok("PUT", f"/v2.0/routers/{router}/add_router_interface", {"subnet_id": sub})
    vm = _port(alice, net)
    assert _ok_fip(alice, ext, port_id=vm["id"])["router_id"] == router
