"""The compile entry point (the central control plane, like ovn-northd).

``compile_nb(nb)`` turns one NB snapshot into the SB state: datapaths, port
bindings and flood groups from :func:`build_topology`, then the logical flows
of every builder, in a fixed order, and last the service monitors (which members
the hosts health-check, ``build/monitors.py``). The result is a pure function of the
snapshot: flows are deduplicated and put in a canonical order (datapath,
table, descending priority, then the match), so two
compiles of equal snapshots are equal whatever order the snapshot's lists
came in — the base for testing a future incremental compiler against a full
recompute.

Builders never see each other's output; a stage may receive flows from
several builders (the load balancer delivers in ``ls_in_l2_lkup``, DHCP allows
its replies in ``ls_out_acl``), told apart by priority and provenance.
:func:`conflicts` finds flows that would make the pipeline ambiguous (same
datapath, stage, priority and match with different actions).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from netvirt.compiler.build import acl, arp_nd, dhcp, l2, l3, lb, nat, port_security, qos
from netvirt.compiler.build.monitors import service_monitors
from netvirt.compiler.expr.ast import And, BoolSym, Cmp, Const, Expr, Not
from netvirt.compiler.lflow import FlowSink, LogicalFlow
from netvirt.compiler.nb import NBSnapshot
from netvirt.compiler.topology import build_topology
from netvirt.southbound.model import SBState

BUILDERS: tuple[ModuleType, ...] = (port_security, acl, lb, arp_nd, dhcp, qos, l2, l3, nat)


def compile_nb(nb: NBSnapshot) -> SBState:
    """Compute the whole SB state for ``nb`` (full recompute)."""
    sb = SBState(generation=nb.generation)
    build_topology(nb, sb)
    sink = FlowSink()
    for builder in BUILDERS:
        builder.build(nb, sb, sink)
    sb.flows = canonical(sink.flows)
    sb.monitors = service_monitors(nb, sb)
    return sb


MatchKey = tuple[object, ...]


def match_key(expr: Expr) -> MatchKey:
    """A total, deterministic order on matches, from primitives only (cheaper than repr)."""
    if isinstance(expr, Cmp):
        values = tuple(
            (v.value, -1 if v.mask is None else v.mask, v.text or "") for v in expr.values
        )
        return (2, expr.symbol, expr.op, values)
    if isinstance(expr, BoolSym):
        return (1, expr.symbol)
    if isinstance(expr, Const):
        return (0, expr.value)
    if isinstance(expr, Not):
        return (5, match_key(expr.term))
    tag = 3 if isinstance(expr, And) else 4
    return (tag, tuple(match_key(t) for t in expr.terms))


def _order(flow: LogicalFlow) -> tuple[int, int, int, MatchKey]:
    return (flow.datapath, flow.stage.table, -flow.priority, match_key(flow.match))


def canonical(flows: Iterable[LogicalFlow]) -> list[LogicalFlow]:
    """Drop exact duplicates (the first provenance wins) and sort canonically.

    Flows equal in datapath, stage, priority and match but not in actions are
    conflicts (see :func:`conflicts`); they keep their emission order.
    """
    seen: dict[LogicalFlow, LogicalFlow] = {}
    for flow in flows:
        seen.setdefault(flow, flow)  # equality ignores provenance
    return sorted(seen.values(), key=_order)


def conflicts(flows: Iterable[LogicalFlow]) -> list[tuple[LogicalFlow, LogicalFlow]]:
    """Pairs of flows with the same datapath, stage, priority and match but other actions."""
    first: dict[tuple[int, int, int, Expr], LogicalFlow] = {}
    out = []
    for flow in flows:
        key = (flow.datapath, flow.stage.table, flow.priority, flow.match)
        other = first.setdefault(key, flow)
        if other is not flow and other.actions != flow.actions:
            out.append((other, flow))
    return out
