"""Subnets: CIDR/gateway/pool rules, IPv6 modes, updates and in-use deletion."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Api


def _net(api: Api, **attrs: object) -> str:
    return str(api.ok("POST", "/v2.0/networks", {"network": attrs})["network"]["id"])


def _subnet(api: Api, net: str, cidr: str, **attrs: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    return api.post("/v2.0/subnets", {"subnet": {"network_id": net, "cidr": cidr, **attrs}})


def test_defaults_gateway_first_host_pool_rest(admin: Api) -> None:
    net = _net(admin)
    status, body = _subnet(admin, net, "10.1.0.0/24", dns_nameservers=["10.1.0.53"])
    assert status == 201, body
    sub = body["subnet"]
    assert sub["gateway_ip"] == "10.1.0.1"
    assert sub["allocation_pools"] == [{"start": "10.1.0.2", "end": "10.1.0.254"}]
    assert sub["ip_version"] == 4
    assert sub["enable_dhcp"] is True
    assert sub["dns_nameservers"] == ["10.1.0.53"]
    network = admin.ok("GET", f"/v2.0/networks/{net}")["network"]
    assert network["subnets"] == [sub["id"]]


def test_gateway_in_middle_splits_default_pool(admin: Api) -> None:
    net = _net(admin)
    _, body = _subnet(admin, net, "10.2.0.0/29", gateway_ip="10.2.0.4")
    assert body["subnet"]["allocation_pools"] == [
        {"start": "10.2.0.1", "end": "10.2.0.3"},
        {"start": "10.2.0.5", "end": "10.2.0.6"},
    ]


def test_no_gateway(admin: Api) -> None:
    net = _net(admin)
    _, body = _subnet(admin, net, "10.3.0.0/24", gateway_ip=None)
    assert body["subnet"]["gateway_ip"] is None
    assert body["subnet"]["allocation_pools"] == [{"start": "10.3.0.1", "end": "10.3.0.254"}]


def test_bad_cidrs_and_gateways(admin: Api) -> None:
    net = _net(admin)
    for cidr in ("10.0.0.1/24", "300.0.0.0/24", "10.0.0.0", "10.0.0.0/33", "fe80::/200"):
        status, body = _subnet(admin, net, cidr)
        assert status == 400, cidr
        assert "cidr" in body["NeutronError"]["message"]
    status, body = _subnet(admin, net, "10.0.0.0/24", gateway_ip="10.9.9.9")
    assert status == 400
    assert "gateway_ip" in body["NeutronError"]["message"]
    status, body = _subnet(admin, net, "10.0.0.0/24", ip_version=6)
    assert status == 400


def test_overlapping_subnets_on_one_network_refused(admin: Api) -> None:
    net = _net(admin)
    assert _subnet(admin, net, "10.4.0.0/16")[0] == 201
    status, body = _subnet(admin, net, "10.4.5.0/24")
    assert status == 400
    assert "overlaps" in body["NeutronError"]["message"]
    # the same CIDR on another network is fine (overlapping tenants)
    assert _subnet(admin, _net(admin), "10.4.0.0/16")[0] == 201


def test_pool_rules(admin: Api) -> None:
    net = _net(admin)
    bad_pools = [
        [{"start": "10.5.0.10", "end": "10.5.1.10"}],  # beyond cidr
        [{"start": "10.5.0.20", "end": "10.5.0.10"}],  # reversed
        [{"start": "10.5.0.0", "end": "10.5.0.10"}],  # network address
        [{"start": "10.5.0.2", "end": "10.5.0.20"}, {"start": "10.5.0.15", "end": "10.5.0.30"}],
    ]
    for pools in bad_pools:
        status, _ = _subnet(admin, net, "10.5.0.0/24", allocation_pools=pools)
        assert status == 400, pools
    status, body = _subnet(
        admin, net, "10.5.0.0/24", allocation_pools=[{"start": "10.5.0.1", "end": "10.5.0.9"}]
    )
    assert status == 409
    assert body["NeutronError"]["type"] == "GatewayConflictWithAllocationPools"
    status, body = _subnet(
        admin, net, "10.5.0.0/24", allocation_pools=[{"start": "10.5.0.100", "end": "10.5.0.110"}]
    )
    assert status == 201


def test_ipv6_slaac_and_modes(admin: Api) -> None:
    net = _net(admin)
    status, body = _subnet(
        admin, net, "2001:db8::/64", ip_version=6, ipv6_ra_mode="slaac", ipv6_address_mode="slaac"
    )
    assert status == 201, body
    assert body["subnet"]["gateway_ip"] == "2001:db8::1"
    port = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net}})["port"]
    mac = port["mac_address"]
    ip = ipaddress.IPv6Address(port["fixed_ips"][0]["ip_address"])
    # EUI-64: the interface id carries the MAC with the U/L bit flipped and ff:fe inserted
    iid = int(ip) & ((1 << 64) - 1)
    octets = [int(x, 16) for x in mac.split(":")]
    assert iid >> 40 == (octets[0] ^ 2) << 16 | octets[1] << 8 | octets[2]
    assert (iid >> 24) & 0xFFFF == 0xFFFE
    status, _ = _subnet(
        admin,
        net,
        "2001:db9::/64",
        ip_version=6,
        ipv6_ra_mode="slaac",
        ipv6_address_mode="dhcpv6-stateful",
    )
    assert status == 400
    status, _ = _subnet(admin, _net(admin), "10.0.0.0/24", ipv6_ra_mode="slaac")
    assert status == 400


def test_update_subnet_and_gateway_in_pool(admin: Api) -> None:
    net = _net(admin)
    sub = _subnet(admin, net, "10.6.0.0/24")[1]["subnet"]
    upd = admin.ok(
        "PUT",
        f"/v2.0/subnets/{sub['id']}",
        {
            "subnet": {
                "name": "s",
                "dns_nameservers": ["8.8.8.8"],
                "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.6.0.9"}],
            }
        },
    )["subnet"]
    assert upd["name"] == "s"
    assert upd["dns_nameservers"] == ["8.8.8.8"]
    assert upd["host_routes"] == [{"destination": "10.9.0.0/16", "nexthop": "10.6.0.9"}]
    status, body = admin.put(f"/v2.0/subnets/{sub['id']}", {"subnet": {"gateway_ip": "10.6.0.7"}})
    assert status == 409  # inside the default pool
    status, body = admin.put(f"/v2.0/subnets/{sub['id']}", {"subnet": {"cidr": "10.7.0.0/24"}})
    assert status == 400  # cidr is immutable: unknown field for update


def test_subnet_in_use_cannot_be_deleted(admin: Api) -> None:
    net = _net(admin)
    sub = _subnet(admin, net, "10.8.0.0/24")[1]["subnet"]
    port = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net}})["port"]
    status, body = admin.delete(f"/v2.0/subnets/{sub['id']}")
    assert status == 409
    assert body["NeutronError"]["type"] == "SubnetInUse"
    admin.ok("DELETE", f"/v2.0/ports/{port['id']}")
    admin.ok("DELETE", f"/v2.0/subnets/{sub['id']}")


def test_member_cannot_add_subnet_to_foreign_network(admin: Api, alice: Api) -> None:
    net = _net(admin, shared=True)
    status, body = _subnet(alice, net, "10.9.0.0/24")
    assert status == 404


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prefix=st.integers(min_value=16, max_value=30), gw_offset=st.integers(min_value=1, max_value=8)
)
def test_default_pool_covers_every_usable_host_but_gateway(
    admin: Api, prefix: int, gw_offset: int
) -> None:
    net = _net(admin)
    cidr = ipaddress.ip_network(f"10.200.0.0/{prefix}")
    gateway = cidr.network_address + min(gw_offset, cidr.num_addresses - 2)
    status, body = _subnet(admin, net, str(cidr), gateway_ip=str(gateway))
    assert status == 201, body
    covered = 0
    for pool in body["subnet"]["allocation_pools"]:
        start, end = ipaddress.ip_address(pool["start"]), ipaddress.ip_address(pool["end"])
        assert start in cidr
        assert end in cidr
        assert not (start <= gateway <= end)
        covered += int(end) - int(start) + 1
    assert covered == cidr.num_addresses - 3  # network, broadcast, gateway
    admin.ok("DELETE", f"/v2.0/networks/{net}")
