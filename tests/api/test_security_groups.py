"""Security groups and rules: default group, validation, duplicates, deletion, tenancy."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Api

SG = "/v2.0/security-groups"
RULES = "/v2.0/security-group-rules"


def _group(api: Api, name: str = "web", **extra: Any) -> dict[str, Any]:
    body = api.ok("POST", SG, {"security_group": {"name": name, **extra}})
    return dict(body["security_group"])


def _rule_body(group_id: str, **fields: Any) -> dict[str, Any]:
    return {"security_group_rule": {"security_group_id": group_id, "direction": "ingress"} | fields}


def _rule(api: Api, group_id: str, **fields: Any) -> dict[str, Any]:
    return dict(api.ok("POST", RULES, _rule_body(group_id, **fields))["security_group_rule"])


def _error(result: tuple[int, Any]) -> tuple[int, str]:
    status, body = result
    return status, body["NeutronError"]["type"]


def _defaults(api: Api) -> list[dict[str, Any]]:
    groups = api.ok("GET", SG)["security_groups"]
    return [g for g in groups if g["name"] == "default"]


def _port(api: Api, **fields: Any) -> dict[str, Any]:
    net = api.ok("POST", "/v2.0/networks", {"network": {}})["network"]
    body = api.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"], **fields}})
    return dict(body["port"])


# --- default group ------------------------------------------------------------------------


def test_every_project_sees_its_default_group_with_neutron_rules(alice: Api, bob: Api) -> None:
    [default] = _defaults(alice)
    assert default["project_id"] == alice.project_id
    assert default["stateful"] is True
    assert default["shared"] is False
    rules = {
        (r["direction"], r["ethertype"], r["remote_group_id"])
        for r in default["security_group_rules"]
    }
    assert rules == {
        ("egress", "IPv4", None),
        ("egress", "IPv6", None),
        ("ingress", "IPv4", default["id"]),
        ("ingress", "IPv6", default["id"]),
    }
    assert all(r["belongs_to_default_sg"] for r in default["security_group_rules"])
    [bobs] = _defaults(bob)
    assert bobs["id"] != default["id"]


def test_default_group_is_recreated_lazily_after_admin_deletes_it(admin: Api, alice: Api) -> None:
    [old] = _defaults(alice)
    admin.ok("DELETE", f"{SG}/{old['id']}")
    status, _ = admin.get(f"{SG}/{old['id']}")
    assert status == 404
    [new] = _defaults(alice)
    assert new["id"] != old["id"]
    assert len(new["security_group_rules"]) == 4
    # listing again does not create a second one
    assert [g["id"] for g in _defaults(alice)] == [new["id"]]


def test_listing_rules_also_ensures_the_default_group(admin: Api, alice: Api) -> None:
    [old] = _defaults(alice)
    admin.ok("DELETE", f"{SG}/{old['id']}")
    rules = alice.ok("GET", RULES)["security_group_rules"]
    assert len(rules) == 4
    assert {r["security_group_id"] for r in rules} != {old["id"]}


def test_admin_lists_create_the_admin_projects_default(admin: Api) -> None:
    groups = admin.ok("GET", SG)["security_groups"]
    assert any(g["name"] == "default" and g["project_id"] == "admin" for g in groups)


def test_default_group_cannot_be_renamed_or_duplicated(alice: Api) -> None:
    [default] = _defaults(alice)
    status, kind = _error(alice.post(SG, {"security_group": {"name": "default"}}))
    assert (status, kind) == (409, "SecurityGroupDefaultAlreadyExists")
    result = alice.put(f"{SG}/{default['id']}", {"security_group": {"name": "other"}})
    assert _error(result) == (409, "SecurityGroupCannotUpdateDefault")
    web = _group(alice)
    result = alice.put(f"{SG}/{web['id']}", {"security_group": {"name": "default"}})
    assert _error(result) == (409, "SecurityGroupDefaultAlreadyExists")
    updated = alice.ok("PUT", f"{SG}/{default['id']}", {"security_group": {"description": "mine"}})[
        "security_group"
    ]
    assert updated["description"] == "mine"
    assert updated["name"] == "default"
    assert updated["revision_number"] == default["revision_number"] + 1


def test_member_cannot_delete_default_and_admin_only_when_unused(admin: Api, alice: Api) -> None:
    [default] = _defaults(alice)
    result = alice.delete(f"{SG}/{default['id']}")
    assert _error(result) == (409, "SecurityGroupCannotRemoveDefault")
    port = _port(alice)
    assert port["security_groups"] == [default["id"]]
    assert _error(admin.delete(f"{SG}/{default['id']}")) == (409, "SecurityGroupInUse")
    alice.ok("DELETE", f"/v2.0/ports/{port['id']}")
    admin.ok("DELETE", f"{SG}/{default['id']}")


# --- groups ------------------------------------------------------------------------------


def test_create_group_starts_with_egress_rules(alice: Api) -> None:
    group = _group(alice, "web", description="front", stateful=False)
    assert group["name"] == "web"
    assert group["description"] == "front"
    assert group["stateful"] is False
    assert group["project_id"] == group["tenant_id"] == alice.project_id
    assert group["revision_number"] == 0
    assert group["created_at"].endswith("Z")
    assert group["tags"] == []
    rules = group["security_group_rules"]
    assert {(r["direction"], r["ethertype"]) for r in rules} == {
        ("egress", "IPv4"),
        ("egress", "IPv6"),
    }
    assert all(r["protocol"] is None and r["remote_ip_prefix"] is None for r in rules)
    assert all(r["belongs_to_default_sg"] is False for r in rules)
    assert alice.ok("GET", f"{SG}/{group['id']}")["security_group"] == group


def test_update_group_bumps_revision_and_refuses_unknown_fields(alice: Api) -> None:
    group = _group(alice)
    body = {"security_group": {"name": "api", "description": "d"}}
    updated = alice.ok("PUT", f"{SG}/{group['id']}", body)["security_group"]
    assert (updated["name"], updated["description"]) == ("api", "d")
    assert updated["revision_number"] == 1
    status, _ = alice.put(f"{SG}/{group['id']}", {"security_group": {"shared": True}})
    assert status == 400
    status, _ = alice.post(SG, {"security_group": {"name": "x" * 256}})
    assert status == 400


def test_group_in_use_by_a_port_cannot_be_deleted_or_change_statefulness(alice: Api) -> None:
    group = _group(alice)
    port = _port(alice, security_groups=[group["id"]])
    assert _error(alice.delete(f"{SG}/{group['id']}")) == (409, "SecurityGroupInUse")
    result = alice.put(f"{SG}/{group['id']}", {"security_group": {"stateful": False}})
    assert _error(result) == (409, "SecurityGroupInUse")
    alice.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"security_groups": []}})
    upd = alice.ok("PUT", f"{SG}/{group['id']}", {"security_group": {"stateful": False}})
    assert upd["security_group"]["stateful"] is False
    alice.ok("DELETE", f"{SG}/{group['id']}")
    assert alice.get(f"{SG}/{group['id']}")[0] == 404


def test_deleting_a_group_deletes_its_rules_and_rules_naming_it_remote(alice: Api) -> None:
    app, db = _group(alice, "app"), _group(alice, "db")
    by_group = _rule(
        alice,
        db["id"],
        protocol="tcp",
        port_range_min=5432,
        port_range_max=5432,
        remote_group_id=app["id"],
    )
    own = _rule(alice, app["id"], protocol="tcp", port_range_min=80, port_range_max=80)
    before = alice.ok("GET", f"{SG}/{db['id']}")["security_group"]["revision_number"]
    alice.ok("DELETE", f"{SG}/{app['id']}")
    assert alice.get(f"{RULES}/{by_group['id']}")[0] == 404
    assert alice.get(f"{RULES}/{own['id']}")[0] == 404
    after = alice.ok("GET", f"{SG}/{db['id']}")["security_group"]
    assert after["revision_number"] == before + 1
    assert all(r["remote_group_id"] is None for r in after["security_group_rules"])


def test_list_filters_and_fields(alice: Api) -> None:
    web, _ = _group(alice, "web"), _group(alice, "db")
    body = alice.ok("GET", f"{SG}?name=web&fields=id&fields=name")
    assert body["security_groups"] == [{"id": web["id"], "name": "web"}]
    rules = alice.ok("GET", f"{RULES}?security_group_id={web['id']}")["security_group_rules"]
    assert len(rules) == 2
    assert {r["security_group_id"] for r in rules} == {web["id"]}


# --- tenancy -----------------------------------------------------------------------------


def test_other_projects_groups_and_rules_are_not_found(alice: Api, bob: Api) -> None:
    group = _group(alice)
    rule = _rule(alice, group["id"], protocol="udp", port_range_min=53, port_range_max=53)
    bobs = _group(bob)
    assert _error(bob.get(f"{SG}/{group['id']}")) == (404, "SecurityGroupNotFound")
    assert _error(bob.put(f"{SG}/{group['id']}", {"security_group": {"name": "x"}}))[0] == 404
    assert _error(bob.delete(f"{SG}/{group['id']}"))[0] == 404
    assert _error(bob.get(f"{RULES}/{rule['id']}")) == (404, "SecurityGroupRuleNotFound")
    assert _error(bob.delete(f"{RULES}/{rule['id']}"))[0] == 404
    result = bob.post(RULES, _rule_body(group["id"], protocol="tcp"))
    assert _error(result) == (404, "SecurityGroupNotFound")
    result = bob.post(RULES, _rule_body(bobs["id"], remote_group_id=group["id"]))
    assert _error(result) == (404, "SecurityGroupNotFound")
    assert group["id"] not in {g["id"] for g in bob.ok("GET", SG)["security_groups"]}
    bob_rules = bob.ok("GET", RULES)["security_group_rules"]
    assert {r["project_id"] for r in bob_rules} == {bob.project_id}
    assert alice.ok("GET", f"{RULES}/{rule['id']}")["security_group_rule"]["id"] == rule["id"]


def test_project_assignment_rules(admin: Api, alice: Api) -> None:
    status, kind = _error(alice.post(SG, {"security_group": {"project_id": "someone-else"}}))
    assert (status, kind) == (403, "PolicyNotAuthorized")
    group = _group(admin, "for-alice", project_id=alice.project_id)
    assert group["project_id"] == alice.project_id
    assert group["id"] in {g["id"] for g in alice.ok("GET", SG)["security_groups"]}
    rule = _rule(admin, group["id"], protocol="tcp")
    assert rule["project_id"] == alice.project_id
    result = admin.post(RULES, _rule_body(group["id"], protocol="udp", project_id="admin"))
    assert result[0] == 400
    result = alice.post(RULES, _rule_body(group["id"], protocol="udp", project_id="admin"))
    assert _error(result) == (403, "PolicyNotAuthorized")
    admin_group = _group(admin, "mine")
    result = admin.post(RULES, _rule_body(group["id"], remote_group_id=admin_group["id"]))
    assert _error(result) == (404, "SecurityGroupNotFound")


# --- rules -------------------------------------------------------------------------------


def test_rule_fields_are_normalized_and_bump_the_group(alice: Api) -> None:
    group = _group(alice)
    rule = _rule(
        alice,
        group["id"],
        protocol="TCP",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="192.168.7.9/16",
        description="ssh",
    )
    assert rule["protocol"] == "tcp"
    assert rule["remote_ip_prefix"] == rule["normalized_cidr"] == "192.168.0.0/16"
    assert rule["ethertype"] == "IPv4"
    assert rule["project_id"] == rule["tenant_id"] == alice.project_id
    assert rule["description"] == "ssh"
    assert "name" not in rule
    assert _rule(alice, group["id"], protocol=17)["protocol"] == "17"
    assert _rule(alice, group["id"], protocol="0047")["protocol"] == "47"
    host = _rule(alice, group["id"], protocol="udp", remote_ip_prefix="10.1.2.3")
    assert host["remote_ip_prefix"] == "10.1.2.3/32"
    v6 = _rule(
        alice,
        group["id"],
        ethertype="IPv6",
        protocol="icmpv6",
        remote_ip_prefix="2001:DB8:0:0::1/64",
    )
    assert v6["remote_ip_prefix"] == "2001:db8::/64"
    shown = alice.ok("GET", f"{SG}/{group['id']}")["security_group"]
    assert shown["revision_number"] == 5
    assert rule["id"] in {r["id"] for r in shown["security_group_rules"]}
    alice.ok("DELETE", f"{RULES}/{rule['id']}")
    shown = alice.ok("GET", f"{SG}/{group['id']}")["security_group"]
    assert shown["revision_number"] == 6
    assert rule["id"] not in {r["id"] for r in shown["security_group_rules"]}


def test_bulk_rule_create_and_rules_cannot_be_updated(alice: Api) -> None:
    group = _group(alice)
    items = [
        {"security_group_id": group["id"], "direction": "ingress", "protocol": p}
        for p in ("tcp", "udp")
    ]
    created = alice.ok("POST", RULES, {"security_group_rules": items})["security_group_rules"]
    assert [r["protocol"] for r in created] == ["tcp", "udp"]
    status, _ = alice.put(f"{RULES}/{created[0]['id']}", {"security_group_rule": {}})
    assert status == 405


BAD_RULES: list[tuple[dict[str, Any], int, str | None]] = [
    ({"direction": "both"}, 400, None),
    ({"ethertype": "IPv5"}, 400, None),
    ({"protocol": "foo"}, 400, None),
    ({"protocol": 256}, 400, None),
    ({"protocol": True}, 400, None),
    ({"port_range_min": 80, "port_range_max": 80}, 400, "SecurityGroupProtocolRequiredWithPorts"),
    ({"protocol": "tcp", "port_range_min": 80}, 400, "SecurityGroupInvalidPortRange"),
    ({"protocol": "tcp", "port_range_max": 80}, 400, "SecurityGroupInvalidPortRange"),
    (
        {"protocol": "udp", "port_range_min": 90, "port_range_max": 80},
        400,
        "SecurityGroupInvalidPortRange",
    ),
    (
        {"protocol": "6", "port_range_min": 0, "port_range_max": 80},
        400,
        "SecurityGroupInvalidPortValue",
    ),
    ({"protocol": "tcp", "port_range_min": 1, "port_range_max": 65536}, 400, None),
    (
        {"protocol": "gre", "port_range_min": 1, "port_range_max": 2},
        400,
        "SecurityGroupInvalidProtocolForPort",
    ),
    ({"protocol": "icmp", "port_range_max": 0}, 400, "SecurityGroupMissingIcmpType"),
    ({"protocol": "icmp", "port_range_min": 256}, 400, "SecurityGroupInvalidIcmpValue"),
    (
        {"protocol": "icmp", "port_range_min": 8, "port_range_max": 300},
        400,
        "SecurityGroupInvalidIcmpValue",
    ),
    ({"protocol": "icmp", "ethertype": "IPv6"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"protocol": "1", "ethertype": "IPv6"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"protocol": "ipv6-icmp"}, 400, "SecurityGroupEthertypeConflictWithProtocol"),
    ({"remote_ip_prefix": "2001:db8::/32"}, 400, "SecurityGroupRuleParameterConflict"),
    (
        {"remote_ip_prefix": "10.0.0.0/8", "ethertype": "IPv6"},
        400,
        "SecurityGroupRuleParameterConflict",
    ),
    ({"remote_ip_prefix": "10.0.0.0/33"}, 400, None),
    ({"remote_ip_prefix": "not-an-ip"}, 400, None),
    ({"bogus": 1}, 400, None),
    ({"remote_group_id": "0f6e8c4c-7a1e-4a55-9f6b-1d2b3c4d5e6f"}, 404, "SecurityGroupNotFound"),
]


def test_invalid_rules_are_refused_and_change_nothing(alice: Api) -> None:
    """One group for the whole table: a refused rule must leave it untouched."""
    group = _group(alice)
    for fields, status, kind in BAD_RULES:
        got, body = alice.post(RULES, _rule_body(group["id"], **fields))
        assert got == status, (fields, body)
        if kind is not None:
            assert body["NeutronError"]["type"] == kind, fields
    after = alice.ok("GET", f"{SG}/{group['id']}")["security_group"]
    assert len(after["security_group_rules"]) == 2
    assert after["revision_number"] == 0


def test_rule_needs_direction_and_an_existing_group(alice: Api) -> None:
    group = _group(alice)
    body = {"security_group_rule": {"security_group_id": group["id"]}}
    status, data = alice.post(RULES, body)
    assert status == 400
    assert "direction" in data["NeutronError"]["message"]
    missing = "0f6e8c4c-7a1e-4a55-9f6b-1d2b3c4d5e6f"
    assert _error(alice.post(RULES, _rule_body(missing))) == (404, "SecurityGroupNotFound")


def test_remote_ip_prefix_and_remote_group_are_exclusive(alice: Api) -> None:
    group = _group(alice)
    body = _rule_body(group["id"], remote_ip_prefix="10.0.0.0/8", remote_group_id=group["id"])
    assert _error(alice.post(RULES, body)) == (400, "SecurityGroupRemoteGroupAndRemoteIpPrefix")
    rule = _rule(alice, group["id"], remote_group_id=group["id"])
    assert rule["remote_group_id"] == group["id"]


DUPLICATES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"protocol": "tcp"}, {"protocol": "tcp", "description": "again"}),
    ({"protocol": "tcp"}, {"protocol": "6"}),
    (
        {"protocol": "TCP", "port_range_min": 1, "port_range_max": 9},
        {"protocol": 6, "port_range_min": 1, "port_range_max": 9},
    ),
    (
        {"ethertype": "IPv6", "protocol": "icmpv6"},
        {"ethertype": "IPv6", "protocol": "ipv6-icmp"},
    ),
    ({"protocol": "udp"}, {"protocol": "udp", "remote_ip_prefix": "0.0.0.0/0"}),
    ({"remote_ip_prefix": "10.0.0.0/8"}, {"remote_ip_prefix": "10.9.9.9/8"}),
]


def test_duplicate_rules_conflict(alice: Api) -> None:
    for first, second in DUPLICATES:
        group = _group(alice, "dup")
        existing = _rule(alice, group["id"], **first)
        status, body = alice.post(RULES, _rule_body(group["id"], **second))
        assert (status, body["NeutronError"]["type"]) == (409, "SecurityGroupRuleExists"), second
        assert existing["id"] in body["NeutronError"]["message"]
        alice.ok("DELETE", f"{SG}/{group['id']}")


def test_rules_differing_in_one_field_are_not_duplicates(alice: Api) -> None:
    group = _group(alice)
    _rule(alice, group["id"], protocol="tcp", port_range_min=80, port_range_max=80)
    _rule(alice, group["id"], protocol="tcp", port_range_min=81, port_range_max=81)
    _rule(alice, group["id"], protocol="udp", port_range_min=80, port_range_max=80)
    _rule(alice, group["id"], direction="egress", protocol="tcp")
    egress_again = _rule_body(group["id"], direction="egress", protocol="tcp")
    assert _error(alice.post(RULES, egress_again)) == (409, "SecurityGroupRuleExists")
    # the same rule in another group is fine
    other = _group(alice, "other")
    _rule(alice, other["id"], protocol="tcp", port_range_min=80, port_range_max=80)


PORT_PROTOCOLS = ["tcp", "udp", "sctp", "dccp", "udplite", "6", "17"]
maybe_port = st.none() | st.integers(min_value=-2, max_value=65540)
maybe_icmp = st.none() | st.integers(min_value=-2, max_value=260)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(protocol=st.sampled_from(PORT_PROTOCOLS), low=maybe_port, high=maybe_port)
def test_port_ranges_are_accepted_iff_valid(
    alice: Api, protocol: str, low: int | None, high: int | None
) -> None:
    group = _group(alice, "prop")
    valid = (low is None and high is None) or (
        low is not None and high is not None and 1 <= low <= high <= 65535
    )
    fields = {"protocol": protocol, "port_range_min": low, "port_range_max": high}
    status, body = alice.post(RULES, _rule_body(group["id"], **fields))
    assert status == (201 if valid else 400), body
    if valid:
        rule = body["security_group_rule"]
        assert (rule["port_range_min"], rule["port_range_max"]) == (low, high)
    alice.ok("DELETE", f"{SG}/{group['id']}")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(protocol=st.sampled_from(["icmp", "icmpv6"]), icmp_type=maybe_icmp, icmp_code=maybe_icmp)
def test_icmp_type_and_code_are_accepted_iff_valid(
    alice: Api, protocol: str, icmp_type: int | None, icmp_code: int | None
) -> None:
    group = _group(alice, "prop")
    in_range = all(v is None or 0 <= v <= 255 for v in (icmp_type, icmp_code))
    valid = in_range and not (icmp_type is None and icmp_code is not None)
    ethertype = "IPv4" if protocol == "icmp" else "IPv6"
    fields = {
        "protocol": protocol,
        "ethertype": ethertype,
        "port_range_min": icmp_type,
        "port_range_max": icmp_code,
    }
    status, body = alice.post(RULES, _rule_body(group["id"], **fields))
    assert status == (201 if valid else 400), body
    alice.ok("DELETE", f"{SG}/{group['id']}")
