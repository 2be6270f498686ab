"""Load balancers (Octavia v2 /v2/lbaas): VIP ports, listeners, pools, members, health
monitors, status derivation, cascade delete and tenancy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from conftest import Api
from netvirt.model.lbaas import HealthMonitorCreate
from netvirt.northbound import lbaas
from netvirt.northbound.db import Database
from netvirt.northbound.errors import InvalidInput, NotFound
from netvirt.northbound.lbaas_status import lb_status, member_status, pool_status

LB = "/v2/lbaas/loadbalancers"
LISTENERS = "/v2/lbaas/listeners"
POOLS = "/v2/lbaas/pools"
MONITORS = "/v2/lbaas/healthmonitors"

Body = dict[str, Any]


def _subnet(api: Api, cidr: str = "10.0.0.0/24", **net: object) -> tuple[str, str]:
    net_id = api.ok("POST", "/v2.0/networks", {"network": net})["network"]["id"]
    body = {"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 6 if ":" in cidr else 4}}
    return net_id, api.ok("POST", "/v2.0/subnets", body)["subnet"]["id"]


def _lb(api: Api, subnet: str, **attrs: object) -> Body:
    body = {"loadbalancer": {"vip_subnet_id": subnet, **attrs}}
    return api.ok("POST", LB, body)["loadbalancer"]  # type: ignore[no-any-return]


def _listener(api: Api, lb: str, protocol: str = "TCP", port: int = 80, **attrs: object) -> Body:
    body = {"listener": {"loadbalancer_id": lb, "protocol": protocol, "protocol_port": port}}
    body["listener"] |= attrs
    return api.ok("POST", LISTENERS, body)["listener"]  # type: ignore[no-any-return]


def _pool(api: Api, protocol: str = "TCP", **attrs: object) -> Body:
    body = {"pool": {"protocol": protocol, "lb_algorithm": "ROUND_ROBIN", **attrs}}
    return api.ok("POST", POOLS, body)["pool"]  # type: ignore[no-any-return]


def _member(api: Api, pool: str, address: str, port: int = 8080, **attrs: object) -> Body:
    body = {"member": {"address": address, "protocol_port": port, **attrs}}
    return api.ok("POST", f"{POOLS}/{pool}/members", body)["member"]  # type: ignore[no-any-return]


def _monitor(api: Api, pool: str, type_: str = "TCP", **attrs: object) -> Body:
    body = {"healthmonitor": {"pool_id": pool, "type": type_, "delay": 5, "timeout": 3}}
    body["healthmonitor"] |= {"max_retries": 3, **attrs}
    return api.ok("POST", MONITORS, body)["healthmonitor"]  # type: ignore[no-any-return]


def _tree(api: Api) -> dict[str, Body]:
    """A load balancer with a TCP listener, its default pool, two members and a TCP monitor."""
    _, sub = _subnet(api)
    lb = _lb(api, sub, name="web")
    listener = _listener(api, lb["id"])
    pool = _pool(api, listener_id=listener["id"])
    m1 = _member(api, pool["id"], "10.0.0.10")
    m2 = _member(api, pool["id"], "10.0.0.11")
    return {"lb": lb, "listener": listener, "pool": pool, "m1": m1, "m2": m2, "subnet": {"id": sub}}


def _error(result: tuple[int, Any], status: int, type_: str | None = None) -> str:
    code, body = result
    assert code == status, body
    if type_ is not None:
        assert body["NeutronError"]["type"] == type_, body
    return str(body["NeutronError"]["message"])


# --- load balancers -------------------------------------------------------------------


def test_create_lb_allocates_vip_port_with_octavia_fields(alice: Api) -> None:
    net, sub = _subnet(alice)
    lb = _lb(alice, sub, name="web", description="front", tags=["a", "b"])
    assert lb["project_id"] == lb["tenant_id"] == alice.project_id
    assert lb["vip_subnet_id"] == sub
    assert lb["vip_network_id"] == net
    assert lb["vip_address"] == "10.0.0.2"
    assert lb["provider"] == "netvirt"
    assert lb["flavor_id"] is None
    assert lb["admin_state_up"] is True
    assert (lb["provisioning_status"], lb["operating_status"]) == ("ACTIVE", "ONLINE")
    assert (lb["listeners"], lb["pools"]) == ([], [])
    assert lb["tags"] == ["a", "b"]
    assert lb["created_at"]
    assert lb["updated_at"]
    port = alice.ok("GET", f"/v2.0/ports/{lb['vip_port_id']}")["port"]
    assert port["device_owner"] == "Octavia"
    assert port["device_id"] == lb["id"]
    assert port["project_id"] == alice.project_id
    assert port["fixed_ips"] == [{"subnet_id": sub, "ip_address": "10.0.0.2"}]
    _error(alice.delete(f"/v2.0/ports/{port['id']}"), 409, "ServicePortInUse")
    assert alice.ok("GET", f"{LB}/{lb['id']}")["loadbalancer"] == lb
    assert [x["id"] for x in alice.ok("GET", LB)["loadbalancers"]] == [lb["id"]]


def test_vip_by_network_prefers_ipv4_and_honours_vip_address(alice: Api) -> None:
    net, v6 = _subnet(alice, "fd00::/64")
    body = {"subnet": {"network_id": net, "cidr": "10.1.0.0/24"}}
    v4 = alice.ok("POST", "/v2.0/subnets", body)["subnet"]["id"]
    lb = alice.ok("POST", LB, {"loadbalancer": {"vip_network_id": net}})["loadbalancer"]
    assert (lb["vip_subnet_id"], lb["vip_address"]) == (v4, "10.1.0.2")
    body = {"loadbalancer": {"vip_network_id": net, "vip_address": "fd00::99"}}
    lb6 = alice.ok("POST", LB, body)["loadbalancer"]
    assert (lb6["vip_subnet_id"], lb6["vip_address"]) == (v6, "fd00::99")
    body = {"loadbalancer": {"vip_subnet_id": v4, "vip_address": "10.1.0.50"}}
    assert alice.ok("POST", LB, body)["loadbalancer"]["vip_address"] == "10.1.0.50"
    _error(alice.post(LB, body), 409, "IpAddressAlreadyAllocated")


def test_lb_create_errors(alice: Api) -> None:
    _, sub = _subnet(alice)
    other_net, _ = _subnet(alice, "10.9.0.0/24")
    empty_net = alice.ok("POST", "/v2.0/networks", {"network": {}})["network"]["id"]
    msg = _error(alice.post(LB, {"loadbalancer": {"name": "x"}}), 400)
    assert "vip_subnet_id" in msg
    bad = [
        {"vip_subnet_id": sub, "vip_network_id": other_net},
        {"vip_subnet_id": sub, "vip_address": "10.5.0.9"},
        {"vip_subnet_id": sub, "vip_port_id": "5a6b2f2c-1111-4c1e-9f42-000000000001"},
        {"vip_subnet_id": sub, "flavor_id": "5a6b2f2c-1111-4c1e-9f42-000000000002"},
        {"vip_network_id": empty_net},
        {"vip_subnet_id": sub, "bogus": 1},
    ]
    for attrs in bad:
        _error(alice.post(LB, {"loadbalancer": attrs}), 400)
    body = {"loadbalancer": {"vip_subnet_id": sub, "provider": "amphora"}}
    _error(alice.post(LB, body), 400, "ProviderNotEnabled")
    missing = "5a6b2f2c-1111-4c1e-9f42-0000000000ff"
    _error(alice.post(LB, {"loadbalancer": {"vip_subnet_id": missing}}), 404, "SubnetNotFound")
    _error(alice.post(LB, {"loadbalancer": {"vip_network_id": missing}}), 404, "NetworkNotFound")
    _error(alice.post(LB, {"loadbalancers": [{"vip_subnet_id": sub}]}), 400)
    assert alice.ok("GET", LB)["loadbalancers"] == []
    assert alice.ok("GET", "/v2.0/ports")["ports"] == []  # failed creates leave no VIP behind


def test_lb_update_bumps_revision_and_admin_down_is_offline(alice: Api) -> None:
    _, sub = _subnet(alice)
    lb = _lb(alice, sub)
    body = {"loadbalancer": {"name": "new", "admin_state_up": False, "tags": ["t"]}}
    upd = alice.ok("PUT", f"{LB}/{lb['id']}", body)["loadbalancer"]
    assert (upd["name"], upd["tags"], upd["admin_state_up"]) == ("new", ["t"], False)
    assert upd["revision_number"] == lb["revision_number"] + 1
    assert upd["operating_status"] == "OFFLINE"
    assert upd["provisioning_status"] == "ACTIVE"
    _error(alice.put(f"{LB}/{lb['id']}", {"loadbalancer": {"vip_address": "10.0.0.9"}}), 400)
    listed = alice.ok("GET", f"{LB}?name=new&fields=id&fields=name")["loadbalancers"]
    assert listed == [{"id": lb["id"], "name": "new"}]


def test_delete_lb_with_children_conflicts_and_cascade_removes_everything(alice: Api) -> None:
    t = _tree(alice)
    monitor = _monitor(alice, t["pool"]["id"])
    lb_id = t["lb"]["id"]
    msg = _error(alice.delete(f"{LB}/{lb_id}"), 409, "LoadBalancerInUse")
    assert "cascade" in msg
    assert alice.ok("GET", f"{LB}/{lb_id}")["loadbalancer"]["id"] == lb_id
    status, _ = alice.delete(f"{LB}/{lb_id}", cascade="true")
    assert status == 204
    for path in (
        f"{LB}/{lb_id}",
        f"{LISTENERS}/{t['listener']['id']}",
        f"{POOLS}/{t['pool']['id']}",
        f"{MONITORS}/{monitor['id']}",
        f"/v2.0/ports/{t['lb']['vip_port_id']}",
    ):
        assert alice.get(path)[0] == 404, path
    for collection in ("loadbalancers", "listeners", "pools", "healthmonitors"):
        assert alice.ok("GET", f"/v2/lbaas/{collection}")[collection] == []
    alice.ok("DELETE", f"/v2.0/subnets/{t['subnet']['id']}")  # the VIP no longer holds it


def test_delete_lb_without_children_releases_vip(alice: Api) -> None:
    _, sub = _subnet(alice)
    lb = _lb(alice, sub)
    _error(alice.delete(f"/v2.0/subnets/{sub}"), 409, "SubnetInUse")
    alice.ok("DELETE", f"{LB}/{lb['id']}")
    _error(alice.get(f"{LB}/{lb['id']}"), 404, "LoadBalancerNotFound")
    assert alice.get(f"/v2.0/ports/{lb['vip_port_id']}")[0] == 404
    assert _lb(alice, sub)["vip_address"] == "10.0.0.2"  # the address went back to the pool


# --- listeners ------------------------------------------------------------------------


def test_listener_fields_protocols_and_port_rules(alice: Api) -> None:
    _, sub = _subnet(alice)
    lb = _lb(alice, sub)["id"]
    lst = _listener(alice, lb, "HTTP", 80, name="web", connection_limit=100)
    assert lst["loadbalancers"] == [{"id": lb}]
    assert (lst["protocol"], lst["protocol_port"], lst["connection_limit"]) == ("HTTP", 80, 100)
    assert lst["default_pool_id"] is None
    assert (lst["provisioning_status"], lst["operating_status"]) == ("ACTIVE", "ONLINE")
    assert lst["project_id"] == alice.project_id
    for proto in ("HTTPS", "TERMINATED_HTTPS"):
        body = {"listener": {"loadbalancer_id": lb, "protocol": proto, "protocol_port": 443}}
        assert "not supported" in _error(alice.post(LISTENERS, body), 400)
    for attrs in (
        {"protocol": "QUIC", "protocol_port": 1},
        {"protocol": "TCP", "protocol_port": 0},
        {"protocol": "TCP", "protocol_port": 65536},
        {"protocol": "TCP", "protocol_port": 81, "connection_limit": -2},
    ):
        _error(alice.post(LISTENERS, {"listener": {"loadbalancer_id": lb, **attrs}}), 400)
    body = {"listener": {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80}}
    _error(alice.post(LISTENERS, body), 409, "DuplicateListenerEntry")  # HTTP holds TCP/80
    assert _listener(alice, lb, "UDP", 80)["protocol"] == "UDP"
    assert _listener(alice, lb, "TCP", 81, connection_limit=0)["connection_limit"] == 0
    got = alice.ok("GET", f"{LB}/{lb}")["loadbalancer"]["listeners"]
    assert len(got) == 3
    assert {"id": lst["id"]} in got
    upd = alice.ok("PUT", f"{LISTENERS}/{lst['id']}", {"listener": {"connection_limit": 5}})
    assert upd["listener"]["connection_limit"] == 5
    assert upd["listener"]["revision_number"] == lst["revision_number"] + 1
    _error(alice.put(f"{LISTENERS}/{lst['id']}", {"listener": {"protocol_port": 90}}), 400)
    body = {"listener": {"loadbalancer_id": "5a6b2f2c-1111-4c1e-9f42-0000000000ff"}}
    body["listener"] |= {"protocol": "TCP", "protocol_port": 1}
    _error(alice.post(LISTENERS, body), 404, "LoadBalancerNotFound")


def test_listener_default_pool_rules(alice: Api) -> None:
    _, sub = _subnet(alice)
    lb = _lb(alice, sub)["id"]
    other_lb = _lb(alice, sub)["id"]
    http_pool = _pool(alice, "HTTP", loadbalancer_id=lb)
    tcp_pool = _pool(alice, "TCP", loadbalancer_id=lb)
    foreign = _pool(alice, "TCP", loadbalancer_id=other_lb)
    tcp = _listener(alice, lb, "TCP", 80, default_pool_id=http_pool["id"])
    assert tcp["default_pool_id"] == http_pool["id"]
    assert alice.ok("GET", f"{POOLS}/{http_pool['id']}")["pool"]["listeners"] == [{"id": tcp["id"]}]
    body = {"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 8080}}
    body["listener"]["default_pool_id"] = tcp_pool["id"]
    _error(alice.post(LISTENERS, body), 400, "ListenerPoolProtocolMismatch")
    path = f"{LISTENERS}/{tcp['id']}"
    _error(alice.put(path, {"listener": {"default_pool_id": foreign["id"]}}), 404, "PoolNotFound")
    moved = alice.ok("PUT", path, {"listener": {"default_pool_id": tcp_pool["id"]}})["listener"]
    assert moved["default_pool_id"] == tcp_pool["id"]
    assert alice.ok("GET", f"{POOLS}/{http_pool['id']}")["pool"]["listeners"] == []
    cleared = alice.ok("PUT", path, {"listener": {"default_pool_id": None}})["listener"]
    assert cleared["default_pool_id"] is None
    assert alice.ok("GET", f"{POOLS}/{tcp_pool['id']}")["pool"]["listeners"] == []


def test_deleting_listener_keeps_its_pool(alice: Api) -> None:
    t = _tree(alice)
    alice.ok("DELETE", f"{LISTENERS}/{t['listener']['id']}")
    pool = alice.ok("GET", f"{POOLS}/{t['pool']['id']}")["pool"]
    assert pool["listeners"] == []
    assert len(pool["members"]) == 2
    lb = alice.ok("GET", f"{LB}/{t['lb']['id']}")["loadbalancer"]
    assert (lb["listeners"], lb["pools"]) == ([], [{"id": pool["id"]}])


# --- pools ----------------------------------------------------------------------------


COMPATIBILITY = [
    ("TCP", "TCP", True),
    ("TCP", "HTTP", True),
    ("TCP", "UDP", False),
    ("HTTP", "HTTP", True),
    ("HTTP", "TCP", False),
    ("UDP", "UDP", True),
    ("UDP", "TCP", False),
]


def test_pool_protocol_must_fit_listener(alice: Api) -> None:
    _, sub = _subnet(alice)
    lb = _lb(alice, sub)["id"]
    for port, (listener_protocol, pool_protocol, ok) in enumerate(COMPATIBILITY, start=1):
        lst = _listener(alice, lb, listener_protocol, port)
        body = {"pool": {"listener_id": lst["id"], "protocol": pool_protocol}}
        body["pool"]["lb_algorithm"] = "SOURCE_IP"
        status, data = alice.post(POOLS, body)
        if ok:
            assert status == 201, data
            got = alice.ok("GET", f"{LISTENERS}/{lst['id']}")["listener"]
            assert got["default_pool_id"] == data["pool"]["id"]
        else:
            _error((status, data), 400, "ListenerPoolProtocolMismatch")


def test_pool_fields_and_errors(alice: Api) -> None:
    _, sub = _subnet(alice)
    lb = _lb(alice, sub)["id"]
    other_lb = _lb(alice, sub)["id"]
    lst = _listener(alice, lb)
    persistence = {"type": "SOURCE_IP"}
    pool = _pool(alice, listener_id=lst["id"], name="p", session_persistence=persistence)
    assert pool["loadbalancers"] == [{"id": lb}]
    assert pool["listeners"] == [{"id": lst["id"]}]
    assert (pool["members"], pool["healthmonitor_id"]) == ([], None)
    assert pool["session_persistence"]["type"] == "SOURCE_IP"
    assert pool["session_persistence"]["cookie_name"] is None
    assert (pool["provisioning_status"], pool["operating_status"]) == ("ACTIVE", "ONLINE")
    assert {"id": pool["id"]} in alice.ok("GET", f"{LB}/{lb}")["loadbalancer"]["pools"]
    _error(alice.post(POOLS, {"pool": {"protocol": "TCP", "lb_algorithm": "SOURCE_IP"}}), 400)
    unsupported = [
        {"protocol": "PROXY"},
        {"lb_algorithm": "SOURCE_IP_PORT"},
        {"session_persistence": {"type": "HTTP_COOKIE"}},
    ]
    for attrs in unsupported:
        body = {"pool": {"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}
        body["pool"] |= attrs
        assert "not supported" in _error(alice.post(POOLS, body), 400)
    invalid = [
        {"lb_algorithm": "RANDOM"},
        {"session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 60}},
        {"session_persistence": {"type": "SOURCE_IP", "cookie_name": "c"}},
        {"listener_id": lst["id"], "loadbalancer_id": other_lb},
    ]
    for attrs in invalid:
        body = {"pool": {"loadbalancer_id": lb, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}
        body["pool"] |= attrs
        _error(alice.post(POOLS, body), 400)
    body = {"pool": {"listener_id": lst["id"], "protocol": "TCP", "lb_algorithm": "SOURCE_IP"}}
    _error(alice.post(POOLS, body), 409, "DuplicatePoolEntry")
    udp = _pool(alice, "UDP", loadbalancer_id=lb, session_persistence={"type": "SOURCE_IP"})
    body = {"pool": {"session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 30}}}
    upd = alice.ok("PUT", f"{POOLS}/{udp['id']}", body)["pool"]
    assert upd["session_persistence"]["persistence_timeout"] == 30
    body = {"pool": {"lb_algorithm": "LEAST_CONNECTIONS", "session_persistence": None}}
    upd = alice.ok("PUT", f"{POOLS}/{udp['id']}", body)["pool"]
    assert (upd["lb_algorithm"], upd["session_persistence"]) == ("LEAST_CONNECTIONS", None)
    assert upd["revision_number"] == udp["revision_number"] + 2


def test_deleting_pool_clears_default_pool_and_removes_members_and_monitor(alice: Api) -> None:
    t = _tree(alice)
    monitor = _monitor(alice, t["pool"]["id"])
    listener = alice.ok("GET", f"{LISTENERS}/{t['listener']['id']}")["listener"]
    alice.ok("DELETE", f"{POOLS}/{t['pool']['id']}")
    after = alice.ok("GET", f"{LISTENERS}/{t['listener']['id']}")["listener"]
    assert after["default_pool_id"] is None
    assert after["revision_number"] == listener["revision_number"] + 1
    _error(alice.get(f"{MONITORS}/{monitor['id']}"), 404, "HealthMonitorNotFound")
    _error(alice.get(f"{POOLS}/{t['pool']['id']}/members"), 404, "PoolNotFound")
    assert alice.ok("GET", f"{LB}/{t['lb']['id']}")["loadbalancer"]["pools"] == []


# --- members --------------------------------------------------------------------------


def test_member_fields_validation_and_uniqueness(alice: Api) -> None:
    t = _tree(alice)
    pool, m1 = t["pool"]["id"], t["m1"]
    assert (m1["address"], m1["protocol_port"], m1["weight"]) == ("10.0.0.10", 8080, 1)
    assert (m1["backup"], m1["subnet_id"], m1["admin_state_up"]) == (False, None, True)
    assert (m1["provisioning_status"], m1["operating_status"]) == ("ACTIVE", "NO_MONITOR")
    assert "description" not in m1
    members_path = f"{POOLS}/{pool}/members"
    body = {"member": {"address": "10.0.0.10", "protocol_port": 8080}}
    _error(alice.post(members_path, body), 409, "DuplicateMemberEntry")
    m3 = _member(alice, pool, "10.0.0.10", 8081, weight=0, backup=True, subnet_id=t["subnet"]["id"])
    assert (m3["weight"], m3["backup"], m3["subnet_id"]) == (0, True, t["subnet"]["id"])
    for attrs in (
        {"address": "fd00::5", "protocol_port": 80},  # VIP is IPv4
        {"address": "127.0.0.1", "protocol_port": 80},
        {"address": "10.0.0.300", "protocol_port": 80},
        {"address": "10.0.0.20", "protocol_port": 80, "weight": 257},
        {"address": "10.0.0.20", "protocol_port": 0},
        {"address": "10.7.0.20", "protocol_port": 80, "subnet_id": t["subnet"]["id"]},
        {"address": "10.0.0.20", "protocol_port": 80, "description": "no such field"},
    ):
        _error(alice.post(members_path, {"member": attrs}), 400)
    listed = alice.ok("GET", members_path)["members"]
    assert {m["id"] for m in listed} == {m1["id"], t["m2"]["id"], m3["id"]}
    assert [m["id"] for m in alice.ok("GET", f"{members_path}?protocol_port=8081")["members"]] == [
        m3["id"]
    ]
    path = f"{members_path}/{m1['id']}"
    body = {"member": {"weight": 10, "monitor_address": "10.0.0.99", "monitor_port": 9000}}
    upd = alice.ok("PUT", path, body)["member"]
    assert (upd["weight"], upd["monitor_address"], upd["monitor_port"]) == (10, "10.0.0.99", 9000)
    assert upd["revision_number"] == m1["revision_number"] + 1
    upd = alice.ok("PUT", path, {"member": {"monitor_address": None}})["member"]
    assert upd["monitor_address"] is None
    assert upd["monitor_port"] == 9000
    _error(alice.put(path, {"member": {"address": "10.0.0.77"}}), 400)
    alice.ok("DELETE", path)
    _error(alice.get(path), 404, "MemberNotFound")
    members = alice.ok("GET", f"{POOLS}/{pool}")["pool"]["members"]
    assert {m["id"] for m in members} == {t["m2"]["id"], m3["id"]}


def test_member_is_only_reachable_under_its_own_pool(alice: Api) -> None:
    t = _tree(alice)
    other = _pool(alice, loadbalancer_id=t["lb"]["id"])
    path = f"{POOLS}/{other['id']}/members/{t['m1']['id']}"
    for result in (alice.get(path), alice.put(path, {"member": {"weight": 3}}), alice.delete(path)):
        _error(result, 404, "MemberNotFound")


def test_member_subnet_must_be_visible(alice: Api, bob: Api, admin: Api) -> None:
    t = _tree(alice)
    _, bobs = _subnet(bob, "10.0.0.0/24")
    body = {"member": {"address": "10.0.0.40", "protocol_port": 80, "subnet_id": bobs}}
    _error(alice.post(f"{POOLS}/{t['pool']['id']}/members", body), 404, "SubnetNotFound")
    _, shared = _subnet(admin, "10.50.0.0/24", shared=True)
    member = _member(alice, t["pool"]["id"], "10.50.0.7", 80, subnet_id=shared)
    assert member["subnet_id"] == shared


# --- health monitors ------------------------------------------------------------------


def test_health_monitor_defaults_fields_and_one_per_pool(alice: Api) -> None:
    t = _tree(alice)
    pool = t["pool"]["id"]
    http = _monitor(alice, pool, "HTTP", max_retries_down=5)
    assert (http["http_method"], http["url_path"], http["expected_codes"]) == ("GET", "/", "200")
    assert (http["delay"], http["timeout"], http["max_retries"], http["max_retries_down"]) == (
        5,
        3,
        3,
        5,
    )
    assert http["pools"] == [{"id": pool}]
    assert (http["provisioning_status"], http["operating_status"]) == ("ACTIVE", "ONLINE")
    assert alice.ok("GET", f"{POOLS}/{pool}")["pool"]["healthmonitor_id"] == http["id"]
    body = {"healthmonitor": {"pool_id": pool, "type": "PING", "delay": 1, "timeout": 1}}
    body["healthmonitor"]["max_retries"] = 1
    _error(alice.post(MONITORS, body), 409, "DuplicateHealthMonitor")
    alice.ok("DELETE", f"{MONITORS}/{http['id']}")
    ping = _monitor(alice, pool, "PING")
    assert (ping["http_method"], ping["url_path"], ping["expected_codes"]) == (None, None, None)
    assert ping["max_retries_down"] == 3


INVALID_MONITORS: list[Body] = [
    {"type": "HTTPS"},
    {"type": "UDP-CONNECT"},
    {"type": "DNS"},
    {"delay": 0},
    {"timeout": 0},
    {"timeout": 6},  # greater than delay 5
    {"max_retries": 0},
    {"max_retries": 11},
    {"max_retries_down": 11},
    {"type": "TCP", "url_path": "/health"},
    {"type": "PING", "http_method": "GET"},
    {"type": "PING", "expected_codes": "200"},
    {"http_method": "FETCH"},
    {"url_path": "health"},
    {"url_path": "/a b"},
    {"expected_codes": "20"},
    {"expected_codes": "204-200"},
    {"expected_codes": "200,"},
    {"expected_codes": "abc"},
    {"expected_codes": "99"},
]


def test_health_monitor_validation(alice: Api) -> None:
    _, sub = _subnet(alice)
    pool = _pool(alice, loadbalancer_id=_lb(alice, sub)["id"])
    body = {"pool_id": pool["id"], "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3}
    for attrs in INVALID_MONITORS:
        _error(alice.post(MONITORS, {"healthmonitor": body | attrs}), 400)
    assert alice.ok("GET", MONITORS)["healthmonitors"] == []


def test_health_monitor_update_checks_merged_values(alice: Api) -> None:
    t = _tree(alice)
    tcp = _monitor(alice, t["pool"]["id"], "TCP")
    path = f"{MONITORS}/{tcp['id']}"
    assert "delay" in _error(alice.put(path, {"healthmonitor": {"timeout": 9}}), 400)
    _error(alice.put(path, {"healthmonitor": {"url_path": "/x"}}), 400)
    _error(alice.put(path, {"healthmonitor": {"type": "PING"}}), 400)
    upd = alice.ok("PUT", path, {"healthmonitor": {"delay": 10, "timeout": 9}})["healthmonitor"]
    assert (upd["delay"], upd["timeout"]) == (10, 9)
    assert upd["revision_number"] == tcp["revision_number"] + 1
    http = _monitor(alice, _pool(alice, loadbalancer_id=t["lb"]["id"])["id"], "HTTP")
    path = f"{MONITORS}/{http['id']}"
    body = {"healthmonitor": {"expected_codes": "200-204", "url_path": "/healthz"}}
    upd = alice.ok("PUT", path, body)["healthmonitor"]
    assert (upd["expected_codes"], upd["url_path"], upd["http_method"]) == (
        "200-204",
        "/healthz",
        "GET",
    )
    upd = alice.ok("PUT", path, {"healthmonitor": {"url_path": None}})["healthmonitor"]
    assert upd["url_path"] == "/"  # null restores the default


# --- operating status -----------------------------------------------------------------


def _statuses(api: Api, t: dict[str, Body]) -> tuple[str, str, str, str]:
    pool_path = f"{POOLS}/{t['pool']['id']}/members"
    members = {m["id"]: m["operating_status"] for m in api.ok("GET", pool_path)["members"]}
    return (
        members[t["m1"]["id"]],
        members[t["m2"]["id"]],
        api.ok("GET", f"{POOLS}/{t['pool']['id']}")["pool"]["operating_status"],
        api.ok("GET", f"{LB}/{t['lb']['id']}")["loadbalancer"]["operating_status"],
    )


def _report(db: Database, member: str, status: str) -> Body:
    with db.write(bump=False) as session:
        return lbaas.set_member_operating_status(session, member, status)


def test_monitor_presence_drives_member_status(alice: Api) -> None:
    t = _tree(alice)
    assert _statuses(alice, t) == ("NO_MONITOR", "NO_MONITOR", "ONLINE", "ONLINE")
    monitor = _monitor(alice, t["pool"]["id"])
    # monitored members are OFFLINE until the hosts report, so the pool cannot be trusted
    assert _statuses(alice, t) == ("OFFLINE", "OFFLINE", "ERROR", "ERROR")
    m3 = _member(alice, t["pool"]["id"], "10.0.0.12")
    assert m3["operating_status"] == "OFFLINE"
    path = f"{MONITORS}/{monitor['id']}"
    off = alice.ok("PUT", path, {"healthmonitor": {"admin_state_up": False}})["healthmonitor"]
    assert off["operating_status"] == "OFFLINE"
    assert _statuses(alice, t) == ("NO_MONITOR", "NO_MONITOR", "ONLINE", "ONLINE")
    alice.ok("PUT", path, {"healthmonitor": {"admin_state_up": True}})
    assert _statuses(alice, t)[:2] == ("OFFLINE", "OFFLINE")
    alice.ok("DELETE", path)
    assert _statuses(alice, t) == ("NO_MONITOR", "NO_MONITOR", "ONLINE", "ONLINE")


def test_health_reports_drive_pool_and_lb_status(alice: Api, db: Database) -> None:
    t = _tree(alice)
    m1, m2 = t["m1"]["id"], t["m2"]["id"]
    report = _report(db, m1, "ONLINE")  # no monitor: the report is ignored
    assert report["operating_status"] == "NO_MONITOR"
    _monitor(alice, t["pool"]["id"])
    _report(db, m1, "ONLINE")
    assert _statuses(alice, t) == ("ONLINE", "OFFLINE", "DEGRADED", "DEGRADED")
    _report(db, m2, "ONLINE")
    assert _statuses(alice, t) == ("ONLINE", "ONLINE", "ONLINE", "ONLINE")
    _report(db, m2, "ERROR")
    assert _statuses(alice, t) == ("ONLINE", "ERROR", "DEGRADED", "DEGRADED")
    _report(db, m1, "OFFLINE")
    assert _statuses(alice, t) == ("OFFLINE", "ERROR", "ERROR", "ERROR")
    # a disabled member leaves the computation: only m1 (OFFLINE) remains
    path = f"{POOLS}/{t['pool']['id']}/members/{m2}"
    alice.ok("PUT", path, {"member": {"admin_state_up": False}})
    _report(db, m1, "ONLINE")
    assert _statuses(alice, t) == ("ONLINE", "OFFLINE", "ONLINE", "ONLINE")
    before = alice.ok("GET", f"{POOLS}/{t['pool']['id']}/members/{m1}")["member"]
    assert before["revision_number"] == t["m1"]["revision_number"]  # discovered state only
    with db.write() as session:
        with pytest.raises(InvalidInput):
            lbaas.set_member_operating_status(session, m1, "DEGRADED")
        with pytest.raises(NotFound):
            lbaas.set_member_operating_status(session, "no-such-member", "ONLINE")


def test_second_pool_keeps_lb_degraded_not_error(alice: Api, db: Database) -> None:
    t = _tree(alice)
    _monitor(alice, t["pool"]["id"])
    _pool(alice, loadbalancer_id=t["lb"]["id"])  # empty pool: ONLINE
    assert _statuses(alice, t)[2:] == ("ERROR", "DEGRADED")
    alice.ok("PUT", f"{POOLS}/{t['pool']['id']}", {"pool": {"admin_state_up": False}})
    assert _statuses(alice, t)[2:] == ("OFFLINE", "ONLINE")


def test_status_tree(alice: Api, db: Database) -> None:
    t = _tree(alice)
    monitor = _monitor(alice, t["pool"]["id"], "PING", name="ping")
    _pool(alice, loadbalancer_id=t["lb"]["id"])  # on no listener: not in the tree
    _report(db, t["m1"]["id"], "ONLINE")
    tree = alice.ok("GET", f"{LB}/{t['lb']['id']}/status")["statuses"]["loadbalancer"]
    assert (tree["id"], tree["name"], tree["operating_status"]) == (
        t["lb"]["id"],
        "web",
        "DEGRADED",
    )
    assert tree["provisioning_status"] == "ACTIVE"
    [listener] = tree["listeners"]
    assert listener["id"] == t["listener"]["id"]
    assert listener["operating_status"] == "ONLINE"
    [pool] = listener["pools"]
    assert (pool["id"], pool["operating_status"]) == (t["pool"]["id"], "DEGRADED")
    assert pool["health_monitor"] == {
        "id": monitor["id"],
        "name": "ping",
        "type": "PING",
        "provisioning_status": "ACTIVE",
        "operating_status": "ONLINE",
    }
    members = {m["id"]: m for m in pool["members"]}
    assert members[t["m1"]["id"]]["operating_status"] == "ONLINE"
    assert members[t["m2"]["id"]]["operating_status"] == "OFFLINE"
    assert members[t["m1"]["id"]]["address"] == "10.0.0.10"
    assert members[t["m1"]["id"]]["protocol_port"] == 8080


# --- tenancy --------------------------------------------------------------------------


def test_other_projects_lb_objects_are_404_on_every_verb(alice: Api, bob: Api) -> None:
    t = _tree(alice)
    monitor = _monitor(alice, t["pool"]["id"])
    members = f"{POOLS}/{t['pool']['id']}/members"
    objects = [
        (f"{LB}/{t['lb']['id']}", "loadbalancer", "LoadBalancerNotFound"),
        (f"{LISTENERS}/{t['listener']['id']}", "listener", "ListenerNotFound"),
        (f"{POOLS}/{t['pool']['id']}", "pool", "PoolNotFound"),
        (f"{members}/{t['m1']['id']}", "member", "PoolNotFound"),
        (f"{MONITORS}/{monitor['id']}", "healthmonitor", "HealthMonitorNotFound"),
    ]
    for path, member, type_ in objects:
        _error(bob.get(path), 404, type_)
        _error(bob.put(path, {member: {"name": "mine"}}), 404, type_)
        _error(bob.delete(path), 404, type_)
    _error(bob.delete(f"{LB}/{t['lb']['id']}", cascade="true"), 404, "LoadBalancerNotFound")
    _error(bob.get(f"{LB}/{t['lb']['id']}/status"), 404, "LoadBalancerNotFound")
    _error(bob.get(members), 404, "PoolNotFound")
    _error(bob.post(members, {"member": {"address": "10.0.0.9", "protocol_port": 1}}), 404)
    body = {"listener": {"loadbalancer_id": t["lb"]["id"], "protocol": "TCP", "protocol_port": 9}}
    _error(bob.post(LISTENERS, body), 404, "LoadBalancerNotFound")
    body = {"pool": {"listener_id": t["listener"]["id"], "protocol": "TCP"}}
    body["pool"]["lb_algorithm"] = "ROUND_ROBIN"
    _error(bob.post(POOLS, body), 404, "ListenerNotFound")
    body = {"healthmonitor": {"pool_id": t["pool"]["id"], "type": "PING", "delay": 1}}
    body["healthmonitor"] |= {"timeout": 1, "max_retries": 1}
    _error(bob.post(MONITORS, body), 404, "PoolNotFound")
    for collection in ("loadbalancers", "listeners", "pools", "healthmonitors"):
        assert bob.ok("GET", f"/v2/lbaas/{collection}")[collection] == []
    assert alice.ok("GET", f"{LB}/{t['lb']['id']}")["loadbalancer"]["name"] == "web"
    assert len(alice.ok("GET", members)["members"]) == 2


def test_vip_subnet_tenancy(alice: Api, bob: Api, admin: Api) -> None:
    _, alices = _subnet(alice)
    _error(bob.post(LB, {"loadbalancer": {"vip_subnet_id": alices}}), 404, "SubnetNotFound")
    _, shared = _subnet(admin, "10.60.0.0/24", shared=True)
    lb = _lb(bob, shared)
    assert lb["project_id"] == bob.project_id
    port = bob.ok("GET", f"/v2.0/ports/{lb['vip_port_id']}")["port"]
    assert port["project_id"] == bob.project_id
    _, external = _subnet(admin, "10.70.0.0/24", **{"router:external": True})
    _error(bob.post(LB, {"loadbalancer": {"vip_subnet_id": external}}), 403)


def test_admin_sees_all_and_creates_for_a_project(alice: Api, admin: Api, bob: Api) -> None:
    _, sub = _subnet(alice)
    body = {"loadbalancer": {"vip_subnet_id": sub, "project_id": alice.project_id}}
    lb = admin.ok("POST", LB, body)["loadbalancer"]
    assert lb["project_id"] == alice.project_id
    listener = _listener(admin, lb["id"])
    assert listener["project_id"] == alice.project_id  # children belong to the LB's project
    assert alice.ok("GET", f"{LISTENERS}/{listener['id']}")["listener"]["id"] == listener["id"]
    own = _lb(bob, _subnet(bob)[1])
    assert {x["id"] for x in admin.ok("GET", LB)["loadbalancers"]} == {lb["id"], own["id"]}
    body = {"loadbalancer": {"vip_subnet_id": sub, "project_id": bob.project_id}}
    _error(alice.post(LB, body), 403)
    admin.ok("DELETE", f"{LB}/{lb['id']}?cascade=true")
    assert alice.ok("GET", LB)["loadbalancers"] == []


def test_providers(alice: Api) -> None:
    providers = alice.ok("GET", "/v2/lbaas/providers")["providers"]
    assert [p["name"] for p in providers] == ["netvirt"]


# --- pure rules (Hypothesis) ----------------------------------------------------------

CODES = st.integers(100, 599).map(str)
STATES = st.sampled_from(["ONLINE", "OFFLINE", "ERROR", "NO_MONITOR"])


def _monitor_body(**attrs: object) -> Body:
    base: Body = {"pool_id": "5a6b2f2c-1111-4c1e-9f42-000000000001", "type": "HTTP"}
    return base | {"delay": 5, "timeout": 5, "max_retries": 1} | attrs


@given(st.lists(CODES, min_size=1, max_size=6))
def test_expected_codes_lists_are_accepted(codes: list[str]) -> None:
    value = ",".join(codes)
    assert HealthMonitorCreate(**_monitor_body(expected_codes=value)).expected_codes == value


@given(CODES, CODES)
def test_expected_codes_ranges_need_ascending_ends(lo: str, hi: str) -> None:
    value = f"{lo}-{hi}"
    if int(lo) <= int(hi):
        assert HealthMonitorCreate(**_monitor_body(expected_codes=value)).expected_codes == value
    else:
        with pytest.raises(ValidationError):
            HealthMonitorCreate(**_monitor_body(expected_codes=value))


@given(st.integers(1, 100), st.integers(1, 100))
def test_timeout_never_exceeds_delay(delay: int, timeout: int) -> None:
    body = _monitor_body(delay=delay, timeout=timeout)
    if timeout <= delay:
        assert HealthMonitorCreate(**body).timeout == timeout
    else:
        with pytest.raises(ValidationError):
            HealthMonitorCreate(**body)


@given(st.lists(st.tuples(st.booleans(), STATES), max_size=8))
def test_pool_status_follows_enabled_members(members: list[tuple[bool, str]]) -> None:
    states = [state for up, state in members if up]
    down = [s for s in states if s in ("OFFLINE", "ERROR")]
    status = pool_status(True, members)
    assert (status == "ERROR") == bool(states and len(down) == len(states))
    assert (status == "ONLINE") == (not down)
    assert (status == "DEGRADED") == (0 < len(down) < len(states))
    assert pool_status(False, members) == "OFFLINE"


@given(st.lists(st.sampled_from(["ONLINE", "OFFLINE", "ERROR", "DEGRADED"]), max_size=6))
def test_lb_status_is_error_only_when_every_live_pool_is(pools: list[str]) -> None:
    live = [p for p in pools if p != "OFFLINE"]
    status = lb_status(True, pools)
    assert (status == "ERROR") == bool(live and all(p == "ERROR" for p in live))
    assert (status == "ONLINE") == all(p == "ONLINE" for p in live)
    assert lb_status(False, pools) == "OFFLINE"


@given(st.booleans(), st.booleans(), STATES)
def test_member_status_never_contradicts_monitoring(up: bool, monitored: bool, cur: str) -> None:
    status = member_status(up, monitored, cur)
    if not up:
        assert status == "OFFLINE"
    elif not monitored:
        assert status == "NO_MONITOR"
    else:
        assert status != "NO_MONITOR"
