"""Security groups and rules through openstacksdk's network proxy (``conn.network``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from openstack import exceptions

from compat.conftest import Member

Uniq = Callable[[str], str]


def test_default_group_exists_with_neutrons_default_rules(alice: Member) -> None:
    groups = list(alice.conn.network.security_groups(name="default"))
    assert len(groups) == 1
    default = groups[0]
    assert default.project_id == alice.project_id
    rules = list(alice.conn.network.security_group_rules(security_group_id=default.id))
    shapes = {(r.direction, r.ether_type, r.remote_group_id) for r in rules}
    assert shapes == {
        ("egress", "IPv4", None),
        ("egress", "IPv6", None),
        ("ingress", "IPv4", default.id),
        ("ingress", "IPv6", default.id),
    }
    found = alice.conn.network.find_security_group("default", ignore_missing=False)
    assert found.id == default.id


def test_group_and_rule_crud(alice: Member, uniq: Uniq) -> None:
    net = alice.conn.network
    sg = net.create_security_group(name=uniq("web"), description="web servers")
    assert sg.project_id == alice.project_id
    assert sg.stateful is True
    assert {r["direction"] for r in sg.security_group_rules} == {"egress"}

    ssh = net.create_security_group_rule(
        security_group_id=sg.id,
        direction="ingress",
        ether_type="IPv4",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="0.0.0.0/0",
    )
    assert (ssh.protocol, ssh.port_range_min, ssh.port_range_max) == ("tcp", 22, 22)
    assert ssh.remote_ip_prefix == "0.0.0.0/0"
    with pytest.raises(exceptions.ConflictException):
        net.create_security_group_rule(
            security_group_id=sg.id,
            direction="ingress",
            protocol="tcp",
            port_range_min=22,
            port_range_max=22,
            remote_ip_prefix="0.0.0.0/0",
        )
    bulk = list(
        net.create_security_group_rules(
            [
                {"security_group_id": sg.id, "direction": "ingress", "protocol": "icmp"},
                {
                    "security_group_id": sg.id,
                    "direction": "ingress",
                    "protocol": "udp",
                    "port_range_min": 53,
                    "port_range_max": 53,
                },
            ]
        )
    )
    assert [r.protocol for r in bulk] == ["icmp", "udp"]

    ingress = net.security_group_rules(security_group_id=sg.id, direction="ingress")
    assert {r.id for r in ingress} == {ssh.id, bulk[0].id, bulk[1].id}
    assert net.get_security_group_rule(ssh.id).security_group_id == sg.id
    assert len(net.get_security_group(sg.id).security_group_rules) == 5

    renamed = net.update_security_group(sg.id, name=sg.name + "-x")
    assert renamed.name == sg.name + "-x"
    net.delete_security_group_rule(ssh.id, ignore_missing=False)
    with pytest.raises(exceptions.NotFoundException):
        net.get_security_group_rule(ssh.id)
    net.delete_security_group(sg.id, ignore_missing=False)
    assert net.find_security_group(sg.id) is None


def test_invalid_rule_is_a_bad_request(alice: Member, uniq: Uniq) -> None:
    sg = alice.conn.network.create_security_group(name=uniq("bad"))
    with pytest.raises(exceptions.BadRequestException):
        alice.conn.network.create_security_group_rule(
            security_group_id=sg.id,
            direction="ingress",
            protocol="tcp",
            port_range_min=100,
            port_range_max=10,
        )


def test_group_in_use_by_a_port_cannot_be_deleted(alice: Member, uniq: Uniq) -> None:
    net = alice.conn.network
    sg = net.create_security_group(name=uniq("used"))
    network = net.create_network(name=uniq("sgnet"))
    port = net.create_port(network_id=network.id, security_group_ids=[sg.id])
    assert port.security_group_ids == [sg.id]
    with pytest.raises(exceptions.ConflictException) as info:
        net.delete_security_group(sg.id, ignore_missing=False)
    assert "in use" in str(info.value.details)
    net.update_port(port.id, security_group_ids=[])
    net.delete_security_group(sg.id, ignore_missing=False)


def test_groups_are_private_to_their_project(alice: Member, bob: Member, uniq: Uniq) -> None:
    sg = alice.conn.network.create_security_group(name=uniq("secret"))
    assert sg.id not in {g.id for g in bob.conn.network.security_groups()}
    with pytest.raises(exceptions.NotFoundException):
        bob.conn.network.get_security_group(sg.id)
    with pytest.raises(exceptions.NotFoundException):
        bob.conn.network.create_security_group_rule(security_group_id=sg.id, direction="ingress")
    bobs_default = list(bob.conn.network.security_groups(name="default"))
    assert [g.project_id for g in bobs_default] == [bob.project_id]
