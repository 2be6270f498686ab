"""Deltas between SB states: ``apply(old, diff(old, new)) == new``.

The southbound service keeps recent states by generation and sends an agent
what changed since the generation it holds; the agent applies it to its copy.
Both are pure functions of immutable states (``apply`` never mutates its
input), so the property above can be tested on real compiled states.

Identity: datapaths, ports, groups, chassis and service monitors (by member
id) by their keys (a changed object is sent whole); flows by (datapath, stage,
priority, match, actions) *and* provenance, so a flow whose only change is its
provenance is removed and re-added (the agent's installed flow is untouched by
that, the trace shows the new provenance). ``apply`` keeps flows in the compiler's canonical order
(datapath, table, descending priority, match), merging the added flows into
the kept ones, so the result equals a fresh compile, list order included.

SB MAC bindings have no place in :class:`SBDelta`: the compiler never writes
them today (datapaths learn them). ``diff`` refuses states whose MAC bindings
differ (:class:`NotDiffable`); the service answers with the full state then.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Mapping
from typing import TypeVar

from netvirt.compiler.compile import MatchKey, match_key
from netvirt.compiler.lflow import LogicalFlow, Provenance
from netvirt.southbound.model import (
    Chassis,
    Datapath,
    MulticastGroup,
    PortBinding,
    SBState,
    ServiceMonitor,
)
from netvirt.southbound.source import SBDelta

K = TypeVar("K")
V = TypeVar("V")
FlowId = tuple[LogicalFlow, Provenance]


class NotDiffable(ValueError):
    """The two states differ in something a delta cannot carry: send a full state."""


class DeltaMismatch(ValueError):
    """A delta applied to a state of another generation: the caller must resync."""


def _changes(old: Mapping[K, V], new: Mapping[K, V]) -> tuple[tuple[K, ...], tuple[V, ...]]:
    removed = tuple(k for k in old if k not in new)
    # most objects of an incremental compile are the previous compile's own: skip the
    # field-by-field comparison for them
    changed = tuple(v for k, v in new.items() if old.get(k) is not v and old.get(k) != v)
    return removed, changed


def _named_changes(
    old: Mapping[str, V], new: Mapping[str, V], names: frozenset[str]
) -> tuple[tuple[str, ...], tuple[V, ...]]:
    """:func:`_changes` when only the entries of ``names`` may differ (sorted by name)."""
    keys = sorted(names)
    removed = tuple(k for k in keys if k in old and k not in new)
    changed = tuple(
        new[k] for k in keys if k in new and (old.get(k) is not new[k] and old.get(k) != new[k])
    )
    return removed, changed


def _ident(flow: LogicalFlow) -> FlowId:
    return (flow, flow.provenance)


def of_datapaths(flows: list[LogicalFlow], dps: frozenset[int]) -> list[LogicalFlow]:
    """The flows of ``dps`` from a list in canonical order (sorted by datapath first)."""
    out: list[LogicalFlow] = []
    for dp in sorted(dps):
        lo = bisect.bisect_left(flows, dp, key=_datapath)
        hi = bisect.bisect_right(flows, dp, lo=lo, key=_datapath)
        out.extend(flows[lo:hi])
    return out


def _datapath(flow: LogicalFlow) -> int:
    return flow.datapath


def diff(
    old: SBState,
    new: SBState,
    flow_dps: frozenset[int] | None = None,
    port_names: frozenset[str] | None = None,
) -> SBDelta:
    """What turns ``old`` into ``new``.

    ``flow_dps``: the only datapaths whose flows may differ (the incremental compiler
    knows them); the flows of the others are not compared, which keeps a one-port
    change from hashing every flow of the cloud. Both states' flows must then be in
    canonical order. ``port_names``: likewise the only port bindings that may differ."""
    if old.mac_bindings != new.mac_bindings:
        raise NotDiffable("SB MAC bindings changed; deltas do not carry them")
    dps_removed, dps = _changes(old.datapaths, new.datapaths)
    if port_names is None:
        ports_removed, ports = _changes(old.ports, new.ports)
    else:
        ports_removed, ports = _named_changes(old.ports, new.ports, port_names)
    groups_removed, groups = _changes(old.groups, new.groups)
    chassis_removed, chassis = _changes(old.chassis, new.chassis)
    monitors_removed, monitors = _changes(old.monitors, new.monitors)
    if flow_dps is None:
        old_flows, new_flows = old.flows, new.flows
    else:
        old_flows, new_flows = old.flows_of(flow_dps), new.flows_of(flow_dps)
    flows_removed, flows_added = _flow_changes(old_flows, new_flows)
    return SBDelta(
        base=old.generation,
        generation=new.generation,
        datapaths_removed=dps_removed,
        datapaths=dps,
        ports_removed=ports_removed,
        ports=ports,
        groups_removed=groups_removed,
        groups=groups,
        flows_removed=flows_removed,
        flows=flows_added,
        chassis=chassis,
        chassis_removed=chassis_removed,
        monitors=monitors,
        monitors_removed=monitors_removed,
    )


def _flow_changes(
    old: list[LogicalFlow], new: list[LogicalFlow]
) -> tuple[tuple[LogicalFlow, ...], tuple[LogicalFlow, ...]]:
    """(flows of ``old`` not in ``new``, flows of ``new`` not in ``old``), in list order.

    A flow object in both lists is unchanged: the compiler reuses unchanged ports' flow
    objects (``FlowSink.per_port``), so most flows of a rebuilt datapath are skipped
    without hashing them (a flow's hash walks its whole match). The rest compare by
    value and provenance; a list never holds two equal flows (``compile.canonical``)."""
    in_new = {id(f) for f in new}
    in_old = {id(f) for f in old}
    old_rest = [f for f in old if id(f) not in in_new]
    new_rest = [f for f in new if id(f) not in in_old]
    old_ids = {_ident(f) for f in old_rest}
    new_ids = {_ident(f) for f in new_rest}
    return (
        tuple(f for f in old_rest if _ident(f) not in new_ids),
        tuple(f for f in new_rest if _ident(f) not in old_ids),
    )


def _order(flow: LogicalFlow) -> tuple[int, int, int, MatchKey]:
    """The compiler's canonical flow order (see ``compile.canonical``)."""
    return (flow.datapath, flow.stage.table, -flow.priority, match_key(flow.match))


def _flows(current: list[LogicalFlow], delta: SBDelta) -> list[LogicalFlow]:
    gone = {_ident(_as(f, LogicalFlow)) for f in delta.flows_removed}
    kept = [f for f in current if _ident(f) not in gone] if gone else list(current)
    added = sorted((_as(f, LogicalFlow) for f in delta.flows), key=_order)
    if not added:
        return kept
    return list(heapq.merge(kept, added, key=_order))


def _as(obj: object, cls: type[V]) -> V:
    if not isinstance(obj, cls):
        raise TypeError(f"delta holds a {type(obj).__name__} where a {cls.__name__} belongs")
    return obj


def apply(state: SBState, delta: SBDelta) -> SBState:
    """``state`` moved to ``delta.generation`` (a new object; ``state`` is untouched)."""
    if delta.base != state.generation:
        raise DeltaMismatch(
            f"delta from generation {delta.base} cannot apply to generation {state.generation}"
        )
    datapaths = dict(state.datapaths)
    for dp_key in delta.datapaths_removed:
        datapaths.pop(dp_key, None)
    for dp in delta.datapaths:
        datapaths[_as(dp, Datapath).key] = _as(dp, Datapath)
    ports = dict(state.ports)
    for name in delta.ports_removed:
        ports.pop(name, None)
    for port in delta.ports:
        ports[_as(port, PortBinding).name] = _as(port, PortBinding)
    groups = dict(state.groups)
    for group_key in delta.groups_removed:
        groups.pop(group_key, None)
    for group in delta.groups:
        g = _as(group, MulticastGroup)
        groups[(g.datapath, g.name)] = g
    chassis = dict(state.chassis)
    for name in delta.chassis_removed:
        chassis.pop(name, None)
    for ch in delta.chassis:
        chassis[_as(ch, Chassis).name] = ch
    monitors = dict(state.monitors)
    for member in delta.monitors_removed:
        monitors.pop(member, None)
    for monitor in delta.monitors:
        monitors[_as(monitor, ServiceMonitor).member_id] = monitor
    return SBState(
        generation=delta.generation,
        datapaths=datapaths,
        ports=ports,
        groups=groups,
        flows=_flows(state.flows, delta),
        chassis=chassis,
        mac_bindings=dict(state.mac_bindings),
        monitors=monitors,
    )


def is_empty(delta: SBDelta) -> bool:
    """True when the delta changes nothing but the generation."""
    return not any(
        (
            delta.datapaths_removed,
            delta.datapaths,
            delta.ports_removed,
            delta.ports,
            delta.groups_removed,
            delta.groups,
            delta.flows_removed,
            delta.flows,
            delta.chassis,
            delta.chassis_removed,
            delta.monitors,
            delta.monitors_removed,
        )
    )
