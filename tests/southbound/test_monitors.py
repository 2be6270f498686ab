"""Service monitors in the SB (codec, deltas, mirror) and member health reports (service,
REST route, HTTP client, the agent's queue)."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from typing import Any

import httpx
import pytest

from conftest import Api
from netvirt.agent.reconcile import SBMirror
from netvirt.agent.runner import QueuedSB
from netvirt.dataplane.actions import CtLb
from netvirt.northbound.db import Database
from netvirt.northbound.errors import InvalidInput
from netvirt.southbound import codec
from netvirt.southbound.diff import apply, diff, is_empty
from netvirt.southbound.http import HttpSB
from netvirt.southbound.memory import InMemorySB
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBDelta
from southbound.conftest import Live
from southbound.monitored import monitored_pool
from southbound.topo import compile_db

SB = "/v2.0/netvirt/sb"
Obj = dict[str, Any]


def backends(sb: SBState) -> set[str]:
    """Member addresses some ct_lb flow balances to."""
    return {
        str(ipaddress.ip_address(b.ip))
        for flow in sb.flows
        for action in flow.actions
        if isinstance(action, CtLb)
        for b in action.backends
    }


def member_status(alice: Api, objs: dict[str, Obj], name: str) -> str:
    path = f"/v2/lbaas/pools/{objs['pool']['id']}/members/{objs[name]['id']}"
    return str(alice.ok("GET", path)["member"]["operating_status"])


@pytest.fixture
def objs(admin: Api, alice: Api) -> dict[str, Obj]:
    return monitored_pool(admin, alice)


# -- the SB state carries the monitors -------------------------------------------------------


def test_monitors_round_trip_the_codec_and_deltas(db: Database, alice: Api, objs: Obj) -> None:
    before = compile_db(db)
    assert set(before.monitors) == {objs["m1"]["id"], objs["m2"]["id"]}
    wire = json.loads(json.dumps(codec.encode_state(before)))
    assert codec.decode_state(wire).monitors == before.monitors

    alice.ok("PUT", f"/v2/lbaas/healthmonitors/{objs['hm']['id']}", {"healthmonitor": {"delay": 7}})
    path = f"/v2/lbaas/pools/{objs['pool']['id']}/members/{objs['m2']['id']}"
    alice.ok("DELETE", path)
    after = compile_db(db)
    delta = diff(before, after)
    assert delta.monitors_removed == (objs["m2"]["id"],)
    assert [m.delay for m in delta.monitors] == [7]
    assert not is_empty(delta)
    assert apply(before, delta) == after
    decoded = codec.decode_delta(json.loads(json.dumps(codec.encode_delta(delta, before, after))))
    assert decoded.monitors == delta.monitors
    assert decoded.monitors_removed == delta.monitors_removed

    mirror = SBMirror()
    mirror.load(before)
    assert mirror.apply(delta)
    assert mirror.state().monitors == after.monitors


def test_bad_monitor_documents_are_codec_errors(db: Database, objs: Obj) -> None:
    data = json.loads(json.dumps(codec.encode_state(compile_db(db))))
    data["monitors"][0]["type"] = "SCTP"
    with pytest.raises(codec.CodecError):
        codec.decode_state(data)
    data["monitors"][0] |= {"type": "TCP", "source_ip": "not-an-address"}
    with pytest.raises(codec.CodecError):
        codec.decode_state(data)


# -- the service -------------------------------------------------------------------------------


def test_report_brings_a_member_online_and_into_the_pool(
    service: InMemorySB, db: Database, alice: Api, objs: Obj
) -> None:
    m1 = objs["m1"]["id"]
    assert member_status(alice, objs, "m1") == "OFFLINE"
    assert backends(service.snapshot()) == set()  # monitored members wait for a report
    generation = db.generation()

    service.report_member_health("hv1", m1, "ONLINE")
    assert member_status(alice, objs, "m1") == "ONLINE"
    assert db.generation() == generation + 1  # the flows change: a real write
    assert backends(service.snapshot()) == {"10.0.0.11"}

    service.report_member_health("hv1", m1, "ONLINE")  # nothing new: no write
    assert db.generation() == generation + 1

    service.report_member_health("hv1", m1, "ERROR")
    assert member_status(alice, objs, "m1") == "ERROR"
    assert backends(service.snapshot()) == set()
    pool = alice.ok("GET", f"/v2/lbaas/pools/{objs['pool']['id']}")["pool"]
    assert pool["operating_status"] == "ERROR"


def test_stale_reports_are_ignored(
    service: InMemorySB, db: Database, alice: Api, objs: Obj
) -> None:
    service.snapshot()
    generation = db.generation()
    service.report_member_health("hv2", objs["m1"]["id"], "ONLINE")  # web1 is on hv1
    service.report_member_health("hv1", "no-such-member", "ONLINE")
    assert member_status(alice, objs, "m1") == "OFFLINE"
    assert db.generation() == generation

    alice.ok("DELETE", f"/v2/lbaas/healthmonitors/{objs['hm']['id']}")
    service.snapshot()
    service.report_member_health("hv1", objs["m1"]["id"], "ERROR")  # no monitor any more
    assert member_status(alice, objs, "m1") == "NO_MONITOR"

    with pytest.raises(InvalidInput):
        service.report_member_health("hv1", objs["m1"]["id"], "DEGRADED")


def test_report_follows_a_migrated_port(
    service: InMemorySB, admin: Api, alice: Api, objs: Obj
) -> None:
    service.report_port(objs["web1"]["id"], "hv3", up=True)  # web1 moved to hv3
    service.snapshot()
    service.report_member_health("hv1", objs["m1"]["id"], "ONLINE")
    assert member_status(alice, objs, "m1") == "OFFLINE"
    service.report_member_health("hv3", objs["m1"]["id"], "ONLINE")
    assert member_status(alice, objs, "m1") == "ONLINE"


# -- REST route and HTTP client ----------------------------------------------------------------


def test_route_takes_host_reports_only(host: Api, alice: Api, objs: Obj) -> None:
    path = f"{SB}/members/{objs['m2']['id']}/health"
    host.ok("PUT", path, {"chassis": "hv2", "status": "ONLINE"}, expect=204)
    assert member_status(alice, objs, "m2") == "ONLINE"
    status, _ = alice.put(path, {"chassis": "hv2", "status": "ERROR"})
    assert status == 403
    for body in ({"chassis": "hv2", "status": "OFFLINE"}, {"status": "ERROR"}):
        status, err = host.put(path, body)
        assert status == 400, body
        assert "Invalid input" in err["NeutronError"]["message"]
    host.ok("PUT", f"{SB}/members/unknown/health", {"chassis": "hv2", "status": "ERROR"}, 204)
    assert member_status(alice, objs, "m2") == "ONLINE"


def test_http_client_reports_reach_the_nb(live: Live) -> None:
    http = httpx.Client(base_url=live.url, headers={"X-Auth-Token": live.admin_token})
    with http:
        admin = HttpApi(http)
        objs = monitored_pool(admin, admin)  # type: ignore[arg-type]
        with HttpSB(live.url, live.host_token) as sb:
            sb.report_member_health("hv1", objs["m1"]["id"], "ONLINE")
        path = f"/v2/lbaas/pools/{objs['pool']['id']}/members/{objs['m1']['id']}"
        assert http.get(path).json()["member"]["operating_status"] == "ONLINE"


class HttpApi:
    """Just enough of the test ``Api`` over a real HTTP client for ``monitored_pool``."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def ok(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        resp = self.http.request(method, path, json=body)
        assert resp.status_code < 300, resp.text
        return resp.json() if resp.content else None


# -- the agent's queue -------------------------------------------------------------------------


class Recorder:
    """A remote SB that records health reports (and blocks them until released)."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str, str]] = []
        self.gate = threading.Event()

    def snapshot(self) -> SBState:
        return SBState(generation=1)

    def changes(self, since: int, timeout: float) -> SBDelta | SBState | None:
        time.sleep(min(timeout, 0.01))
        return None

    def register_chassis(self, chassis: Chassis) -> None:
        pass

    def report_member_health(self, chassis: str, member_id: str, status: str) -> None:
        self.gate.wait(5)
        self.reports.append((chassis, member_id, status))


def test_queued_health_reports_keep_the_newest_per_member() -> None:
    remote = Recorder()
    sb = QueuedSB(remote, Chassis("hv1", "geneve", "192.0.2.1"), lambda: None)  # type: ignore[arg-type]
    sb.start()
    try:
        sb.report_member_health("hv1", "m0", "ONLINE")  # taken by the reporter, held at the gate
        deadline = time.monotonic() + 5
        while sb.queued_reports and time.monotonic() < deadline:
            time.sleep(0.01)
        for status in ("ONLINE", "ERROR", "ONLINE", "ERROR"):
            sb.report_member_health("hv1", "m1", status)
        sb.report_member_health("hv1", "m2", "ONLINE")
        assert sb.queued_reports == 2
        remote.gate.set()
        while len(remote.reports) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sb.stop()
    assert remote.reports == [
        ("hv1", "m0", "ONLINE"),
        ("hv1", "m1", "ERROR"),
        ("hv1", "m2", "ONLINE"),
    ]
