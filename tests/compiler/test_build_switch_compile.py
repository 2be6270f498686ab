"""compile_nb invariants: defaults everywhere, determinism, validity, tenancy, provenance."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.conftest import NBBuilder
from netvirt.compiler.build import acl, arp_nd, dhcp, l2, lb, port_security, qos
from netvirt.compiler.compile import compile_nb, conflicts
from netvirt.compiler.expr.ast import And, Cmp, Const, Expr, Not, Or
from netvirt.compiler.expr.normalize import to_matches
from netvirt.compiler.lflow import LogicalFlow
from netvirt.compiler.nb import NBSnapshot
from netvirt.compiler.stages import pipeline_stages
from netvirt.dataplane.actions import SetField
from netvirt.southbound.model import SBState

SWITCH_BUILDERS = {m.BUILDER for m in (port_security, acl, lb, arp_nd, dhcp, qos, l2)}
SWITCH_STAGES = [s.name for p in ("ingress", "egress") for s in pipeline_stages("switch", p)]


def rich(nbb: NBBuilder, project: str = "p1", vni: int = 101, prefix: str = "") -> NBSnapshot:
    """One network with a bit of every switch feature."""
    net = nbb.network(f"{prefix}net", vni, project)
    v4 = nbb.subnet(net, f"{prefix}sub4", "10.0.0.0/24", dns_nameservers=["10.0.0.2"])
    v6 = nbb.subnet(net, f"{prefix}sub6", "2001:db8::/64", ipv6_ra_mode="slaac")
    group = nbb.default_group(project, f"{prefix}default")
    web = nbb.security_group(f"{prefix}web", project)
    nbb.rule(web, "ingress", protocol="tcp", port_range_min=80, port_range_max=80)
    gold = nbb.qos_policy(f"{prefix}gold", dscp=10, project=project)
    nbb.port(net, f"{prefix}vm1", [(v4, "10.0.0.5"), (v6, "2001:db8::5")], sgs=[group, web])
    nbb.port(net, f"{prefix}vm2", [(v4, "10.0.0.6")], sgs=[group], qos_policy_id=gold["id"])
    router = nbb.router(f"{prefix}r1", project)
    nbb.router_interface(router, net, v4)
    nbb.router_interface(router, net, v6)
    balancer = nbb.loadbalancer(f"{prefix}lb", net, v4, "10.0.0.100")
    pool = nbb.pool(nbb.listener(balancer, f"{prefix}http", "HTTP", 80), f"{prefix}pool")
    nbb.member(pool, "10.0.0.5", 8080)
    return nbb.snapshot()


@pytest.fixture
def nb(nbb: NBBuilder) -> NBSnapshot:
    return rich(nbb)


def _full(flow: LogicalFlow) -> tuple[object, ...]:
    """Every field of a flow, provenance included (LogicalFlow equality ignores it)."""
    return tuple(getattr(flow, f.name) for f in fields(flow))


def _switch_flows(sb: SBState) -> list[LogicalFlow]:
    return [f for f in sb.flows if sb.datapaths[f.datapath].kind == "switch"]


def test_every_switch_stage_has_a_default(nb: NBSnapshot) -> None:
    sb = compile_nb(nb)
    for dp in (d for d in sb.datapaths.values() if d.kind == "switch"):
        defaults = {
            f.stage.name
            for f in sb.flows
            if f.datapath == dp.key and f.priority == 0 and f.match == Const(True)
        }
        assert defaults == set(SWITCH_STAGES)


def test_switch_stage_defaults_are_unique(nb: NBSnapshot) -> None:
    sb = compile_nb(nb)
    zero = [(f.datapath, f.stage.name) for f in _switch_flows(sb) if f.priority == 0]
    assert len(zero) == len(set(zero))


def test_compile_is_deterministic(nb: NBSnapshot) -> None:
    first, second = compile_nb(nb), compile_nb(nb)
    assert [_full(f) for f in first.flows] == [_full(f) for f in second.flows]
    assert first.ports == second.ports
    assert first.groups == second.groups
    assert first.generation == nb.generation


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_compile_ignores_snapshot_order(seed: int) -> None:
    nb = rich(NBBuilder())
    expected = [_full(f) for f in compile_nb(nb).flows]
    shuffler = random.Random(seed)
    for name in ("networks", "subnets", "ports", "security_groups", "qos_policies"):
        shuffler.shuffle(getattr(nb, name))
    for group in nb.security_groups:
        shuffler.shuffle(group["security_group_rules"])
    shuffler.shuffle(nb.members)
    assert [_full(f) for f in compile_nb(nb).flows] == expected


def test_no_ambiguous_flows(nb: NBSnapshot) -> None:
    assert conflicts(compile_nb(nb).flows) == []


def test_every_switch_match_translates(nb: NBSnapshot) -> None:
    """Every match is valid for the symbol table and expands to classifier matches."""
    sb = compile_nb(nb)
    for flow in _switch_flows(sb):
        assert to_matches(flow.match, sb.port_key) or flow.match == Const(False), flow


def test_switch_flows_carry_provenance(nb: NBSnapshot) -> None:
    sb = compile_nb(nb)
    known = {p["id"] for p in nb.ports} | {n["id"] for n in nb.networks}
    known |= {r["id"] for g in nb.security_groups for r in g["security_group_rules"]}
    known |= {s["id"] for s in nb.subnets} | {q["id"] for q in nb.qos_policies}
    known |= {listener["id"] for listener in nb.listeners}
    for flow in _switch_flows(sb):
        assert flow.provenance.builder in SWITCH_BUILDERS
        assert flow.provenance.nb_id in known, flow.provenance


def _cmps(expr: Expr) -> Iterator[Cmp]:
    if isinstance(expr, Cmp):
        yield expr
    elif isinstance(expr, And | Or):
        for term in expr.terms:
            yield from _cmps(term)
    elif isinstance(expr, Not):
        yield from _cmps(expr.term)


def test_overlapping_tenants_never_share_a_datapath(nbb: NBBuilder) -> None:
    rich(nbb, "alice", 101, "a-")
    nb = rich(nbb, "bob", 202, "b-")
    sb = compile_nb(nb)
    switches = {dp.project_id: dp.key for dp in sb.datapaths.values() if dp.kind == "switch"}
    assert switches == {"alice": 101, "bob": 202}
    owner = {p["id"]: p["project_id"] for p in nb.ports}
    for flow in _switch_flows(sb):
        project = sb.datapaths[flow.datapath].project_id
        for cmp in _cmps(flow.match):
            if cmp.symbol not in ("inport", "outport"):
                continue
            for value in cmp.values:
                port = sb.ports[value.text or ""]
                assert (port.datapath, port.key) == (flow.datapath, value.value)
                assert owner[port.nb_id] == project
        for act in flow.actions:
            if isinstance(act, SetField) and act.field == "outport" and act.value < 0x8000:
                assert any(
                    p.datapath == flow.datapath and p.key == act.value for p in sb.ports.values()
                )


def test_same_cidr_same_addresses_different_flows_per_tenant(nbb: NBBuilder) -> None:
    """Identical address plans compile to the same flow shapes on distinct datapaths."""
    rich(nbb, "alice", 101, "a-")
    nb = rich(nbb, "bob", 202, "b-")
    sb = compile_nb(nb)
    per_dp = {
        key: sorted((f.stage.name, f.priority) for f in sb.flows if f.datapath == key)
        for key in (101, 202)
    }
    assert per_dp[101] == per_dp[202]


def test_remote_group_follows_membership(nbb: NBBuilder) -> None:
    """A port joining a group changes the address-set flows of every switch whose rules name
    the group, and only those: the rules themselves test the group's register bit."""
    nb = rich(nbb)
    before = {_full(f) for f in compile_nb(nb).flows}
    group = next(g for g in nb.security_groups if g["name"] == "default")
    nbb.port(nb.networks[0], "vm9", [(nb.subnets[0], "10.0.0.9")], sgs=[group])
    changed = [f for f in compile_nb(nb).flows if _full(f) not in before]
    sources = {
        v.value
        for f in changed
        if f.stage.name == "ls_out_acl_sets"
        for c in _cmps(f.match)
        if c.symbol == "ip4.src"
        for v in c.values
    }
    assert 0x0A000009 in sources  # 10.0.0.9 is now a member of the remote group
    rules = [f for f in changed if f.provenance.nb_kind == "security_group_rule"]
    assert rules  # the new port joined its group's rules (their port sets changed)
    listed = {c.symbol for f in rules for c in _cmps(f.match)}
    assert "ip4.src" not in listed  # members are not listed
    assert "ip6.src" not in listed
