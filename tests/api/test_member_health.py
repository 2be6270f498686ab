"""Health reports from hosts as tenants see them: member, pool and load balancer
operating status, and Octavia's status tree."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from conftest import Api
from netvirt.northbound.db import Database
from southbound.conftest import host_token
from southbound.monitored import monitored_pool

SB = "/v2.0/netvirt/sb"
Obj = dict[str, Any]


def report(host: Api, member: Obj, chassis: str, status: str) -> None:
    body = {"chassis": chassis, "status": status}
    host.ok("PUT", f"{SB}/members/{member['id']}/health", body, expect=204)


def statuses(alice: Api, objs: dict[str, Obj]) -> tuple[str, str, str, str]:
    tree = alice.ok("GET", f"/v2/lbaas/loadbalancers/{objs['lb']['id']}/status")["statuses"]
    lb = tree["loadbalancer"]
    pool = lb["listeners"][0]["pools"][0]
    members = {m["id"]: m["operating_status"] for m in pool["members"]}
    return (
        members[objs["m1"]["id"]],
        members[objs["m2"]["id"]],
        pool["operating_status"],
        lb["operating_status"],
    )


def test_reports_drive_member_pool_and_lb_status(
    db: Database, client: TestClient, admin: Api, alice: Api
) -> None:
    objs = monitored_pool(admin, alice, "HTTP")
    host = Api(client, host_token(db), "admin")
    assert statuses(alice, objs) == ("OFFLINE", "OFFLINE", "ERROR", "ERROR")

    report(host, objs["m1"], "hv1", "ONLINE")
    assert statuses(alice, objs) == ("ONLINE", "OFFLINE", "DEGRADED", "DEGRADED")
    report(host, objs["m2"], "hv2", "ONLINE")
    assert statuses(alice, objs) == ("ONLINE", "ONLINE", "ONLINE", "ONLINE")
    report(host, objs["m2"], "hv2", "ERROR")
    assert statuses(alice, objs) == ("ONLINE", "ERROR", "DEGRADED", "DEGRADED")

    path = f"/v2/lbaas/pools/{objs['pool']['id']}/members/{objs['m1']['id']}"
    member = alice.ok("GET", path)["member"]
    assert member["revision_number"] == objs["m1"]["revision_number"]  # discovered state only


def test_reports_for_disabled_members_change_nothing(
    db: Database, client: TestClient, admin: Api, alice: Api
) -> None:
    objs = monitored_pool(admin, alice)
    host = Api(client, host_token(db), "admin")
    path = f"/v2/lbaas/pools/{objs['pool']['id']}/members/{objs['m1']['id']}"
    alice.ok("PUT", path, {"member": {"admin_state_up": False}})
    report(host, objs["m1"], "hv1", "ONLINE")
    assert alice.ok("GET", path)["member"]["operating_status"] == "OFFLINE"


def test_the_report_route_is_not_for_tenants(
    db: Database, client: TestClient, admin: Api, alice: Api
) -> None:
    objs = monitored_pool(admin, alice)
    body = {"chassis": "hv1", "status": "ONLINE"}
    status, err = alice.put(f"{SB}/members/{objs['m1']['id']}/health", body)
    assert status == 403
    assert err["NeutronError"]["type"] == "PolicyNotAuthorized"
