"""Desired vs installed: the agent's copy of the SB and its installed rule set.

Theory of operation
-------------------
Two pieces of state, both rebuilt from scratch whenever they cannot be trusted:

* :class:`SBMirror` is the agent's private copy of the SB state. It is loaded
  from a full snapshot, then advanced by deltas whose ``base`` is exactly the
  mirror's generation; any gap (a delta from another base) is refused, and the
  caller resyncs from a snapshot. The mirror copies what it is given, so the
  source's objects are never mutated. Flows are kept in a dict keyed by their
  identity (datapath, stage, priority, match, actions), as the delta names
  them.
* :class:`Reconciler` keeps the rule set installed in a
  :class:`~netvirt.dataplane.classifier.Classifier`. Each
  :meth:`~Reconciler.reconcile` takes the *desired* rules (recomputed from
  the mirror, never derived from the delta) and applies only the difference
  in one ``Classifier.apply`` call. Deltas are never replayed into the
  classifier: whatever sequence of SB states came before, the installed set
  after a reconcile equals the desired set (:func:`divergence` checks it, the
  "incremental == recompute" helper of the tests).

The reconciler's record of what is installed is revalidated, not trusted: if
the classifier's ``version`` moved since the reconciler last wrote (another
writer, or a classifier inherited from a previous agent), the record is
re-read from the classifier before diffing.

Ties: the classifier lets the earlier-added rule win among equal-priority
overlapping rules. New rules are added in the desired order, so a classifier
built incrementally answers like one built fresh whenever the flows are not
ambiguous (the compiler's ``conflicts`` check keeps them so).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from netvirt.agent.physical import PortIndex
from netvirt.compiler.lflow import LogicalFlow
from netvirt.dataplane.classifier import Classifier, Delta
from netvirt.dataplane.flow import Rule
from netvirt.southbound.model import (
    Chassis,
    Datapath,
    MacBinding,
    MulticastGroup,
    PortBinding,
    SBState,
    ServiceMonitor,
)
from netvirt.southbound.source import SBDelta


class SBMirror:
    """The agent's copy of the SB state (see the module docstring)."""

    def __init__(self) -> None:
        self.generation: int | None = None  # None: no snapshot yet (or invalidated)
        self._datapaths: dict[int, Datapath] = {}
        self._ports: dict[str, PortBinding] = {}
        self._groups: dict[tuple[int, str], MulticastGroup] = {}
        self._flows: dict[LogicalFlow, None] = {}
        self._chassis: dict[str, Chassis] = {}
        self._mac_bindings: dict[tuple[str, str], MacBinding] = {}
        self._monitors: dict[str, ServiceMonitor] = {}
        # ports by datapath and patch ports, kept delta by delta (physical.PortIndex)
        self._by_dp: dict[int, dict[str, PortBinding]] = {}
        self._patches: dict[str, PortBinding] = {}
        self._changed: set[str] | None = None  # ports changed since take_changed (None: all)

    @property
    def loaded(self) -> bool:
        return self.generation is not None

    def invalidate(self) -> None:
        """Distrust the copy: the next fetch must be a snapshot."""
        self.generation = None

    def load(self, snapshot: SBState) -> None:
        self._datapaths = dict(snapshot.datapaths)
        self._ports = dict(snapshot.ports)
        self._groups = dict(snapshot.groups)
        self._flows = dict.fromkeys(snapshot.flows)
        self._chassis = dict(snapshot.chassis)
        self._mac_bindings = dict(snapshot.mac_bindings)
        self._monitors = dict(snapshot.monitors)
        self.generation = snapshot.generation
        self._by_dp, self._patches = {}, {}
        for pb in self._ports.values():
            self._index(pb)
        self._changed = None

    def _index(self, pb: PortBinding) -> None:
        self._by_dp.setdefault(pb.datapath, {})[pb.name] = pb
        if pb.type == "patch":
            self._patches[pb.name] = pb

    def _unindex(self, pb: PortBinding) -> None:
        ports = self._by_dp.get(pb.datapath)
        if ports is not None:
            ports.pop(pb.name, None)
            if not ports:
                del self._by_dp[pb.datapath]
        self._patches.pop(pb.name, None)

    def _set_port(self, name: str, pb: PortBinding | None) -> None:
        old = self._ports.pop(name, None)
        if old is not None:
            self._unindex(old)
        if pb is not None:
            self._ports[name] = pb
            self._index(pb)
        if self._changed is not None:
            self._changed.add(name)

    def index(self) -> PortIndex:
        """The mirrored ports by datapath and the patch ports (live: valid until the next
        :meth:`apply` or :meth:`load`)."""
        return PortIndex(self._by_dp, self._patches)

    def take_changed(self) -> set[str] | None:
        """The ports added, changed or removed since the previous call; None when unknown
        (a snapshot was loaded since)."""
        changed, self._changed = self._changed, set()
        return changed

    def apply(self, delta: SBDelta) -> bool:
        """Advance by ``delta``; False (nothing changed) if it does not start here."""
        if self.generation is None or delta.base != self.generation:
            return False
        for dp_key in delta.datapaths_removed:
            self._datapaths.pop(dp_key, None)
        for dp in cast(tuple[Datapath, ...], delta.datapaths):
            self._datapaths[dp.key] = dp
        for name in delta.ports_removed:
            self._set_port(name, None)
        for pb in cast(tuple[PortBinding, ...], delta.ports):
            self._set_port(pb.name, pb)
        for gkey in delta.groups_removed:
            self._groups.pop(gkey, None)
        for group in cast(tuple[MulticastGroup, ...], delta.groups):
            self._groups[(group.datapath, group.name)] = group
        for flow in cast(tuple[LogicalFlow, ...], delta.flows_removed):
            self._flows.pop(flow, None)
        for flow in cast(tuple[LogicalFlow, ...], delta.flows):
            self._flows.pop(flow, None)  # re-insert: a changed provenance replaces the key
            self._flows[flow] = None
        for name in delta.chassis_removed:
            self._chassis.pop(name, None)
        for chassis in delta.chassis:
            self._chassis[chassis.name] = chassis
        for member in delta.monitors_removed:
            self._monitors.pop(member, None)
        for monitor in delta.monitors:
            self._monitors[monitor.member_id] = monitor
        self.generation = delta.generation
        return True

    def state(self) -> SBState:
        """The mirrored SB state (fresh containers; the objects are immutable)."""
        if self.generation is None:
            raise RuntimeError("no SB snapshot loaded")
        return SBState(
            generation=self.generation,
            datapaths=dict(self._datapaths),
            ports=dict(self._ports),
            groups=dict(self._groups),
            flows=list(self._flows),
            chassis=dict(self._chassis),
            mac_bindings=dict(self._mac_bindings),
            monitors=dict(self._monitors),
        )


@dataclass
class ReconcileStats:
    """Totals over the reconciler's life, for the agent's counters."""

    runs: int = 0
    added: int = 0
    removed: int = 0
    repairs: int = 0  # times the installed record had to be re-read from the classifier


class RuleHolder(Protocol):
    """Where rules are installed: a classifier, or a datapath (local or remote) that says
    which version of its rule set it holds."""

    def rules(self) -> Iterable[Rule]: ...


class Reconciler:
    """Keeps a holder's rules equal to the desired set, changing only the difference.

    ``version`` names the holder's current rule set (a classifier's ``version``,
    a datapath's boot id + version); when it is not what this reconciler last
    wrote, its record is re-read from the holder before diffing (a repair)."""

    def __init__(self, holder: RuleHolder, version: Callable[[], Hashable] | None = None) -> None:
        self.holder = holder
        self._current = version or (lambda: cast(Classifier, holder).version)
        self.installed: dict[Rule, None] = {}
        self._version: Hashable | None = None  # None: not read yet (read at the first plan)
        self.stats = ReconcileStats()

    def plan(self, desired: Iterable[Rule]) -> tuple[list[Rule], list[Rule]]:
        """(add, remove) that make the holder's rules equal ``desired``."""
        current = self._current()
        if current != self._version:
            self.installed = dict.fromkeys(self.holder.rules())
            if self._version is not None:
                self.stats.repairs += 1
            self._version = current
        want = dict.fromkeys(desired)
        remove = [r for r in self.installed if r not in want]
        add = [r for r in want if r not in self.installed]
        return add, remove

    def commit(self, add: Sequence[Rule], remove: Sequence[Rule], delta: Delta) -> None:
        """Record that the holder applied a plan (its version is read again)."""
        for rule in remove:
            self.installed.pop(rule, None)
        self.installed.update(dict.fromkeys(add))
        self._version = self._current()
        self.stats.runs += 1
        self.stats.added += delta.added
        self.stats.removed += delta.removed

    def reconcile(self, desired: Iterable[Rule]) -> Delta:
        """Install ``desired`` exactly into a classifier holder: plan, apply, commit."""
        add, remove = self.plan(desired)
        delta = cast(Classifier, self.holder).apply(add=add, remove=remove)
        self.commit(add, remove, delta)
        return delta


@dataclass(frozen=True)
class Divergence:
    """Rules the classifier lacks and rules it has but should not."""

    missing: list[Rule] = field(default_factory=list)
    extra: list[Rule] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra)


def divergence(classifier: Classifier, desired: Sequence[Rule]) -> Divergence:
    """How the installed rules differ from ``desired`` (empty when converged)."""
    installed = set(classifier.rules())
    want = set(desired)
    return Divergence(
        missing=[r for r in desired if r not in installed],
        extra=[r for r in classifier.rules() if r not in want],
    )
