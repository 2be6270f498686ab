"""The SDK's higher-level "cloud" layer (``conn.create_router`` …), which Ansible's
openstack.cloud modules and many scripts use instead of ``conn.network``.

It takes different paths from the proxy API: it checks extensions by alias
before using them, looks networks up by name, and polls floating IP status.
"""

from __future__ import annotations

from collections.abc import Callable

from openstack.connection import Connection

from compat.conftest import Member

Uniq = Callable[[str], str]


def test_cloud_layer_builds_a_routed_network_with_a_floating_ip(
    admin_conn: Connection, alice: Member, uniq: Uniq
) -> None:
    ext_name = uniq("ext")
    external = admin_conn.network.create_network(name=ext_name, is_router_external=True)
    admin_conn.network.create_subnet(network_id=external.id, ip_version=4, cidr="192.0.2.0/24")
    cloud = alice.conn

    net = cloud.create_network(uniq("cloudnet"))
    sub = cloud.create_subnet(net.name, cidr="10.99.0.0/24", ip_version=4, enable_dhcp=True)
    assert sub.network_id == net.id
    router = cloud.create_router(uniq("cloudr"), ext_gateway_net_id=external.id)
    assert router.external_gateway_info["network_id"] == external.id
    cloud.add_router_interface(router, subnet_id=sub.id)
    assert router.id in {r.id for r in cloud.list_routers()}

    port = cloud.create_port(net.id, name=uniq("vm"))
    fip = cloud.create_floating_ip(network=ext_name, port=port.id, wait=True, timeout=10)
    assert fip.status == "ACTIVE"
    assert fip.fixed_ip_address == port.fixed_ips[0]["ip_address"]
    assert fip.id in {f.id for f in cloud.list_floating_ips()}
    assert cloud.delete_floating_ip(fip.id) is True

    sg = cloud.create_security_group(uniq("csg"), "from the cloud layer")
    rule = cloud.create_security_group_rule(
        sg.id, port_range_min=80, port_range_max=80, protocol="tcp"
    )
    assert rule.security_group_id == sg.id
    assert sg.id in {g.id for g in cloud.list_security_groups()}

    cloud.remove_router_interface(router, subnet_id=sub.id)
    assert cloud.delete_router(router.id) is True
    assert cloud.delete_port(port.id) is True
    assert cloud.delete_network(net.id) is True
