"""Logical flows and the sink builders write them into.

A logical flow is (datapath, stage, priority, match, actions) plus its
provenance: the builder that emitted it and the NB object behind it. The trace
prints provenance for every hit, so "why was this dropped?" always has an
answer naming a security group rule, a port or a router.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from netvirt.compiler.expr.ast import Expr
from netvirt.compiler.stages import Stage, stage


@dataclass(frozen=True, slots=True)
class Provenance:
    builder: str  # module that emitted the flow, e.g. "acl"
    nb_kind: str = ""  # "port", "security_group_rule", "router", …
    nb_id: str = ""
    note: str = ""

    def __str__(self) -> str:
        obj = f" {self.nb_kind}={self.nb_id}" if self.nb_kind else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.builder}{obj}{note}"


@dataclass(frozen=True, slots=True)
class LogicalFlow:
    datapath: int
    stage: Stage
    priority: int
    match: Expr
    actions: tuple[object, ...]
    provenance: Provenance = field(compare=False)


OrderKey = tuple[int, int, int, tuple[object, ...]]  # a flow's canonical sort key

# port fields no flow depends on: a port whose change is only these (an agent's status
# report, ACTIVE/DOWN; a new binding host) gets a new binding, its switch keeps its flows
# (``incremental.dirty_datapaths``), and its per-port flows are reused
BINDING_ONLY = frozenset(
    {"status", "revision_number", "updated_at", "binding:host_id", "binding:vif_type"}
)


def same_flows_port(old: object, new: object) -> bool:
    """Two versions of an NB port that give the same flows: equal but for
    :data:`BINDING_ONLY` fields (other objects: equal)."""
    if old is new:
        return True
    if not isinstance(old, dict) or not isinstance(new, dict):
        return old == new
    keys = old.keys() | new.keys()
    return all(k in BINDING_ONLY or old.get(k) == new.get(k) for k in keys)


@dataclass(frozen=True, slots=True)
class PortFlows:
    """One port's flows from one builder, with everything they were built from: the
    port's NB object, its binding and the switch inputs the builder read for it."""

    datapath: int
    nb: object
    pb: object
    inputs: tuple[object, ...]
    flows: tuple[LogicalFlow, ...]
    keys: tuple[OrderKey, ...]

    def built_from(self, nb: object, pb: object, inputs: tuple[object, ...]) -> bool:
        """Equal inputs (identity first: untouched NB objects are shared between
        snapshots, and comparing them would walk them)."""
        return (
            same_flows_port(self.nb, nb)
            and (self.pb is pb or self.pb == pb)
            and (self.inputs is inputs or self.inputs == inputs)
        )


# datapath -> (builder, port binding name) -> the port's flows: per datapath, so a compile
# that rebuilds one switch replaces one entry instead of filtering every port's
PortMemo = dict[int, dict[tuple[str, str], PortFlows]]
_NONE: dict[tuple[str, str], PortFlows] = {}


@dataclass
class FlowSink:
    """Collects flows for one compile; builders call :meth:`add`, and :meth:`per_port`
    for the flows of one port.

    Per-port flows are memoized from compile to compile (``memo``: the previous
    compile's, ``kept``: this compile's): most ports of a rebuilt switch did not change,
    and their flows (port security, DHCP, ARP/ND) were most of a compile. ``keys``
    holds the canonical sort key of each flow where known (memoized flows carry theirs)."""

    flows: list[LogicalFlow] = field(default_factory=list)
    keys: list[OrderKey | None] = field(default_factory=list)
    memo: PortMemo | None = None
    kept: PortMemo = field(default_factory=dict)
    order: Callable[[LogicalFlow], OrderKey] | None = None
    hits: int = 0  # per-port calls answered from the memo
    calls: int = 0  # per-port calls

    def per_port(
        self,
        slot: tuple[str, str],
        port: tuple[int, object, object],
        inputs: tuple[object, ...],
        emit: Callable[[], None],
    ) -> None:
        """The flows ``emit`` adds for one port, or the previous compile's when built from
        equal inputs. ``slot``: (builder, the port binding's name); ``port``: its
        datapath, NB object and binding; ``inputs``: everything else ``emit`` reads."""
        if self.order is None:
            emit()  # nothing to remember with
            return
        datapath, nb, pb = port
        self.calls += 1
        entry = self.memo.get(datapath, _NONE).get(slot) if self.memo is not None else None
        if entry is not None and entry.built_from(nb, pb, inputs):
            self.hits += 1
            self.flows.extend(entry.flows)
            self.keys.extend(entry.keys)
            if entry.nb is not nb:  # equal as far as flows go: compare by identity next time
                entry = replace(entry, nb=nb)
            self.kept.setdefault(datapath, {})[slot] = entry
            return
        start = len(self.flows)
        emit()
        flows = tuple(self.flows[start:])
        keys = tuple(self.order(f) for f in flows)
        self.keys[start:] = keys
        self.kept.setdefault(datapath, {})[slot] = PortFlows(datapath, nb, pb, inputs, flows, keys)

    def add(
        self,
        datapath: int,
        stage_name: str,
        priority: int,
        match: Expr,
        actions: tuple[object, ...] | list[object],
        provenance: Provenance,
    ) -> None:
        st = stage(stage_name)
        self.flows.append(LogicalFlow(datapath, st, priority, match, tuple(actions), provenance))
        self.keys.append(None)
