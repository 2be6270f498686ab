"""The incremental paths from an API write to a host's delta, against their references,
over random write sequences through the API:

* the compiler service (incremental NB read, lookups carried between compiles, bindings
  patched, flows held as chunks) equals a full load + full compile;
* the per-chassis view index moved by the rebuilt bindings equals
  ``relevant_datapaths`` of the whole state;
* a view delta (ports compared by the names the compiler rebuilt) applied to the
  previous view gives the newest view.
"""

from __future__ import annotations

import random
from dataclasses import fields

import pytest

from conftest import Api
from netvirt.compiler.lflow import LogicalFlow
from netvirt.compiler.service import CompilerService
from netvirt.northbound.db import Database
from netvirt.southbound.diff import apply
from netvirt.southbound.memory import InMemorySB, relevant_datapaths
from netvirt.southbound.model import SBState
from netvirt.southbound.source import SBDelta
from southbound.topo import compile_db, create, network

HOSTS = ("hv1", "hv2", "")


def _full(flow: LogicalFlow) -> tuple[object, ...]:
    return tuple(getattr(flow, f.name) for f in fields(flow))


def _same(got: SBState, want: SBState) -> None:
    assert [_full(f) for f in got.flows] == [_full(f) for f in want.flows]
    assert (got.ports, got.groups, got.datapaths) == (want.ports, want.groups, want.datapaths)


class World:
    """Networks, ports and one router, changed at random through the API."""

    def __init__(self, admin: Api, rng: random.Random) -> None:
        self.api, self.rng = admin, rng
        self.nets = [network(admin, f"n{i}", f"10.{i}.0.0/24") for i in range(3)]
        self.ports: list[str] = []
        self.router: str | None = None
        group = create(admin, "/v2.0/security-groups", "security_group", {"name": "g"})
        self.group = str(group["id"])
        rule = {"security_group_id": self.group, "direction": "ingress"}
        create(admin, "/v2.0/security-group-rules", "security_group_rule", rule)

    def step(self) -> None:
        op = self.rng.choice(("add", "add", "add", "move", "delete", "group", "router"))
        if op == "add" or not self.ports:
            net, _ = self.rng.choice(self.nets)
            body = {"network_id": net["id"], "binding:host_id": self.rng.choice(HOSTS)}
            self.ports.append(str(create(self.api, "/v2.0/ports", "port", body)["id"]))
        elif op == "move":
            port = self.rng.choice(self.ports)
            body = {"port": {"binding:host_id": self.rng.choice(HOSTS)}}
            self.api.ok("PUT", f"/v2.0/ports/{port}", body)
        elif op == "delete":
            port = self.ports.pop(self.rng.randrange(len(self.ports)))
            self.api.ok("DELETE", f"/v2.0/ports/{port}")
        elif op == "group":
            port = self.rng.choice(self.ports)
            groups = [self.group] if self.rng.random() < 0.5 else []
            self.api.ok("PUT", f"/v2.0/ports/{port}", {"port": {"security_groups": groups}})
        elif self.router is None:
            router = create(self.api, "/v2.0/routers", "router", {"name": "r"})
            self.router = str(router["id"])
            _, sub = self.nets[0]
            path = f"/v2.0/routers/{self.router}/add_router_interface"
            self.api.ok("PUT", path, {"subnet_id": sub["id"]})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_paths_equal_their_references(db: Database, admin: Api, seed: int) -> None:
    compiler = CompilerService(db)
    service = InMemorySB(compiler, poll=0.01)
    world = World(admin, random.Random(seed))
    views = {host: service.snapshot(host) for host in ("hv1", "hv2")}
    for _ in range(25):
        world.step()
        whole = service.refresh()
        _same(whole, compile_db(db))
        for host, mirror in views.items():
            dps, view = service.view(whole, host)
            want = relevant_datapaths(whole, host)
            assert dps == want
            assert view.flows == [f for f in whole.flows if f.datapath in want]
            change = service.changes(mirror.generation, 0.0, host)
            if isinstance(change, SBDelta):
                mirror = apply(mirror, change)
                assert mirror == view
            else:
                assert change is None or change == view
                mirror = view
            views[host] = mirror
