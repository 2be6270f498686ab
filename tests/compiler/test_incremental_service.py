"""The compiler service reads only what the change log names and compiles incrementally;
after every API write its SB equals a full load + full compile of the same store."""

from __future__ import annotations

import time
from dataclasses import fields

from tests.conftest import Api

from netvirt.compiler.compile import compile_nb
from netvirt.compiler.lflow import LogicalFlow
from netvirt.compiler.nb import load
from netvirt.compiler.service import SMALL_CHANGE, CompilerService
from netvirt.northbound.db import Database
from netvirt.southbound.model import SBState


def _full(flow: LogicalFlow) -> tuple[object, ...]:
    return tuple(getattr(flow, f.name) for f in fields(flow))


def _same(got: SBState, want: SBState) -> None:
    assert [_full(f) for f in got.flows] == [_full(f) for f in want.flows]
    assert got.ports == want.ports
    assert got.groups == want.groups
    assert got.datapaths == want.datapaths


def test_service_matches_full_compile_after_each_write(db: Database, alice: Api) -> None:
    service = CompilerService(db)
    net = alice.ok("POST", "/v2.0/networks", {"network": {"name": "n1"}})["network"]
    sub = alice.ok(
        "POST",
        "/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4}},
    )["subnet"]
    _same(service.compile_now(), compile_nb(load(db)))
    ports = []
    for i in range(3):
        body = {"port": {"network_id": net["id"], "name": f"p{i}"}}
        ports.append(alice.ok("POST", "/v2.0/ports", body)["port"])
        sb = service.compile_now()
        _same(sb, compile_nb(load(db)))
    assert service._loaded is not None
    assert service._loaded.changed == {"ports": {ports[-1]["id"]}}
    assert service.dirty_since(sb.generation - 1, sb.generation) is not None
    alice.ok("PUT", f"/v2.0/ports/{ports[0]['id']}", {"port": {"security_groups": []}})
    _same(service.compile_now(), compile_nb(load(db)))
    alice.ok("DELETE", f"/v2.0/ports/{ports[1]['id']}")
    _same(service.compile_now(), compile_nb(load(db)))
    group = alice.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "g"}})
    rule = {"security_group_id": group["security_group"]["id"], "direction": "ingress"}
    alice.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": rule})
    _same(service.compile_now(), compile_nb(load(db)))
    alice.ok("PUT", f"/v2.0/subnets/{sub['id']}", {"subnet": {"dns_nameservers": ["10.0.0.2"]}})
    _same(service.compile_now(), compile_nb(load(db)))
    router = alice.ok("POST", "/v2.0/routers", {"router": {"name": "r"}})["router"]
    alice.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    _same(service.compile_now(), compile_nb(load(db)))


def test_a_write_before_the_wait_is_not_missed(db: Database, alice: Api) -> None:
    """The compiler looks at the store, then waits: a write committed in between must end
    the wait at once (it used to cost up to the 0.5 s poll per port create)."""
    seen = db.writes
    alice.ok("POST", "/v2.0/networks", {"network": {"name": "n1"}})
    started = time.monotonic()
    db.wait_changed(5.0, seen)
    assert time.monotonic() - started < 1.0


def test_a_port_create_is_a_small_change(db: Database, alice: Api) -> None:
    """The compiler compiles a port create at once (no waiting for a write burst to end):
    its bulk delete of the port's own address rows does not make it look large."""
    net = alice.ok("POST", "/v2.0/networks", {"network": {"name": "n1"}})["network"]
    body = {"network_id": net["id"], "cidr": "10.0.0.0/24", "ip_version": 4}
    alice.ok("POST", "/v2.0/subnets", {"subnet": body})
    service = CompilerService(db)
    service.compile_now()
    assert service._loaded is not None
    seq = service._loaded.seq
    assert seq is not None
    alice.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}})
    touched = db.touched_count(seq)
    assert touched is not None
    assert 1 <= touched <= SMALL_CHANGE
