"""The host agent core (like ovn-controller), without threads or I/O of its own.

Theory of operation
-------------------
The runner calls :meth:`Agent.step` in a loop and hands the agent every frame
received on a local interface (:meth:`Agent.handle_frames`) or on the
underlay (:meth:`Agent.handle_tunnel`). One step:

1. **fetch**: without a trusted SB copy, register the chassis and load a full
   snapshot (*resync*); otherwise ask for the changes since the mirrored
   generation. A delta from another base (a gap) or any error talking to the
   SB invalidates the copy, so the next fetch is a snapshot again. Deltas
   only update the mirror; they are never replayed into the datapath.
2. **recompute** (when the SB or the local plugs changed): bindings
   (``bindings.bind``), the physical state (``physical.compute``: relevant
   datapaths, their rules, the pipeline topology and the dispatch maps).
3. **reconcile**: install exactly the desired rules, changing only the
   difference (``reconcile.Reconciler``), then switch the pipeline to the new
   topology. Packets are handled between steps, never during one.
4. **report**: port claims (``report_port``) after their flows are in, then
   the installed generation (``report_installed``), so ``?wait=installed``
   returns once this host forwards for that generation.

Dispatch: the pipeline's outputs go to local interfaces (batched per
interface), or, for ports on other chassis, to this host's :class:`Tunnel`
endpoint of the *receiver's* encapsulation, with VNI = switch datapath key
and the logical ingress/egress port keys. A tunnel packet received with
Geneve names its egress port: the agent runs that
port's egress pipeline (``Pipeline.process_egress``), so the destination's
security groups and port security are enforced on the receiving host. VXLAN
carries only the VNI: the receiver picks the local port(s) by destination
MAC (every local flood member for broadcast/multicast) and runs their egress
pipelines the same way; a sender deduplicates broadcast copies per chassis
for VXLAN, since the receiver floods them locally itself.

Restart: the classifier, the topology and the dispatch maps live in
:class:`Installed`, which outlives an agent (next session: the datapath
process owns it). A new agent given an ``Installed`` forwards with it from
the first packet; it changes nothing until it has a snapshot, then
reconciles against what is installed, which changes only what the SB
changed meanwhile. Conntrack state lives in the StateStore, so connections
survive too. See docs/agent.md.

Counters: per interface rx/tx packets and bytes and drops by reason (a
tunnel packet's drops count on its destination interface), the same for the
tunnel, drops by reason overall, flow and SB statistics; :meth:`Agent.counters`
returns them as plain data for the API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netvirt.agent.bindings import Bindings, Claims, Plug, bind
from netvirt.agent.physical import (
    NO_PORT,
    Encap,
    FlowTranslator,
    PhysicalState,
    Port,
    Remote,
    Tunnel,
    compute,
    decapsulate,
    empty_state,
)
from netvirt.agent.reconcile import Reconciler, SBMirror
from netvirt.dataplane.classifier import Classifier, Delta
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.pipeline import Emit, Pipeline, Topology, Verdict
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBSource
from netvirt.state.store import StateStore

log = logging.getLogger(__name__)
ETH_HLEN = 14


@dataclass
class PortCounters:
    """Traffic through one interface (or the tunnel) and what was dropped there."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0
    drops: dict[DropReason, int] = field(default_factory=dict)

    def rx(self, size: int) -> None:
        self.rx_packets += 1
        self.rx_bytes += size

    def tx(self, frames: Sequence[bytes]) -> None:
        self.tx_packets += len(frames)
        self.tx_bytes += sum(len(f) for f in frames)

    def as_dict(self) -> dict[str, object]:
        return {
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "tx_errors": self.tx_errors,
            "drops": {r.value: n for r, n in sorted(self.drops.items(), key=_by_value)},
        }


def _by_value(item: tuple[DropReason, int]) -> str:
    return item[0].value


@dataclass
class Installed:
    """What the datapath executes now; it outlives an agent restart."""

    classifier: Classifier = field(default_factory=Classifier)
    physical: PhysicalState = field(default_factory=empty_state)


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


@dataclass
class _Outbox:
    """Frames collected while handling a batch, sent once per destination."""

    local: dict[str, list[bytes]] = field(default_factory=dict)
    tunnel: list[tuple[Remote, Emit]] = field(default_factory=list)
    vxlan_seen: set[tuple[str, int, bytes]] = field(default_factory=set)


class Agent:
    """One host's agent; see the module docstring."""

    def __init__(
        self,
        name: str,
        encap: Encap,
        underlay_ip: str,
        sb: SBSource,
        state_store: StateStore,
        ports: Iterable[Plug],
        tunnel: Tunnel | Mapping[str, Tunnel],
        clock: Callable[[], float],
        *,
        installed: Installed | None = None,
        poll_timeout: float = 0.0,
    ) -> None:
        self.chassis = Chassis(name, encap, underlay_ip)
        self.sb = sb
        self.tunnels: dict[str, Tunnel] = (
            dict(tunnel) if isinstance(tunnel, Mapping) else {encap: tunnel}
        )
        self.clock = clock
        self.poll_timeout = poll_timeout
        self.installed = installed or Installed()
        self.reconciler = Reconciler(self.installed.classifier)
        self.conntrack = FlowKeyConntrack(Conntrack(state_store))
        self.pipeline = Pipeline(
            self.installed.classifier, self.installed.physical.topology, self.conntrack
        )
        self.mirror = SBMirror()
        self.translator = FlowTranslator()
        self.claims = Claims(name)
        self.bindings: Bindings | None = None
        self.plugs: dict[str, Plug] = {}
        self.port_counters: dict[str, PortCounters] = {}
        self.tunnel_counters = PortCounters()
        self.drops: dict[DropReason, int] = {}
        self.sb_stats = {"snapshots": 0, "deltas": 0, "gaps": 0, "errors": 0, "registrations": 0}
        self._sb_view: SBState | None = None
        self._dirty = True
        self._reported_generation: int | None = None
        for plug in ports:
            self.plug(plug.port, plug.logical_port)

    @property
    def name(self) -> str:
        return self.chassis.name

    # -- local interfaces --------------------------------------------------------------------

    def plug(self, port: Port, logical_port: str) -> None:
        """Attach ``port`` as ``logical_port`` (claimed at the next step)."""
        self.plugs[port.name] = Plug(port, logical_port)
        self.port_counters.setdefault(port.name, PortCounters())
        self._dirty = True

    def unplug(self, iface: str) -> None:
        """Detach an interface (reported down at the next step)."""
        self.plugs.pop(iface, None)
        self.port_counters.pop(iface, None)
        self._dirty = True

    # -- the control loop body -----------------------------------------------------------------

    def step(self, timeout: float | None = None) -> StepResult:
        """Fetch SB changes, recompute and reconcile if needed, report; never raises for SB
        failures (the installed flows keep forwarding and the next step resyncs)."""
        wait = self.poll_timeout if timeout is None else timeout
        try:
            resynced, changed = self._fetch(wait)
        except Exception as err:  # any SB failure: keep forwarding, resync next time
            return self._sb_failed(err)
        delta = Delta(0, 0)
        recomputed = changed or self._dirty
        if recomputed:
            delta = self._recompute()
        try:
            self._report()
        except Exception as err:
            return self._sb_failed(err, recomputed, delta)
        return StepResult(
            self.mirror.generation,
            self.installed.physical.generation,
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
        plugs = {iface: plug.logical_port for iface, plug in self.plugs.items()}
        self.bindings = bind(sb, self.name, plugs)
        physical = compute(sb, self.bindings, self.translator)
        delta = self.reconciler.reconcile(physical.rules)
        _keep_learned(self.pipeline.topology, physical.topology)
        self.installed.physical = physical
        self.pipeline.topology = physical.topology
        self._dirty = False
        if delta.added or delta.removed:
            log.info(
                "generation %d: +%d -%d rules (%d installed)",
                physical.generation,
                delta.added,
                delta.removed,
                len(self.installed.classifier),
            )
        return delta

    def _report(self) -> None:
        sb, bindings = self._sb_view, self.bindings
        if sb is None or bindings is None:
            return
        for port, up in self.claims.pending(bindings, sb):
            self.sb.report_port(port, self.name, up)
            self.claims.confirm(port, up)
        generation = self.installed.physical.generation
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
            self.installed.physical.generation,
            recomputed,
            delta.added,
            delta.removed,
            error=repr(err),
        )

    # -- packets from local interfaces ------------------------------------------------------------

    def handle_frame(self, iface: str, frame: bytes) -> Verdict | None:
        """One frame received on ``iface``; the pipeline's verdict (None if not handled)."""
        verdicts = self.handle_frames(iface, (frame,))
        return verdicts[0] if verdicts else None

    def handle_frames(self, iface: str, frames: Iterable[bytes]) -> list[Verdict]:
        """A batch received on ``iface``: run the pipeline, send the outputs per destination."""
        counters = self.port_counters.setdefault(iface, PortCounters())
        where = self.installed.physical.local_ports.get(iface)
        out = _Outbox()
        verdicts = []
        for frame in frames:
            counters.rx(len(frame))
            if where is None:
                self._count_drop(counters, DropReason.UNKNOWN_PORT)
                continue
            verdict = self.pipeline.process(frame, where[0], where[1], self.clock())
            self._dispatch(verdict, out, counters, from_tunnel=False)
            verdicts.append(verdict)
        self._flush(out)
        return verdicts

    # -- packets from the underlay ----------------------------------------------------------------

    def handle_tunnel(self, payload: bytes, encap: Encap = "geneve") -> list[Verdict]:
        """A tunnel UDP payload: decapsulate, then :meth:`handle_decapsulated`."""
        self.tunnel_counters.rx(len(payload))
        try:
            packet = decapsulate(encap, payload)
        except ParseError as err:
            self._count_drop(self.tunnel_counters, err.reason)
            return []
        return self._from_tunnel(packet.vni, packet.in_key, packet.out_key, packet.frame)

    def handle_decapsulated(
        self, vni: int, ingress: int | None, egress: int | None, frame: bytes
    ) -> list[Verdict]:
        """A packet a tunnel endpoint already decoded (``egress`` None: VXLAN): run the
        destination port's egress pipeline and deliver."""
        self.tunnel_counters.rx(len(frame))
        return self._from_tunnel(vni, ingress, egress, frame)

    def _from_tunnel(
        self, dp: int, ingress: int | None, egress: int | None, frame: bytes
    ) -> list[Verdict]:
        physical = self.installed.physical
        if physical.topology.kinds.get(dp) != "switch":
            self._count_drop(self.tunnel_counters, DropReason.UNKNOWN_VNI)
            return []
        targets: tuple[int, ...]
        if egress is not None:
            inport, targets = ingress or NO_PORT, (egress,)
        elif len(frame) < ETH_HLEN:
            self._count_drop(self.tunnel_counters, DropReason.TRUNCATED_ETHERNET)
            return []
        else:
            inport, targets = NO_PORT, _l2_targets(physical, dp, frame)
        if not targets:
            self._count_drop(self.tunnel_counters, DropReason.UNKNOWN_PORT)
        out = _Outbox()
        verdicts = []
        for outport in targets:
            iface = physical.local.get((dp, outport))
            if iface is None:
                self._count_drop(self.tunnel_counters, DropReason.UNKNOWN_PORT)
                continue
            counters = self.port_counters.setdefault(iface, PortCounters())
            verdict = self.pipeline.process_egress(frame, dp, inport, outport, self.clock())
            self._dispatch(verdict, out, counters, from_tunnel=True)
            verdicts.append(verdict)
        self._flush(out)
        return verdicts

    # -- dispatch ---------------------------------------------------------------------------------

    def _dispatch(
        self, verdict: Verdict, out: _Outbox, counters: PortCounters, *, from_tunnel: bool
    ) -> None:
        for reason in verdict.drops:
            self._count_drop(counters, reason)
        physical = self.installed.physical
        for emit in verdict.outputs:
            where = (emit.datapath, emit.port)
            iface = physical.local.get(where)
            if iface is not None:
                out.local.setdefault(iface, []).append(emit.frame)
                continue
            remote = physical.remote.get(where)
            if remote is None or from_tunnel:  # never re-tunnel: no loops between hosts
                self._count_drop(counters, DropReason.UNKNOWN_PORT)
                continue
            if remote.encap == "vxlan" and emit.frame[0] & 1:
                seen = (remote.ip, emit.datapath, emit.frame)
                if seen in out.vxlan_seen:
                    continue  # the receiver floods a VXLAN broadcast to its ports itself
                out.vxlan_seen.add(seen)
            out.tunnel.append((remote, emit))

    def _flush(self, out: _Outbox) -> None:
        for iface, frames in out.local.items():
            plug = self.plugs.get(iface)
            counters = self.port_counters.setdefault(iface, PortCounters())
            if plug is None:
                for _ in frames:
                    self._count_drop(counters, DropReason.UNKNOWN_PORT)
                continue
            try:
                plug.port.send_batch(frames)
            except OSError as err:
                counters.tx_errors += len(frames)
                log.warning("send on %s failed: %s", iface, err)
                continue
            counters.tx(frames)
        for remote, emit in out.tunnel:
            tunnel = self.tunnels.get(remote.encap)
            try:
                if tunnel is None:
                    raise OSError(f"no {remote.encap} tunnel endpoint on this host")
                tunnel.send(remote.ip, emit.datapath, emit.frame, emit.inport, emit.port)
            except OSError as err:
                self.tunnel_counters.tx_errors += 1
                log.warning("tunnel send to %s failed: %s", remote.ip, err)
                continue
            self.tunnel_counters.tx((emit.frame,))

    def _count_drop(self, counters: PortCounters, reason: DropReason) -> None:
        counters.drops[reason] = counters.drops.get(reason, 0) + 1
        self.drops[reason] = self.drops.get(reason, 0) + 1

    # -- observability ----------------------------------------------------------------------------

    def counters(self) -> dict[str, object]:
        """Counters as plain data (for the agent's and the API's status endpoints)."""
        stats = self.reconciler.stats
        return {
            "chassis": self.name,
            "generation": {
                "sb": self.mirror.generation,
                "installed": self.installed.physical.generation,
            },
            "ports": {iface: c.as_dict() for iface, c in sorted(self.port_counters.items())},
            "tunnel": self.tunnel_counters.as_dict(),
            "drops": {r.value: n for r, n in sorted(self.drops.items(), key=_by_value)},
            "flows": {
                "installed": len(self.installed.classifier),
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


def _l2_targets(physical: PhysicalState, dp: int, frame: bytes) -> tuple[int, ...]:
    """Local ports a VXLAN frame is for: by destination MAC, or every flood member."""
    if frame[0] & 1:
        return physical.flood.get(dp, ())
    return physical.macs.get((dp, int.from_bytes(frame[:6], "big")), ())


def _keep_learned(old: Topology, new: Topology) -> None:
    """Carry MAC bindings learned by the pipeline over to a new topology (SB ones win)."""
    learned = {k: v for k, v in old.mac_bindings.items() if (k[0], k[1]) in new.ports}
    new.mac_bindings = learned | new.mac_bindings
