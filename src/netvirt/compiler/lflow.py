"""Logical flows and the sink builders write them into.

A logical flow is (datapath, stage, priority, match, actions) plus its
provenance: the builder that emitted it and the NB object behind it. The trace
prints provenance for every hit, so "why was this dropped?" always has an
answer naming a security group rule, a port or a router.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class FlowSink:
    """Collects flows for one compile; builders call :meth:`add`."""

    flows: list[LogicalFlow] = field(default_factory=list)

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
