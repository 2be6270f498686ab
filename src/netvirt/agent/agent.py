"""The host agent core (like ovn-controller): the control half of a host.

Theory of operation
-------------------
A host is two halves. The :class:`~netvirt.agent.forwarder.Forwarder` (the
datapath) moves packets with what is installed; the agent decides what to
install. They meet at :class:`DatapathHandle`: the forwarder itself when both
run in one process (tests, the embedded ``netvirt agent``), or
``dpctl.RemoteDatapath`` when the datapath is its own process (``netvirt
datapath``, as in the lab) and the agent reaches it over a unix socket.

The runner calls :meth:`Agent.step` in a loop. One step:

1. **fetch**: without a trusted SB copy, register the chassis and load a full
   snapshot (*resync*); otherwise ask for the changes since the mirrored
   generation. A delta from another base (a gap) or any error talking to the
   SB invalidates the copy, so the next fetch is a snapshot again. Deltas
   only update the mirror; they are never replayed into the datapath.
2. **recompute** (when the SB or the datapath's plugs changed): bindings
   (``bindings.bind``), the physical state (``physical.compute``: relevant
   datapaths, their rules, the pipeline topology and the dispatch maps).
3. **reconcile**: the reconciler diffs the desired rules against its record
   of what the datapath holds (re-read from the datapath when the datapath's
   rule version moved: another writer, a restarted datapath, a new agent),
   and the datapath installs the difference together with the new topology in
   one call, between packet batches.
4. **report**: port claims (``report_port``) after their flows are in, then
   the installed generation (``report_installed``), so ``?wait=installed``
   returns once this host forwards for that generation.

Restart: the agent holds nothing the datapath needs. A new agent (or the
same agent after a datapath restart) reads the installed rules once, resyncs
the SB, and installs only what the SB changed meanwhile; the datapath forwards
with its installed flows the whole time. Conntrack state lives in the
StateStore of the datapath. See docs/agent.md.

Counters: :meth:`Agent.counters` merges the datapath's counters (ports,
tunnel, drops) with the agent's own (flows, reconciles, SB), as plain data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from netvirt.agent.bindings import Binder, Bindings, Claims, Plug
from netvirt.agent.counters import PortCounters
from netvirt.agent.forwarder import Forwarder, Installed, RuleVersion
from netvirt.agent.physical import Encap, FlowTranslator, PhysicalState, Port, Tunnel, compute
from netvirt.agent.reconcile import Reconciler, SBMirror
from netvirt.dataplane.classifier import Delta
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.flow import Rule
from netvirt.dataplane.pipeline import Pipeline, Verdict
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBSource
from netvirt.state.store import StateStore

log = logging.getLogger(__name__)
SLOW_STEP = 0.5  # seconds: a step taking longer is logged with where its time went

__all__ = ["Agent", "DatapathHandle", "Installed", "PortCounters", "StepResult"]


class DatapathHandle(Protocol):
    """What the agent needs of a datapath (a local :class:`Forwarder`, or a remote one)."""

    @property
    def rule_version(self) -> RuleVersion: ...

    @property
    def generation(self) -> int: ...

    def plugged(self) -> dict[str, str]: ...

    def rules(self) -> list[Rule]: ...

    def install(
        self, physical: PhysicalState, add: Sequence[Rule], remove: Sequence[Rule]
    ) -> Delta: ...

    def counters(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`Agent.step` did."""

    sb_generation: int | None  # the mirrored SB generation (None: no snapshot)
    installed_generation: int
    recomputed: bool = False
    added: int = 0
    removed: int = 0
    resynced: bool = False
    error: str | None = None


class Agent:
    """One host's agent; see the module docstring.

    Without ``datapath`` the agent makes its own :class:`Forwarder` from
    ``state_store``, ``ports`` and ``tunnel`` (one process; :attr:`forwarder`
    and the packet methods are then available); with one, those three are
    ignored and every install goes to ``datapath``."""

    def __init__(
        self,
        name: str,
        encap: Encap,
        underlay_ip: str,
        sb: SBSource,
        state_store: StateStore | None = None,
        ports: Iterable[Plug] = (),
        tunnel: Tunnel | Mapping[str, Tunnel] | None = None,
        clock: Callable[[], float] | None = None,
        *,
        installed: Installed | None = None,
        poll_timeout: float = 0.0,
        datapath: DatapathHandle | None = None,
    ) -> None:
        self.chassis = Chassis(name, encap, underlay_ip)
        self.sb = sb
        self.poll_timeout = poll_timeout
        self.forwarder: Forwarder | None = None
        if datapath is None:
            if state_store is None or tunnel is None or clock is None:
                raise TypeError("an agent without a datapath needs state_store, tunnel, clock")
            self.forwarder = Forwarder(state_store, tunnel, clock, encap=encap, installed=installed)
            datapath = self.forwarder
        elif isinstance(datapath, Forwarder):
            self.forwarder = datapath
        self.datapath: DatapathHandle = datapath
        self.reconciler = Reconciler(datapath, lambda: self.datapath.rule_version)
        self.mirror = SBMirror()
        self.translator = FlowTranslator()
        self.claims = Claims(name)
        self.binder = Binder(name)
        self.bindings: Bindings | None = None
        self.sb_stats = {"snapshots": 0, "deltas": 0, "gaps": 0, "errors": 0, "registrations": 0}
        self._sb_view: SBState | None = None
        self._dirty = True
        self._reported_generation: int | None = None
        self.timings: dict[str, float] = {}  # seconds per part of the last recompute
        for plug in ports:
            self.plug(plug.port, plug.logical_port)

    @property
    def name(self) -> str:
        return self.chassis.name

    # -- the local forwarder (one process) ---------------------------------------------------

    @property
    def local(self) -> Forwarder:
        """The in-process forwarder (an agent of a remote datapath has none)."""
        if self.forwarder is None:
            raise RuntimeError("this agent drives a remote datapath")
        return self.forwarder

    @property
    def installed(self) -> Installed:
        return self.local.installed

    @property
    def pipeline(self) -> Pipeline:
        return self.local.pipeline

    @property
    def plugs(self) -> dict[str, Plug]:
        return self.local.plugs

    @property
    def port_counters(self) -> dict[str, PortCounters]:
        return self.local.port_counters

    @property
    def tunnel_counters(self) -> PortCounters:
        return self.local.tunnel_counters

    @property
    def drops(self) -> dict[DropReason, int]:
        return self.local.drops

    @property
    def tunnels(self) -> dict[str, Tunnel]:
        return self.local.tunnels

    def plug(self, port: Port, logical_port: str) -> None:
        """Attach ``port`` as ``logical_port`` (claimed at the next step)."""
        self.local.plug(port, logical_port)
        self._dirty = True

    def unplug(self, iface: str) -> None:
        """Detach an interface (reported down at the next step)."""
        self.local.unplug(iface)
        self._dirty = True

    def handle_frame(self, iface: str, frame: bytes) -> Verdict | None:
        """One frame received on ``iface``; the pipeline's verdict (None if not handled)."""
        verdicts = self.local.handle_frames(iface, (frame,))
        return verdicts[0] if verdicts else None

    def handle_frames(self, iface: str, frames: Iterable[bytes]) -> list[Verdict]:
        return self.local.handle_frames(iface, frames)

    def handle_tunnel(self, payload: bytes, encap: Encap = "geneve") -> list[Verdict]:
        return self.local.handle_tunnel(payload, encap)

    def handle_decapsulated(
        self, vni: int, ingress: int | None, egress: int | None, frame: bytes
    ) -> list[Verdict]:
        return self.local.handle_decapsulated(vni, ingress, egress, frame)

    def plugs_changed(self) -> None:
        """The datapath's plugged interfaces may have changed: recompute at the next step."""
        self._dirty = True

    # -- the control loop body -----------------------------------------------------------------

    def step(self, timeout: float | None = None) -> StepResult:
        """Fetch SB changes, recompute and reconcile if needed, report; never raises for SB
        failures (the installed flows keep forwarding and the next step resyncs)."""
        wait = self.poll_timeout if timeout is None else timeout
        started = time.perf_counter()
        try:
            resynced, changed = self._fetch(wait)
        except Exception as err:  # any SB failure: keep forwarding, resync next time
            return self._sb_failed(err)
        fetched = time.perf_counter()
        delta = Delta(0, 0)
        recomputed = changed or self._dirty
        if recomputed:
            delta = self._recompute()
        computed = time.perf_counter()
        try:
            self._report()
        except Exception as err:
            return self._sb_failed(err, recomputed, delta)
        if recomputed and time.perf_counter() - started >= SLOW_STEP:
            log.info(
                "step to SB generation %s: fetch %.3fs (waited up to %.1fs), recompute %.3fs "
                "(%s), report %.3fs; +%d -%d rules",
                self.mirror.generation,
                fetched - started,
                wait,
                computed - fetched,
                ", ".join(f"{k} {v:.3f}s" for k, v in self.timings.items()),
                time.perf_counter() - computed,
                delta.added,
                delta.removed,
            )
        return StepResult(
            self.mirror.generation,
            self.datapath.generation,
            recomputed,
            delta.added,
            delta.removed,
            resynced,
        )

    def _fetch(self, timeout: float) -> tuple[bool, bool]:
        """(resynced, changed) after bringing the mirror up to date."""
        generation = self.mirror.generation
        if generation is None:
            self._resync()
            return True, True
        change = self.sb.changes(generation, timeout)
        if change is None:
            return False, False
        if isinstance(change, SBState):
            self._load(change)
            self._ensure_registered()
            return False, True
        if self.mirror.apply(change):
            self.sb_stats["deltas"] += 1
            self._sb_view = self.mirror.state()
            self._ensure_registered()
            return False, True
        self.sb_stats["gaps"] += 1
        log.info("SB delta from %d, mirror at %d: resync", change.base, generation)
        self._resync()
        return True, True

    def _resync(self) -> None:
        self.sb.register_chassis(self.chassis)
        self.sb_stats["registrations"] += 1
        self._load(self.sb.snapshot())
        self.claims.forget()
        self._reported_generation = None

    def _ensure_registered(self) -> None:
        """Register again if the SB forgot this chassis (e.g. a restarted service that
        answered with a full state instead of failing)."""
        assert self._sb_view is not None
        if self._sb_view.chassis.get(self.name) != self.chassis:
            self.sb.register_chassis(self.chassis)
            self.sb_stats["registrations"] += 1

    def _load(self, snapshot: SBState) -> None:
        self.mirror.load(snapshot)
        self._sb_view = self.mirror.state()
        self.sb_stats["snapshots"] += 1

    def _recompute(self) -> Delta:
        sb = self._sb_view
        assert sb is not None
        self._dirty = False  # first: a change seen while computing triggers the next step
        # only the ports the SB or the plugs changed are classified again, and only the
        # relevant datapaths' ports are looked at (a port create at 10k ports must not
        # walk every port of the cloud)
        t0 = time.perf_counter()
        self.bindings = self.binder.bind(sb, self.datapath.plugged(), self.mirror.take_changed())
        t1 = time.perf_counter()
        physical = compute(sb, self.bindings, self.translator, self.mirror.index())
        t2 = time.perf_counter()
        add, remove = self.reconciler.plan(physical.rules)
        t3 = time.perf_counter()
        delta = self.datapath.install(physical, add, remove)
        self.reconciler.commit(add, remove, delta)
        t4 = time.perf_counter()
        self.timings = {"bind": t1 - t0, "compute": t2 - t1, "plan": t3 - t2, "install": t4 - t3}
        return delta

    def _report(self) -> None:
        sb, bindings = self._sb_view, self.bindings
        if sb is None or bindings is None:
            return
        pending = list(self.claims.pending(bindings, sb))
        bulk = getattr(self.sb, "report_ports", None)  # one request for many (HttpSB)
        if bulk is not None and len(pending) > 1:
            bulk(pending, self.name)
            for port, up in pending:
                self.claims.confirm(port, up)
            pending = []
        for port, up in pending:
            self.sb.report_port(port, self.name, up)
            self.claims.confirm(port, up)
        generation = self.datapath.generation
        if generation != self._reported_generation:
            self.sb.report_installed(self.name, generation)
            self._reported_generation = generation

    def _sb_failed(
        self, err: Exception, recomputed: bool = False, delta: Delta = Delta(0, 0)
    ) -> StepResult:
        log.warning("southbound failure, will resync: %r", err)
        self.sb_stats["errors"] += 1
        self.mirror.invalidate()
        return StepResult(
            None,
            self.datapath.generation,
            recomputed,
            delta.added,
            delta.removed,
            error=repr(err),
        )

    # -- observability ----------------------------------------------------------------------------

    def counters(self, datapath: Mapping[str, object] | None = None) -> dict[str, object]:
        """Counters as plain data (for the agent's and the API's status endpoints): the
        datapath's (ports, tunnel, drops; ``datapath`` if already fetched) and the agent's
        own (flows, SB)."""
        stats = self.reconciler.stats
        dp = self.datapath.counters() if datapath is None else datapath
        return {
            "chassis": self.name,
            "generation": {"sb": self.mirror.generation, "installed": self.datapath.generation},
            "ports": dp.get("ports", {}),
            "tunnel": dp.get("tunnel", {}),
            "drops": dp.get("drops", {}),
            "state": dp.get("state", {}),
            "health": dp.get("health", {}),
            "qos": dp.get("qos", {}),
            "flows": {
                "installed": dp.get("rules", len(self.reconciler.installed)),
                "added": stats.added,
                "removed": stats.removed,
                "reconciles": stats.runs,
                "repairs": stats.repairs,
                "translated": self.translator.misses,
                "reused": self.translator.hits,
                "untranslatable": self.translator.failures,
            },
            "sb": dict(self.sb_stats),
        }
