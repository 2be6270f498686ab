"""QoS policies and rules through openstacksdk's network proxy (``conn.network``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from openstack import exceptions
from openstack.connection import Connection

Uniq = Callable[[str], str]


def test_qos_policy_rules_and_attachment(admin_conn: Connection, uniq: Uniq) -> None:
    net = admin_conn.network
    policy = net.create_qos_policy(name=uniq("gold"))
    limit = net.create_qos_bandwidth_limit_rule(
        policy, max_kbps=1000, max_burst_kbps=100, direction="egress"
    )
    net.create_qos_dscp_marking_rule(policy, dscp_mark=26)
    assert [r.id for r in net.qos_bandwidth_limit_rules(policy)] == [limit.id]
    assert {t.type for t in net.qos_rule_types()} >= {"bandwidth_limit", "dscp_marking"}

    network = net.create_network(name=uniq("qnet"), qos_policy_id=policy.id)
    assert network.qos_policy_id == policy.id
    with pytest.raises(exceptions.ConflictException) as info:
        net.delete_qos_policy(policy, ignore_missing=False)
    assert network.id in str(info.value.details)
    net.update_network(network.id, qos_policy_id=None)
    net.delete_qos_policy(policy, ignore_missing=False)
    assert net.find_qos_policy(policy.id) is None
