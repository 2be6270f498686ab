"""Incremental == recompute: whatever SB states an agent went through, and however they
reached it (deltas, full states, gaps), what it installed equals what a fresh
computation from the newest state wants, and its classifier answers like one
built from scratch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.agent_support import FakePort, FakeSB, sb_diff
from compiler.conftest import NBBuilder, make_id
from netvirt.agent import Agent
from netvirt.agent.bindings import bind
from netvirt.agent.physical import compute
from netvirt.agent.reconcile import Reconciler, SBMirror, divergence
from netvirt.compiler.compile import compile_nb
from netvirt.dataplane.classifier import Classifier
from netvirt.dataplane.fields import BY_NAME, NUM_FIELDS
from netvirt.dataplane.flow import Rule
from netvirt.southbound.model import Chassis, SBState
from netvirt.state.memory import MemoryStore

PORTS = [f"p{i}" for i in range(6)]
NETS = {"net1": (101, "10.0.0"), "net2": (102, "10.0.1"), "net3": (103, "10.0.2")}
HOST_B = Chassis("hostB", "geneve", "192.0.2.2")

port_spec = st.tuples(
    st.sampled_from(sorted(NETS)),
    st.sampled_from(["hostA", "hostA", "hostB", "", "ghost"]),
    st.booleans(),  # in the web group
)
worlds = st.fixed_dictionaries(
    {
        "ports": st.dictionaries(st.sampled_from(PORTS), port_spec, min_size=1, max_size=6),
        "web_port": st.sampled_from([80, 443]),
        "router": st.booleans(),
        "plugged": st.sets(st.sampled_from(PORTS), min_size=2),
        "mode": st.sampled_from(["delta", "full", "gap"]),
    }
)


def build(world: dict[str, Any]) -> SBState:
    nbb = NBBuilder()
    nets, subnets = {}, {}
    for name, (vni, prefix) in NETS.items():
        nets[name] = nbb.network(name, vni, project="p2" if name == "net3" else "p1")
        subnets[name] = nbb.subnet(nets[name], f"{name}-s", f"{prefix}.0/24")
    default = nbb.default_group()
    web = nbb.security_group("web")
    port = world["web_port"]
    nbb.rule(web, "ingress", protocol="tcp", port_range_min=port, port_range_max=port)
    for i, (name, (net, host, in_web)) in enumerate(sorted(world["ports"].items())):
        ips = [(subnets[net], f"{NETS[net][1]}.{10 + i}")]
        groups = [web] if in_web else [default]
        nbb.port(nets[net], name, ips, sgs=groups, **{"binding:host_id": host})
    if world["router"]:
        router = nbb.router("r1")
        for net in ("net1", "net2"):
            nbb.router_interface(router, nets[net], subnets[net])
    return compile_nb(nbb.snapshot())


def key_for(rule: Rule) -> list[int]:
    key = [0] * NUM_FIELDS
    for m in rule.match:
        key[BY_NAME[m.field].index] |= m.value
    return key


def assert_same_lookups(incremental: Classifier, desired: Sequence[Rule]) -> None:
    """Both classifiers answer every rule-derived key with a best rule of the reference
    model, and with the same actions when the best rules agree on them."""
    fresh = Classifier()
    fresh.apply(add=desired)
    for rule in desired[:: max(1, len(desired) // 150)]:
        key = key_for(rule)
        hits = [r for r in desired if r.table == rule.table and r.matches(key)]
        if not hits:
            continue  # an unsatisfiable rule
        best = max(r.priority for r in hits)
        actions = {r.actions for r in hits if r.priority == best}
        for classifier in (incremental, fresh):
            got = classifier.lookup(rule.table, key)
            assert got is not None
            assert got.priority == best
            if len(actions) == 1:
                assert got.actions in actions


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(worlds, min_size=1, max_size=4))
def test_installed_equals_recompute_after_any_sequence(sequence: list[dict[str, Any]]) -> None:
    sb = FakeSB()
    sb.chassis["hostB"] = HOST_B
    taps = {name: FakePort(f"tap-{name}") for name in PORTS}
    agent = Agent("hostA", "geneve", "192.0.2.1", sb, MemoryStore(), [], _NoTunnel(), lambda: 1.0)
    for world in sequence:
        sb.mode = world["mode"]
        sb.publish(build(world))
        for name in PORTS:
            if name in world["plugged"] and taps[name].name not in agent.plugs:
                agent.plug(taps[name], _port_id(name))
            elif name not in world["plugged"] and taps[name].name in agent.plugs:
                agent.unplug(taps[name].name)
        result = agent.step()
        assert result.error is None
        assert result.installed_generation == sb.generation
        current = sb.current
        plugs = {iface: p.logical_port for iface, p in agent.plugs.items()}
        fresh = compute(current, bind(current, "hostA", plugs))
        installed = agent.installed
        assert not divergence(installed.classifier, fresh.rules)
        assert installed.physical.topology.ports == fresh.topology.ports
        assert installed.physical.topology.groups == fresh.topology.groups
        assert (installed.physical.local, installed.physical.remote) == (fresh.local, fresh.remote)
        assert_same_lookups(installed.classifier, fresh.rules)
        event(f"installed rules: {min(len(fresh.rules) // 200, 3) * 200}+")


def _port_id(name: str) -> str:
    return make_id("port", name)


class _NoTunnel:
    def send(self, remote: str, vni: int, item: bytes, ingress: int = 0, egress: int = 0) -> int:
        raise AssertionError("no packets in this test")


def test_reconciler_changes_only_the_difference() -> None:
    world: dict[str, Any] = {
        "ports": {"p0": ("net1", "hostA", False), "p1": ("net1", "hostB", True)},
        "web_port": 80,
        "router": False,
    }
    first = build(world)
    plugs = {"tap-p0": _port_id("p0")}
    rules_1 = compute(first, bind(first, "hostA", plugs)).rules
    second = build(world | {"web_port": 443})
    rules_2 = compute(second, bind(second, "hostA", plugs)).rules
    classifier = Classifier()
    reconciler = Reconciler(classifier)
    assert reconciler.reconcile(rules_1).added == len(rules_1)
    delta = reconciler.reconcile(rules_2)
    changed = set(rules_1) ^ set(rules_2)
    assert 0 < delta.added + delta.removed == len(changed) < len(rules_1)
    assert reconciler.reconcile(rules_2) == (0, 0)
    classifier.discard(rules_2[0])  # someone else touched the classifier: revalidate
    assert reconciler.reconcile(rules_2) == (1, 0)
    assert reconciler.stats.repairs == 1
    assert not divergence(classifier, rules_2)


def test_mirror_refuses_gaps_and_never_shares_the_source_state() -> None:
    world: dict[str, Any] = {"ports": {"p0": ("net1", "hostA", False)}, "web_port": 80}
    one = replace(build(world | {"router": False}), generation=1)
    two = replace(build(world | {"router": True}), generation=2)
    mirror = SBMirror()
    assert not mirror.apply(sb_diff(one, two))  # nothing loaded yet
    mirror.load(one)
    one.ports.clear()
    assert mirror.state().ports  # a copy, not the source's dicts
    gap = replace(sb_diff(one, two), base=0)
    assert not mirror.apply(gap)
    assert mirror.generation == 1
    assert mirror.apply(sb_diff(build(world | {"router": False}), two))
    mirrored = mirror.state()
    assert (mirrored.generation, mirrored.ports, mirrored.groups) == (2, two.ports, two.groups)
    assert set(mirrored.flows) == set(two.flows)
    mirror.invalidate()
    assert not mirror.loaded
