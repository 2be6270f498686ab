"""The southbound REST routes: host credentials only, and only there."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import Api
from netvirt.cli.main import app as cli_app
from netvirt.northbound.db import Database
from netvirt.southbound import codec
from netvirt.southbound.diff import apply
from netvirt.southbound.model import Chassis
from netvirt.southbound.source import SBDelta
from southbound.topo import create, network

SB = "/v2.0/netvirt/sb"


def test_host_token_reads_the_snapshot(host: Api, alice: Api) -> None:
    network(alice, "net", "10.0.0.0/24")
    data = host.ok("GET", f"{SB}/snapshot")
    assert data["kind"] == "state"
    assert data["format"] == codec.FORMAT
    state = codec.decode_state(data)
    assert any(dp.kind == "switch" for dp in state.datapaths.values())
    assert state.flows


def test_tenant_and_admin_tokens_are_refused_on_the_sb_api(
    host: Api, admin: Api, alice: Api
) -> None:
    for api in (admin, alice):
        for method, path, body in (
            ("GET", f"{SB}/snapshot", None),
            ("GET", f"{SB}/changes?since=0&timeout=0", None),
            ("POST", f"{SB}/chassis", {"name": "hv9", "encap": "geneve", "ip": "192.0.2.9"}),
            ("POST", f"{SB}/installed", {"chassis": "hv9", "generation": 1}),
        ):
            status, err = api.request(method, path, body)
            assert status == 403, (method, path)
            assert err["NeutronError"]["type"] == "PolicyNotAuthorized"


def test_no_token_is_unauthenticated(client: TestClient) -> None:
    assert client.get(f"{SB}/snapshot").status_code == 401
    assert client.get(f"{SB}/snapshot", headers={"X-Auth-Token": "nope"}).status_code == 401


def test_host_token_is_refused_on_the_tenant_api(host: Api) -> None:
    for path in ("/v2.0/networks", "/v2.0/ports", "/v2.0/netvirt/status", "/v2.0/netvirt/whoami"):
        status, err = host.get(path)
        assert status == 403, path
        assert "southbound" in err["NeutronError"]["message"]
    status, _ = host.post("/v2.0/networks", {"network": {"name": "x"}})
    assert status == 403


def test_register_chassis_then_report_port_and_installed(host: Api, admin: Api, alice: Api) -> None:
    net, _ = network(alice, "net", "10.0.0.0/24")
    port = create(alice, "/v2.0/ports", "port", {"network_id": net["id"]})
    body = {"name": "hv1", "encap": "vxlan", "ip": "192.0.2.1"}
    host.ok("POST", f"{SB}/chassis", body, expect=204)
    state = codec.decode_state(host.ok("GET", f"{SB}/snapshot"))
    assert state.chassis == {"hv1": Chassis("hv1", "vxlan", "192.0.2.1")}

    host.ok("PUT", f"{SB}/ports/{port['id']}", {"chassis": "hv1", "up": True}, expect=204)
    seen = alice.ok("GET", f"/v2.0/ports/{port['id']}")["port"]
    assert seen["binding:host_id"] == "hv1"
    assert seen["status"] == "ACTIVE"

    generation = codec.decode_state(host.ok("GET", f"{SB}/snapshot")).generation
    host.ok("POST", f"{SB}/installed", {"chassis": "hv1", "generation": generation}, expect=204)
    status = admin.ok("GET", "/v2.0/netvirt/status")["status"]
    assert status["hosts"][0]["host"] == "hv1"
    assert status["installed_generation"] == generation


def test_bad_reports_are_400_or_404(host: Api) -> None:
    status, err = host.put(f"{SB}/ports/missing", {"chassis": "hv1", "up": True})
    assert status == 404
    assert err["NeutronError"]["type"] == "PortNotFound"
    bad_bodies = (
        ("POST", "chassis", {"name": "hv1", "encap": "gre", "ip": "192.0.2.1"}),
        ("POST", "chassis", {"name": "hv1", "ip": "not-an-ip"}),
        ("POST", "chassis", {"name": "hv 1", "ip": "192.0.2.1"}),
        ("POST", "installed", {"chassis": "hv1", "generation": -1}),
        ("POST", "installed", {"chassis": "hv1"}),
    )
    for method, path, body in bad_bodies:
        status, err = host.request(method, f"{SB}/{path}", body)
        assert status == 400, body
        assert "Invalid input" in err["NeutronError"]["message"]


def test_changes_answers_204_then_a_delta(host: Api, alice: Api) -> None:
    net, _ = network(alice, "net", "10.0.0.0/24")
    start = codec.decode_state(host.ok("GET", f"{SB}/snapshot"))
    resp = host.client.get(
        f"{SB}/changes", params={"since": start.generation, "timeout": 0.2}, headers=host.headers
    )
    assert resp.status_code == 204
    create(alice, "/v2.0/ports", "port", {"network_id": net["id"]})
    data = host.ok("GET", f"{SB}/changes?since={start.generation}&timeout=5")
    assert data["kind"] == "delta"
    delta = codec.decode(data)
    assert isinstance(delta, SBDelta)
    latest = codec.decode_state(host.ok("GET", f"{SB}/snapshot"))
    assert apply(start, delta) == latest
    status, _ = host.get(f"{SB}/changes", since=0, timeout=61)
    assert status == 400  # a poll is capped at 60 s


def test_cli_creates_host_tokens(db: Database, admin: Api, client: TestClient) -> None:
    result = CliRunner().invoke(
        cli_app, ["admin", "token-create", "admin", "--role", "host", "--db", db.url]
    )
    assert result.exit_code == 0, result.output
    token = json.loads(result.stdout)
    assert token["role"] == "host"
    headers = {"X-Auth-Token": token["token"]}
    assert client.get(f"{SB}/snapshot", headers=headers).status_code == 200
    assert client.get("/v2.0/networks", headers=headers).status_code == 403
