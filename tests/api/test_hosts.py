"""Hosts (admin) and port counters (tenants) from what agents report; host up/down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Api
from netvirt.compiler.service import CompilerService
from netvirt.northbound.db import Database
from netvirt.southbound.memory import ALIVE_AFTER, InMemorySB
from southbound.stats_support import Clock, mint_host_token, port_stats, stats_doc

SB = "/v2.0/netvirt/sb"
HOSTS = "/v2.0/netvirt/hosts"


@pytest.fixture
def clock(client: TestClient, db: Database) -> Clock:
    """The app's SB service on a clock the test moves."""
    fake = Clock()
    client.app.state.southbound = InMemorySB(CompilerService(db), clock=fake)  # type: ignore[attr-defined]
    return fake


@pytest.fixture
def host(client: TestClient, db: Database, admin: Api) -> Api:
    return Api(client, mint_host_token(db), "admin")


@pytest.fixture
def vm(alice: Api) -> dict[str, Any]:
    net = alice.ok("POST", "/v2.0/networks", {"network": {"name": "net"}})["network"]
    subnet = {"network_id": net["id"], "cidr": "10.0.0.0/24"}
    alice.ok("POST", "/v2.0/subnets", {"subnet": subnet})
    port = {"network_id": net["id"], "name": "vm1"}
    return dict(alice.ok("POST", "/v2.0/ports", {"port": port})["port"])


Report = Callable[..., None]


@pytest.fixture
def report(host: Api, clock: Clock) -> Report:
    """Register ``name``, claim ``bound`` ports on it, report installed and stats."""

    def send(
        name: str,
        bound: dict[str, str],
        ports: dict[str, dict[str, Any]],
        installed: int | None = None,
    ) -> None:
        chassis = {"name": name, "encap": "geneve", "ip": f"192.0.2.{len(name)}"}
        host.ok("POST", f"{SB}/chassis", chassis, expect=204)
        for port_id in bound.values():
            host.ok("PUT", f"{SB}/ports/{port_id}", {"chassis": name, "up": True}, expect=204)
        if installed is None:
            installed = host.ok("GET", f"{SB}/snapshot")["generation"]
        body = {"chassis": name, "generation": installed}
        host.ok("POST", f"{SB}/installed", body, expect=204)
        doc = stats_doc(name, bound, ports, installed)
        host.ok("POST", f"{SB}/stats", {"chassis": name, "stats": doc}, expect=204)

    return send


def test_admin_lists_hosts_with_heartbeat_generation_and_counters(
    admin: Api, vm: dict[str, Any], report: Report, clock: Clock
) -> None:
    report("hv1", {"tap1": vm["id"]}, {"tap1": port_stats(rx=5, tx=6, acl_deny=2)})
    hosts = admin.ok("GET", HOSTS)["hosts"]
    assert len(hosts) == 1
    hv1 = hosts[0]
    assert hv1["name"] == "hv1"
    assert (hv1["encap"], hv1["underlay_ip"]) == ("geneve", "192.0.2.3")
    assert hv1["alive"] is True
    assert hv1["state"] == "UP"
    assert hv1["installed_generation"] == hv1["sb_generation"]
    assert hv1["last_seen"] == hv1["stats_at"]
    assert hv1["last_seen"].endswith("Z")
    assert hv1["ports"] == [
        {"interface": "tap1", "port_id": vm["id"]} | port_stats(rx=5, tx=6, acl_deny=2)
    ]
    assert hv1["tunnel"]["rx_packets"] == 7
    assert hv1["drops"] == {"acl_deny": 2, "unknown_vni": 1}
    assert hv1["flows"]["installed"] == 120
    assert admin.ok("GET", f"{HOSTS}/hv1")["host"] == hv1


def test_a_silent_host_goes_down_and_comes_back(
    admin: Api, vm: dict[str, Any], report: Report, clock: Clock, host: Api
) -> None:
    report("hv1", {}, {})
    clock.advance(ALIVE_AFTER + 1)
    hv1 = admin.ok("GET", f"{HOSTS}/hv1")["host"]
    assert (hv1["alive"], hv1["state"]) == (False, "DOWN")  # in sync, but silent
    status = admin.ok("GET", "/v2.0/netvirt/status")["status"]
    assert [(h["host"], h["alive"]) for h in status["hosts"]] == [("hv1", False)]
    doc = stats_doc("hv1", {}, {})
    host.ok("POST", f"{SB}/stats", {"chassis": "hv1", "stats": doc}, expect=204)
    assert admin.ok("GET", f"{HOSTS}/hv1")["host"]["state"] == "UP"
    status = admin.ok("GET", "/v2.0/netvirt/status")["status"]
    assert status["hosts"][0]["alive"] is True
    assert status["hosts"][0]["last_seen"] is not None


def test_a_host_behind_the_compiled_generation_is_lagging(
    admin: Api, report: Report, clock: Clock
) -> None:
    report("hv1", {}, {}, installed=1)
    compiled = {"report": {"component": "compiler", "name": "compiler", "generation": 2}}
    admin.ok("POST", "/v2.0/netvirt/status/reports", compiled, expect=204)
    assert admin.ok("GET", f"{HOSTS}/hv1")["host"]["state"] == "LAGGING"
    report("hv1", {}, {}, installed=2)
    assert admin.ok("GET", f"{HOSTS}/hv1")["host"]["state"] == "UP"


def test_hosts_are_admin_only_and_unknown_ones_404(admin: Api, alice: Api, report: Report) -> None:
    report("hv1", {}, {})
    for path in (HOSTS, f"{HOSTS}/hv1"):
        status, err = alice.get(path)
        assert status == 403, path
        assert err["NeutronError"]["type"] == "PolicyNotAuthorized"
    status, err = admin.get(f"{HOSTS}/hv9")
    assert status == 404
    assert err["NeutronError"] == {
        "type": "HostNotFound",
        "message": "Host hv9 could not be found.",
        "detail": "",
    }


def test_hosts_known_only_from_the_store_appear_after_a_restart(
    admin: Api, client: TestClient
) -> None:
    """No SB service in this process yet (a restarted server): the realization rows."""
    report = {"report": {"component": "host", "name": "hv7", "generation": 0}}
    admin.ok("POST", "/v2.0/netvirt/status/reports", report, expect=204)
    assert getattr(client.app.state, "southbound", None) is None  # type: ignore[attr-defined]
    hv7 = admin.ok("GET", f"{HOSTS}/hv7")["host"]
    assert hv7["alive"] is True  # it reported just now
    assert (hv7["encap"], hv7["stats_at"], hv7["ports"]) == (None, None, [])
    assert getattr(client.app.state, "southbound", None) is None  # a read creates nothing


def test_tenants_read_their_port_counters(
    admin: Api, alice: Api, bob: Api, vm: dict[str, Any], report: Report
) -> None:
    report("hv1", {"tap1": vm["id"]}, {"tap1": port_stats(rx=5, tx=6, port_security_ip=3)})
    path = f"/v2.0/netvirt/ports/{vm['id']}/counters"
    counters = alice.ok("GET", path)["counters"]
    assert counters == {
        "port_id": vm["id"],
        "host": "hv1",
        "interface": "tap1",
        "alive": True,
        "updated_at": counters["updated_at"],
        **port_stats(rx=5, tx=6, port_security_ip=3),
    }
    assert counters["updated_at"] is not None
    assert admin.ok("GET", path)["counters"] == counters
    status, err = bob.get(path)
    assert status == 404  # another project's port: as if it did not exist
    assert err["NeutronError"]["type"] == "PortNotFound"
    status, err = alice.get("/v2.0/netvirt/ports/nope/counters")
    assert status == 404


def test_a_port_no_host_reports_has_zero_counters(alice: Api, vm: dict[str, Any]) -> None:
    counters = alice.ok("GET", f"/v2.0/netvirt/ports/{vm['id']}/counters")["counters"]
    assert counters["host"] is None
    assert counters["updated_at"] is None
    assert counters["rx_packets"] == counters["tx_bytes"] == 0
    assert counters["drops"] == {}


def test_during_a_migration_the_bound_host_is_the_one_shown(
    alice: Api, vm: dict[str, Any], report: Report, clock: Clock, host: Api
) -> None:
    report("hv1", {"tap1": vm["id"]}, {"tap1": port_stats(rx=100)})
    clock.advance(1)
    report("hv2", {"tapX": vm["id"]}, {"tapX": port_stats(rx=2)})  # now bound to hv2
    clock.advance(1)
    old = stats_doc("hv1", {"tap1": vm["id"]}, {"tap1": port_stats(rx=101)})
    host.ok("POST", f"{SB}/stats", {"chassis": "hv1", "stats": old}, expect=204)  # newer, stale
    counters = alice.ok("GET", f"/v2.0/netvirt/ports/{vm['id']}/counters")["counters"]
    assert (counters["host"], counters["interface"], counters["rx_packets"]) == ("hv2", "tapX", 2)
