"""What this host's datapath needs, computed from the SB state and the local bindings.

Theory of operation
-------------------
Routing happens on the sending host (OVN's single hop), so a host needs every
datapath a packet from one of its VMs can reach without crossing a tunnel:
the switches with a local VIF, and the routers and switches reachable from
them through patch ports, transitively (:func:`relevant_datapaths`). Only
switch datapaths cross tunnels; a tunnel packet's VNI is the switch's
datapath key.

For those datapaths :func:`compute` produces

* the classifier rules: ``compiler.translate.flow_rules`` of their logical
  flows, in the SB's flow order (first-added wins ties in the classifier, so a
  deterministic order keeps lookups deterministic);
* the pipeline :class:`~netvirt.dataplane.pipeline.Topology`, where each VIF
  port is ``vif`` if it is local, ``tunnel`` if it lives on another chassis
  (the pipeline delivers it straight from the ingress pipeline; the agent
  encapsulates it with VNI = datapath key and, for Geneve, the logical
  ingress and egress port keys; the receiver runs the egress pipeline), or
  ``unbound`` (dropped as ``UNKNOWN_PORT``, with a note in
  :attr:`PhysicalState.notes`). Unbound ports are left out of flood groups:
  a broadcast has nowhere to go for them;
* a ``localnet`` port (an external network's uplink) is ``vif`` where it is
  plugged (a gateway) and ``tunnel`` elsewhere, listed in
  :attr:`PhysicalState.via_gateway`: the forwarder sends each flow to a live
  gateway chosen by ``agent.gateways`` (docs/gateways.md);
* the maps the agent dispatches with: local (datapath, port key) ↔ interface,
  remote (datapath, port key) → chassis, and per switch the local ports by
  MAC and the local flood members (a VXLAN packet carries only the VNI, so
  the receiver finds the destination port itself, see ``agent.py``).

Translation is cached per logical flow (:class:`FlowTranslator`); a cached
translation is reused only if every port name it resolved still resolves to
the same key (revalidated, never trusted), so the cache can never change the
result, only its cost. The expansion of a match object shared by flows of many
switches (an address set) is made once and revalidated the same way
(docs/compiler.md).

Pure functions of their inputs; nothing here touches I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from netvirt.agent.bindings import Bindings
from netvirt.agent.health import local_monitors
from netvirt.compiler import translate
from netvirt.compiler.expr.normalize import ExprError
from netvirt.compiler.lflow import LogicalFlow
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.flow import Rule
from netvirt.dataplane.headers.geneve import PROTO_ETHERNET, GeneveHeader, netvirt_header, ports
from netvirt.dataplane.headers.vxlan import VxlanHeader
from netvirt.dataplane.pipeline import Topology
from netvirt.dataplane.policer import Limits
from netvirt.dataplane.ports.base import Frame
from netvirt.southbound.model import PortBinding, SBState, ServiceMonitor

log = logging.getLogger(__name__)

Encap = Literal["geneve", "vxlan"]
NO_PORT = 0  # logical port keys start at 1: "no inport" for VXLAN-received packets


class Port(Protocol):
    """A local interface of the datapath (``dataplane.ports``: TAP, AF_PACKET, memory)."""

    @property
    def name(self) -> str: ...

    def send_batch(self, frames: Sequence[bytes | Frame]) -> int: ...


class Tunnel(Protocol):
    """One encapsulation's endpoint on the underlay (``dataplane.tunnels``).

    ``send`` encapsulates ``item`` for ``remote`` with ``vni`` and, where the
    encapsulation carries them (Geneve), the logical ingress and egress port
    keys; it returns the datagrams sent. :func:`encapsulate` and
    :func:`decapsulate` are the plain codecs for in-memory twins.
    """

    def send(
        self, remote: str, vni: int, item: bytes | Frame, ingress: int = 0, egress: int = 0
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Remote:
    """Where a remote port lives: its chassis, underlay address and encapsulation."""

    chassis: str
    ip: str
    encap: Encap


@dataclass
class PhysicalState:
    """Everything the datapath of one host executes for one SB generation."""

    generation: int
    datapaths: frozenset[int]
    rules: list[Rule]
    topology: Topology
    local: dict[tuple[int, int], str] = field(default_factory=dict)  # (dp, key) -> iface
    local_ports: dict[str, tuple[int, int]] = field(default_factory=dict)  # iface -> (dp, key)
    remote: dict[tuple[int, int], Remote] = field(default_factory=dict)
    macs: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)  # (dp, mac)
    flood: dict[int, tuple[int, ...]] = field(default_factory=dict)  # switch -> local members
    notes: list[str] = field(default_factory=list)
    # LB members bound here that this host health-checks, and their interfaces
    monitors: list[ServiceMonitor] = field(default_factory=list)
    monitor_ifaces: dict[str, str] = field(default_factory=dict)  # logical port -> iface
    limits: dict[str, Limits] = field(default_factory=dict)  # iface -> (egress, ingress) QoS
    # scale-out gateways (agent.gateways, docs/gateways.md): this chassis, every other one,
    # the localnet ports plugged here, and those reached through a live gateway chassis
    chassis: str = ""
    peers: dict[str, Remote] = field(default_factory=dict)
    uplinks: dict[str, str] = field(default_factory=dict)  # localnet port here -> iface
    via_gateway: dict[tuple[int, int], str] = field(default_factory=dict)  # (dp, key) -> port


def empty_state() -> PhysicalState:
    """Nothing installed: what a fresh datapath runs before its first snapshot."""
    return PhysicalState(0, frozenset(), [], translate.topology(SBState()))


# -- datapaths -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortIndex:
    """The SB's ports by datapath and its patch ports: what :func:`compute` needs to look
    at only the relevant datapaths' ports. The agent's mirror keeps one up to date
    delta by delta (``reconcile.SBMirror``); :func:`port_index` builds one from scratch."""

    by_datapath: Mapping[int, Mapping[str, PortBinding]]
    patches: Mapping[str, PortBinding]


def port_index(sb: SBState) -> PortIndex:
    by_dp: dict[int, dict[str, PortBinding]] = {}
    for name, pb in sb.ports.items():
        by_dp.setdefault(pb.datapath, {})[name] = pb
    patches = {n: pb for n, pb in sb.ports.items() if pb.type == "patch"}
    return PortIndex(by_dp, patches)


def relevant_datapaths(
    sb: SBState, bindings: Bindings, patches: Mapping[str, PortBinding] | None = None
) -> frozenset[int]:
    """Switches with a local VIF plus everything reachable from them through patch ports
    (``patches``: the SB's patch ports, if known; else every port is looked at)."""
    neighbours: dict[int, set[int]] = {}
    for pb in (sb.ports if patches is None else patches).values():
        peer = sb.ports.get(pb.peer) if pb.type == "patch" and pb.peer else None
        if peer is not None:
            neighbours.setdefault(pb.datapath, set()).add(peer.datapath)
            neighbours.setdefault(peer.datapath, set()).add(pb.datapath)
    todo = [sb.ports[p].datapath for p in bindings.local if p in sb.ports]
    seen: set[int] = set()
    while todo:
        dp = todo.pop()
        if dp in seen or dp not in sb.datapaths:
            continue
        seen.add(dp)
        todo.extend(neighbours.get(dp, ()))
    return frozenset(seen)


# -- flows -------------------------------------------------------------------------------------


# a match's translation: the match itself (the key is its id), its conjunctions and the
# port names they resolved with their keys
_Shared = tuple[object, list[translate.Conjunction], tuple[tuple[str, int], ...]]


class FlowTranslator:
    """Logical flow → classifier rules, cached and revalidated per flow.

    Below the per-flow cache, the expansion of a match is shared by every flow holding
    the very same match object (the decoder and the compiler share one object for a match
    spelled alike in many switches, such as an address set of a thousand members): the
    rules differ only in their datapath's ``metadata``. Revalidated like the flow cache."""

    def __init__(self) -> None:
        self._cache: dict[LogicalFlow, tuple[tuple[Rule, ...], tuple[tuple[str, int], ...]]] = {}
        self._shared: dict[int, _Shared] = {}
        self.hits = 0
        self.misses = 0
        self.failures = 0

    def rules(self, flows: Iterable[LogicalFlow], sb: SBState, notes: list[str]) -> list[Rule]:
        """The rules of ``flows`` in order, without duplicates; drops stale cache entries."""
        keys = PortKeys(sb)
        out: dict[Rule, None] = {}
        fresh: dict[LogicalFlow, tuple[tuple[Rule, ...], tuple[tuple[str, int], ...]]] = {}
        shared: dict[int, _Shared] = {}
        for flow in flows:
            entry = self._cache.get(flow)
            if entry is not None and all(keys.get(n) == k for n, k in entry[1]):
                self.hits += 1
            else:
                entry = self._translate(flow, keys, notes, shared)
            fresh[flow] = entry
            out.update(dict.fromkeys(entry[0]))
        self._cache, self._shared = fresh, shared
        return list(out)

    def _translate(
        self, flow: LogicalFlow, keys: PortKeys, notes: list[str], shared: dict[int, _Shared]
    ) -> tuple[tuple[Rule, ...], tuple[tuple[str, int], ...]]:
        self.misses += 1
        match = flow.match
        known = shared.get(id(match)) or self._shared.get(id(match))
        if known is None or known[0] is not match or any(keys.get(n) != k for n, k in known[2]):
            recorder = _Resolver(keys)
            try:
                conjs = translate.conjunctions(match, recorder.port_key)
            except (KeyError, ExprError) as err:
                self.failures += 1
                notes.append(f"flow not installed ({err}): {flow.stage.name} {flow.provenance}")
                log.warning("cannot translate flow %s: %s", flow, err)
                return (), tuple(recorder.used.items())
            known = (match, conjs, tuple(recorder.used.items()))
        shared[id(match)] = known
        return tuple(translate.rules_of(flow, known[1])), known[2]


class _Resolver:
    def __init__(self, keys: PortKeys) -> None:
        self.keys = keys
        self.used: dict[str, int] = {}

    def port_key(self, name: str) -> int:
        key = self.keys.get(name)
        if key is None:
            raise KeyError(f"unknown logical port {name!r}")
        self.used[name] = key
        return key


class PortKeys:
    """Name → key for ports and groups, as ``SBState.port_key`` resolves them, looked up
    when asked (a dict of every port's key was O(ports) work per step)."""

    def __init__(self, sb: SBState) -> None:
        self.sb = sb
        self._groups: dict[str, int] | None = None

    def get(self, name: str) -> int | None:
        pb = self.sb.ports.get(name)
        if pb is not None:
            return pb.key
        if self._groups is None:
            self._groups = {}
            for group in self.sb.groups.values():
                self._groups.setdefault(group.name, group.key)
        return self._groups.get(name)


def port_keys(sb: SBState) -> dict[str, int]:
    """Name → key for ports and groups, as ``SBState.port_key`` resolves them."""
    keys = {name: pb.key for name, pb in sb.ports.items()}
    for group in sb.groups.values():
        keys.setdefault(group.name, group.key)
    return keys


# -- the whole state ---------------------------------------------------------------------------


def compute(
    sb: SBState,
    bindings: Bindings,
    translator: FlowTranslator | None = None,
    index: PortIndex | None = None,
) -> PhysicalState:
    """The physical state of this host for ``sb`` (see the module docstring); ``index``:
    ``sb``'s ports by datapath, if known (the work is then proportional to the relevant
    datapaths' ports, not to the cloud's)."""
    index = index or port_index(sb)
    dps = relevant_datapaths(sb, bindings, index.patches)
    notes: list[str] = []
    flows = [f for f in sb.flows if f.datapath in dps]
    rules = (translator or FlowTranslator()).rules(flows, sb, notes)
    dp_ports = {n: p for dp in sorted(dps) for n, p in index.by_datapath.get(dp, {}).items()}
    topology = _topology(sb, bindings, dps, dp_ports)
    state = PhysicalState(sb.generation, dps, rules, topology, notes=notes)
    _port_maps(sb, bindings, state, dp_ports)
    _port_services(sb, bindings, state)
    _gateways(sb, bindings, state)
    return state


def _gateways(sb: SBState, bindings: Bindings, state: PhysicalState) -> None:
    """What the gateway plane needs: who may send hellos to whom, what is served here."""
    state.chassis = bindings.chassis
    state.peers = {
        name: Remote(c.name, c.ip, c.encap)
        for name, c in sb.chassis.items()
        if name != bindings.chassis
    }
    state.uplinks = {p: i for p, i in bindings.local.items() if sb.ports[p].type == "localnet"}
    for name in sorted(bindings.via_gateway):
        pb = sb.ports[name]
        if pb.datapath in state.datapaths:
            state.via_gateway[(pb.datapath, pb.key)] = name


def _port_services(sb: SBState, bindings: Bindings, state: PhysicalState) -> None:
    """Per-port work of the datapath beyond flows: health checks of LB members bound here
    (``agent.health``) and QoS bandwidth limits (``dataplane.policer``)."""
    for monitor in local_monitors(sb, bindings.chassis):
        state.monitors.append(monitor)
        iface = bindings.local.get(monitor.logical_port)
        if iface is not None:
            state.monitor_ifaces[monitor.logical_port] = iface
    for port, iface in bindings.local.items():
        pb = sb.ports.get(port)
        if pb is not None and (pb.egress_limit or pb.ingress_limit):
            state.limits[iface] = (pb.egress_limit, pb.ingress_limit)


def _kind(name: str, bindings: Bindings) -> str:
    if name in bindings.local:
        return "vif"
    if name in bindings.remote or name in bindings.via_gateway:
        return "tunnel"
    return "unbound"


def _topology(
    sb: SBState, bindings: Bindings, dps: frozenset[int], dp_ports: dict[str, PortBinding]
) -> Topology:
    # only the relevant datapaths' part of the SB (a host of 10 ports in a 10k-port cloud
    # must not build the pipeline view of every port); patch peers of relevant ports are
    # relevant too (relevant_datapaths is closed over patch ports)
    part = SBState(
        generation=sb.generation,
        datapaths={k: d for k, d in sb.datapaths.items() if k in dps},
        ports=dp_ports,
        groups={k: g for k, g in sb.groups.items() if k[0] in dps},
        mac_bindings=sb.mac_bindings,
    )
    full = translate.topology(part)
    topo = Topology(
        first_table=full.first_table, next_table=full.next_table, pipeline_of=full.pipeline_of
    )
    topo.kinds = {dp: kind for dp, kind in full.kinds.items() if dp in dps}
    unbound: set[tuple[int, int]] = set()
    for (dp, key), info in full.ports.items():
        if dp not in dps:
            continue
        if sb.ports[info.name].type in ("vif", "localnet"):
            info = replace(info, kind=_kind(info.name, bindings))
            if info.kind == "unbound":
                unbound.add((dp, key))
        topo.ports[(dp, key)] = info
    for (dp, group), members in full.groups.items():
        if dp in dps:
            topo.groups[(dp, group)] = tuple(m for m in members if (dp, m) not in unbound)
    topo.mac_bindings = {k: v for k, v in full.mac_bindings.items() if k[0] in dps}
    return topo


def _port_maps(
    sb: SBState, bindings: Bindings, state: PhysicalState, dp_ports: dict[str, PortBinding]
) -> None:
    macs: dict[tuple[int, int], list[int]] = {}
    for name, iface in bindings.local.items():
        pb = sb.ports[name]
        state.local[(pb.datapath, pb.key)] = iface
        state.local_ports[iface] = (pb.datapath, pb.key)
        macs.setdefault((pb.datapath, pb.mac), []).append(pb.key)
    state.macs = {k: tuple(sorted(v)) for k, v in macs.items()}
    for name, pb in dp_ports.items():  # the relevant datapaths' ports
        chassis = bindings.remote.get(name)
        if chassis is not None:
            state.remote[(pb.datapath, pb.key)] = Remote(chassis.name, chassis.ip, chassis.encap)
    for (dp, _group), members in state.topology.groups.items():
        if state.topology.kinds.get(dp) == "switch":
            local = tuple(m for m in members if (dp, m) in state.local)
            state.flood[dp] = tuple(sorted({*state.flood.get(dp, ()), *local}))
    for name in sorted(n for n in dp_ports if n in bindings.unbound):
        why = bindings.unbound[name]
        state.notes.append(f"port {name}: {why}; packets to it are dropped (unknown_port)")


# -- encapsulation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decapsulated:
    """A received tunnel packet: VNI, logical ports (Geneve only) and the inner frame."""

    vni: int
    in_key: int | None
    out_key: int | None
    frame: bytes


def encapsulate(encap: Encap, vni: int, in_key: int, out_key: int, frame: bytes) -> bytes:
    """The UDP payload for ``frame``: a Geneve header with the ports option, or VXLAN."""
    if encap == "geneve":
        return netvirt_header(vni, in_key, out_key).pack() + frame
    return VxlanHeader(vni).pack() + frame


def decapsulate(encap: Encap, payload: bytes) -> Decapsulated:
    """Parse a tunnel UDP payload; ``ParseError`` (``MALFORMED_TUNNEL``) if unusable.

    Geneve packets must carry Ethernet and netvirt's ports option, and no
    critical option netvirt does not know (RFC 8926 3.5.1).
    """
    if encap == "vxlan":
        vxlan, offset = VxlanHeader.parse(payload)
        return Decapsulated(vxlan.vni, None, None, payload[offset:])
    header, offset = GeneveHeader.parse(payload)
    if header.protocol != PROTO_ETHERNET:
        raise ParseError(DropReason.MALFORMED_TUNNEL, "Geneve payload is not Ethernet")
    keys = ports(header)
    if keys is None:
        raise ParseError(DropReason.MALFORMED_TUNNEL, "Geneve packet without netvirt ports")
    ours = netvirt_header(0, 0, 0).options[0]
    for option in header.options:
        if option.critical and (option.opt_class, option.type) != (ours.opt_class, ours.type):
            raise ParseError(DropReason.MALFORMED_TUNNEL, "unknown critical Geneve option")
    return Decapsulated(header.vni, keys[0], keys[1], payload[offset:])
