"""InMemorySB: long-polls, deltas by generation, chassis, and reports into the NB."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from conftest import Api
from netvirt.compiler.service import CompilerService
from netvirt.northbound.db import Database
from netvirt.northbound.errors import InvalidInput, NotFound
from netvirt.southbound.diff import apply
from netvirt.southbound.memory import InMemorySB
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBDelta
from southbound.topo import create, network


def later(delay: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def net_id(alice: Api) -> str:
    net, _ = network(alice, "net", "10.0.0.0/24")
    return str(net["id"])


def new_port(alice: Api, net_id: str, name: str = "vm") -> str:
    return str(create(alice, "/v2.0/ports", "port", {"network_id": net_id, "name": name})["id"])


def test_long_poll_wakes_with_a_delta(service: InMemorySB, alice: Api, net_id: str) -> None:
    start = service.snapshot()
    ids: list[str] = []
    thread = later(0.3, lambda: ids.append(new_port(alice, net_id)))
    t0 = time.monotonic()
    result = service.changes(start.generation, timeout=10)
    waited = time.monotonic() - t0
    thread.join()
    assert isinstance(result, SBDelta)
    assert waited >= 0.25
    assert result.base == start.generation
    assert ids[0] in {p.name for p in result.ports}  # type: ignore[attr-defined]
    assert apply(start, result) == service.snapshot()


def test_long_poll_times_out_with_none(service: InMemorySB, net_id: str) -> None:
    current = service.snapshot().generation
    t0 = time.monotonic()
    assert service.changes(current, timeout=0.4) is None
    assert time.monotonic() - t0 >= 0.4


def test_behind_by_one_write_gets_a_delta_at_once(
    service: InMemorySB, alice: Api, net_id: str
) -> None:
    start = service.snapshot()
    new_port(alice, net_id)
    t0 = time.monotonic()
    result = service.changes(start.generation, timeout=10)
    assert time.monotonic() - t0 < 5
    assert isinstance(result, SBDelta)
    assert service.poll_changes(start.generation, 0) is service.poll_changes(start.generation, 0)


def test_too_old_or_unknown_since_gets_the_full_state(
    db: Database, alice: Api, net_id: str
) -> None:
    service = InMemorySB(CompilerService(db), history=2)
    start = service.snapshot()
    for n in range(3):
        new_port(alice, net_id, f"vm{n}")
        service.snapshot()
    kept = service.snapshot().generation
    new_port(alice, net_id, "unseen")  # compiled together with the next write: never served
    new_port(alice, net_id, "last")
    latest = service.snapshot()
    assert service.state_at(start.generation) is None  # left the history
    for since in (start.generation, latest.generation - 1, latest.generation + 5, 0):
        result = service.changes(since, timeout=0)
        assert isinstance(result, SBState), since
        assert result == latest
    assert isinstance(service.changes(kept, timeout=0), SBDelta)


def test_report_port_binds_and_sets_status(
    service: InMemorySB, db: Database, alice: Api, net_id: str
) -> None:
    port = new_port(alice, net_id)
    generation = db.generation()

    service.report_port(port, "hv1", up=True)
    seen = alice.ok("GET", f"/v2.0/ports/{port}")["port"]
    assert seen["binding:host_id"] == "hv1"
    assert seen["status"] == "ACTIVE"
    assert db.generation() == generation + 1  # the binding is desired state
    assert service.snapshot().ports[port].requested_chassis == "hv1"

    service.report_port(port, "hv1", up=False)
    seen = alice.ok("GET", f"/v2.0/ports/{port}")["port"]
    assert seen["status"] == "DOWN"
    assert db.generation() == generation + 1  # link state is discovered: no bump
    assert service.bindings()[port] == ("hv1", False)

    service.report_port(port, "hv1", up=False)  # nothing new: no write at all
    again = alice.ok("GET", f"/v2.0/ports/{port}")["port"]
    assert again["revision_number"] == seen["revision_number"]


def test_report_port_of_unknown_port_is_not_found(service: InMemorySB) -> None:
    with pytest.raises(NotFound):
        service.report_port("no-such-port", "hv1", up=True)


def test_chassis_registration_reaches_agents(
    service: InMemorySB, db: Database, net_id: str
) -> None:
    start = service.snapshot()
    hv1 = Chassis("hv1", "geneve", "192.0.2.1")
    service.register_chassis(hv1)
    result = service.changes(start.generation, timeout=5)
    assert isinstance(result, SBDelta)
    assert result.chassis == (hv1,)
    assert service.snapshot().chassis == {"hv1": hv1}
    generation = db.generation()
    service.register_chassis(hv1)  # unchanged: no new generation
    assert db.generation() == generation
    with pytest.raises(InvalidInput):
        service.register_chassis(Chassis("hv2", "gre", "192.0.2.2"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        service.register_chassis(Chassis("hv2", "vxlan", "not-an-ip"))


def test_report_installed_shows_in_status_and_releases_wait(
    service: InMemorySB, db: Database, admin: Api, alice: Api, net_id: str
) -> None:
    service.report_installed("hv1", service.snapshot().generation)
    status = admin.ok("GET", "/v2.0/netvirt/status")["status"]
    assert [h["host"] for h in status["hosts"]] == ["hv1"]
    assert status["hosts"][0]["installed_generation"] == db.generation()
    before = db.generation()

    def agent() -> None:
        """Wait for the write, take the delta (which compiles), install, report."""
        while db.generation() == before:
            time.sleep(0.02)
        result = service.changes(before, timeout=10)
        assert result is not None
        service.report_installed("hv1", result.generation)

    thread = later(0, agent)
    resp = alice.client.post(
        "/v2.0/networks?wait=installed&timeout=20",
        json={"network": {"name": "waited"}},
        headers=alice.headers,
    )
    thread.join()
    assert resp.status_code == 201
    assert resp.headers["X-Netvirt-Realization"] == "realized"
    status = admin.ok("GET", "/v2.0/netvirt/status")["status"]
    assert status["installed_generation"] == int(resp.headers["X-Netvirt-Generation"])


def test_stale_down_report_does_not_undo_a_migration(db: Database, admin: Api) -> None:
    """hostA unplugs a VM after it moved to hostB: the late 'down' must not rebind it."""
    net = admin.ok("POST", "/v2.0/networks", {"network": {}})["network"]["id"]
    admin.ok("POST", "/v2.0/subnets", {"subnet": {"network_id": net, "cidr": "10.0.0.0/24"}})
    port = admin.ok("POST", "/v2.0/ports", {"port": {"network_id": net}})["port"]["id"]
    sb = InMemorySB(CompilerService(db))
    sb.report_port(port, "hostA", True)
    sb.report_port(port, "hostB", True)
    sb.report_port(port, "hostA", False)
    body = admin.ok("GET", f"/v2.0/ports/{port}")["port"]
    assert body["binding:host_id"] == "hostB"
    assert body["status"] == "ACTIVE"
