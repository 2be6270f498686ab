"""The compile entry point (the central control plane, like ovn-northd).

``compile_nb(nb)`` turns one NB snapshot into the SB state: datapaths, port
bindings and flood groups from :func:`build_topology`, then the logical flows
of every builder, in a fixed order, and last the service monitors (which members
the hosts health-check, ``build/monitors.py``). The result is a pure function of the
snapshot: flows are deduplicated and put in a canonical order (datapath,
table, descending priority, then the match), so two
compiles of equal snapshots are equal whatever order the snapshot's lists
came in — the base for testing the incremental compiler (``incremental.py``)
against a full recompute.

Builders never see each other's output; a stage may receive flows from
several builders (the load balancer delivers in ``ls_in_l2_lkup``, DHCP allows
its replies in ``ls_out_acl``), told apart by priority and provenance.
:func:`conflicts` finds flows that would make the pipeline ambiguous (same
datapath, stage, priority and match with different actions).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

from netvirt.compiler.build import acl, arp_nd, dhcp, l2, l3, lb, nat, port_security, qos
from netvirt.compiler.build.monitors import service_monitors
from netvirt.compiler.expr.ast import And, BoolSym, Cmp, Const, Expr, Not
from netvirt.compiler.lflow import FlowSink, LogicalFlow, OrderKey, PortMemo
from netvirt.compiler.nb import NBSnapshot
from netvirt.compiler.topology import build_topology
from netvirt.southbound.model import SBState

BUILDERS: tuple[ModuleType, ...] = (port_security, acl, lb, arp_nd, dhcp, qos, l2, l3, nat)


def compile_nb(nb: NBSnapshot) -> SBState:
    """Compute the whole SB state for ``nb`` (full recompute)."""
    sb, chunks = build(nb, None)
    sb.set_chunks(chunks)
    return sb


Chunks = dict[int, list[LogicalFlow]]


def build(
    nb: NBSnapshot,
    scope: frozenset[int] | None,
    previous: SBState | None = None,
    bindings: frozenset[int] | None = None,
    *,
    seed: dict[object, Any] | None = None,
    keep: dict[object, Any] | None = None,
    drop: set[str] | None = None,
    memo: PortMemo | None = None,
    memo_out: PortMemo | None = None,
    reused: list[int] | None = None,
) -> tuple[SBState, Chunks]:
    """The SB state of ``nb`` without its flows, and the canonical flows of each datapath
    in ``scope`` (every datapath when None).

    Every builder emits a datapath's flows while visiting that datapath (a switch, a
    router) and reads nothing of other datapaths' flows, so building a subset of the
    datapaths gives exactly their flows of a full compile. The canonical order starts
    with the datapath, so the per-datapath lists (:func:`join`) concatenate into the
    compiler's one list.

    ``seed``: NB lookups known right for ``nb`` (``NBSnapshot.indexed``); ``keep``
    receives the lookups this compile used, for the next incremental compile to carry
    over or patch (``incremental.carried``, ``incremental.patch_index``); ``drop``:
    ``previous``'s bindings that are built again (``topology.build_topology``).

    ``memo``: the previous compile's per-port flows (``FlowSink.per_port``), reused
    where their inputs are equal; ``memo_out`` receives this compile's (those of
    datapaths outside ``scope`` carried over from ``memo``); ``reused`` receives
    [per-port emissions answered from the memo, all per-port emissions]."""
    sb = SBState(generation=nb.generation)
    with nb.indexed(seed) as index:
        if scope is not None and previous is not None:
            # bindings of switches outside the scope are unchanged
            build_topology(nb, sb, previous, scope if bindings is None else bindings, drop)
        else:
            build_topology(nb, sb)
        sink = FlowSink(memo=memo, order=_order)
        nb.scope, nb.views = scope, {}
        try:
            for builder in BUILDERS:
                builder.build(nb, sb, sink)
        finally:
            nb.scope = nb.views = None
        sb.monitors = service_monitors(nb, sb)
        if keep is not None:
            keep.update(index)
    if memo_out is not None:
        if scope is not None and memo is not None:
            memo_out.update((dp, v) for dp, v in memo.items() if dp not in scope)
        memo_out.update(sink.kept)
    if reused is not None:
        reused[:] = [sink.hits, sink.calls]
    by_dp: dict[int, list[Keyed]] = {}
    for i, (flow, key) in enumerate(zip(sink.flows, sink.keys, strict=True)):
        by_dp.setdefault(flow.datapath, []).append((_order(flow) if key is None else key, i, flow))
    if scope is not None and not by_dp.keys() <= scope:
        raise AssertionError(f"a scoped compile built flows of {sorted(by_dp.keys() - scope)}")
    return sb, {dp: _canonical(keyed) for dp, keyed in by_dp.items()}


def join(chunks: Chunks) -> list[LogicalFlow]:
    """The per-datapath flow lists as the compiler's canonical list."""
    out: list[LogicalFlow] = []
    for dp in sorted(chunks):
        out.extend(chunks[dp])
    return out


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


def _order(flow: LogicalFlow) -> OrderKey:
    return (flow.datapath, flow.stage.table, -flow.priority, match_key(flow.match))


def canonical(flows: Iterable[LogicalFlow]) -> list[LogicalFlow]:
    """Drop exact duplicates (the first provenance wins) and sort canonically.

    Flows equal in datapath, stage, priority and match but not in actions are
    conflicts (see :func:`conflicts`); they keep their emission order.
    """
    return _canonical([(_order(f), i, f) for i, f in enumerate(flows)])


Keyed = tuple[OrderKey, int, LogicalFlow]  # a flow with its canonical key and emission index


def _canonical(items: list[Keyed]) -> list[LogicalFlow]:
    # by key, then emission order: the indexes are unique, so flows are never compared
    # (nor hashed: hashing a flow walks its whole match every time)
    items.sort()
    keyed = items
    out: list[LogicalFlow] = []
    run_key: OrderKey | None = None
    run: list[LogicalFlow] = []  # the distinct flows of the current run of equal keys
    for key, _, flow in keyed:
        if key != run_key:
            run_key, run = key, []
        if any(flow == kept for kept in run):
            continue  # an exact duplicate (equality ignores provenance): the first one stays
        run.append(flow)
        out.append(flow)
    return out


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
