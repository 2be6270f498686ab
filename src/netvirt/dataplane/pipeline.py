"""The pipeline executor: runs a packet through the logical datapaths' tables.

Theory of operation
-------------------
A frame is parsed (``packet.py``) and reduced to a flow key (``key.py``)
carrying the logical datapath (``metadata``) and ingress port (``inport``).
Starting at the first ingress table of that datapath, each step looks the key
up in the classifier and executes the hit rule's actions on the key:

* ``next`` continues at the following table (or a named one); the end of an
  action list without ``next`` or ``output`` ends processing;
* ``output`` in an ingress pipeline runs the egress pipeline of the same
  datapath (once per member for a multicast ``outport``, never back to the
  inport unless ``flags.loopback``); ``output`` in egress delivers: a VIF or
  VIP port yields an :class:`Emit` with the rewritten frame, a patch port
  enters the peer datapath's ingress (switch ↔ router), so a routed packet
  crosses switch → router → switch in one call, as OVN's single hop;
* a port on another host (``PortInfo.kind`` ``tunnel``) is delivered straight
  from the ingress pipeline: its egress pipeline runs on the host that owns
  it, entered with :meth:`Pipeline.process_egress` after the tunnel (the
  ``Emit`` carries the logical inport for the tunnel header); a port bound to
  no known host (``unbound``) is dropped as ``UNKNOWN_PORT``;
* conntrack actions go to a :class:`ConnTracker` with a zone per
  (datapath, port) on switches and per router, see ``compiler/regs.py``;
* generating actions build a new frame (``generate.py``) and run their
  nested actions on it.

Every drop has a :class:`DropReason`; the executor never raises on packet
input. With ``trace=True`` every step is recorded (stage, rule and its
provenance in ``Rule.cookie``, conntrack results, outputs) for
``netvirt trace``.

Thread-safety: a Pipeline is used by one thread; the classifier is replaced,
not mutated, while a packet is in flight.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane import generate
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.fields import CT_TRK, FLAG_LOOPBACK, MULTICAST_BASE, F
from netvirt.dataplane.flow import Rule
from netvirt.dataplane.key import extract
from netvirt.dataplane.nf.codec import CtTuple, quoted_tuple
from netvirt.dataplane.packet import Packet, parse_packet
from netvirt.dataplane.rewrite import apply as rewrite_frame

DatapathKind = Literal["switch", "router"]

_METADATA, _INPORT, _OUTPORT, _FLAGS = F("metadata"), F("inport"), F("outport"), F("flags")
_CT_STATE, _TTL = F("ct_state"), F("ip.ttl")
_REGS = [F(f"reg{i}") for i in range(8)] + [F("xreg0")]
_ETH_TYPE, _ETH_DST = F("eth.type"), F("eth.dst")
_ARP_OP, _ARP_SPA, _ARP_SHA = F("arp.op"), F("arp.spa"), F("arp.sha")
_ND_TARGET, _ND_TLL = F("nd.target"), F("nd.tll")
_REG0, _REG3, _REG7, _XREG0 = F("reg0"), F("reg3"), F("reg7"), F("xreg0")
_HASHED = [
    F(n) for n in ("ip4.src", "ip4.dst", "ip6.src", "ip6.dst", "ip.proto", "tp.src", "tp.dst")
]
_ICMP_ERRORS = {4: (3, 4, 5, 11, 12), 6: (1, 2, 3, 4)}
_CARRY = [_METADATA, _INPORT, _OUTPORT, _FLAGS, _CT_STATE, *_REGS]
MAX_STEPS = 256  # tables visited per packet, across every datapath
MAX_HOPS = 8  # datapaths entered per packet
REMOTE_KINDS = ("tunnel", "unbound")  # ports whose egress pipeline runs elsewhere (or nowhere)


class Lookup(Protocol):
    def lookup(self, table: int, key: list[int]) -> Rule | None: ...


class ConnTracker(Protocol):
    """What the pipeline needs from connection tracking (see dataplane/nf)."""

    def ct_next(
        self, zone: int, key: list[int], now: float, related: CtTuple | None = None
    ) -> int: ...
    def ct_commit(self, zone: int, key: list[int], now: float, mark: int | None) -> None: ...
    def ct_nat(
        self, zone: int, key: list[int], now: float, action: A.CtDnat | A.CtSnat
    ) -> None: ...
    def ct_lb(self, zone: int, key: list[int], now: float, action: A.CtLb) -> bool: ...


@dataclass(frozen=True, slots=True)
class PortInfo:
    datapath: int
    key: int
    name: str
    kind: str  # vif | vip | patch | tunnel (on another host) | unbound (on no known host)
    peer: tuple[int, int] | None = None


@dataclass
class Topology:
    """The datapath's view of the logical topology (filled by the agent or trace)."""

    kinds: dict[int, DatapathKind] = field(default_factory=dict)
    ports: dict[tuple[int, int], PortInfo] = field(default_factory=dict)
    groups: dict[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)
    mac_bindings: dict[tuple[int, int, int], int] = field(default_factory=dict)
    first_table: dict[tuple[DatapathKind, str], int] = field(default_factory=dict)
    next_table: Callable[[int], int | None] = lambda _t: None
    pipeline_of: Callable[[int], str] = lambda _t: "ingress"


@dataclass(frozen=True, slots=True)
class Emit:
    """A frame leaving the pipeline on logical ``port`` of ``datapath``; ``inport``
    is the packet's logical ingress port on that datapath (a tunnel carries it)."""

    datapath: int
    port: int
    port_name: str
    frame: bytes
    inport: int = 0


@dataclass(frozen=True, slots=True)
class TraceEvent:
    kind: str  # stage | ct | output | deliver | enter | drop | emit | note
    datapath: int
    table: int | None
    rule: Rule | None = None
    detail: str = ""
    key: tuple[int, ...] | None = None


@dataclass
class Verdict:
    """What the pipeline did with one packet.

    ``ct`` holds every conntrack result the packet got (the ``ConnTracker``'s
    ``last`` after each call), and ``cacheable`` turns False when the outcome
    depends on more than the packet's headers, installed rules and those
    connections (a generated packet, a learned MAC binding): the datapath's
    flow cache (``dataplane/fastpath.py``) reads both."""

    outputs: list[Emit] = field(default_factory=list)
    drops: list[DropReason] = field(default_factory=list)
    trace: list[TraceEvent] | None = None
    ct: list[object] = field(default_factory=list)
    cacheable: bool = True

    def note(self, event: TraceEvent) -> None:
        if self.trace is not None:
            self.trace.append(event)


@dataclass
class _Ctx:
    """One packet being processed (a generated packet gets its own)."""

    packet: Packet
    orig: list[int]
    verdict: Verdict
    now: float
    steps: int = 0
    hops: int = 0


class Pipeline:
    def __init__(self, classifier: Lookup, topology: Topology, conntrack: ConnTracker) -> None:
        self.classifier = classifier
        self.topology = topology
        self.conntrack = conntrack
        self.drop_counts: dict[DropReason, int] = {}

    # -- entry ---------------------------------------------------------------
    def process(
        self, frame: bytes, datapath: int, inport: int, now: float, *, trace: bool = False
    ) -> Verdict:
        verdict = Verdict(trace=[] if trace else None)
        started = self._start(verdict, frame, datapath, inport, now)
        if started is not None:
            ctx, key, kind = started
            if verdict.trace is not None:
                verdict.note(
                    TraceEvent("enter", datapath, None, detail=f"{kind} ingress", key=tuple(key))
                )
            self._run(ctx, key, self.topology.first_table[(kind, "ingress")])
        return verdict

    def process_egress(
        self,
        frame: bytes,
        datapath: int,
        inport: int,
        outport: int,
        now: float,
        *,
        trace: bool = False,
    ) -> Verdict:
        """Run only the egress pipeline of ``datapath`` toward ``outport``.

        The receiving half of a packet that crossed a tunnel: the sending host
        ran the ingress pipeline (and any routing), the receiving host runs the
        egress pipeline of the destination port, so the port's egress ACL and
        port security are enforced where the port lives (as OVN does).
        """
        verdict = Verdict(trace=[] if trace else None)
        started = self._start(verdict, frame, datapath, inport, now)
        if started is not None:
            ctx, key, kind = started
            key[_OUTPORT] = outport
            detail = f"{kind} egress to {outport:#x}"
            if verdict.trace is not None:
                verdict.note(TraceEvent("enter", datapath, None, detail=detail, key=tuple(key)))
            self._run(ctx, key, self.topology.first_table[(kind, "egress")])
        return verdict

    def _start(
        self, verdict: Verdict, frame: bytes, datapath: int, inport: int, now: float
    ) -> tuple[_Ctx, list[int], DatapathKind] | None:
        """Parse and key a frame entering ``datapath``; None (and a drop) if it cannot."""
        try:
            packet = parse_packet(frame)
        except ParseError as err:
            self._drop(verdict, err.reason, datapath, None, str(err))
            return None
        key = extract(packet, datapath, inport)
        ctx = _Ctx(packet, list(key), verdict, now)
        begin = getattr(self.conntrack, "begin_packet", None)
        if begin is not None:
            begin()
        kind = self.topology.kinds.get(datapath)
        if kind is None:
            self._drop(verdict, DropReason.UNKNOWN_PORT, datapath, None, "unknown datapath")
            return None
        return ctx, key, kind

    # -- table walk ----------------------------------------------------------
    def _run(self, ctx: _Ctx, key: list[int], table: int | None) -> None:
        while table is not None:
            ctx.steps += 1
            if ctx.steps > MAX_STEPS:
                self._drop(ctx.verdict, DropReason.LOOP_LIMIT, key[_METADATA], table)
                return
            rule = self.classifier.lookup(table, key)
            if rule is None:
                self._drop(ctx.verdict, DropReason.EXPLICIT_DROP, key[_METADATA], table, "no flow")
                return
            if ctx.verdict.trace is not None:
                ctx.verdict.note(TraceEvent("stage", key[_METADATA], table, rule, key=tuple(key)))
            table = self._execute(ctx, key, rule.actions, table)

    def _execute(self, ctx: _Ctx, key: list[int], acts: Iterable[object], table: int) -> int | None:
        """Run an action list; return the table to continue at, or None to stop."""
        for act in acts:
            if isinstance(act, A.Next):
                return act.table if act.table is not None else self._next(ctx, key, table)
            if isinstance(act, A.Output):
                self._output(ctx, list(key), table)
            elif isinstance(act, A.Drop):
                self._drop(ctx.verdict, act.reason, key[_METADATA], table)
                return None
            elif isinstance(act, A.SetField):
                idx = F(act.field)
                if act.mask is None:
                    key[idx] = act.value
                else:
                    key[idx] = (key[idx] & ~act.mask) | (act.value & act.mask)
            elif isinstance(act, A.Move):
                key[F(act.dst)] = key[F(act.src)]
            elif isinstance(act, A.Exchange):
                a, b = F(act.a), F(act.b)
                key[a], key[b] = key[b], key[a]
            elif isinstance(act, A.DecTTL):
                if key[_TTL] <= 1:
                    self._drop(ctx.verdict, DropReason.TTL_EXPIRED, key[_METADATA], table)
                    return None
                key[_TTL] -= 1
            elif isinstance(act, A.CtNext | A.CtDnat | A.CtSnat | A.CtLb):
                if not self._conntrack(ctx, key, act, table):
                    return None
                return self._next(ctx, key, table)
            elif isinstance(act, A.CtCommit):
                self.conntrack.ct_commit(self._zone(key, table), key, ctx.now, act.mark)
                ctx.verdict.ct.append(getattr(self.conntrack, "last", None))
                ctx.verdict.note(TraceEvent("ct", key[_METADATA], table, detail="ct_commit"))
            elif isinstance(act, A.CtClear):
                key[_CT_STATE] = 0
            elif isinstance(act, A.PutMacBinding):
                self._learn(key)
                ctx.verdict.cacheable = False
            elif isinstance(act, A.LookupMacBinding):
                self._lookup_binding(key)
            elif isinstance(act, A.SelectEcmp):
                key[_REG3] = 1 + _flow_hash(key) % max(act.count, 1)
            elif not self._generate(ctx, key, act, table):
                return None
        return None

    def _next(self, ctx: _Ctx, key: list[int], table: int) -> int | None:
        following = self.topology.next_table(table)
        if following is None:
            self._drop(
                ctx.verdict, DropReason.EXPLICIT_DROP, key[_METADATA], table, "end of pipeline"
            )
        return following

    # -- conntrack -------------------------------------------------------------
    def _zone(self, key: list[int], table: int) -> int:
        dp = key[_METADATA]
        if self.topology.kinds.get(dp) == "router":
            return dp << 16
        port = key[_INPORT] if self.topology.pipeline_of(table) == "ingress" else key[_OUTPORT]
        return (dp << 16) | (port & 0xFFFF)

    def _conntrack(self, ctx: _Ctx, key: list[int], act: object, table: int) -> bool:
        zone = self._zone(key, table)
        ct = self.conntrack
        if isinstance(act, A.CtNext):
            state = ct.ct_next(zone, key, ctx.now, _quoted(ctx.packet))
            key[_CT_STATE] = state | CT_TRK
            detail = f"ct_next zone={zone:#x} state={key[_CT_STATE]:#x}"
        elif isinstance(act, A.CtLb):
            if not ct.ct_lb(zone, key, ctx.now, act):
                ctx.verdict.ct.append(None)  # no backend: never cached
                self._drop(ctx.verdict, DropReason.NO_LB_BACKEND, key[_METADATA], table)
                return False
            detail = f"ct_lb -> {key[F('ip4.dst')]:#x}:{key[F('tp.dst')]}"
        else:
            assert isinstance(act, A.CtDnat | A.CtSnat)
            ct.ct_nat(zone, key, ctx.now, act)
            detail = f"{type(act).__name__} zone={zone:#x}"
        ctx.verdict.ct.append(getattr(ct, "last", None))
        if ctx.verdict.trace is not None:
            ctx.verdict.note(TraceEvent("ct", key[_METADATA], table, detail=detail, key=tuple(key)))
        return True

    # -- MAC bindings ------------------------------------------------------------
    def _learn(self, key: list[int]) -> None:
        dp, port = key[_METADATA], key[_INPORT]
        if key[_ETH_TYPE] == 0x0806 and key[_ARP_SPA]:
            self.topology.mac_bindings[(dp, port, key[_ARP_SPA])] = key[_ARP_SHA]
        elif key[_ND_TARGET] and key[_ND_TLL]:
            self.topology.mac_bindings[(dp, port, key[_ND_TARGET])] = key[_ND_TLL]

    def _lookup_binding(self, key: list[int]) -> None:
        ip = key[_XREG0] if key[_ETH_TYPE] == 0x86DD else key[_REG0]
        mac = self.topology.mac_bindings.get((key[_METADATA], key[_OUTPORT], ip))
        if mac is None:
            key[_REG7] = 0
        else:
            key[_ETH_DST] = mac
            key[_REG7] = 1

    # -- output ------------------------------------------------------------------
    def _output(self, ctx: _Ctx, key: list[int], table: int) -> None:
        dp = key[_METADATA]
        kind = self.topology.kinds[dp]
        if ctx.verdict.trace is not None:
            ctx.verdict.note(TraceEvent("output", dp, table, detail=f"outport={key[_OUTPORT]:#x}"))
        if self.topology.pipeline_of(table) == "ingress":
            out = key[_OUTPORT]
            members = self.topology.groups.get((dp, out), ()) if out >= MULTICAST_BASE else (out,)
            for member in members:
                if member == key[_INPORT] and not key[_FLAGS] & FLAG_LOOPBACK:
                    continue
                copy = list(key)
                copy[_OUTPORT] = member
                for idx in _REGS:
                    copy[idx] = 0
                copy[_CT_STATE] = 0
                if self._remote(dp, member):
                    ctx.verdict.note(TraceEvent("note", dp, table, detail="egress runs remotely"))
                    self._deliver(ctx, copy, table)
                    continue
                self._run(ctx, copy, self.topology.first_table[(kind, "egress")])
            return
        self._deliver(ctx, key, table)

    def _remote(self, datapath: int, port: int) -> bool:
        """A port on another host (or on none): its egress pipeline is not run here."""
        info = self.topology.ports.get((datapath, port))
        return info is not None and info.kind in REMOTE_KINDS

    def _deliver(self, ctx: _Ctx, key: list[int], table: int) -> None:
        dp, out = key[_METADATA], key[_OUTPORT]
        if out == key[_INPORT] and not key[_FLAGS] & FLAG_LOOPBACK:
            ctx.verdict.note(TraceEvent("note", dp, table, detail="not sent back to its inport"))
            return
        port = self.topology.ports.get((dp, out))
        if port is None:
            self._drop(ctx.verdict, DropReason.UNKNOWN_PORT, dp, table, f"outport {out}")
            return
        if port.kind == "unbound":
            detail = f"{port.name} is bound to no known chassis"
            self._drop(ctx.verdict, DropReason.UNKNOWN_PORT, dp, table, detail)
            return
        if port.kind == "patch" and port.peer is not None:
            ctx.hops += 1
            if ctx.hops > MAX_HOPS:
                self._drop(ctx.verdict, DropReason.LOOP_LIMIT, dp, table)
                return
            peer_dp, peer_port = port.peer
            copy = list(key)
            copy[_METADATA], copy[_INPORT], copy[_OUTPORT] = peer_dp, peer_port, 0
            copy[_FLAGS] = 0
            copy[_CT_STATE] = 0
            for idx in _REGS:
                copy[idx] = 0
            kind = self.topology.kinds[peer_dp]
            ctx.verdict.note(
                TraceEvent("enter", peer_dp, None, detail=f"{kind} ingress via {port.name}")
            )
            self._run(ctx, copy, self.topology.first_table[(kind, "ingress")])
            return
        frame = rewrite_frame(ctx.packet, ctx.orig, key)
        ctx.verdict.outputs.append(Emit(dp, out, port.name, frame, key[_INPORT]))
        if ctx.verdict.trace is not None:
            ctx.verdict.note(TraceEvent("deliver", dp, table, detail=port.name, key=tuple(key)))

    # -- generated packets ---------------------------------------------------------
    def _generate(self, ctx: _Ctx, key: list[int], act: object, table: int) -> bool:
        frame: bytes | None
        then: tuple[object, ...]
        ctx.verdict.cacheable = False  # a new packet, not a rewrite of this one
        if isinstance(act, A.EmitIcmpError):
            try:
                frame = generate.icmp_error(ctx.packet, key, act)
            except ParseError:
                frame = None
            then = act.then
        elif isinstance(act, A.EmitArpRequest):
            frame = (
                generate.arp_request(key, act)
                if key[_ETH_TYPE] != 0x86DD
                else generate.neighbor_solicit(key)
            )
            then = act.then
        elif isinstance(act, A.DhcpReply):
            frame, then = generate.dhcp_reply(ctx.packet, act), act.then
        elif isinstance(act, A.NdAdvert):
            frame, then = generate.neighbor_advert(ctx.packet, act), act.then
        elif isinstance(act, A.RouterAdvert):
            frame, then = generate.router_advert(ctx.packet, act), act.then
        else:
            raise TypeError(f"unknown action {act!r}")  # a compiler bug, not packet input
        if frame is None:
            self._drop(
                ctx.verdict, DropReason.EXPLICIT_DROP, key[_METADATA], table, "nothing to answer"
            )
            return False
        packet = parse_packet(frame)
        new_key = extract(packet)
        for idx in _CARRY:
            new_key[idx] = key[idx]
        child = _Ctx(packet, list(new_key), ctx.verdict, ctx.now, ctx.steps, ctx.hops)
        ctx.verdict.note(TraceEvent("emit", key[_METADATA], table, detail=type(act).__name__))
        next_table = self._execute(child, new_key, then, table)
        if next_table is not None:
            self._run(child, new_key, next_table)
        return False

    def _drop(
        self,
        verdict: Verdict,
        reason: DropReason,
        datapath: int,
        table: int | None,
        detail: str = "",
    ) -> None:
        verdict.drops.append(reason)
        self.drop_counts[reason] = self.drop_counts.get(reason, 0) + 1
        verdict.note(TraceEvent("drop", datapath, table, detail=f"{reason.value} {detail}".strip()))


def _flow_hash(key: list[int]) -> int:
    """Stable (not per-process salted) hash of the 5-tuple for ECMP member choice."""
    data = b"".join(key[i].to_bytes(16, "big") for i in _HASHED)
    return zlib.crc32(data)


def _quoted(packet: Packet) -> CtTuple | None:
    """The connection an ICMP error quotes (for ct.rel), or None."""
    if packet.ip_version not in (4, 6) or packet.ip_proto not in (1, 58):
        return None
    if packet.icmp_type not in _ICMP_ERRORS[packet.ip_version]:
        return None
    quote = packet.payload if packet.ip_version == 4 else packet.payload[4:]
    return quoted_tuple(packet.ip_version, quote)
