"""HttpSB, the agent's SBSource, against a real uvicorn server (and broken peers)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from netvirt.southbound import codec
from netvirt.southbound.diff import apply, diff
from netvirt.southbound.http import HttpSB, SBDisconnected, SBRejected
from netvirt.southbound.model import Chassis
from netvirt.southbound.source import SBDelta
from southbound.conftest import Live
from southbound.topo import small_state


def admin_http(live: Live) -> httpx.Client:
    return httpx.Client(base_url=live.url, headers={"X-Auth-Token": live.admin_token}, timeout=30)


def make_net(http: httpx.Client) -> str:
    net = http.post("/v2.0/networks", json={"network": {"name": "net"}}).json()["network"]
    body = {"subnet": {"network_id": net["id"], "cidr": "10.0.0.0/24"}}
    assert http.post("/v2.0/subnets", json=body).status_code == 201
    return str(net["id"])


def make_port(http: httpx.Client, net_id: str) -> str:
    resp = http.post("/v2.0/ports", json={"port": {"network_id": net_id}})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["port"]["id"])


def test_snapshot_then_long_poll_delta(live: Live) -> None:
    with admin_http(live) as http, HttpSB(live.url, live.host_token) as sb:
        net_id = make_net(http)
        start = sb.snapshot()
        assert start.generation == live.db.generation()
        assert sb.changes(start.generation, timeout=0.3) is None

        ids: list[str] = []
        thread = threading.Thread(
            target=lambda: (time.sleep(0.3), ids.append(make_port(http, net_id)))
        )
        thread.start()
        result = sb.changes(start.generation, timeout=20)
        thread.join()
        assert isinstance(result, SBDelta)
        assert ids[0] in {p.name for p in result.ports}  # type: ignore[attr-defined]
        assert apply(start, result) == sb.snapshot()


def test_reports_reach_the_nb(live: Live) -> None:
    with admin_http(live) as http, HttpSB(live.url, live.host_token) as sb:
        port = make_port(http, make_net(http))
        sb.register_chassis(Chassis("hv1", "geneve", "192.0.2.1"))
        sb.report_port(port, "hv1", up=True)
        seen = http.get(f"/v2.0/ports/{port}").json()["port"]
        assert (seen["binding:host_id"], seen["status"]) == ("hv1", "ACTIVE")
        state = sb.snapshot()
        assert state.chassis["hv1"].ip == "192.0.2.1"
        assert state.ports[port].requested_chassis == "hv1"
        sb.report_installed("hv1", state.generation)
        status = http.get("/v2.0/netvirt/status").json()["status"]
        assert status["hosts"][0]["installed_generation"] == state.generation


def test_refusals_are_sb_rejected(live: Live) -> None:
    with HttpSB(live.url, live.host_token) as sb:
        with pytest.raises(SBRejected) as info:
            sb.report_port("no-such-port", "hv1", up=True)
        assert info.value.status == 404
        assert info.value.type == "PortNotFound"
    with HttpSB(live.url, "wrong") as sb, pytest.raises(SBRejected) as info:
        sb.snapshot()
    assert info.value.status == 401
    with HttpSB(live.url, live.admin_token) as sb, pytest.raises(SBRejected) as info:
        sb.snapshot()
    assert info.value.status == 403


def test_nobody_listening_is_a_disconnect() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with HttpSB(f"http://127.0.0.1:{port}", "t", timeout=2) as sb:
            with pytest.raises(SBDisconnected, match="snapshot"):
                sb.snapshot()
            with pytest.raises(SBDisconnected):
                sb.changes(0, timeout=1)


def mocked(handler: Callable[[httpx.Request], httpx.Response]) -> HttpSB:
    return HttpSB("http://sb.test", "t", transport=httpx.MockTransport(handler))


def reset(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("peer closed connection", request=request)


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize(
    "handler",
    [
        reset,
        read_timeout,
        lambda r: httpx.Response(502, text="bad gateway"),
        lambda r: httpx.Response(200, text="<html>"),
        lambda r: httpx.Response(200, json=[1, 2]),
        lambda r: httpx.Response(200, json={"format": 1, "kind": "state", "generation": 1}),
    ],
)
def test_broken_peers_are_disconnects(handler: Callable[[httpx.Request], httpx.Response]) -> None:
    with mocked(handler) as sb:
        with pytest.raises(SBDisconnected):
            sb.snapshot()
        with pytest.raises(SBDisconnected):
            sb.changes(3, timeout=1)


def test_long_poll_request_carries_a_read_timeout_beyond_the_poll() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["params"] = dict(request.url.params)
        seen["timeout"] = request.extensions["timeout"]["read"]
        seen["token"] = request.headers["X-Auth-Token"]
        return httpx.Response(204)

    with mocked(handler) as sb:
        assert sb.changes(7, timeout=500) is None
    assert seen["params"] == {"since": "7", "timeout": "60.0"}
    assert seen["timeout"] > 60
    assert seen["token"] == "t"


def test_a_delta_document_decodes() -> None:
    old, new = small_state(5, generation=1), small_state(7, generation=2)
    wire = codec.encode_delta(diff(old, new), old, new)
    with mocked(lambda r: httpx.Response(200, json=wire)) as sb:
        result = sb.changes(1, timeout=1)
    assert isinstance(result, SBDelta)
    assert apply(old, result) == new
