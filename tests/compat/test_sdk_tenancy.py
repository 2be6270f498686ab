"""Tenancy through the SDK: a member token sees and changes only its own project."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from openstack import exceptions
from openstack.connection import Connection

from compat.conftest import Member

Uniq = Callable[[str], str]


def test_member_creates_in_its_own_project_without_naming_it(alice: Member, uniq: Uniq) -> None:
    net = alice.conn.network.create_network(name=uniq("mine"))
    sub = alice.conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.50.0.0/24")
    port = alice.conn.network.create_port(network_id=net.id)
    assert {net.project_id, sub.project_id, port.project_id} == {alice.project_id}
    assert net.provider_network_type is None  # provider attributes are admin-only
    assert port.fixed_ips[0]["subnet_id"] == sub.id


def test_member_cannot_see_admins_private_network(
    admin_conn: Connection, alice: Member, uniq: Uniq
) -> None:
    private = admin_conn.network.create_network(name=uniq("private"))
    assert private.id not in {n.id for n in alice.conn.network.networks()}
    assert list(alice.conn.network.networks(name=private.name)) == []
    assert alice.conn.network.find_network(private.name) is None
    with pytest.raises(exceptions.NotFoundException):
        alice.conn.network.get_network(private.id)
    with pytest.raises(exceptions.NotFoundException):
        alice.conn.network.update_network(private.id, name="stolen")
    with pytest.raises(exceptions.NotFoundException):
        alice.conn.network.delete_network(private.id, ignore_missing=False)
    with pytest.raises(exceptions.NotFoundException):
        alice.conn.network.create_port(network_id=private.id)
    assert admin_conn.network.get_network(private.id).name == private.name


def test_shared_network_is_visible_and_usable_by_members(
    admin_conn: Connection, alice: Member, uniq: Uniq
) -> None:
    shared = admin_conn.network.create_network(name=uniq("shared"), is_shared=True)
    admin_conn.network.create_subnet(network_id=shared.id, ip_version=4, cidr="10.60.0.0/24")
    seen = alice.conn.network.get_network(shared.id)
    assert seen.is_shared is True
    assert shared.id in {n.id for n in alice.conn.network.networks(is_shared=True)}
    port = alice.conn.network.create_port(network_id=shared.id)
    assert port.project_id == alice.project_id
    # visible but not owned: 403, as Neutron answers (404 is for what one cannot see)
    with pytest.raises(exceptions.ForbiddenException):
        alice.conn.network.delete_network(shared.id, ignore_missing=False)


def test_projects_are_isolated_from_each_other(
    admin_conn: Connection, alice: Member, bob: Member, uniq: Uniq
) -> None:
    net = alice.conn.network.create_network(name=uniq("alice-only"))
    assert net.id not in {n.id for n in bob.conn.network.networks()}
    with pytest.raises(exceptions.NotFoundException):
        bob.conn.network.get_network(net.id)
    mine = {n.id for n in admin_conn.network.networks(project_id=alice.project_id)}
    assert net.id in mine
    assert all(
        n.project_id == alice.project_id
        for n in admin_conn.network.networks(project_id=alice.project_id)
    )


def test_member_cannot_set_admin_only_attributes(alice: Member) -> None:
    with pytest.raises(exceptions.ForbiddenException):
        alice.conn.network.create_network(is_shared=True)
    with pytest.raises(exceptions.ForbiddenException):
        alice.conn.network.create_network(is_router_external=True)
