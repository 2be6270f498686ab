"""apply(old, diff(old, new)) == new on real compiled states, before and after random
API changes (Hypothesis drives the changes; compiles are full recomputes)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import Api
from netvirt.northbound.db import Database
from netvirt.southbound import codec
from netvirt.southbound.diff import DeltaMismatch, NotDiffable, apply, diff, is_empty
from netvirt.southbound.model import Chassis, MacBinding, SBState
from southbound.topo import compile_db, create, network, tenant


@dataclass
class World:
    """A tenant that random operations mutate through the API."""

    db: Database
    admin: Api
    alice: Api
    objs: dict[str, Any]
    nets: list[dict[str, Any]] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    plugged: set[str] = field(default_factory=set)

    def compile(self) -> SBState:
        return compile_db(self.db)

    def add_port(self, n: int) -> None:
        net = self.nets[n % len(self.nets)]
        port = create(self.alice, "/v2.0/ports", "port", {"network_id": net["id"]})
        self.ports.append(port["id"])

    def delete_port(self, n: int) -> None:
        if self.ports:
            self.alice.ok("DELETE", f"/v2.0/ports/{self.ports.pop(n % len(self.ports))}")

    def add_rule(self, n: int) -> None:
        body = {"security_group_id": self.objs["web"]["id"], "direction": "ingress"}
        body |= {"protocol": "udp", "port_range_min": n, "port_range_max": n + n % 7}
        status, data = self.alice.post("/v2.0/security-group-rules", {"security_group_rule": body})
        if status != 409:  # the same rule twice is SecurityGroupRuleExists
            assert status == 201, data
            self.rules.append(data["security_group_rule"]["id"])

    def delete_rule(self, n: int) -> None:
        if self.rules:
            rule = self.rules.pop(n % len(self.rules))
            self.alice.ok("DELETE", f"/v2.0/security-group-rules/{rule}")

    def add_network(self, n: int) -> None:
        if len(self.nets) < 4:
            cidr = f"10.{100 + len(self.nets)}.0.0/24"
            net, sub = network(self.alice, f"net{len(self.nets)}", cidr)
            self.nets.append(net | {"subnets": [sub["id"]]})

    def bind(self, n: int) -> None:
        if self.ports:
            port = self.ports[n % len(self.ports)]
            body = {"port": {"binding:host_id": f"hv{n % 3}"}}
            self.admin.ok("PUT", f"/v2.0/ports/{port}", body)

    def toggle_interface(self, n: int) -> None:
        net = self.nets[n % len(self.nets)]
        if net["id"] == self.objs["net"]["id"]:
            return
        action = "remove" if net["id"] in self.plugged else "add"
        subnet = net["subnets"][0]
        path = f"/v2.0/routers/{self.objs['router']['id']}/{action}_router_interface"
        self.alice.ok("PUT", path, {"subnet_id": subnet})
        self.plugged ^= {net["id"]}


OPS = [
    "add_port",
    "delete_port",
    "add_rule",
    "delete_rule",
    "add_network",
    "bind",
    "toggle_interface",
]
changes = st.lists(st.tuples(st.sampled_from(OPS), st.integers(1, 5000)), min_size=1, max_size=4)


@pytest.fixture
def world(db: Database, admin: Api, alice: Api) -> World:
    objs = tenant(admin, alice)
    net = alice.ok("GET", f"/v2.0/networks/{objs['net']['id']}")["network"]
    return World(db, admin, alice, objs, nets=[net])


def assert_moves(old: SBState, new: SBState) -> None:
    delta = diff(old, new)
    moved = apply(old, delta)
    assert moved == new
    assert [f.provenance for f in moved.flows] == [f.provenance for f in new.flows]
    assert delta.base == old.generation
    assert delta.generation == new.generation


@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking a shared world misleads
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=changes)
def test_apply_diff_reaches_the_new_state(world: World, ops: list[tuple[str, int]]) -> None:
    """Examples share the world, so it grows; each checks both directions."""
    before = world.compile()
    for name, n in ops:
        getattr(world, name)(n)
    after = world.compile()
    assert_moves(before, after)
    assert_moves(after, before)
    # what an HTTP agent does: both sides in wire form
    old_w, new_w = codec.wire_form(before), codec.wire_form(after)
    assert apply(old_w, diff(old_w, new_w)) == new_w


def test_unchanged_state_gives_an_empty_delta(world: World) -> None:
    sb = world.compile()
    again = replace(world.compile(), generation=sb.generation + 1)
    delta = diff(sb, again)
    assert is_empty(delta)
    assert apply(sb, delta) == again


def test_provenance_change_alone_replaces_the_flow(world: World) -> None:
    sb = world.compile()
    flow = sb.flows[0]
    renamed = replace(flow, provenance=replace(flow.provenance, note="moved"))
    new = replace(sb, generation=sb.generation + 1, flows=[renamed, *sb.flows[1:]])
    delta = diff(sb, new)
    assert delta.flows == (renamed,)
    assert delta.flows_removed == (flow,)
    assert apply(sb, delta).flows[0].provenance.note == "moved"


def test_chassis_changes_travel(world: World) -> None:
    sb = world.compile()
    sb.chassis = {"hv1": Chassis("hv1", "geneve", "192.0.2.1")}
    new = replace(
        sb, generation=sb.generation + 1, chassis={"hv2": Chassis("hv2", "vxlan", "192.0.2.2")}
    )
    delta = diff(sb, new)
    assert delta.chassis_removed == ("hv1",)
    assert delta.chassis == (Chassis("hv2", "vxlan", "192.0.2.2"),)
    assert apply(sb, delta) == new


def test_apply_refuses_a_delta_from_another_base_and_leaves_input_alone(world: World) -> None:
    old = world.compile()
    world.add_port(0)
    new = world.compile()
    delta = diff(old, new)
    flows_before = list(old.flows)
    ports_before = dict(old.ports)
    apply(old, delta)
    assert old.flows == flows_before
    assert old.ports == ports_before
    with pytest.raises(DeltaMismatch):
        apply(new, delta)


def test_mac_binding_changes_are_not_diffable(world: World) -> None:
    sb = world.compile()
    binding = MacBinding(world.ports[0] if world.ports else "p", "10.0.0.9", 1)
    new = replace(sb, mac_bindings={("p", "10.0.0.9"): binding})
    with pytest.raises(NotDiffable):
        diff(sb, new)
