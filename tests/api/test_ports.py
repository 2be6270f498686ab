"""Ports: MAC/IP allocation (IPAM), port security, security groups, bindings, tenancy."""

from __future__ import annotations

from conftest import Api


def _topo(api: Api, cidr: str = "10.0.0.0/24", **net: object) -> tuple[str, str]:
    net_id = api.ok("POST", "/v2.0/networks", {"network": net})["network"]["id"]
    sub = api.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net_id, "cidr": cidr}})
    return net_id, sub["subnet"]["id"]


def _port(api: Api, net: str, **attrs: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    return api.post("/v2.0/ports", {"port": {"network_id": net, **attrs}})


def test_auto_allocation_mac_ip_and_default_group(alice: Api) -> None:
    net, sub = _topo(alice)
    p1 = _port(alice, net)[1]["port"]
    p2 = _port(alice, net)[1]["port"]
    assert p1["fixed_ips"] == [{"subnet_id": sub, "ip_address": "10.0.0.2"}]
    assert p2["fixed_ips"][0]["ip_address"] == "10.0.0.3"
    assert p1["mac_address"].startswith("fa:16:3e:")
    assert p1["mac_address"] != p2["mac_address"]
    assert p1["status"] == "DOWN"
    assert len(p1["security_groups"]) == 1


def test_requested_ip_rules(alice: Api) -> None:
    net, sub = _topo(alice)
    status, body = _port(alice, net, fixed_ips=[{"ip_address": "10.0.0.50"}])
    assert status == 201
    assert body["port"]["fixed_ips"] == [{"subnet_id": sub, "ip_address": "10.0.0.50"}]
    status, body = _port(alice, net, fixed_ips=[{"subnet_id": sub, "ip_address": "10.0.0.50"}])
    assert status == 409
    assert body["NeutronError"]["type"] == "IpAddressAlreadyAllocated"
    status, body = _port(alice, net, fixed_ips=[{"ip_address": "10.0.0.1"}])  # gateway
    assert status == 409
    status, body = _port(alice, net, fixed_ips=[{"ip_address": "10.0.1.5"}])
    assert status == 400
    status, body = _port(alice, net, fixed_ips=[{"ip_address": "10.0.0.255"}])
    assert status == 400
    status, body = _port(alice, net, fixed_ips=[{"ip_address": "not-an-ip"}])
    assert status == 400
    assert "fixed_ips" in body["NeutronError"]["message"]
    # outside the pool but inside the subnet is allowed, as in Neutron
    alice.ok(
        "PUT",
        f"/v2.0/subnets/{sub}",
        {"subnet": {"allocation_pools": [{"start": "10.0.0.100", "end": "10.0.0.110"}]}},
    )
    assert _port(alice, net, fixed_ips=[{"ip_address": "10.0.0.20"}])[0] == 201


def test_pool_exhaustion_and_release(alice: Api) -> None:
    net, _ = _topo(alice, "10.0.0.0/29")  # hosts .2-.6 after the gateway: 5 addresses
    ports = [_port(alice, net)[1]["port"] for _ in range(5)]
    assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 5
    status, body = _port(alice, net)
    assert status == 409
    assert body["NeutronError"]["type"] == "IpAddressGenerationFailure"
    alice.ok("DELETE", f"/v2.0/ports/{ports[2]['id']}")
    again = _port(alice, net)[1]["port"]
    assert again["fixed_ips"] == ports[2]["fixed_ips"]


def test_mac_rules(alice: Api) -> None:
    net, _ = _topo(alice)
    assert _port(alice, net, mac_address="02:00:00:00:00:01")[0] == 201
    status, body = _port(alice, net, mac_address="02:00:00:00:00:01")
    assert status == 409
    assert body["NeutronError"]["type"] == "MacAddressInUse"
    for bad in ("01:00:5e:00:00:01", "00:00:00:00:00:00", "zz:00:00:00:00:01", "02:00:00:00:01"):
        status, body = _port(alice, net, mac_address=bad)
        assert status == 400, bad
        assert "mac_address" in body["NeutronError"]["message"]
    other, _ = _topo(alice)
    assert _port(alice, other, mac_address="02:00:00:00:00:01")[0] == 201  # unique per network


def test_port_security_and_groups(alice: Api) -> None:
    net, _ = _topo(alice)
    status, body = _port(alice, net, port_security_enabled=False)
    assert status == 201
    assert body["port"]["security_groups"] == []
    status, body = _port(
        alice, net, port_security_enabled=False, security_groups=[body["port"]["id"]]
    )
    assert status == 409
    assert body["NeutronError"]["type"] == "PortSecurityAndIPRequiredForSecurityGroups"
    status, body = _port(alice, net, security_groups=["00000000-0000-0000-0000-000000000000"])
    assert status == 404
    insecure_net, _ = _topo(alice, port_security_enabled=False)
    port = _port(alice, insecure_net)[1]["port"]
    assert port["port_security_enabled"] is False
    assert port["security_groups"] == []


def test_allowed_address_pairs(alice: Api) -> None:
    net, _ = _topo(alice)
    pairs = [
        {"ip_address": "10.0.0.200"},
        {"ip_address": "10.1.0.0/24", "mac_address": "02:00:00:00:00:09"},
    ]
    port = _port(alice, net, allowed_address_pairs=pairs)[1]["port"]
    assert port["allowed_address_pairs"] == [
        {"ip_address": "10.0.0.200", "mac_address": port["mac_address"]},
        {"ip_address": "10.1.0.0/24", "mac_address": "02:00:00:00:00:09"},
    ]
    status, _ = _port(alice, net, allowed_address_pairs=[{"ip_address": "x"}])
    assert status == 400


def test_binding_host_is_admin_only(admin: Api, alice: Api) -> None:
    net, _ = _topo(alice)
    status, _ = _port(alice, net, **{"binding:host_id": "hv1"})
    assert status == 403
    port = _port(alice, net)[1]["port"]
    assert port["binding:vif_type"] == "unbound"
    bound = admin.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"binding:host_id": "hv1"}})[
        "port"
    ]
    assert bound["binding:host_id"] == "hv1"
    assert alice.ok("GET", f"/v2.0/ports/{port['id']}")["port"]["binding:host_id"] == "hv1"


def test_update_fixed_ips_and_name(alice: Api) -> None:
    net, sub = _topo(alice)
    port = _port(alice, net)[1]["port"]
    upd = alice.ok(
        "PUT",
        f"/v2.0/ports/{port['id']}",
        {"port": {"name": "web", "fixed_ips": [{"subnet_id": sub, "ip_address": "10.0.0.77"}]}},
    )["port"]
    assert upd["name"] == "web"
    assert upd["fixed_ips"] == [{"subnet_id": sub, "ip_address": "10.0.0.77"}]
    # the old address is free again
    again = _port(alice, net, fixed_ips=[{"ip_address": port["fixed_ips"][0]["ip_address"]}])
    assert again[0] == 201


def test_filters_on_ports(alice: Api) -> None:
    net, _ = _topo(alice)
    a = _port(alice, net, device_id="vm-a")[1]["port"]
    _port(alice, net, device_id="vm-b")
    body = alice.ok("GET", "/v2.0/ports?device_id=vm-a")
    assert [p["id"] for p in body["ports"]] == [a["id"]]
    ip = a["fixed_ips"][0]["ip_address"]
    body = alice.ok("GET", f"/v2.0/ports?fixed_ips=ip_address%3D{ip}")
    assert [p["id"] for p in body["ports"]] == [a["id"]]
    body = alice.ok("GET", f"/v2.0/ports?network_id={net}&admin_state_up=True")
    assert len(body["ports"]) == 2


def test_tenancy_on_networks_for_ports(admin: Api, alice: Api, bob: Api) -> None:
    private, _ = _topo(alice)
    status, body = _port(bob, private)
    assert status == 404
    shared, _ = _topo(admin, shared=True)
    status, body = _port(bob, shared)
    assert status == 201
    assert body["port"]["project_id"] == bob.project_id
    external, _ = _topo(admin, "172.24.4.0/24", **{"router:external": True})
    status, body = _port(bob, external)
    assert status == 403
    # alice does not see bob's port on the shared network, admin does
    assert all(p["project_id"] == alice.project_id for p in alice.ok("GET", "/v2.0/ports")["ports"])
    assert body is not None


def test_bulk_create(alice: Api) -> None:
    net, _ = _topo(alice)
    status, body = alice.post("/v2.0/ports", {"ports": [{"network_id": net}, {"network_id": net}]})
    assert status == 201
    assert len(body["ports"]) == 2
    status, body = alice.post(
        "/v2.0/ports", {"ports": [{"network_id": net}, {"network_id": net, "mac_address": "bad"}]}
    )
    assert status == 400
    # all-or-nothing: the valid first element was not kept
    assert len(alice.ok("GET", f"/v2.0/ports?network_id={net}")["ports"]) == 2


def test_admin_models_the_external_gateway_as_a_port(admin: Api, alice: Api) -> None:
    ext = admin.ok("POST", "/v2.0/networks", {"network": {"router:external": True}})["network"]
    sub = admin.ok(
        "POST", "/v2.0/subnets", {"subnet": {"network_id": ext["id"], "cidr": "172.24.4.0/24"}}
    )["subnet"]
    body = {
        "network_id": ext["id"],
        "device_owner": "network:external_gateway",
        "fixed_ips": [{"ip_address": sub["gateway_ip"]}],
        "port_security_enabled": False,
    }
    port = admin.ok("POST", "/v2.0/ports", {"port": body})["port"]
    assert port["fixed_ips"][0]["ip_address"] == "172.24.4.1"
    # not on a tenant network, and not for members
    net = alice.ok("POST", "/v2.0/networks", {"network": {}})["network"]["id"]
    alice.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.0.0.0/24"}})
    status, _ = admin.post(
        "/v2.0/ports",
        {"port": {**body, "network_id": net, "fixed_ips": [{"ip_address": "10.0.0.1"}]}},
    )
    assert status == 409
    status, _ = alice.post("/v2.0/ports", {"port": {**body, "network_id": net}})
    assert status == 403
