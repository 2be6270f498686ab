"""Routers and floating IPs through openstacksdk's network proxy (``conn.network``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from openstack import exceptions
from openstack.connection import Connection

from compat.conftest import Member

Uniq = Callable[[str], str]


@pytest.fixture(scope="module")
def external(admin_conn: Connection) -> Any:
    """An admin-made external network with one subnet, as a cloud's provider net."""
    net = admin_conn.network.create_network(name="public", is_router_external=True)
    admin_conn.network.create_subnet(
        network_id=net.id,
        ip_version=4,
        cidr="203.0.113.0/24",
        allocation_pools=[{"start": "203.0.113.10", "end": "203.0.113.99"}],
    )
    return net


def _private_subnet(conn: Connection, name: str, cidr: str) -> Any:
    net = conn.network.create_network(name=name)
    return conn.network.create_subnet(network_id=net.id, ip_version=4, cidr=cidr)


def _in(address: str, cidr: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(cidr)


def test_router_crud_with_external_gateway(alice: Member, external: Any, uniq: Uniq) -> None:
    conn = alice.conn
    router = conn.network.create_router(
        name=uniq("r"), external_gateway_info={"network_id": external.id}
    )
    assert router.project_id == alice.project_id
    gateway = router.external_gateway_info
    assert gateway["network_id"] == external.id
    assert gateway["enable_snat"] is True
    assert _in(gateway["external_fixed_ips"][0]["ip_address"], "203.0.113.0/24")

    assert conn.network.get_router(router.id).name == router.name
    assert [r.id for r in conn.network.routers(name=router.name)] == [router.id]
    upd = conn.network.update_router(router.id, name=router.name + "-x")
    assert upd.name == router.name + "-x"

    cleared = conn.network.update_router(router.id, external_gateway_info={})
    assert not cleared.external_gateway_info
    conn.network.delete_router(router.id, ignore_missing=False)
    assert conn.network.find_router(router.id) is None


def test_router_interfaces_by_subnet_and_by_port_and_extra_routes(
    alice: Member, uniq: Uniq
) -> None:
    conn = alice.conn
    router = conn.network.create_router(name=uniq("r"))
    sub_a = _private_subnet(conn, uniq("a"), "10.70.0.0/24")
    sub_b = _private_subnet(conn, uniq("b"), "10.71.0.0/24")

    by_subnet = conn.network.add_interface_to_router(router, subnet_id=sub_a.id)
    assert by_subnet["subnet_id"] == sub_a.id
    gw_port = conn.network.get_port(by_subnet["port_id"])
    assert gw_port.device_owner == "network:router_interface"
    assert gw_port.device_id == router.id
    assert gw_port.fixed_ips == [{"subnet_id": sub_a.id, "ip_address": sub_a.gateway_ip}]

    port = conn.network.create_port(
        network_id=sub_b.network_id, fixed_ips=[{"subnet_id": sub_b.id, "ip_address": "10.71.0.2"}]
    )
    by_port = conn.network.add_interface_to_router(router, port_id=port.id)
    assert by_port["port_id"] == port.id
    assert by_port["subnet_id"] == sub_b.id
    owned = {p.id for p in conn.network.ports(device_id=router.id)}
    assert owned == {gw_port.id, port.id}

    routes = [{"destination": "198.51.100.0/24", "nexthop": "10.70.0.254"}]
    assert conn.network.update_router(router.id, routes=routes).routes == routes
    with pytest.raises(exceptions.BadRequestException):
        conn.network.update_router(
            router.id, routes=[{"destination": "192.0.2.0/24", "nexthop": "172.31.0.1"}]
        )

    with pytest.raises(exceptions.ConflictException):
        conn.network.delete_router(router.id, ignore_missing=False)
    conn.network.update_router(router.id, routes=[])
    conn.network.remove_interface_from_router(router, subnet_id=sub_a.id)
    conn.network.remove_interface_from_router(router, port_id=port.id)
    assert list(conn.network.ports(device_id=router.id)) == []
    with pytest.raises(exceptions.NotFoundException):
        conn.network.remove_interface_from_router(router, subnet_id=sub_a.id)
    conn.network.delete_router(router.id, ignore_missing=False)


def test_floating_ip_associate_disassociate(alice: Member, external: Any, uniq: Uniq) -> None:
    conn = alice.conn
    sub = _private_subnet(conn, uniq("fipnet"), "10.80.0.0/24")
    router = conn.network.create_router(
        name=uniq("r"), external_gateway_info={"network_id": external.id}
    )
    conn.network.add_interface_to_router(router, subnet_id=sub.id)
    port = conn.network.create_port(network_id=sub.network_id)
    fixed_ip = port.fixed_ips[0]["ip_address"]

    fip = conn.network.create_ip(floating_network_id=external.id)
    assert fip.project_id == alice.project_id
    assert _in(fip.floating_ip_address, "203.0.113.0/24")
    assert (fip.port_id, fip.router_id, fip.status) == (None, None, "DOWN")

    assoc = conn.network.update_ip(fip.id, port_id=port.id)
    assert assoc.port_id == port.id
    assert assoc.fixed_ip_address == fixed_ip
    assert assoc.router_id == router.id
    assert assoc.status == "ACTIVE"
    assert assoc.port_details["mac_address"] == port.mac_address  # fip-port-details
    assert [f.id for f in conn.network.ips(port_id=port.id)] == [fip.id]
    assert conn.network.get_ip(fip.id).fixed_ip_address == fixed_ip

    loose = conn.network.update_ip(fip.id, port_id=None)
    assert (loose.port_id, loose.fixed_ip_address, loose.router_id) == (None, None, None)

    direct = conn.network.create_ip(floating_network_id=external.id, port_id=port.id)
    assert direct.fixed_ip_address == fixed_ip
    with pytest.raises(exceptions.ConflictException):
        conn.network.update_ip(fip.id, port_id=port.id)

    conn.network.delete_ip(direct.id, ignore_missing=False)
    conn.network.delete_ip(fip.id, ignore_missing=False)
    assert (
        list(conn.network.ips(floating_network_id=external.id, project_id=alice.project_id)) == []
    )


def test_floating_ip_needs_a_router_to_the_port(alice: Member, external: Any, uniq: Uniq) -> None:
    sub = _private_subnet(alice.conn, uniq("island"), "10.90.0.0/24")
    port = alice.conn.network.create_port(network_id=sub.network_id)
    with pytest.raises(exceptions.NotFoundException) as info:
        alice.conn.network.create_ip(floating_network_id=external.id, port_id=port.id)
    assert "not reachable" in str(info.value.details)


def test_other_projects_cannot_see_routers_or_floating_ips(
    alice: Member, bob: Member, external: Any, uniq: Uniq
) -> None:
    router = alice.conn.network.create_router(name=uniq("r"))
    fip = alice.conn.network.create_ip(floating_network_id=external.id)
    assert router.id not in {r.id for r in bob.conn.network.routers()}
    assert fip.id not in {f.id for f in bob.conn.network.ips()}
    with pytest.raises(exceptions.NotFoundException):
        bob.conn.network.get_router(router.id)
    with pytest.raises(exceptions.NotFoundException):
        bob.conn.network.update_ip(fip.id, port_id=None)
    # the external network itself is visible to every project, as in Neutron
    assert bob.conn.network.get_network(external.id).is_router_external is True
