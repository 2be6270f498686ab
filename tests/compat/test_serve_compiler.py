"""`netvirt serve` runs the central compiler: writes become `compiled`, and the trace
endpoint answers from the compiled state — over a real server, with the typed client."""

from __future__ import annotations

import httpx

from netvirt.api.client import NetvirtClient

from .conftest import Server


def test_wait_compiled_returns_realized_and_status_follows(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        headers = {"X-Auth-Token": server.admin_token}
        resp = http.post(
            "/v2.0/networks?wait=compiled&timeout=20", json={"network": {}}, headers=headers
        )
        assert resp.status_code == 201, resp.text
        assert resp.headers["X-Netvirt-Realization"] == "realized"
        generation = int(resp.headers["X-Netvirt-Generation"])
        status = http.get("/v2.0/netvirt/status", headers=headers).json()["status"]
        assert status["compiled_generation"] >= generation


def test_trace_over_the_typed_client(server: Server) -> None:
    with NetvirtClient(server.url, server.admin_token) as client:
        net = client.create_network(name="trace-net")
        client.create_subnet(network_id=net["id"], cidr="10.77.0.0/24")
        a = client.create_port(network_id=net["id"], name="trace-a")
        b = client.create_port(network_id=net["id"], name="trace-b")
        dst = b["fixed_ips"][0]["ip_address"]
        result = client.trace(a["id"], f"ip4.dst == {dst} && udp.dst == 53")
        assert [o["port"] for o in result["outputs"]] == ["trace-b"]
        assert "verdict: output to trace-b" in result["text"]
