"""``netvirt host list|show`` and ``netvirt port counters`` over the API."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from cli.conftest import Cli
from conftest import Api
from netvirt.northbound.db import Database
from southbound.stats_support import mint_host_token, port_stats, stats_doc

SB = "/v2.0/netvirt/sb"


@pytest.fixture
def vm_id(cli: Cli, alice: Api) -> str:
    cli.ok("network", "create", "web", token=alice.token)
    cli.ok(
        "subnet",
        "create",
        "web-sub",
        "--network",
        "web",
        "--cidr",
        "10.0.0.0/24",
        token=alice.token,
    )
    return str(cli.json("port", "create", "vm1", "--network", "web", token=alice.token)["id"])


@pytest.fixture
def reported(client: TestClient, db: Database, admin: Api, vm_id: str) -> dict[str, Any]:
    """hv1 registered, running vm1 on tap1, with a few drops."""
    host = Api(client, mint_host_token(db), "admin")
    host.ok("POST", f"{SB}/chassis", {"name": "hv1", "ip": "192.0.2.1"}, expect=204)
    host.ok("PUT", f"{SB}/ports/{vm_id}", {"chassis": "hv1", "up": True}, expect=204)
    generation = host.ok("GET", f"{SB}/snapshot")["generation"]
    host.ok("POST", f"{SB}/installed", {"chassis": "hv1", "generation": generation}, expect=204)
    doc = stats_doc("hv1", {"tap1": vm_id}, {"tap1": port_stats(rx=12, tx=34, acl_deny=5)})
    host.ok("POST", f"{SB}/stats", {"chassis": "hv1", "stats": doc}, expect=204)
    return doc


def test_host_list_and_show(cli: Cli, reported: dict[str, Any], vm_id: str) -> None:
    hosts = cli.json("host", "list")
    assert [(h["name"], h["state"], h["underlay_ip"]) for h in hosts] == [
        ("hv1", "UP", "192.0.2.1")
    ]
    table = cli.ok("host", "list")
    assert "hv1" in table
    assert "UP" in table
    assert cli.json("host", "show", "hv1")["ports"][0]["port_id"] == vm_id
    shown = cli.ok("host", "show", "hv1")
    for text in ("Ports", "tap1", "Tunnel", "Drops", "acl_deny", "denied by a security group"):
        assert text in shown, text


def test_hosts_need_an_admin(cli: Cli, alice: Api, reported: dict[str, Any]) -> None:
    assert cli.fails("host", "list", token=alice.token) == (
        "error: This operation is restricted to admins."
    )
    assert cli.fails("host", "show", "hv9") == "error: Host hv9 could not be found."


def test_port_counters_by_name(cli: Cli, alice: Api, bob: Api, reported: dict[str, Any]) -> None:
    counters = cli.json("port", "counters", "vm1", token=alice.token)
    assert (counters["host"], counters["rx_packets"], counters["tx_bytes"]) == ("hv1", 12, 3400)
    assert counters["drops"] == {"acl_deny": 5}
    out = cli.ok("port", "counters", "vm1", token=alice.token)
    assert "rx_packets" in out
    assert "acl_deny" in out
    line = cli.fails("port", "counters", "vm1", token=bob.token)
    assert "vm1" in line  # bob cannot see alice's port


def test_port_counters_without_a_report_say_so(cli: Cli, alice: Api, vm_id: str) -> None:
    out = cli.ok("port", "counters", vm_id, token=alice.token)
    assert "No host reports this port yet" in out
