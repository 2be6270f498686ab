"""Stats reports and the heartbeat: in memory only, host credentials, bounded, newest wins."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from conftest import Api
from netvirt.agent.runner import QueuedSB
from netvirt.compiler.service import CompilerService
from netvirt.northbound import identity
from netvirt.northbound.db import Database
from netvirt.northbound.errors import InvalidInput
from netvirt.southbound.hosts import MAX_PORTS
from netvirt.southbound.http import HttpSB
from netvirt.southbound.memory import ALIVE_AFTER, InMemorySB
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBDelta
from southbound.conftest import Live
from southbound.stats_support import port_stats, stats_doc

SB = "/v2.0/netvirt/sb"


class Clock:
    """A clock that moves only when the test says (no realization rows are compared)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed(db: Database, clock: Clock) -> InMemorySB:
    return InMemorySB(CompilerService(db), poll=0.2, clock=clock)


def nb_generation(db: Database) -> int:
    with db.read() as session:
        return int(identity.status(session)["nb_generation"])


def test_stats_are_kept_in_memory_without_a_generation_bump(
    db: Database, admin: Api, timed: InMemorySB, clock: Clock
) -> None:
    before = nb_generation(db)
    doc = stats_doc("hv1", {"tap1": "p1"}, {"tap1": port_stats(rx=3)})
    timed.report_stats("hv1", doc)
    timed.report_stats("hv1", doc | {"generation": {"sb": 2, "installed": 2}})
    assert nb_generation(db) == before
    with db.read() as session:
        assert identity.status(session)["hosts"] == []  # no realization row either
    received = timed.host_stats()["hv1"]
    assert received.stats["generation"] == {"sb": 2, "installed": 2}  # the newest only
    assert received.at == clock.now
    with pytest.raises(InvalidInput):
        timed.report_stats("", doc)


def test_every_report_is_a_heartbeat(
    db: Database, admin: Api, timed: InMemorySB, clock: Clock
) -> None:
    assert not timed.alive("hv1")
    timed.register_chassis(Chassis("hv1", "geneve", "192.0.2.1"))
    assert timed.alive("hv1")
    clock.advance(ALIVE_AFTER - 0.1)
    assert timed.alive("hv1")
    clock.advance(0.2)
    assert not timed.alive("hv1")
    timed.report_installed("hv1", 1)
    assert timed.alive("hv1")
    clock.advance(ALIVE_AFTER)
    timed.report_stats("hv1", stats_doc("hv1", {}, {}))
    assert timed.last_seen() == {"hv1": clock.now}
    assert timed.alive("hv1")


def test_registering_the_same_chassis_again_is_still_only_a_heartbeat(
    db: Database, admin: Api, timed: InMemorySB, clock: Clock
) -> None:
    chassis = Chassis("hv1", "geneve", "192.0.2.1")
    timed.register_chassis(chassis)
    generation = nb_generation(db)
    clock.advance(5)
    timed.register_chassis(chassis)
    assert nb_generation(db) == generation
    assert timed.last_seen()["hv1"] == clock.now


def test_the_route_takes_stats_from_hosts_only(host: Api, admin: Api, client: Any) -> None:
    doc = stats_doc("hv1", {"tap1": "p1"}, {"tap1": port_stats(rx=3, acl_deny=2)})
    body = {"chassis": "hv1", "stats": doc | {"future_section": {"x": 1}}}
    status, err = admin.post(f"{SB}/stats", body)
    assert status == 403
    assert err["NeutronError"]["type"] == "PolicyNotAuthorized"
    host.ok("POST", f"{SB}/stats", body, expect=204)
    stored = client.app.state.southbound.host_stats()["hv1"].stats
    assert "future_section" not in stored  # unknown keys are dropped, not stored
    assert "chassis" not in stored
    assert stored["ports"]["tap1"]["drops"] == {"acl_deny": 2}
    assert stored["bound"] == {"tap1": "p1"}
    assert stored["tunnel"]["rx_packets"] == 7


@pytest.mark.parametrize(
    "change",
    [
        {"ports": {"tap1": port_stats(rx=-1)}},
        {"ports": {"tap1": port_stats(rx=2**63)}},
        {"ports": {"tap1": port_stats() | {"drops": {"No Such Reason": 1}}}},
        {"ports": {"": port_stats()}},
        {"ports": {f"tap{i}": {} for i in range(MAX_PORTS + 1)}},
        {"bound": {"tap1": ""}},
        {"generation": {"installed": "many"}},
        {"drops": {f"r{i}": 1 for i in range(200)}},
    ],
)
def test_bad_or_oversized_stats_are_400(host: Api, change: dict[str, Any]) -> None:
    doc = stats_doc("hv1", {"tap1": "p1"}, {"tap1": port_stats(rx=3)}) | change
    status, err = host.post(f"{SB}/stats", {"chassis": "hv1", "stats": doc})
    assert status == 400, change
    assert "Invalid input" in err["NeutronError"]["message"]


def test_bodies_over_the_api_limit_are_413(host: Api) -> None:
    ports = {f"tap{i}": port_stats() | {"drops": {"acl_deny": 1}} for i in range(MAX_PORTS)}
    bound = {f"tap{i}": "p" * 200 for i in range(MAX_PORTS)}
    status, err = host.post(
        f"{SB}/stats", {"chassis": "hv1", "stats": {"ports": ports} | {"bound": bound}}
    )
    assert status == 413
    assert err["NeutronError"]["type"] == "HTTPRequestEntityTooLarge"


def test_http_client_reports_stats(live: Live) -> None:
    with HttpSB(live.url, live.host_token) as sb:
        sb.register_chassis(Chassis("hv1", "vxlan", "192.0.2.1"))
        sb.report_stats("hv1", stats_doc("hv1", {"tap1": "p1"}, {"tap1": port_stats(tx=4)}))
    admin = {"X-Auth-Token": live.admin_token}
    hosts = httpx.get(f"{live.url}/v2.0/netvirt/hosts", headers=admin).json()["hosts"]
    assert [(h["name"], h["encap"], h["alive"]) for h in hosts] == [("hv1", "vxlan", True)]
    assert hosts[0]["ports"][0]["tx_packets"] == 4


class Recorder:
    """A remote SBSource that records reports and can hold the reporter thread."""

    def __init__(self) -> None:
        self.stats: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.gate.set()

    def snapshot(self) -> SBState:
        return SBState(generation=1)

    def changes(self, since: int, timeout: float) -> SBDelta | SBState | None:
        time.sleep(min(timeout, 0.05))
        return None

    def register_chassis(self, chassis: Chassis) -> None:
        self.gate.wait(5)

    def report_port(self, port: str, chassis: str, up: bool) -> None: ...

    def report_installed(self, chassis: str, generation: int) -> None: ...

    def report_member_health(self, chassis: str, member_id: str, status: str) -> None: ...

    def report_stats(self, chassis: str, stats: dict[str, Any]) -> None:
        self.stats.append(stats)


def test_queued_sb_keeps_only_the_newest_stats_report() -> None:
    remote = Recorder()
    chassis = Chassis("hv1", "geneve", "192.0.2.1")
    queued = QueuedSB(remote, chassis, lambda: None, poll_timeout=0.05)
    remote.gate.clear()  # the reporter blocks on the first report until the gate opens
    queued.register_chassis(chassis)
    queued.start()
    try:
        deadline = time.monotonic() + 5
        while queued.queued_reports and time.monotonic() < deadline:
            time.sleep(0.01)  # the reporter took the registration and waits in it
        for n in range(5):
            queued.report_stats("hv1", {"n": n})
        assert queued.queued_reports == 1
        remote.gate.set()
        while not remote.stats and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        queued.stop()
    assert remote.stats == [{"n": 4}]
