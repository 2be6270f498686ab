"""Logical flows → datapath rules, and SB bindings → the datapath's topology view.

This is the part of a host agent that turns "what the network should do"
(logical flows per datapath, in the match language) into "what this datapath
executes" (masked classifier rules in one table per stage, each restricted to
its datapath by ``metadata``). ``netvirt trace`` uses the same translation
with every port treated as local, so the trace runs exactly the code path a
host runs.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable, Iterable

from netvirt.compiler import stages
from netvirt.compiler.expr.ast import Expr
from netvirt.compiler.expr.normalize import to_matches
from netvirt.compiler.lflow import LogicalFlow
from netvirt.dataplane.flow import FieldMatch, Rule, exact
from netvirt.dataplane.pipeline import PortInfo, Topology
from netvirt.southbound.model import SBState

# one conjunction of a flow's match: its field matches in rule order (by field name) and
# where the datapath's ``metadata`` match goes among them
Conjunction = tuple[tuple[FieldMatch, ...], int]


def _field(m: FieldMatch) -> str:
    return m.field


def conjunctions(match: Expr, port_key: Callable[[str], int]) -> list[Conjunction]:
    """The DNF conjunctions of a match, ready to become rules of any datapath (the same
    match in many switches — an address set, an ACL — is expanded once by the agent)."""
    out = []
    for conj in to_matches(match, port_key):
        ordered = tuple(sorted(conj, key=_field))
        out.append((ordered, bisect.bisect_right(ordered, "metadata", key=_field)))
    return out


def rules_of(flow: LogicalFlow, conjs: Iterable[Conjunction]) -> list[Rule]:
    """``flow``'s rules from its match's :func:`conjunctions`: each restricted to the
    flow's datapath, the metadata match in field-name order like the others."""
    dp = (exact("metadata", flow.datapath),)
    table, priority, actions = flow.stage.table, flow.priority, flow.actions
    return [
        Rule(table, priority, ordered[:at] + dp + ordered[at:], actions, cookie=flow)
        for ordered, at in conjs
    ]


def flow_rules(flow: LogicalFlow, sb: SBState) -> list[Rule]:
    """The classifier rules of one logical flow (one per DNF conjunction)."""
    return rules_of(flow, conjunctions(flow.match, sb.port_key))


def all_rules(sb: SBState, flows: Iterable[LogicalFlow] | None = None) -> list[Rule]:
    out: list[Rule] = []
    for flow in sb.flows if flows is None else flows:
        out.extend(flow_rules(flow, sb))
    return out


def _pipeline_of(table: int) -> str:
    """A table's pipeline (a module function, so a Topology pickles to a datapath process)."""
    return stages.BY_TABLE[table].pipeline


def topology(sb: SBState) -> Topology:
    """The datapath's view of datapaths, ports, patch peers and flood groups."""
    topo = Topology(
        first_table={
            (kind, pipe): stages.first(kind, pipe).table
            for kind in ("switch", "router")
            for pipe in ("ingress", "egress")
        },
        next_table=stages.next_table,
        pipeline_of=_pipeline_of,
    )
    for dp in sb.datapaths.values():
        topo.kinds[dp.key] = dp.kind
    for port in sb.ports.values():
        peer = None
        if port.peer is not None and port.peer in sb.ports:
            other = sb.ports[port.peer]
            peer = (other.datapath, other.key)
        topo.ports[(port.datapath, port.key)] = PortInfo(
            port.datapath, port.key, port.name, port.type, peer
        )
    for group in sb.groups.values():
        members = tuple(sb.ports[name].key for name in group.ports if name in sb.ports)
        topo.groups[(group.datapath, group.key)] = members
    for binding in sb.mac_bindings.values():
        bound = sb.ports.get(binding.logical_port)
        if bound is not None:
            port = bound
            topo.mac_bindings[(port.datapath, port.key, int(ipaddress.ip_address(binding.ip)))] = (
                binding.mac
            )
    return topo
