"""Realization status and ?wait=compiled|installed on writes."""

from __future__ import annotations

import threading
import time

from conftest import Api


def _report(api: Api, component: str, name: str, generation: int) -> None:
    status, body = api.post(
        "/v2.0/netvirt/status/reports",
        {"report": {"component": component, "name": name, "generation": generation}},
    )
    assert status == 204, body


def test_status_reports_generations(admin: Api) -> None:
    r = admin.client.post("/v2.0/networks", json={"network": {}}, headers=admin.headers)
    gen = int(r.headers["X-Netvirt-Generation"])
    _report(admin, "compiler", "central", gen)
    _report(admin, "host", "hv1", gen - 1)
    _report(admin, "host", "hv2", gen)
    status = admin.ok("GET", "/v2.0/netvirt/status")["status"]
    assert status["nb_generation"] == gen
    assert status["compiled_generation"] == gen
    assert status["installed_generation"] == gen - 1  # the slowest host
    assert {h["host"] for h in status["hosts"]} == {"hv1", "hv2"}
    # reports are discovered state: they do not bump the NB generation
    assert admin.ok("GET", "/v2.0/netvirt/status")["status"]["nb_generation"] == gen


def test_wait_times_out_without_compiler(admin: Api) -> None:
    t0 = time.monotonic()
    r = admin.client.post(
        "/v2.0/networks?wait=compiled&timeout=0.3", json={"network": {}}, headers=admin.headers
    )
    assert r.status_code == 201  # the write committed; it is just not live yet
    assert r.headers["X-Netvirt-Realization"] == "timeout"
    assert time.monotonic() - t0 >= 0.3


def test_wait_returns_once_compiled(admin: Api) -> None:
    gen_now = admin.ok("GET", "/v2.0/netvirt/status")["status"]["nb_generation"]

    def compiler() -> None:
        time.sleep(0.2)
        _report(admin, "compiler", "central", gen_now + 1)

    thread = threading.Thread(target=compiler)
    thread.start()
    r = admin.client.post(
        "/v2.0/networks?wait=compiled&timeout=10", json={"network": {}}, headers=admin.headers
    )
    thread.join()
    assert r.status_code == 201
    assert r.headers["X-Netvirt-Generation"] == str(gen_now + 1)
    assert r.headers["X-Netvirt-Realization"] == "realized"


def test_reports_are_admin_only_and_validated(admin: Api, alice: Api) -> None:
    status, _ = alice.post(
        "/v2.0/netvirt/status/reports",
        {"report": {"component": "compiler", "name": "x", "generation": 1}},
    )
    assert status == 403
    status, _ = admin.post(
        "/v2.0/netvirt/status/reports",
        {"report": {"component": "bogus", "name": "x", "generation": -1}},
    )
    assert status == 400
    status, _ = admin.post("/v2.0/networks?wait=deployed", {"network": {}})
    assert status == 400
