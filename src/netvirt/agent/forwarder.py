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

Flow cache: with ``flow_cache`` set (the datapath process does), a packet
whose flow the slow path already handled under the same installed state and
connection states is rewritten and sent from the cache without running the
pipeline (``dataplane/fastpath.py``); behind it, megaflows serve every packet
(connection setup and teardown included) that agrees with a walk on the bits
it read, for walks without conntrack (``dataplane/megaflow.py``, learned from
local ports only); the slow path itself replays segments of walks split at
conntrack (``dataplane/segments.py``), for local ports and tunnels alike.
Policers and health checks still see every packet first; counters and drops
are those of the slow path. Cached outcomes depend on
:meth:`Forwarder.cache_version`: the install count, the MAC bindings and the
live gateways.

Offload metadata: a frame received with a ``virtio_net_hdr`` (a
:class:`~netvirt.dataplane.ports.base.Frame` with ``vnet``) keeps it on the
outputs that are rewrites of it (``ifaces.carry_output``), decided when the
output is produced, so frames with metadata are handled in batches too.

Counters: per interface rx/tx packets and bytes and drops by reason (a
tunnel packet's drops count on its destination interface), the same for the
tunnel, and drops by reason overall.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from netvirt.agent.batchwork import (
    BatchItem,
    Job,
    Miss,
    Outbox,
    ToTunnel,
    Work,
    keep_learned,
    l2_targets,
    reply_of,
    store_down,
    syn_ack_half,
)
from netvirt.agent.bindings import Plug
from netvirt.agent.counters import Item, PortCounters, by_value, size_of
from netvirt.agent.gateways import HELLO_VNI, GatewayPlane
from netvirt.agent.health import HealthChecker
from netvirt.agent.ifaces import carry_output
from netvirt.agent.parking import Held, Pair, Parking, conversation
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
from netvirt.dataplane.actions import CtSnat
from netvirt.dataplane.classifier import Classifier, Delta
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.fastpath import Entry, FlowCache, Layout, Output, derive, flow_key, frame_key
from netvirt.dataplane.flow import Rule
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.offload.handshake import Handshakes
from netvirt.dataplane.pipeline import Pipeline, Verdict
from netvirt.dataplane.policer import PortPolicers
from netvirt.dataplane.ports.base import Frame
from netvirt.state.jobs import Steps, StoreJobs
from netvirt.state.store import StateStore, StateStoreError

log = logging.getLogger(__name__)
ETH_HLEN = 14


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
        flow_cache: FlowCache | None = None,
        state_fail: str = "closed",
    ) -> None:
        self.tunnels: dict[str, Tunnel] = (
            dict(tunnel) if isinstance(tunnel, Mapping) else {encap: tunnel}
        )
        self.clock = clock
        self.boot = os.urandom(8).hex()
        self.installed = installed or Installed()
        self.store = state_store
        # state_fail: what conntrack does when the store cannot be reached (docs/stateless-nf.md)
        self.conntrack = FlowKeyConntrack(Conntrack(state_store, fail=state_fail))
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
        self.flow_cache = flow_cache
        if flow_cache is not None:  # (a kernel offload owning connections folds them back)
            flow_cache.conntrack = self.conntrack.conntrack
        # slow-path work parked on an asynchronous store, and the packets held behind it
        self.jobs = StoreJobs(state_store)
        self.parking = Parking()
        self._flag_rules: set[Rule] = set()  # installed rules matching TCP flags
        self.handshakes = Handshakes(  # SYNs, for their first ACK predicted at the SYN-ACK
            lambda: (self.pipeline, self.conntrack.conntrack, self.installed.physical)
        )
        self.slow_errors = 0  # slow-path batches lost to a bug (dropped as internal_error)
        self._slow_error_logged = -1e9

    # -- local interfaces --------------------------------------------------------------------

    def plug(self, port: Port, logical_port: str) -> None:
        """Attach ``port`` as ``logical_port``."""
        self.plugs[port.name] = Plug(port, logical_port)
        self.port_counters.setdefault(port.name, PortCounters())

    def unplug(self, iface: str) -> None:
        self.plugs.pop(iface, None)
        self.port_counters.pop(iface, None)

    def offload_blocked(self, iface: str) -> bool:
        """Ports whose every frame the forwarder must see (policed, health-checked)."""
        policers = self.policers
        return iface in policers.rx or iface in policers.tx or self.health.watches(iface)

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
        (``physical.rules`` is not read: the difference is what changes the classifier).
        Slow-path work parked on the store finishes first, under the rules it started with."""
        self.jobs.drain()
        delta = self.installed.classifier.apply(add=add, remove=remove)
        self._note_flag_rules(add, remove)
        keep_learned(self.pipeline.topology, physical.topology)
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

    def _note_flag_rules(self, add: Sequence[Rule], remove: Sequence[Rule]) -> None:
        """Keep the installed rules that match TCP flags: while there are any, an outcome
        learned from one packet of a connection is not handed to the kernel for the
        connection's other packets (``offload/conns.py`` serves them whatever their flags)."""
        flags = self._flag_rules
        for rule in remove:
            flags.discard(rule)
        for rule in add:
            if any(m.field == "tcp.flags" for m in rule.match):
                flags.add(rule)

    # -- packets from local interfaces ------------------------------------------------------------

    def handle_frames(
        self, iface: str, frames: Iterable[Item], *, resumed: bool = False
    ) -> list[Verdict]:
        """A batch received on ``iface``: replay the flow cache where it can, run the
        pipeline for the rest as one batch (conntrack goes to the state store once per
        step for all of them), send the outputs per destination. Returns the slow
        path's verdicts (those of work parked on the store come later, not here).
        ``resumed``: packets that were held behind parked work (``agent/parking.py``),
        already counted, policed and offered to the health checker."""
        counters = self.port_counters.setdefault(iface, PortCounters())
        where = self.installed.physical.local_ports.get(iface)
        # decided once per batch: most ports have neither a policer nor a monitored member
        policed = iface in self.policers.rx and not resumed
        health = self.health if self.health.active and not resumed else None
        cache = self._cache_for_batch()
        lookup = cache.lookup if cache is not None else None
        mega = cache.megaflows if cache is not None else None
        out, clock, parking = Outbox(), self.clock, self.parking
        local = out.local
        held = parking.held  # conversations with work parked on the store (usually empty)
        misses: list[Miss] = []
        pending: set[Pair] = set()  # conversations with a packet on the slow path
        received = size = 0
        for item in frames:
            frame = item if type(item) is Frame else Frame(cast(bytes, item))
            data = frame.data
            received += 1
            size += len(data)
            now = clock()
            if policed and not self.policers.police_rx(iface, len(data), now):
                self._count_drop(counters, DropReason.QOS_POLICED)
                continue
            if health is not None and health.offer(iface, data, now):
                self.health_pending = True
                continue
            if where is None:
                self._count_drop(counters, DropReason.UNKNOWN_PORT)
                continue
            # read only while something waits (parked, or earlier in this batch)
            talk = conversation(data) if held or pending else None
            if talk is not None and talk in held:
                if not parking.hold(talk, frame, iface=iface):
                    self._count_drop(counters, DropReason.STATE_BACKLOG)
                continue
            framed = frame_key(data) if lookup is not None else None
            found: tuple[bytes, Layout] | None = framed if framed and framed[0] else None  # type: ignore[assignment]
            vnet = frame.vnet
            seeded = vnet is not None and vnet.needs_csum
            key: Hashable = None
            entry = expired = None  # (the exact cache first; a megaflow hit fills it)
            if found is not None:
                key = (iface, found[0], seeded)
                entry, expired = lookup(key, now)  # type: ignore[misc]
            if entry is None and expired is None and mega is not None and framed is not None:
                entry = mega.lookup(iface, data, seeded, now, framed[1])
                if entry is not None and key is not None:
                    cache.insert(key, entry)  # type: ignore[union-attr]
            waiting = talk is not None and talk in pending
            if entry is None or waiting:
                miss = Miss(frame, now, key, found, expired, iface)
                if expired is not None and not waiting:
                    # revalidating a known flow: now, one packet, so that the rest of the
                    # batch hits the renewed entry (or waits for it, when it is parked)
                    now_item: BatchItem = (data, where[0], where[1], None, now)
                    self._start_slow([(miss, counters, now_item)], out, from_tunnel=False)
                    continue
                misses.append(miss)
                talk = talk or conversation(data)
                if talk is not None:
                    pending.add(talk)  # later packets of the conversation keep their order
                continue
            outputs = entry.outputs
            if len(outputs) == 1 and not entry.drops:  # the usual case, inlined
                output = outputs[0]
                wire = output.rewrite.apply(data)
                dest = output.dest
                sent: Item = wire if vnet is None else Frame(wire, vnet)
                if type(dest) is str:
                    queue = local.get(dest)
                    if queue is None:
                        local[dest] = [sent]
                    else:
                        queue.append(sent)
                else:
                    out.tunnel.append((cast(ToTunnel, dest), sent))
            else:
                self._replay(entry, frame, out, counters)
        if not resumed:
            counters.rx_packets += received
            counters.rx_bytes += size
        verdicts: list[Verdict] = []
        if misses and where is not None:
            dp, inport = where
            work = [(m, counters, (m.frame.data, dp, inport, None, m.now)) for m in misses]
            verdicts = self._start_slow(work, out, from_tunnel=False)
        self._flush(out)
        return verdicts

    def _start_slow(self, work: Sequence[Work], out: Outbox, *, from_tunnel: bool) -> list[Verdict]:
        """Run the slow path for ``work`` as one job on the store (``state/jobs.py``).
        Done at once (a local store, or nothing to ask it): its outputs go to ``out``
        and its verdicts are returned. Parked on an asynchronous store: the packets'
        conversations are held (``agent/parking.py``) and the job sends its outputs, learns
        its flows and lets the held packets go when the replies are in."""
        cache = self.flow_cache
        version = self.cache_version() if cache is not None else None
        fold = cache.fold_back if cache is not None else None
        if fold is not None:  # a connection the kernel owns comes back before its packet
            fold([item[0] for _, _, item in work])
        job = Job()

        def done(verdicts: list[Verdict]) -> None:
            target = out if job.inline else Outbox()
            learn = cache is not None and self.cache_version() == version
            for (miss, counters, _), verdict in zip(work, verdicts, strict=True):
                self._settle(cache, miss, verdict, target, counters, from_tunnel, learn=learn)
            if job.inline:
                job.verdicts = verdicts
                return
            self._flush(target)
            self._resume(self.parking.release(job.pairs))

        if not self.jobs.start(self._slow_steps([item for _, _, item in work]), done):
            job.inline = False
            job.pairs = {p for miss, _, _ in work if (p := conversation(miss.frame.data))}
            self.parking.park(job.pairs)
        return job.verdicts

    def _resume(self, held: list[Held]) -> None:
        """Handle packets that waited for parked work again, in arrival order (runs of
        one interface, or of the tunnel, go as one batch)."""
        start = 0
        while start < len(held):
            first = held[start]
            end = start + 1
            while end < len(held) and held[end].iface == first.iface:
                end += 1
            run = held[start:end]
            if first.iface is not None:
                self.handle_frames(first.iface, [h.frame for h in run], resumed=True)
            else:
                packets = [(*h.tunnel, h.frame) for h in run if h.tunnel is not None]
                self.handle_decapsulated_batch(packets, counted=True)
            start = end

    def _slow_steps(self, items: list[BatchItem]) -> Steps[list[Verdict]]:
        """The pipeline for a batch, its store round trips yielded to :class:`StoreJobs`;
        a store that cannot be reached drops what the pipeline could not settle
        without it, a bug drops the batch (never a held connection left behind)."""
        try:
            return (yield from self.pipeline.process_steps(items))
        except StateStoreError as err:
            log.debug("state store: %s", err)
            return [Verdict(drops=[DropReason.STATE_UNAVAILABLE], cacheable=False) for _ in items]
        except Exception:  # a bug: these packets are lost, their held connections go on
            self.slow_errors += 1
            now = time.monotonic()
            if now - self._slow_error_logged >= 5.0:  # at packet rate: now and then
                self._slow_error_logged = now
                log.exception("slow path failed (%d times so far)", self.slow_errors)
            return [Verdict(drops=[DropReason.INTERNAL_ERROR], cacheable=False) for _ in items]

    def _settle(
        self,
        cache: FlowCache | None,
        miss: Miss,
        verdict: Verdict,
        out: Outbox,
        counters: PortCounters,
        from_tunnel: bool,
        *,
        learn: bool = True,
    ) -> None:
        """Send a slow-path verdict's outputs and learn its flow (or keep serving an
        expired entry when only the state store failed). ``learn`` False: what is
        installed changed while the verdict was computed (work parked on the store)."""
        if miss.expired is not None and cache is not None and store_down(verdict):
            cache.counters.stale_served += 1
            self._replay(miss.expired, miss.frame, out, counters)
            return
        queued = self._dispatch(verdict, miss.frame, out, counters, from_tunnel=from_tunnel)
        if cache is not None and learn:
            self._learn(cache, miss, verdict, queued)

    # -- the flow cache ---------------------------------------------------------------------------

    def cache_version(self) -> Hashable:
        """What cached outcomes depend on besides the packet and its connections."""
        topology = self.installed.physical.topology
        return (self.installs, len(topology.mac_bindings), self.gateways.epoch())

    def _cache_for_batch(self) -> FlowCache | None:
        cache = self.flow_cache
        if cache is not None:
            cache.sync(self.cache_version())
        self.pipeline.record_wildcards = cache is not None and cache.megaflows is not None
        self.pipeline.segments = cache.segments if cache is not None else None
        return cache

    def _replay(self, entry: Entry, frame: Frame, out: Outbox, counters: PortCounters) -> None:
        for reason in entry.drops:
            self._count_drop(counters, reason)
        data, vnet = frame.data, frame.vnet
        for output in entry.outputs:
            wire = output.rewrite.apply(data)
            item: Item = wire if vnet is None else Frame(wire, vnet)
            dest = output.dest
            if isinstance(dest, str):
                out.local.setdefault(dest, []).append(item)
            else:
                out.tunnel.append((cast(ToTunnel, dest), item))

    def _learn(
        self,
        cache: FlowCache,
        miss: Miss,
        verdict: Verdict,
        outputs: list[tuple[Hashable, Item]] | None,
    ) -> None:
        """Remember a pure rewrite's outcome: as a megaflow when the walk allows, by its key."""
        deps = cache.epochs.observe(verdict.ct)  # also for uncacheable outcomes: epochs move
        key, found, frame, mega, wires = miss.key, miss.found, miss.frame, cache.megaflows, []
        for dest, item in outputs or ():
            if isinstance(item, Frame) and item.vnet != frame.vnet:
                outputs = None  # metadata changed (a pushed tag): not cached
                break
            wires.append((dest, item.data if isinstance(item, Frame) else item))
        if outputs is None or not verdict.cacheable:
            cache.counters.uncacheable += key is not None
            return
        seeded = frame.vnet is not None and frame.vnet.needs_csum
        via, wildcards = self.installed.physical.via_gateway, verdict.wildcards
        direct = not verdict.ct and not any((e.datapath, e.port) in via for e in verdict.outputs)
        if mega and miss.iface and wildcards and direct:
            entry = mega.learn(
                miss.iface, frame.data, seeded, wildcards, wires, verdict.drops, miss.now
            )
            if entry is not None and key is not None:
                cache.insert(key, entry)
                return
        if key is None or found is None or deps is None:
            cache.counters.uncacheable += key is not None
            half, iface = cache.half_learned, miss.iface
            if half is not None and key is None and iface and not self._flag_rules:
                found_half = syn_ack_half(iface, frame.data, seeded, verdict, wires, miss.now)
                self._template_hook(cache)
                self.handshakes.learned(half, found_half, iface, frame.data, seeded, verdict)
            return
        cached: list[Output] = []
        for dest, wire in wires:
            rewrite = derive(frame.data, wire, found[1], seeded)
            if rewrite is None:
                cache.counters.uncacheable += 1
                return
            cached.append(Output(dest, rewrite))
        replies = () if self._flag_rules else tuple(reply_of(r) for r in verdict.ct)
        cache.insert(key, Entry(tuple(cached), tuple(verdict.drops), deps, miss.now, replies))

    def _template_hook(self, cache: FlowCache) -> None:
        """SYN templates (``offload/templates.py``): on while the kernel offload has them on."""
        hook = getattr(cache.listener, "template_hook", None)
        shakes = self.handshakes
        if hook is None:
            shakes.templated, shakes.memo.templates = None, False
        elif shakes.templated is None:
            snat_range = self._snat_range
            shakes.templated = lambda key, entry, sport: hook(key, entry, sport, snat_range)
            shakes.memo.templates = True

    def _snat_range(self, ip: int) -> tuple[int, int] | None:
        """The one masquerade port range installed rules give SNAT address ``ip`` (None:
        none, or several)."""
        found = {
            act.port_range
            for rule in self.installed.classifier.rules()
            for act in rule.actions
            if isinstance(act, CtSnat) and act.ip == ip and act.port_range is not None
        }
        return found.pop() if len(found) == 1 else None

    # -- packets from the underlay ----------------------------------------------------------------

    def handle_tunnel(self, payload: bytes, encap: Encap = "geneve") -> list[Verdict]:
        """A tunnel UDP payload: decapsulate, then :meth:`handle_decapsulated`."""
        self.tunnel_counters.rx(len(payload))
        try:
            packet = decapsulate(encap, payload)
        except ParseError as err:
            self._count_drop(self.tunnel_counters, err.reason)
            return []
        return self.handle_decapsulated_batch(
            [(packet.vni, packet.in_key, packet.out_key, Frame(packet.frame))], counted=True
        )

    def handle_decapsulated(
        self, vni: int, ingress: int | None, egress: int | None, frame: Item
    ) -> list[Verdict]:
        """A packet a tunnel endpoint already decoded (``egress`` None: VXLAN): run the
        destination port's egress pipeline and deliver."""
        item = frame if isinstance(frame, Frame) else Frame(frame)
        return self.handle_decapsulated_batch([(vni, ingress, egress, item)])

    def handle_decapsulated_batch(
        self, packets: Sequence[tuple[int, int | None, int | None, Frame]], *, counted: bool = False
    ) -> list[Verdict]:
        """Packets a tunnel endpoint decoded, as one batch: the flow cache first, then the
        egress pipelines of the rest side by side (see :meth:`handle_frames`)."""
        physical = self.installed.physical
        tunnel_counters = self.tunnel_counters
        cache = self._cache_for_batch()
        out = Outbox()
        misses: list[tuple[Miss, str | None, BatchItem]] = []
        pending: set[Pair] = set()
        parking = self.parking
        held = parking.held
        for dp, ingress, egress, frame in packets:
            data = frame.data
            if not counted:  # (``counted``: the caller counted the encapsulated size)
                tunnel_counters.rx(len(data))
            if dp == HELLO_VNI:  # a gateway's hello (agent.gateways), not a packet to forward
                if not self.gateways.receive(data):
                    self._count_drop(tunnel_counters, DropReason.MALFORMED_TUNNEL)
                continue
            if physical.topology.kinds.get(dp) != "switch":
                self._count_drop(tunnel_counters, DropReason.UNKNOWN_VNI)
                continue
            talk = conversation(data) if held or pending else None
            if talk is not None and talk in held:
                if not parking.hold(talk, frame, tunnel=(dp, ingress, egress)):
                    self._count_drop(tunnel_counters, DropReason.STATE_BACKLOG)
                continue
            now = self.clock()
            key: Hashable = None
            expired: Entry | None = None
            found = flow_key(data) if cache is not None else None
            if cache is not None and found is not None:
                vnet = frame.vnet
                key = (dp, ingress, egress, found[0], vnet is not None and vnet.needs_csum)
                entry, expired = cache.lookup(key, now)
                talk = talk or cast(Pair, conversation(data))
                if entry is not None and talk not in pending:  # drops count where the slow
                    counters = self._target_counters(dp, egress, data) if entry.drops else None
                    self._replay(entry, frame, out, counters or tunnel_counters)  # path's do
                    continue
                pending.add(talk)
            targets: tuple[int, ...]
            if egress is not None:
                inport, targets = ingress or NO_PORT, (egress,)
            elif len(data) < ETH_HLEN:
                self._count_drop(tunnel_counters, DropReason.TRUNCATED_ETHERNET)
                continue
            else:
                inport, targets = NO_PORT, l2_targets(physical, dp, data)
            if not targets:
                self._count_drop(tunnel_counters, DropReason.UNKNOWN_PORT)
            learn = len(targets) == 1  # one target: cacheable (a replay counts drops here)
            for outport in targets:
                iface = physical.local.get((dp, outport))
                if iface is None:
                    self._count_drop(tunnel_counters, DropReason.UNKNOWN_PORT)
                    continue
                miss = Miss(frame, now, key if learn else None, found, expired)
                misses.append((miss, iface, (data, dp, inport, outport, now)))
        verdicts: list[Verdict] = []
        if misses:
            counters_of = self.port_counters.setdefault
            work = [(m, counters_of(i or "", PortCounters()), item) for m, i, item in misses]
            verdicts = self._start_slow(work, out, from_tunnel=True)
        self._flush(out)
        return verdicts

    def _target_counters(self, dp: int, egress: int | None, data: bytes) -> PortCounters | None:
        """The counters of a tunnel packet's one local destination interface, if any."""
        physical = self.installed.physical
        targets = (egress,) if egress is not None else l2_targets(physical, dp, data)
        iface = physical.local.get((dp, targets[0])) if len(targets) == 1 else None
        return self.port_counters.setdefault(iface, PortCounters()) if iface else None

    # -- dispatch ---------------------------------------------------------------------------------

    def _dispatch(
        self,
        verdict: Verdict,
        frame: Frame,
        out: Outbox,
        counters: PortCounters,
        *,
        from_tunnel: bool,
    ) -> list[tuple[Hashable, Item]] | None:
        """Queue the verdict's outputs; returns them with their destinations, or None when
        one was dropped or deduplicated here (such an outcome is not cached)."""
        for reason in verdict.drops:
            self._count_drop(counters, reason)
        physical = self.installed.physical
        queued: list[tuple[Hashable, Item]] | None = []
        for emit in verdict.outputs:
            try:
                item = carry_output(frame, emit.frame)
            except ParseError as err:
                self._count_drop(counters, err.reason)
                queued = None
                continue
            where = (emit.datapath, emit.port)
            iface = physical.local.get(where)
            if iface is not None:
                out.local.setdefault(iface, []).append(item)
                if queued is not None:
                    queued.append((iface, item))
                continue
            remote = physical.remote.get(where)
            if remote is None and where in physical.via_gateway and not from_tunnel:
                remote = self.gateways.choose(where, emit.frame)  # an uplink elsewhere
                if remote is None:
                    self._count_drop(counters, DropReason.NO_GATEWAY)
                    queued = None
                    continue
            if remote is None or from_tunnel:  # never re-tunnel: no loops between hosts
                self._count_drop(counters, DropReason.UNKNOWN_PORT)
                queued = None
                continue
            if remote.encap == "vxlan" and emit.frame[0] & 1:
                seen = (remote.ip, emit.datapath, emit.frame)
                queued = None
                if seen in out.vxlan_seen:
                    continue  # the receiver floods a VXLAN broadcast to its ports itself
                out.vxlan_seen.add(seen)
            dest = ToTunnel(remote, emit.datapath, emit.inport, emit.port)
            out.tunnel.append((dest, item))
            if queued is not None:
                queued.append((dest, item))
        return queued

    def _flush(self, out: Outbox) -> None:
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
        if not out.tunnel:
            return
        tunnels, counters = self.tunnels, self.tunnel_counters
        sent = size = 0
        for dest, item in out.tunnel:
            remote = dest.remote
            tunnel = tunnels.get(remote.encap)
            try:
                if tunnel is None:
                    raise OSError(f"no {remote.encap} tunnel endpoint on this host")
                tunnel.send(remote.ip, dest.vni, item, dest.ingress, dest.egress)
            except OSError as err:
                counters.tx_errors += 1
                log.warning("tunnel send to %s failed: %s", remote.ip, err)
                continue
            sent += 1
            size += size_of(item)
        counters.tx_packets += sent
        counters.tx_bytes += size

    def _police_tx(self, iface: str, frames: list[Item], counters: PortCounters) -> list[Item]:
        now, passed = self.clock(), []
        for frame in frames:
            if self.policers.police_tx(iface, size_of(frame), now):
                passed.append(frame)
            else:
                self._count_drop(counters, DropReason.QOS_POLICED)
        return passed

    def _send(self, plug: Plug, frames: Sequence[Item], counters: PortCounters) -> None:
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
                self._send(plug, [frame], self.port_counters[iface])
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
        cache = self.flow_cache
        return {
            "flow_cache": cache.stats() if cache is not None else {},
            "megaflows": cache.megaflows.stats() if cache and cache.megaflows else {},
            "segments": cache.segments.stats() if cache and cache.segments else {},
            "handshakes": self.handshakes.stats(),
            "installed_generation": self.generation,
            "ports": {iface: c.as_dict() for iface, c in sorted(self.port_counters.items())},
            "tunnel": self.tunnel_counters.as_dict(),
            "drops": {r.value: n for r, n in sorted(self.drops.items(), key=by_value)},
            "rules": len(self.installed.classifier),
            "installs": self.installs,
            "health": {"checks": self.health.counters.as_dict(), "members": self.health.statuses()},
            "qos": self.policers.counters(),
            "state": self.store.stats(),
            "parked": self.jobs.status() | {"held": self.parking.status()},
            "gateways": self.gateways.status(),
        }
