"""``POST /v2.0/netvirt/trace`` end to end: API objects → compiler → pipeline → verdict."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Api


@pytest.fixture
def lan(alice: Api) -> dict[str, Any]:
    net = alice.ok("POST", "/v2.0/networks", {"network": {"name": "lan"}})["network"]["id"]
    alice.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.0.0.0/24"}})
    web = alice.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "web"}})[
        "security_group"
    ]["id"]
    alice.ok(
        "POST",
        "/v2.0/security-group-rules",
        {
            "security_group_rule": {
                "security_group_id": web,
                "direction": "ingress",
                "protocol": "tcp",
                "port_range_min": 80,
                "port_range_max": 80,
            }
        },
    )
    ports = {}
    for name, groups in (("vm1", None), ("vm2", None), ("www", [web])):
        body: dict[str, Any] = {"network_id": net, "name": name}
        if groups is not None:
            body["security_groups"] = groups
        ports[name] = alice.ok("POST", "/v2.0/ports", {"port": body})["port"]
    return ports


def _trace(api: Api, port: str, flow: str) -> tuple[int, Any]:
    return api.post("/v2.0/netvirt/trace", {"trace": {"from_port": port, "microflow": flow}})


def _ip(port: dict[str, Any]) -> str:
    return str(port["fixed_ips"][0]["ip_address"])


def test_same_group_traffic_is_delivered_with_provenance(alice: Api, lan: dict[str, Any]) -> None:
    status, body = _trace(alice, "vm1", f"ip4.dst == {_ip(lan['vm2'])} && tcp.dst == 22")
    assert status == 200, body
    trace = body["trace"]
    assert [o["port"] for o in trace["outputs"]] == ["vm2"]
    assert trace["drops"] == []
    stages = [s["stage"] for s in trace["steps"] if s["event"] == "stage"]
    assert stages[0] == "ls_in_port_sec_l2"
    assert "ls_out_acl" in stages
    acl = next(s for s in trace["steps"] if s.get("stage") == "ls_out_acl")
    assert acl["provenance"]["builder"] == "acl"
    assert trace["outputs"][0]["packet"]["tcp.dst"] == 22
    assert "ls_in_l2_lkup" in trace["text"]
    assert "verdict: output to vm2" in trace["text"]


def test_security_group_allows_web_and_denies_ssh(alice: Api, lan: dict[str, Any]) -> None:
    dst = _ip(lan["www"])
    status, body = _trace(alice, "vm1", f"ip4.dst == {dst}, tcp.dst == 80")
    assert status == 200
    assert [o["port"] for o in body["trace"]["outputs"]] == ["www"]
    status, body = _trace(alice, "vm1", f"ip4.dst == {dst}, tcp.dst == 22")
    assert status == 200
    assert body["trace"]["outputs"] == []
    assert body["trace"]["drops"] == ["acl_deny"]
    assert "drop (acl_deny)" in body["trace"]["verdict"]


def test_spoofed_source_is_dropped(alice: Api, lan: dict[str, Any]) -> None:
    status, body = _trace(
        alice, "vm1", f"ip4.src == 10.0.0.99 && ip4.dst == {_ip(lan['vm2'])} && udp.dst == 53"
    )
    assert status == 200
    assert body["trace"]["drops"] == ["port_security_ip"]


def test_arp_for_a_neighbour_is_answered_locally(alice: Api, lan: dict[str, Any]) -> None:
    status, body = _trace(alice, "vm1", f"arp && arp.tpa == {_ip(lan['vm2'])}")
    assert status == 200, body
    outputs = body["trace"]["outputs"]
    assert [o["port"] for o in outputs] == ["vm1"]  # the reply comes back to the asker
    assert outputs[0]["packet"]["arp.op"] == 2
    assert outputs[0]["packet"]["arp.sha"] == lan["vm2"]["mac_address"]


def test_dhcp_discover_gets_an_offer(alice: Api, lan: dict[str, Any]) -> None:
    status, body = _trace(alice, "vm1", "udp.src == 68 && udp.dst == 67")
    assert status == 200, body
    outputs = body["trace"]["outputs"]
    assert [o["port"] for o in outputs] == ["vm1"]
    assert outputs[0]["packet"]["udp.src"] == 67


def test_tenancy_and_bad_input(alice: Api, bob: Api, lan: dict[str, Any]) -> None:
    status, body = _trace(bob, lan["vm1"]["id"], "ip4.dst == 10.0.0.3")
    assert status == 404
    status, body = _trace(alice, "vm1", "ip4.dst == ")
    assert status == 400
    assert body["NeutronError"]["type"] == "InvalidTrace"
    status, body = _trace(alice, "vm1", "tcp.dst == 80")
    assert status == 400
    assert "ip4.dst" in body["NeutronError"]["message"]
