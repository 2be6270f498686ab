"""The forwarding half of a host: what the datapath process executes.

Theory of operation
-------------------
A :class:`Forwarder` holds everything a host needs to move packets and
nothing it needs to decide what to install: the classifier with the installed
rules, the physical state of the installed generation (pipeline topology and
dispatch maps), the pipeline with its conntrack, the local ports and tunnel
endpoints, and the counters. The control half (:class:`~netvirt.agent.agent.Agent`)
computes what should be installed and hands it over with :meth:`install`,
either in the same process or through the datapath's control socket
(``agent.dpctl``). The forwarder never needs the control half: with no agent
at all it keeps forwarding with what is installed, which is what makes an
agent restart invisible to traffic.

Install is atomic with respect to packets: the runner calls :meth:`install`
between batches, so a batch sees either the old rules and topology or the new
ones, never a mix.

Dispatch: the pipeline's outputs go to local interfaces (batched per
interface), or, for ports on other chassis, to this host's :class:`Tunnel`
endpoint of the *receiver's* encapsulation, with VNI = switch datapath key
and the logical ingress/egress port keys. A tunnel packet received with
Geneve names its egress port: the forwarder runs that port's egress pipeline
(``Pipeline.process_egress``), so the destination's security groups and port
security are enforced on the receiving host. VXLAN carries only the VNI: the
receiver picks the local port(s) by destination MAC (every local flood member
for broadcast/multicast) and runs their egress pipelines the same way; a
sender deduplicates broadcast copies per chassis for VXLAN, since the
receiver floods them locally itself.
An external network's uplink (a ``localnet`` port) that is not plugged here
goes to a live gateway chassis picked per flow by :class:`GatewayPlane`;
tunnel packets with VNI 0 are gateway hellos, fed to it (docs/gateways.md).

Counters: per interface rx/tx packets and bytes and drops by reason (a
tunnel packet's drops count on its destination interface), the same for the
tunnel, and drops by reason overall.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netvirt.agent.bindings import Plug
from netvirt.agent.gateways import HELLO_VNI, GatewayPlane
from netvirt.agent.health import HealthChecker
from netvirt.agent.physical import (
    NO_PORT,
    Encap,
    PhysicalState,
    Port,
    Remote,
    Tunnel,
    decapsulate,
    empty_state,
)
from netvirt.dataplane.classifier import Classifier, Delta
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.flow import Rule
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.pipeline import Emit, Pipeline, Topology, Verdict
from netvirt.dataplane.policer import PortPolicers
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
    """What the datapath executes now; it outlives any agent."""

    classifier: Classifier = field(default_factory=Classifier)
    physical: PhysicalState = field(default_factory=empty_state)


@dataclass(frozen=True)
class RuleVersion:
    """Identifies the installed rule set: a datapath's boot id and its classifier version.

    An agent compares it with what it last wrote; any difference (another
    writer, a restarted datapath) makes it re-read the installed rules."""

    boot: str
    version: int


@dataclass
class _Outbox:
    """Frames collected while handling a batch, sent once per destination."""

    local: dict[str, list[bytes]] = field(default_factory=dict)
    tunnel: list[tuple[Remote, Emit]] = field(default_factory=list)
    vxlan_seen: set[tuple[str, int, bytes]] = field(default_factory=set)


class Forwarder:
    """One host's forwarding state and packet handling; see the module docstring."""

    def __init__(
        self,
        state_store: StateStore,
        tunnel: Tunnel | Mapping[str, Tunnel],
        clock: Callable[[], float],
        *,
        encap: Encap = "geneve",
        installed: Installed | None = None,
    ) -> None:
        self.tunnels: dict[str, Tunnel] = (
            dict(tunnel) if isinstance(tunnel, Mapping) else {encap: tunnel}
        )
        self.clock = clock
        self.boot = os.urandom(8).hex()
        self.installed = installed or Installed()
        self.store = state_store
        self.conntrack = FlowKeyConntrack(Conntrack(state_store))
        self.pipeline = Pipeline(
            self.installed.classifier, self.installed.physical.topology, self.conntrack
        )
        self.plugs: dict[str, Plug] = {}
        self.port_counters: dict[str, PortCounters] = {}
        self.tunnel_counters = PortCounters()
        self.drops: dict[DropReason, int] = {}
        self.installs = 0
        self.health = HealthChecker()
        self.health_events: list[tuple[str, str]] = []  # (member id, status) for the agent
        self.health_pending = False  # offer() queued answers: run health_tick soon
        self.policers = PortPolicers()
        # scale-out gateways: hellos, liveness, the choice of a gateway per flow
        self.gateways = GatewayPlane(clock, plugged=lambda iface: iface in self.plugs)

    # -- local interfaces --------------------------------------------------------------------

    def plug(self, port: Port, logical_port: str) -> None:
        """Attach ``port`` as ``logical_port``."""
        self.plugs[port.name] = Plug(port, logical_port)
        self.port_counters.setdefault(port.name, PortCounters())

    def unplug(self, iface: str) -> None:
        self.plugs.pop(iface, None)
        self.port_counters.pop(iface, None)

    def plugged(self) -> dict[str, str]:
        """Interface → logical port of every plugged interface."""
        return {iface: plug.logical_port for iface, plug in self.plugs.items()}

    # -- what is installed ---------------------------------------------------------------------

    @property
    def rule_version(self) -> RuleVersion:
        return RuleVersion(self.boot, self.installed.classifier.version)

    def rules(self) -> list[Rule]:
        return list(self.installed.classifier.rules())

    @property
    def generation(self) -> int:
        return self.installed.physical.generation

    def install(
        self, physical: PhysicalState, add: Sequence[Rule], remove: Sequence[Rule]
    ) -> Delta:
        """Apply a rule difference and switch to ``physical``'s topology and dispatch maps
        (``physical.rules`` is not read: the difference is what changes the classifier)."""
        delta = self.installed.classifier.apply(add=add, remove=remove)
        _keep_learned(self.pipeline.topology, physical.topology)
        self.installed.physical = physical
        self.pipeline.topology = physical.topology
        self.health.update(physical.monitors, physical.monitor_ifaces)
        self.policers.update(physical.limits)
        self.gateways.update(
            physical.chassis, physical.uplinks, physical.peers, physical.via_gateway
        )
        self.installs += 1
        if delta.added or delta.removed:
            log.info(
                "generation %d: +%d -%d rules (%d installed)",
                physical.generation,
                delta.added,
                delta.removed,
                len(self.installed.classifier),
            )
        return delta

    # -- packets from local interfaces ------------------------------------------------------------

    def handle_frames(self, iface: str, frames: Iterable[bytes]) -> list[Verdict]:
        """A batch received on ``iface``: run the pipeline, send the outputs per destination."""
        counters = self.port_counters.setdefault(iface, PortCounters())
        where = self.installed.physical.local_ports.get(iface)
        # decided once per batch: most ports have neither a policer nor a monitored member
        policed = iface in self.policers.rx
        health = self.health if self.health.active else None
        out = _Outbox()
        verdicts = []
        for frame in frames:
            counters.rx(len(frame))
            now = self.clock()
            if policed and not self.policers.police_rx(iface, len(frame), now):
                self._count_drop(counters, DropReason.QOS_POLICED)
                continue
            if health is not None and health.offer(iface, frame, now):
                self.health_pending = True
                continue
            if where is None:
                self._count_drop(counters, DropReason.UNKNOWN_PORT)
                continue
            verdict = self.pipeline.process(frame, where[0], where[1], now)
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
        if dp == HELLO_VNI:  # a gateway's hello (agent.gateways), not a packet to forward
            if not self.gateways.receive(frame):
                self._count_drop(self.tunnel_counters, DropReason.MALFORMED_TUNNEL)
            return []
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
            if remote is None and where in physical.via_gateway and not from_tunnel:
                remote = self.gateways.choose(where, emit.frame)  # an uplink elsewhere
                if remote is None:
                    self._count_drop(counters, DropReason.NO_GATEWAY)
                    continue
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
            if iface in self.policers.tx:
                frames = self._police_tx(iface, frames, counters)
            self._send(plug, frames, counters)
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

    def _police_tx(self, iface: str, frames: list[bytes], counters: PortCounters) -> list[bytes]:
        now, passed = self.clock(), []
        for frame in frames:
            if self.policers.police_tx(iface, len(frame), now):
                passed.append(frame)
            else:
                self._count_drop(counters, DropReason.QOS_POLICED)
        return passed

    def _send(self, plug: Plug, frames: Sequence[bytes], counters: PortCounters) -> None:
        if not frames:
            return
        try:
            plug.port.send_batch(frames)
        except OSError as err:
            counters.tx_errors += len(frames)
            log.warning("send on %s failed: %s", plug.port.name, err)
            return
        counters.tx(frames)

    # -- health checks ----------------------------------------------------------------------------

    def health_tick(self, now: float | None = None) -> float | None:
        """Send the health checker's due frames (probes and answers) straight to the member
        interfaces, bypassing the pipeline; queue its verdict changes for the agent. Returns
        when it next has work (None: idle). The loop calls it after a batch in which the
        checker took frames, and on a timer."""
        self.health_pending = False
        if not self.health.active:
            return None
        now = self.clock() if now is None else now
        for iface, frame in self.health.due(now):
            plug = self.plugs.get(iface)
            if plug is not None:
                sender = getattr(plug.port, "port", plug.port)  # not through offload carry
                self._send(Plug(sender, plug.logical_port), [frame], self.port_counters[iface])
        self.health_events.extend(self.health.changes())
        return self.health.next_deadline()

    def take_health_events(self) -> list[tuple[str, str]]:
        events, self.health_events = self.health_events, []
        return events

    # -- scale-out gateways -----------------------------------------------------------------------

    def gateway_tick(self, now: float | None = None) -> None:
        """Send this chassis' gateway hellos when due (the loop calls it every iteration;
        a chassis serving no localnet port sends none)."""
        self._send_hellos(self.gateways.due(now))

    def gateway_goodbye(self) -> None:
        """Tell every peer to stop choosing this chassis now (a clean stop)."""
        self._send_hellos(self.gateways.goodbye())

    def _send_hellos(self, hellos: Iterable[tuple[Remote, bytes]]) -> None:
        for remote, frame in hellos:
            tunnel = self.tunnels.get(remote.encap)
            try:
                if tunnel is None:
                    raise OSError(f"no {remote.encap} tunnel endpoint on this host")
                tunnel.send(remote.ip, HELLO_VNI, frame)
            except OSError:
                self.tunnel_counters.tx_errors += 1
                continue
            self.tunnel_counters.tx((frame,))

    def _count_drop(self, counters: PortCounters, reason: DropReason) -> None:
        counters.drops[reason] = counters.drops.get(reason, 0) + 1
        self.drops[reason] = self.drops.get(reason, 0) + 1

    # -- observability ----------------------------------------------------------------------------

    def counters(self) -> dict[str, object]:
        """The datapath's counters as plain data."""
        return {
            "installed_generation": self.generation,
            "ports": {iface: c.as_dict() for iface, c in sorted(self.port_counters.items())},
            "tunnel": self.tunnel_counters.as_dict(),
            "drops": {r.value: n for r, n in sorted(self.drops.items(), key=_by_value)},
            "rules": len(self.installed.classifier),
            "installs": self.installs,
            "health": {"checks": self.health.counters.as_dict(), "members": self.health.statuses()},
            "qos": self.policers.counters(),
            "state": self.store.stats(),
            "gateways": self.gateways.status(),
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
