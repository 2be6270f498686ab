"""``Binder`` (bindings again only for what changed) equals a fresh ``bind`` after any
sequence of SB changes, plug changes and chassis registrations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netvirt.agent.bindings import Binder, bind
from netvirt.southbound.model import Chassis, PortBinding, SBState

ME = "me"
NAMES = [f"p{i}" for i in range(8)]
IFACES = [f"tap{i}" for i in range(4)]
CHASSIS = ["", ME, "other", "ghost"]  # "ghost" is never registered... unless a step does
TYPES = ["vif", "vif", "vif", "localnet", "patch"]


def _port(name: str, dp: int, kind: Any, requested: str) -> PortBinding:
    return PortBinding(name, NAMES.index(name) + 1, dp, kind, 0xA, (), requested_chassis=requested)


PORT_OP = st.tuples(
    st.just("port"),
    st.sampled_from(NAMES),
    st.integers(1, 3),
    st.sampled_from(TYPES),
    st.sampled_from(CHASSIS),
)
REMOVE_OP = st.tuples(st.just("remove"), st.sampled_from(NAMES))
PLUG_OP = st.tuples(st.just("plug"), st.sampled_from(IFACES), st.sampled_from([*NAMES, "nope"]))
UNPLUG_OP = st.tuples(st.just("unplug"), st.sampled_from(IFACES))
REGISTER_OP = st.tuples(st.just("register"), st.sampled_from(["other", "ghost"]), st.booleans())
STEP = st.tuples(
    st.lists(st.one_of(PORT_OP, REMOVE_OP, PLUG_OP, UNPLUG_OP, REGISTER_OP), max_size=4),
    st.booleans(),  # the caller lost track of the changes (a snapshot): changed=None
)


def _apply(
    sb: SBState, plugs: dict[str, str], ops: list[tuple[Any, ...]]
) -> tuple[SBState, set[str]]:
    ports, registry = dict(sb.ports), dict(sb.chassis)
    changed: set[str] = set()
    for op in ops:
        if op[0] == "port":
            _, name, dp, kind, requested = op
            ports[name] = _port(name, dp, kind, requested)
            changed.add(name)
        elif op[0] == "remove":
            if ports.pop(op[1], None) is not None:
                changed.add(op[1])
        elif op[0] == "plug":
            plugs[op[1]] = op[2]
        elif op[0] == "unplug":
            plugs.pop(op[1], None)
        elif op[2]:  # register
            registry[op[1]] = Chassis(op[1], "geneve", "192.0.2.9")
        else:
            registry.pop(op[1], None)
    return replace(sb, generation=sb.generation + 1, ports=ports, chassis=registry), changed


@settings(max_examples=150, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=10))
def test_binder_equals_a_fresh_bind(steps: list[tuple[list[tuple[Any, ...]], bool]]) -> None:
    sb = SBState(chassis={ME: Chassis(ME, "geneve", "192.0.2.1")})
    plugs: dict[str, str] = {}
    binder = Binder(ME)
    for ops, lost in steps:
        sb, changed = _apply(sb, plugs, ops)
        got = binder.bind(sb, dict(plugs), None if lost else changed)
        assert got == bind(sb, ME, plugs)


def test_only_changed_and_plugged_ports_are_looked_at() -> None:
    """Ports not named as changed keep their previous place, even if the SB (wrongly)
    changed them: the binder trusts the change set it is given."""
    registry = {ME: Chassis(ME, "geneve", "192.0.2.1"), "other": Chassis("other", "geneve", "x")}
    sb = SBState(ports={"p0": _port("p0", 1, "vif", "other")}, chassis=registry)
    binder = Binder(ME)
    assert "p0" in binder.bind(sb, {}, None).remote
    moved = replace(sb, ports={"p0": _port("p0", 1, "vif", "")})
    assert "p0" in binder.bind(moved, {}, set()).remote  # not named: not looked at
    assert "p0" in binder.bind(moved, {}, {"p0"}).unbound
