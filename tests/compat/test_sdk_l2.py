"""Networks, subnets and ports through openstacksdk's network proxy (``conn.network``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import openstack
import pytest
from openstack import exceptions
from openstack.connection import Connection

from compat.conftest import Server

Uniq = Callable[[str], str]


def test_sdk_discovers_v2_and_authenticates_with_a_plain_token(
    server: Server, admin_conn: Connection
) -> None:
    assert admin_conn.network.get_api_major_version() == (2, 0)
    assert admin_conn.network.get_endpoint().rstrip("/") == server.url + "/v2.0"
    with pytest.raises(exceptions.HttpException) as info:
        list(server.connect("not-a-token").network.networks())
    assert info.value.status_code == 401


def test_clouds_yaml_profile_without_keystone(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a user writes in clouds.yaml to point the SDK (or `openstack`) at netvirt."""
    cloud = {"auth_type": "admin_token", "auth": {"endpoint": server.url, "token": ""}}
    cloud["auth"]["token"] = server.admin_token
    config = tmp_path / "clouds.yaml"
    config.write_text(json.dumps({"clouds": {"netvirt": cloud}}))  # JSON is YAML
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(config))
    with openstack.connect(cloud="netvirt") as conn:
        net = conn.network.create_network(name="from-clouds-yaml")
        assert conn.network.get_network(net.id).project_id == "admin"
        conn.network.delete_network(net)


def test_extensions_are_listed_and_found(admin_conn: Connection) -> None:
    aliases = {ext.alias for ext in admin_conn.network.extensions()}
    assert {"router", "external-net", "security-group", "allowed-address-pairs"} <= aliases
    ext = admin_conn.network.find_extension("external-net", ignore_missing=False)
    assert ext.name == "Neutron external network"


def test_network_crud(admin_conn: Connection, uniq: Uniq) -> None:
    net = admin_conn.network.create_network(name=uniq("net"), mtu=1400)
    assert net.status == "ACTIVE"
    assert net.mtu == 1400
    assert net.is_port_security_enabled is True
    assert net.is_router_external is False
    assert net.provider_network_type == "geneve"
    assert net.project_id == "admin"

    got = admin_conn.network.get_network(net.id)
    assert got.name == net.name
    assert admin_conn.network.find_network(net.name, ignore_missing=False).id == net.id

    name, revision = net.name, net.revision_number
    upd = admin_conn.network.update_network(net.id, name=name + "-x", description="d")
    assert (upd.name, upd.description) == (name + "-x", "d")
    assert upd.revision_number == revision + 1

    admin_conn.network.delete_network(net, ignore_missing=False)
    with pytest.raises(exceptions.NotFoundException) as info:
        admin_conn.network.get_network(net.id)
    assert "could not be found" in str(info.value.details)
    assert admin_conn.network.find_network(name + "-x") is None


def test_list_filters_by_name_and_boolean_attributes(admin_conn: Connection, uniq: Uniq) -> None:
    name = uniq("filt")
    plain = admin_conn.network.create_network(name=name)
    external = admin_conn.network.create_network(name=name + "-ext", is_router_external=True)
    assert external.is_router_external is True
    assert [n.id for n in admin_conn.network.networks(name=name)] == [plain.id]
    externals = {n.id for n in admin_conn.network.networks(is_router_external=True)}
    assert external.id in externals
    assert plain.id not in externals


def test_sdk_follows_pagination_links(
    admin_conn: Connection, uniq: Uniq, sent: list[tuple[str, str]]
) -> None:
    tag = uniq("page")
    ids = {admin_conn.network.create_network(name=f"p{i}", description=tag).id for i in range(5)}
    sent.clear()
    seen = [n.id for n in admin_conn.network.networks(description=tag, limit=2)]
    assert sorted(seen) == sorted(ids)
    gets = [urlparse(url) for method, url in sent if method == "GET"]
    # pages of 2, 2 and 1 (the SDK then probes once more and gets an empty page)
    assert len(gets) >= 3
    assert all(parse_qs(u.query)["description"] == [tag] for u in gets)
    assert all(parse_qs(u.query)["limit"] == ["2"] for u in gets)
    assert all("marker" in parse_qs(u.query) for u in gets[1:])
    ordered = [n.name for n in admin_conn.network.networks(description=tag, sort_key="name")]
    assert ordered == ["p0", "p1", "p2", "p3", "p4"]


def test_subnet_crud_with_pools_dns_and_routes(admin_conn: Connection, uniq: Uniq) -> None:
    net = admin_conn.network.create_network(name=uniq("sn"))
    sub = admin_conn.network.create_subnet(
        network_id=net.id,
        name=uniq("sub"),
        ip_version=4,
        cidr="10.20.0.0/24",
        gateway_ip="10.20.0.1",
        allocation_pools=[{"start": "10.20.0.100", "end": "10.20.0.150"}],
        dns_nameservers=["192.0.2.53"],
        host_routes=[{"destination": "198.51.100.0/24", "nexthop": "10.20.0.254"}],
    )
    assert sub.cidr == "10.20.0.0/24"
    assert sub.ip_version == 4
    assert sub.gateway_ip == "10.20.0.1"
    assert sub.allocation_pools == [{"start": "10.20.0.100", "end": "10.20.0.150"}]
    assert sub.dns_nameservers == ["192.0.2.53"]
    assert sub.host_routes == [{"destination": "198.51.100.0/24", "nexthop": "10.20.0.254"}]
    assert sub.is_dhcp_enabled is True
    assert admin_conn.network.get_network(net.id).subnet_ids == [sub.id]

    upd = admin_conn.network.update_subnet(sub, dns_nameservers=["192.0.2.1", "192.0.2.2"])
    assert upd.dns_nameservers == ["192.0.2.1", "192.0.2.2"]
    assert [s.id for s in admin_conn.network.subnets(network_id=net.id)] == [sub.id]
    assert [s.id for s in admin_conn.network.subnets(cidr="10.20.0.0/24", network_id=net.id)] == [
        sub.id
    ]

    admin_conn.network.delete_subnet(sub, ignore_missing=False)
    assert list(admin_conn.network.subnets(network_id=net.id)) == []


def test_invalid_subnet_is_a_bad_request_with_the_server_message(
    admin_conn: Connection, uniq: Uniq
) -> None:
    net = admin_conn.network.create_network(name=uniq("bad"))
    with pytest.raises(exceptions.BadRequestException) as info:
        admin_conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.0.0.1/24")
    assert "10.0.0.0/24" in str(info.value.details)


def test_port_crud_with_fixed_ips_and_address_pairs(admin_conn: Connection, uniq: Uniq) -> None:
    net = admin_conn.network.create_network(name=uniq("pn"))
    sub = admin_conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.30.0.0/24")
    port = admin_conn.network.create_port(
        network_id=net.id,
        name=uniq("port"),
        fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.30.0.10"}],
        allowed_address_pairs=[{"ip_address": "10.30.0.200/32"}],
    )
    assert port.fixed_ips == [{"subnet_id": sub.id, "ip_address": "10.30.0.10"}]
    assert port.allowed_address_pairs[0]["ip_address"] == "10.30.0.200/32"
    assert port.is_port_security_enabled is True
    assert len(port.security_group_ids) == 1

    auto = admin_conn.network.create_port(network_id=net.id)
    assert auto.fixed_ips[0]["subnet_id"] == sub.id
    assert auto.fixed_ips[0]["ip_address"] != "10.30.0.10"

    pairs = [{"ip_address": "10.30.0.201", "mac_address": "fa:16:3e:00:00:01"}]
    upd = admin_conn.network.update_port(port, name="renamed", allowed_address_pairs=pairs)
    assert upd.name == "renamed"
    assert upd.allowed_address_pairs == pairs

    by_ip = admin_conn.network.ports(fixed_ips="ip_address=10.30.0.10")
    assert [p.id for p in by_ip] == [port.id]
    assert {p.id for p in admin_conn.network.ports(network_id=net.id)} == {port.id, auto.id}

    admin_conn.network.delete_port(port, ignore_missing=False)
    admin_conn.network.delete_port(auto, ignore_missing=False)
    assert list(admin_conn.network.ports(network_id=net.id)) == []


def test_conflicts_surface_as_sdk_conflict_exceptions(admin_conn: Connection, uniq: Uniq) -> None:
    net = admin_conn.network.create_network(name=uniq("cf"))
    sub = admin_conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.40.0.0/24")
    fixed = [{"subnet_id": sub.id, "ip_address": "10.40.0.5"}]
    admin_conn.network.create_port(network_id=net.id, fixed_ips=fixed)
    with pytest.raises(exceptions.ConflictException) as info:
        admin_conn.network.create_port(network_id=net.id, fixed_ips=fixed)
    assert "10.40.0.5" in str(info.value.details)
    with pytest.raises(exceptions.ConflictException):
        admin_conn.network.delete_network(net)


def test_stale_if_revision_is_refused(admin_conn: Connection, uniq: Uniq) -> None:
    net = admin_conn.network.create_network(name=uniq("rev"))
    admin_conn.network.update_network(net.id, description="changed")
    with pytest.raises(exceptions.PreconditionFailedException):
        admin_conn.network.update_network(
            net.id, description="lost update", if_revision=net.revision_number
        )


def test_address_pair_without_mac_gets_the_port_mac(admin_conn: Connection, uniq: Uniq) -> None:
    net = admin_conn.network.create_network(name=uniq("aap"))
    port = admin_conn.network.create_port(
        network_id=net.id, allowed_address_pairs=[{"ip_address": "10.1.2.3"}]
    )
    assert port.allowed_address_pairs == [
        {"ip_address": "10.1.2.3", "mac_address": port.mac_address}
    ]
