"""QoS policies and their bandwidth_limit / dscp_marking rules: CRUD, conflicts, tenancy."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Api

POLICIES = "/v2.0/qos/policies"
VALID_DSCP = {0, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 46, 48, 56}


def _policy(api: Api, name: str = "gold", **extra: Any) -> dict[str, Any]:
    return dict(api.ok("POST", POLICIES, {"policy": {"name": name, **extra}})["policy"])


def _bw_path(policy: dict[str, Any], rule_id: str = "") -> str:
    tail = f"/{rule_id}" if rule_id else ""
    return f"{POLICIES}/{policy['id']}/bandwidth_limit_rules{tail}"


def _dscp_path(policy: dict[str, Any], rule_id: str = "") -> str:
    tail = f"/{rule_id}" if rule_id else ""
    return f"{POLICIES}/{policy['id']}/dscp_marking_rules{tail}"


def _bw(api: Api, policy: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = api.ok("POST", _bw_path(policy), {"bandwidth_limit_rule": fields})
    return dict(body["bandwidth_limit_rule"])


def _error(result: tuple[int, Any]) -> tuple[int, str]:
    status, body = result
    return status, body["NeutronError"]["type"]


def _revision(api: Api, policy: dict[str, Any]) -> int:
    return int(api.ok("GET", f"{POLICIES}/{policy['id']}")["policy"]["revision_number"])


# --- policies ------------------------------------------------------------------------------


def test_create_policy_defaults_and_crud(alice: Api) -> None:
    policy = _policy(alice, description="fast")
    assert policy["name"] == "gold"
    assert policy["description"] == "fast"
    assert policy["project_id"] == policy["tenant_id"] == alice.project_id
    assert (policy["shared"], policy["is_default"], policy["rules"]) == (False, False, [])
    assert policy["revision_number"] == 0
    assert policy["created_at"].endswith("Z")
    assert alice.ok("GET", f"{POLICIES}/{policy['id']}")["policy"] == policy
    updated = alice.ok("PUT", f"{POLICIES}/{policy['id']}", {"policy": {"name": "silver"}})
    assert updated["policy"]["name"] == "silver"
    assert updated["policy"]["revision_number"] == 1
    listed = alice.ok("GET", f"{POLICIES}?name=silver")["policies"]
    assert [p["id"] for p in listed] == [policy["id"]]
    alice.ok("DELETE", f"{POLICIES}/{policy['id']}")
    assert _error(alice.get(f"{POLICIES}/{policy['id']}")) == (404, "QosPolicyNotFound")


def test_unknown_fields_and_bad_values_are_400(alice: Api) -> None:
    assert alice.post(POLICIES, {"policy": {"colour": "red"}})[0] == 400
    assert alice.post(POLICIES, {"policy": {"name": "x" * 256}})[0] == 400
    assert alice.post(POLICIES, {"qos_policy": {}})[0] == 400


def test_only_admins_share_policies(admin: Api, alice: Api) -> None:
    assert _error(alice.post(POLICIES, {"policy": {"shared": True}})) == (
        403,
        "PolicyNotAuthorized",
    )
    own = _policy(alice)
    result = alice.put(f"{POLICIES}/{own['id']}", {"policy": {"shared": True}})
    assert _error(result) == (403, "PolicyNotAuthorized")
    # an explicit "not shared" is not an attempt to share
    assert _policy(alice, "plain", shared=False)["shared"] is False
    shared = admin.ok("PUT", f"{POLICIES}/{own['id']}", {"policy": {"shared": True}})["policy"]
    assert shared["shared"] is True
    assert _policy(admin, "public", shared=True)["shared"] is True


def test_one_default_policy_per_project(alice: Api, bob: Api) -> None:
    first = _policy(alice, "a", is_default=True)
    assert first["is_default"] is True
    result = alice.post(POLICIES, {"policy": {"name": "b", "is_default": True}})
    assert _error(result) == (409, "QoSPolicyDefaultAlreadyExists")
    other = _policy(alice, "c")
    result = alice.put(f"{POLICIES}/{other['id']}", {"policy": {"is_default": True}})
    assert _error(result) == (409, "QoSPolicyDefaultAlreadyExists")
    assert _policy(bob, "b", is_default=True)["is_default"] is True
    alice.ok("PUT", f"{POLICIES}/{first['id']}", {"policy": {"is_default": False}})
    moved = alice.ok("PUT", f"{POLICIES}/{other['id']}", {"policy": {"is_default": True}})
    assert moved["policy"]["is_default"] is True


def test_policy_in_use_cannot_be_deleted(alice: Api) -> None:
    policy = _policy(alice)
    net = alice.ok("POST", "/v2.0/networks", {"network": {"qos_policy_id": policy["id"]}})
    net_id = net["network"]["id"]
    result = alice.delete(f"{POLICIES}/{policy['id']}")
    assert _error(result) == (409, "QosPolicyInUse")
    assert net_id in result[1]["NeutronError"]["message"]
    alice.ok("PUT", f"/v2.0/networks/{net_id}", {"network": {"qos_policy_id": None}})
    body = {"port": {"network_id": net_id, "qos_policy_id": policy["id"]}}
    port = alice.ok("POST", "/v2.0/ports", body)["port"]
    result = alice.delete(f"{POLICIES}/{policy['id']}")
    assert _error(result) == (409, "QosPolicyInUse")
    assert port["id"] in result[1]["NeutronError"]["message"]
    alice.ok("DELETE", f"/v2.0/ports/{port['id']}")
    _bw(alice, policy, max_kbps=100)
    alice.ok("DELETE", f"{POLICIES}/{policy['id']}")


# --- tenancy --------------------------------------------------------------------------------


def test_private_policy_of_another_project_is_not_found(alice: Api, bob: Api) -> None:
    policy = _policy(alice)
    rule = _bw(alice, policy, max_kbps=10)
    not_found = (404, "QosPolicyNotFound")
    assert _error(bob.get(f"{POLICIES}/{policy['id']}")) == not_found
    assert _error(bob.put(f"{POLICIES}/{policy['id']}", {"policy": {"name": "x"}})) == not_found
    assert _error(bob.delete(f"{POLICIES}/{policy['id']}")) == not_found
    assert _error(bob.get(_bw_path(policy))) == not_found
    assert _error(bob.get(_bw_path(policy, rule["id"]))) == not_found
    assert _error(bob.post(_bw_path(policy), {"bandwidth_limit_rule": {"max_kbps": 1}})) == (
        not_found
    )
    assert _error(bob.delete(_bw_path(policy, rule["id"]))) == not_found
    assert bob.ok("GET", POLICIES)["policies"] == []
    net = bob.post("/v2.0/networks", {"network": {"qos_policy_id": policy["id"]}})
    assert _error(net) == not_found


def test_shared_policy_is_visible_and_attachable_but_read_only(admin: Api, bob: Api) -> None:
    policy = _policy(admin, "public", shared=True)
    rule = _bw(admin, policy, max_kbps=500)
    assert [p["id"] for p in bob.ok("GET", POLICIES)["policies"]] == [policy["id"]]
    assert bob.ok("GET", f"{POLICIES}/{policy['id']}")["policy"]["rules"][0]["id"] == rule["id"]
    assert [r["id"] for r in bob.ok("GET", _bw_path(policy))["bandwidth_limit_rules"]] == [
        rule["id"]
    ]
    forbidden = (403, "PolicyNotAuthorized")
    assert _error(bob.put(f"{POLICIES}/{policy['id']}", {"policy": {"name": "x"}})) == forbidden
    assert _error(bob.delete(f"{POLICIES}/{policy['id']}")) == forbidden
    new_rule = {"bandwidth_limit_rule": {"max_kbps": 1, "direction": "ingress"}}
    assert _error(bob.post(_bw_path(policy), new_rule)) == forbidden
    assert _error(bob.delete(_bw_path(policy, rule["id"]))) == forbidden
    net = bob.ok("POST", "/v2.0/networks", {"network": {"qos_policy_id": policy["id"]}})
    assert net["network"]["qos_policy_id"] == policy["id"]
    # unsharing would strand bob's network
    result = admin.put(f"{POLICIES}/{policy['id']}", {"policy": {"shared": False}})
    assert _error(result) == (409, "QosPolicyInUse")
    assert _error(admin.delete(f"{POLICIES}/{policy['id']}")) == (409, "QosPolicyInUse")


def test_admin_sees_every_policy_and_creates_for_projects(admin: Api, alice: Api) -> None:
    mine = _policy(alice)
    theirs = _policy(admin, "for-alice", project_id=alice.project_id)
    assert theirs["project_id"] == alice.project_id
    assert {p["id"] for p in alice.ok("GET", POLICIES)["policies"]} == {mine["id"], theirs["id"]}
    assert {mine["id"], theirs["id"]} <= {p["id"] for p in admin.ok("GET", POLICIES)["policies"]}
    result = alice.post(POLICIES, {"policy": {"project_id": "someone-else"}})
    assert _error(result) == (403, "PolicyNotAuthorized")


# --- bandwidth_limit rules ---------------------------------------------------------------------


def test_bandwidth_limit_rule_crud_bumps_the_policy(alice: Api) -> None:
    policy = _policy(alice)
    rule = _bw(alice, policy, max_kbps=1000)
    assert rule["max_kbps"] == 1000
    assert rule["max_burst_kbps"] == 0
    assert rule["direction"] == "egress"
    assert _revision(alice, policy) == 1
    shown = alice.ok("GET", _bw_path(policy, rule["id"]))["bandwidth_limit_rule"]
    assert shown == rule
    in_policy = alice.ok("GET", f"{POLICIES}/{policy['id']}")["policy"]["rules"]
    assert in_policy == [rule]
    assert rule["type"] == "bandwidth_limit"
    assert rule["qos_policy_id"] == policy["id"]
    body = {"bandwidth_limit_rule": {"max_kbps": 2000, "max_burst_kbps": 300}}
    updated = alice.ok("PUT", _bw_path(policy, rule["id"]), body)["bandwidth_limit_rule"]
    assert (updated["max_kbps"], updated["max_burst_kbps"], updated["direction"]) == (
        2000,
        300,
        "egress",
    )
    assert _revision(alice, policy) == 2
    listed = alice.ok("GET", _bw_path(policy) + "?fields=id&fields=max_kbps")
    assert listed["bandwidth_limit_rules"] == [{"id": rule["id"], "max_kbps": 2000}]
    alice.ok("DELETE", _bw_path(policy, rule["id"]))
    assert _revision(alice, policy) == 3
    assert _error(alice.get(_bw_path(policy, rule["id"]))) == (404, "QosRuleNotFound")
    assert alice.ok("GET", f"{POLICIES}/{policy['id']}")["policy"]["rules"] == []


def test_one_bandwidth_limit_per_direction(alice: Api) -> None:
    policy = _policy(alice)
    egress = _bw(alice, policy, max_kbps=100)
    ingress = _bw(alice, policy, max_kbps=200, direction="ingress")
    again = {"bandwidth_limit_rule": {"max_kbps": 5, "direction": "egress"}}
    assert _error(alice.post(_bw_path(policy), again)) == (409, "QoSRulesConflict")
    flip = {"bandwidth_limit_rule": {"direction": "egress"}}
    assert _error(alice.put(_bw_path(policy, ingress["id"]), flip)) == (409, "QoSRulesConflict")
    # re-stating its own direction is no conflict
    same = alice.ok("PUT", _bw_path(policy, egress["id"]), flip)["bandwidth_limit_rule"]
    assert same["direction"] == "egress"
    assert len(alice.ok("GET", _bw_path(policy))["bandwidth_limit_rules"]) == 2
    assert _revision(alice, policy) == 3


def test_bandwidth_limit_validation(alice: Api) -> None:
    policy = _policy(alice)
    path = _bw_path(policy)
    bad: list[dict[str, Any]] = [
        {},
        {"max_kbps": -1},
        {"max_kbps": 2**31},
        {"max_kbps": 10, "max_burst_kbps": -5},
        {"max_kbps": 10, "max_burst_kbps": 2**31},
        {"max_kbps": 10, "direction": "both"},
        {"max_kbps": "fast"},
        {"max_kbps": 10, "min_kbps": 1},
    ]
    for fields in bad:
        status, body = alice.post(path, {"bandwidth_limit_rule": fields})
        assert status == 400, (fields, body)
    assert _revision(alice, policy) == 0
    top = _bw(alice, policy, max_kbps=2**31 - 1, max_burst_kbps=2**31 - 1)
    assert top["max_kbps"] == 2**31 - 1
    result = alice.put(_bw_path(policy, top["id"]), {"bandwidth_limit_rule": {"max_kbps": -1}})
    assert result[0] == 400
    zero = _bw(alice, policy, max_kbps=0, direction="ingress")
    assert zero["max_kbps"] == 0


# --- dscp_marking rules ----------------------------------------------------------------------


def test_dscp_marking_rule_crud_and_one_per_policy(alice: Api) -> None:
    policy = _policy(alice)
    body = alice.ok("POST", _dscp_path(policy), {"dscp_marking_rule": {"dscp_mark": 46}})
    rule = body["dscp_marking_rule"]
    assert (rule["dscp_mark"], rule["type"]) == (46, "dscp_marking")
    again = {"dscp_marking_rule": {"dscp_mark": 26}}
    assert _error(alice.post(_dscp_path(policy), again)) == (409, "QoSRulesConflict")
    updated = alice.ok("PUT", _dscp_path(policy, rule["id"]), again)["dscp_marking_rule"]
    assert updated["dscp_mark"] == 26
    bad = {"dscp_marking_rule": {"dscp_mark": 7}}
    assert alice.put(_dscp_path(policy, rule["id"]), bad)[0] == 400
    assert alice.post(_dscp_path(policy), {"dscp_marking_rule": {}})[0] == 400
    _bw(alice, policy, max_kbps=100)
    types = sorted(
        r["type"] for r in alice.ok("GET", f"{POLICIES}/{policy['id']}")["policy"]["rules"]
    )
    assert types == ["bandwidth_limit", "dscp_marking"]
    alice.ok("DELETE", _dscp_path(policy, rule["id"]))
    assert alice.ok("GET", _dscp_path(policy))["dscp_marking_rules"] == []


def test_rules_are_found_only_under_their_policy_and_type(alice: Api) -> None:
    one, two = _policy(alice, "one"), _policy(alice, "two")
    rule = _bw(alice, one, max_kbps=10)
    assert _error(alice.get(_bw_path(two, rule["id"]))) == (404, "QosRuleNotFound")
    assert _error(alice.get(_dscp_path(one, rule["id"]))) == (404, "QosRuleNotFound")
    assert _error(alice.delete(_dscp_path(one, rule["id"]))) == (404, "QosRuleNotFound")
    upd = {"bandwidth_limit_rule": {"max_kbps": 1}}
    assert _error(alice.put(_bw_path(two, rule["id"]), upd)) == (404, "QosRuleNotFound")
    missing = {"id": "0f6e8c4c-7a1e-4a55-9f6b-1d2b3c4d5e6f"}
    assert _error(alice.get(_bw_path(missing))) == (404, "QosPolicyNotFound")
    assert alice.ok("GET", _bw_path(one, rule["id"]))["bandwidth_limit_rule"]["max_kbps"] == 10


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mark=st.integers(min_value=-1, max_value=64))
def test_dscp_marks_are_accepted_iff_valid(alice: Api, mark: int) -> None:
    policy = _policy(alice, "prop")
    status, body = alice.post(_dscp_path(policy), {"dscp_marking_rule": {"dscp_mark": mark}})
    assert status == (201 if mark in VALID_DSCP else 400), body
    alice.ok("DELETE", f"{POLICIES}/{policy['id']}")


def test_rule_types(alice: Api) -> None:
    body = alice.ok("GET", "/v2.0/qos/rule-types")
    assert body == {"rule_types": [{"type": "bandwidth_limit"}, {"type": "dscp_marking"}]}
    assert alice.client.get("/v2.0/qos/rule-types").status_code == 401
