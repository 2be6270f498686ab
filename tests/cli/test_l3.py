"""``netvirt router|floating-ip``: interfaces, gateway, extra routes, floating IPs."""

from __future__ import annotations

import pytest

from cli.conftest import Cli


@pytest.fixture
def topo(cli: Cli) -> Cli:
    """An external network, an internal one, and a VM port on the internal one."""
    cli.ok("network", "create", "ext", "--external")
    cli.ok("subnet", "create", "ext-sub", "--network", "ext", "--cidr", "203.0.113.0/24")
    cli.ok("network", "create", "int")
    cli.ok("subnet", "create", "int-sub", "--network", "int", "--cidr", "10.0.0.0/24")
    cli.ok("port", "create", "vm", "--network", "int")
    return cli


def test_router_gateway_interface_and_routes(topo: Cli) -> None:
    cli = topo
    ext = cli.json("network", "show", "ext")
    router = cli.json("router", "create", "r1", "--external-network", "ext", "--disable-snat")
    assert router["external_gateway_info"]["network_id"] == ext["id"]
    assert router["external_gateway_info"]["enable_snat"] is False
    iface = cli.json("router", "add-interface", "r1", "int-sub")
    assert iface["id"] == router["id"]
    assert iface["subnet_id"] == cli.json("subnet", "show", "int-sub")["id"]
    routed = cli.json("router", "add-route", "r1", "192.168.0.0/16", "10.0.0.5")
    assert routed["routes"] == [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.5"}]
    table = cli.ok("router", "list")
    assert "192.168.0.0/16 via 10.0.0.5" in table
    assert ext["id"] in table
    assert "already has the route" in cli.fails(
        "router", "add-route", "r1", "192.168.0.0/16", "10.0.0.5", code=2
    )
    assert cli.json("router", "remove-route", "r1", "192.168.0.0/16", "10.0.0.5")["routes"] == []
    cleared = cli.json("router", "clear-gateway", "r1")
    assert not cleared["external_gateway_info"]
    again = cli.json("router", "set-gateway", "r1", "ext")
    assert again["external_gateway_info"]["enable_snat"] is True
    cli.ok("router", "remove-interface", "r1", "int-sub")
    assert cli.ok("router", "delete", "r1").startswith("deleted router ")


def test_router_in_use_error_is_one_line(topo: Cli) -> None:
    cli = topo
    router = cli.json("router", "create", "r1")
    cli.ok("router", "add-interface", "r1", "int-sub")
    assert cli.fails("router", "delete", "r1") == f"error: Router {router['id']} still has ports"
    assert "give a SUBNET or --port" in cli.fails("router", "add-interface", "r1", code=2)
    assert "--disable-snat needs" in cli.fails("router", "create", "r2", "--disable-snat", code=2)


def test_floating_ip_lifecycle_by_address(topo: Cli) -> None:
    cli = topo
    cli.ok("router", "create", "r1", "--external-network", "ext")
    cli.ok("router", "add-interface", "r1", "int-sub")
    fip = cli.json("floating-ip", "create", "--network", "ext")
    address = fip["floating_ip_address"]
    assert fip["port_id"] is None
    port = cli.json("port", "show", "vm")
    assoc = cli.json("floating-ip", "associate", address, "vm")
    assert assoc["port_id"] == port["id"]
    assert assoc["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
    table = cli.ok("floating-ip", "list", "--port", "vm")
    assert address in table
    assert assoc["fixed_ip_address"] in table
    assert cli.json("floating-ip", "disassociate", address)["port_id"] is None
    assert address in cli.ok("floating-ip", "delete", address)
    line = cli.fails("floating-ip", "show", address)
    assert line == f"error: No floating IP found with id or address '{address}'."
