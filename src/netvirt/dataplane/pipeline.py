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

*Batches.* :meth:`Pipeline.process_batch` runs packets side by side: each
packet's walk is a generator that yields at every conntrack action (a
:class:`~netvirt.dataplane.nf.CtCall`); the calls of all packets waiting at
one step go to the conntracker's ``ct_batch`` together — one store round trip
per step for the whole batch — and each packet resumes with its answer.
``process`` and ``process_egress`` are batches of one. A conntracker without
``ct_batch`` is called one action at a time, packets one after the other.

*Megaflows.* With :attr:`Pipeline.record_wildcards` an ingress walk records in
``Verdict.wildcards`` what its staged lookups read and its rules' actions read or
wrote (``actions.megaflow_reads``; None past a rule outside that whitelist); a
port whose walks end None records for one packet in 1, 3 … 63 (backoff).
With :attr:`Pipeline.segments` set, walks are split at conntrack actions into
segments that are cached and replayed on the key bits they read (``segments.py``).

Every drop has a :class:`DropReason`; the executor never raises on packet
input, and a state store that cannot be reached costs only the packets that
needed it (``STATE_UNAVAILABLE``, or passed as established under the ``open``
policy; such verdicts are never cacheable). With ``trace=True`` every step is
recorded (stage, rule and its provenance in ``Rule.cookie``, conntrack
results, outputs) for ``netvirt trace``.

Thread-safety: a Pipeline is used by one thread; the classifier is replaced,
not mutated, while a packet is in flight.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast

from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane import generate
from netvirt.dataplane.actions import (
    OP_CT_CLEAR,
    OP_DEC_TTL,
    OP_DROP,
    OP_ECMP,
    OP_END,
    OP_EXCHANGE,
    OP_LEARN,
    OP_LOOKUP_BINDING,
    OP_MOVE,
    OP_NEXT,
    OP_OUTPUT,
    OP_SET,
    OP_SET_MASKED,
    YIELD,
    Op,
    Program,
    Reads,
    compile_program,
    megaflow_reads,
)
from netvirt.dataplane.ctflow import BatchConnTracker as BatchConnTracker
from netvirt.dataplane.ctflow import ConnTracker as ConnTracker
from netvirt.dataplane.ctflow import answer_steps, call_one, ct_detail, quoted
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.fields import CT_TRK, FLAG_LOOPBACK, MULTICAST_BASE, NUM_FIELDS, F
from netvirt.dataplane.flow import Rule
from netvirt.dataplane.key import extract
from netvirt.dataplane.nf.flowkey import Assoc, CtCall
from netvirt.dataplane.packet import Packet, parse_packet
from netvirt.dataplane.rewrite import apply as rewrite_frame
from netvirt.dataplane.segments import Recorder, SegmentCache, segment_reads
from netvirt.dataplane.segments_walk import MAX_HOPS, MAX_STEPS, SegmentSteps
from netvirt.state.jobs import Steps, finish_without_store

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
_CARRY = [_METADATA, _INPORT, _OUTPORT, _FLAGS, _CT_STATE, *_REGS]
# the registers are contiguous in the key: cleared with one slice assignment
_REGS_FIRST, _REGS_END = _REGS[0], _REGS[-1] + 1
_REGS_CLEAR = [0] * len(_REGS)
assert list(range(_REGS_FIRST, _REGS_END)) == _REGS, "registers must be contiguous"
_PROGRAMS_LIMIT = 1 << 16  # compiled rules kept (rules replaced by reconciliation pile up)
REMOTE_KINDS = ("tunnel", "unbound")  # ports whose egress pipeline runs elsewhere (or nowhere)

# A packet's walk through the tables: yields at each conntrack action of a batching
# conntracker, resumed once the call is answered; its return value is the walk's.
Walk = Generator[CtCall, None, None]
Step = Generator[CtCall, None, int | None]
Gate = Generator[CtCall, None, bool]
BatchItem = tuple[bytes, int, int, int | None, float]  # frame, datapath, inport, outport, now
CtAction = A.CtNext | A.CtCommit | A.CtDnat | A.CtSnat | A.CtLb


class Lookup(Protocol):
    def lookup(self, table: int, key: list[int]) -> Rule | None: ...


MegaflowLookup = Callable[[int, list[int], list[int]], Rule | None]
# rule, table, program, megaflow reads, segment reads
_Compiled = tuple[Rule, int, Program, Reads | None, Reads | None]


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
    flow cache (``dataplane/fastpath.py``) reads both. ``wildcards`` (with
    :attr:`Pipeline.record_wildcards`): per key field, the bits the walk's outcome
    depends on (classifier lookups, what the actions read and wrote), or None
    when the walk may not be a megaflow (``dataplane/megaflow.py``)."""

    outputs: list[Emit] = field(default_factory=list)
    drops: list[DropReason] = field(default_factory=list)
    trace: list[TraceEvent] | None = None
    ct: list[object] = field(default_factory=list)
    cacheable: bool = True
    wildcards: list[int] | None = None
    # with segments: the union of every segment's read mask per field (``seg_reads``), and
    # whether a stretch of the walk ran outside any segment (its reads then unknown); the
    # SYN templates' proof that no table read the source port (``offload/templates.py``)
    seg_reads: list[int] | None = None
    unsegmented: bool = False

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
    assoc: Assoc = field(default_factory=dict)  # conntrack: zone -> this packet's connection
    seg: SegmentCache | None = None  # segments: where a segment may start, the one recorded
    boundary: bool = False
    rec: Recorder | None = None


class Pipeline(SegmentSteps):
    def __init__(self, classifier: Lookup, topology: Topology, conntrack: ConnTracker) -> None:
        self.classifier = classifier
        self.topology = topology
        self.conntrack = conntrack
        self.drop_counts: dict[DropReason, int] = {}
        # id(rule) -> (rule, table, program, megaflow reads): rules' actions compiled for
        # the walk (actions.compile_program), valid for the next_table they were compiled with
        self._programs: dict[int, _Compiled] = {}
        # the staged lookup while walks record wildcards; per ingress (datapath, port) whose
        # walks could not be megaflows: (packets left to walk without recording, backoff)
        self._megaflow: MegaflowLookup | None = None
        self._quiet: dict[tuple[int, int], tuple[int, int]] = {}
        self._programs_next: Callable[[int], int | None] | None = None
        self.segments: SegmentCache | None = None  # walks split at conntrack (segments.py)
        self._staged: MegaflowLookup | None = None

    @property
    def record_wildcards(self) -> bool:
        """Walks record megaflow wildcards (needs the classifier's ``lookup_megaflow``)."""
        return self._megaflow is not None

    @record_wildcards.setter
    def record_wildcards(self, on: bool) -> None:
        self._megaflow = getattr(self.classifier, "lookup_megaflow", None) if on else None

    # -- entry ---------------------------------------------------------------
    def process(
        self, frame: bytes, datapath: int, inport: int, now: float, *, trace: bool = False
    ) -> Verdict:
        """Run the ingress pipeline of ``datapath`` (a batch of one)."""
        return self.process_batch([(frame, datapath, inport, None, now)], trace=trace)[0]

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
        item = (frame, datapath, inport, outport, now)
        return self.process_batch([item], trace=trace)[0]

    def process_batch(self, items: Sequence[BatchItem], *, trace: bool = False) -> list[Verdict]:
        """Run a batch of packets side by side; one verdict per item, in order.

        Each item is ``(frame, datapath, inport, outport, now)``: ``outport``
        None runs the ingress pipeline (as :meth:`process`), a port number the
        egress pipeline toward it (as :meth:`process_egress`). Every packet
        walks until its next conntrack action; the actions of all packets that
        stopped are answered by one ``ct_batch`` (one store round trip per
        step), then each packet resumes. With a conntracker without
        ``ct_batch`` the packets run one after the other, as before.
        """
        steps = self.process_steps(items, trace=trace)
        complete = getattr(self.conntrack, "complete", None)
        if complete is not None:
            return cast(list[Verdict], complete(steps))
        return finish_without_store(steps)

    def process_steps(
        self, items: Sequence[BatchItem], *, trace: bool = False
    ) -> Steps[list[Verdict]]:
        """:meth:`process_batch` as the store round trips it needs, yielded to its driver
        (``state/jobs.py``): a datapath parks the batch on an asynchronous store and goes
        on with other packets until the replies are in."""
        verdicts: list[Verdict] = []
        waiting: list[tuple[Walk, CtCall]] = []
        recorded: list[tuple[tuple[int, int], Verdict]] = []
        self._sync_segments()
        for frame, datapath, inport, outport, now in items:
            verdict = Verdict(trace=[] if trace else None)
            verdicts.append(verdict)
            walk = self._walk(verdict, frame, datapath, inport, outport, now)
            if verdict.wildcards is not None:
                recorded.append(((datapath, inport), verdict))
            if walk is not None:
                _advance(walk, waiting)
        while waiting:
            current, waiting = waiting, []
            yield from answer_steps(self.conntrack, [call for _, call in current])
            for walk, _ in current:
                _advance(walk, waiting)
        for where, verdict in recorded:
            self._backoff(where, verdict.wildcards is not None and not verdict.ct)
        return verdicts

    def _sync_segments(self) -> None:
        """Segments depend on the rules, the topology and the MAC bindings (segments.py)."""
        if self.segments is not None:
            cls, topo = self.classifier, self.topology
            version = getattr(cls, "version", None)
            self.segments.sync((cls, version, topo, topo.next_table, topo.mac_bindings))
            self._staged = getattr(cls, "lookup_megaflow", None)

    def _backoff(self, where: tuple[int, int], megaflow: bool) -> None:
        """After a walk that recorded: see "Megaflows" in the module docstring."""
        if megaflow:
            self._quiet.pop(where, None)
            return
        if len(self._quiet) >= 4096:
            self._quiet.clear()
        level = min(2 * self._quiet.get(where, (0, 0))[1] + 1, 63)
        self._quiet[where] = (level, level)

    def _walk(
        self,
        verdict: Verdict,
        frame: bytes,
        datapath: int,
        inport: int,
        outport: int | None,
        now: float,
    ) -> Walk | None:
        started = self._start(verdict, frame, datapath, inport, now)
        if started is None:
            return None
        ctx, key, kind = started
        if self.segments is not None and self._staged is not None and verdict.trace is None:
            ctx.seg, ctx.boundary = self.segments, True
        if outport is None:
            if verdict.trace is not None:
                detail = f"{kind} ingress"
                verdict.note(TraceEvent("enter", datapath, None, detail=detail, key=tuple(key)))
            return self._run(ctx, key, self.topology.first_table[(kind, "ingress")])
        key[_OUTPORT] = outport
        verdict.wildcards = None  # (megaflows are learned from local ports only)
        if verdict.trace is not None:
            detail = f"{kind} egress to {outport:#x}"
            verdict.note(TraceEvent("enter", datapath, None, detail=detail, key=tuple(key)))
        return self._run(ctx, key, self.topology.first_table[(kind, "egress")])

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
        if self._megaflow is not None:
            quiet = self._quiet.get((datapath, inport))
            if quiet is None or not quiet[0] or self.segments is not None:
                verdict.wildcards = [0] * NUM_FIELDS
            else:
                self._quiet[(datapath, inport)] = (quiet[0] - 1, quiet[1])
        return ctx, key, kind

    # -- table walk ----------------------------------------------------------
    def _run(self, ctx: _Ctx, key: list[int], table: int | None) -> Walk:
        """Walk the tables from ``table`` (:meth:`_tables`); with segments, end the segment
        this frame started when the frame ends (segments.py)."""
        if ctx.seg is None:
            return self._tables(ctx, key, table)
        return self._run_segments(ctx, key, table)

    def _run_segments(self, ctx: _Ctx, key: list[int], table: int | None) -> Walk:
        yield from self._tables(ctx, key, table)
        rec = ctx.rec
        if rec is not None and rec.owner is key:
            self._close(ctx, None, None)

    def _tables(self, ctx: _Ctx, key: list[int], table: int | None) -> Walk:
        """Walk the tables from ``table``. A rule's actions run from its compiled
        program (``actions.compile_program``): a bare ``next`` is a jump, actions
        that cannot stop the walk for conntrack or output run without a generator,
        the others in :meth:`_execute`. Where a segment may start, a cached one is
        replayed (or the walk records a new one)."""
        programs = self._programs_valid()
        verdict = ctx.verdict
        while table is not None:
            if ctx.boundary:
                segment = self._boundary(ctx, key, table)
                if segment is not None:
                    table = yield from self._replay(ctx, key, segment)
                    continue
            ctx.steps += 1
            if ctx.steps > MAX_STEPS:
                self._drop(verdict, DropReason.LOOP_LIMIT, key[_METADATA], table)
                return
            rec = ctx.rec
            wildcards = verdict.wildcards if rec is None else rec.wild
            if rec is None:
                verdict.unsegmented = True  # (a lookup no segment records)
            if wildcards is None:
                rule = self.classifier.lookup(table, key)
            else:  # recording a megaflow or segment: the staged lookup, ORing what it read
                staged = self._megaflow if rec is None else self._staged
                rule = staged(table, key, wildcards)  # type: ignore[misc]
            if rule is None:
                self._drop(verdict, DropReason.EXPLICIT_DROP, key[_METADATA], table, "no flow")
                return
            if verdict.trace is not None:
                verdict.note(TraceEvent("stage", key[_METADATA], table, rule, key=tuple(key)))
            compiled = programs.get(id(rule))
            if compiled is None or compiled[0] is not rule or compiled[1] != table:
                compiled = self._compile(rule, table)
            if wildcards is not None:
                reads = compiled[3] if rec is None else compiled[4]
                if reads is None:
                    ctx.rec = None  # an action outside the whitelist
                    verdict.unsegmented = True
                else:
                    for index, mask in reads:
                        wildcards[index] |= mask
                if compiled[3] is None:
                    verdict.wildcards = None  # (a segment's list is the first megaflow's)
            program = compiled[2]
            if type(program) is int:
                table = program
                continue
            if program is None:
                table = yield from self._execute(ctx, key, rule.actions, table)
            else:
                ops: tuple[Op, ...] = program  # type: ignore[assignment]  # no cast() call
                following = self._run_plain(ctx, key, ops, table)
                if following != YIELD:
                    table = following
                    continue
                if ops[-1][0] == OP_OUTPUT:  # the last action: the key is not used after it
                    yield from self._output(ctx, key, table)
                    table = None
                else:
                    if ctx.rec is not None:
                        self._close(ctx, key, (table, ops[-1][1], None))
                    if (yield from self._conntrack(ctx, key, ops[-1][1], table)):
                        table = self._next(ctx, key, table)  # ct_next, ct_dnat, ct_snat, ct_lb
                    else:
                        table = None
            programs = self._programs_valid()  # resumed: the topology may have been replaced

    def _programs_valid(self) -> dict[int, _Compiled]:
        """The compiled programs, dropped when the topology's table order changed
        (a program holds the table its ``next`` goes to) or there are too many."""
        next_table = self.topology.next_table
        if next_table is not self._programs_next or len(self._programs) > _PROGRAMS_LIMIT:
            self._programs = {}
            self._programs_next = next_table
        return self._programs

    def _compile(self, rule: Rule, table: int) -> _Compiled:
        program = compile_program(rule.actions, table, self.topology.next_table)
        acts = rule.actions
        compiled = (rule, table, program, megaflow_reads(acts), segment_reads(acts))
        self._programs[id(rule)] = compiled  # holds the rule: its id is not reused meanwhile
        return compiled

    def _run_plain(self, ctx: _Ctx, key: list[int], ops: tuple[Op, ...], table: int) -> int | None:
        """A program of actions that never wait for conntrack nor output: exactly what
        :meth:`_execute` does with them, from precomputed field indexes."""
        for op in ops:
            code = op[0]
            if code == OP_SET:
                key[op[1]] = op[2]
            elif code == OP_NEXT:
                target: int = op[1]
                return target
            elif code == OP_SET_MASKED:
                idx = op[1]
                key[idx] = (key[idx] & op[3]) | op[2]
            elif code == OP_MOVE:
                key[op[1]] = key[op[2]]
            elif code == OP_DEC_TTL:
                if key[_TTL] <= 1:
                    self._drop(ctx.verdict, DropReason.TTL_EXPIRED, key[_METADATA], table)
                    return None
                key[_TTL] -= 1
            elif code == OP_END:
                return self._next(ctx, key, table)
            elif code == OP_DROP:
                self._drop(ctx.verdict, op[1], key[_METADATA], table)
                return None
            elif code == OP_EXCHANGE:
                a, b = op[1], op[2]
                key[a], key[b] = key[b], key[a]
            elif code == OP_CT_CLEAR:
                key[_CT_STATE] = 0
            elif code == OP_LEARN:
                self._learn(key)
                ctx.verdict.cacheable = False
            elif code == OP_LOOKUP_BINDING:
                self._lookup_binding(key)
            elif code == OP_ECMP:
                key[_REG3] = 1 + _flow_hash(key) % op[1]
            else:  # OP_OUTPUT, OP_CT: the walk runs them (they may wait for conntrack)
                return YIELD
        return None

    def _execute(self, ctx: _Ctx, key: list[int], acts: Sequence[object], table: int) -> Step:
        """Run an action list; return the table to continue at, or None to stop."""
        for position, act in enumerate(acts):
            if isinstance(act, A.Next):
                return act.table if act.table is not None else self._next(ctx, key, table)
            if isinstance(act, A.Output):
                if position < len(acts) - 1:
                    ctx.rec = None  # not a tail call: no segment (segments.py)
                    ctx.verdict.unsegmented = True
                yield from self._output(ctx, list(key), table)
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
                if ctx.rec is not None:
                    self._close(ctx, key, (table, act, None))
                if not (yield from self._conntrack(ctx, key, act, table)):
                    return None
                return self._next(ctx, key, table)
            elif isinstance(act, A.CtCommit):
                if ctx.rec is not None:
                    self._close(ctx, key, (table, act, tuple(acts[position + 1 :])))
                if not (yield from self._conntrack(ctx, key, act, table)):
                    return None
            elif isinstance(act, A.CtClear):
                key[_CT_STATE] = 0
            elif isinstance(act, A.PutMacBinding):
                self._learn(key)
                ctx.verdict.cacheable = False
            elif isinstance(act, A.LookupMacBinding):
                self._lookup_binding(key)
            elif isinstance(act, A.SelectEcmp):
                key[_REG3] = 1 + _flow_hash(key) % max(act.count, 1)
            elif not (yield from self._generate(ctx, key, act, table)):
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

    def _conntrack(self, ctx: _Ctx, key: list[int], act: CtAction, table: int) -> Gate:
        """One conntrack action: False when the packet stops here (dropped)."""
        zone = self._zone(key, table)
        related = quoted(ctx.packet) if isinstance(act, A.CtNext) else None
        call = CtCall(zone, key, ctx.now, ctx.assoc, act, related)
        if hasattr(self.conntrack, "ct_batch"):
            yield call  # answered with the other packets' calls of this step
        else:
            call_one(self.conntrack, call)
        verdict, dp = ctx.verdict, key[_METADATA]
        ctx.boundary = ctx.seg is not None  # a segment may start where the walk goes on
        if call.store_failed:
            verdict.cacheable = False  # decided without the store: never reuse it
        if call.drop is not None:
            verdict.ct.append(call.result)
            self._drop(verdict, call.drop, dp, table, f"{type(act).__name__} zone={zone:#x}")
            return False
        if isinstance(act, A.CtNext):
            key[_CT_STATE] = call.state | CT_TRK
        elif isinstance(act, A.CtLb):
            if not call.ok:
                verdict.ct.append(None)  # no backend: never cached
                self._drop(verdict, DropReason.NO_LB_BACKEND, dp, table)
                return False
        elif isinstance(act, A.CtCommit):
            verdict.ct.append(call.result)
            if verdict.trace is not None:
                verdict.note(TraceEvent("ct", dp, table, detail="ct_commit"))
            return True
        verdict.ct.append(call.result)
        if verdict.trace is not None:
            detail = ct_detail(act, zone, key)
            verdict.note(TraceEvent("ct", dp, table, detail=detail, key=tuple(key)))
        return True

    # -- MAC bindings ------------------------------------------------------------
    def _learn(self, key: list[int]) -> None:
        dp, port, bindings = key[_METADATA], key[_INPORT], self.topology.mac_bindings
        if key[_ETH_TYPE] == 0x0806 and key[_ARP_SPA]:
            where, mac = (dp, port, key[_ARP_SPA]), key[_ARP_SHA]
        elif key[_ND_TARGET] and key[_ND_TLL]:
            where, mac = (dp, port, key[_ND_TARGET]), key[_ND_TLL]
        else:
            return
        if bindings.get(where) != mac:
            bindings[where] = mac
            if self.segments is not None:  # segments looked bindings up: a hidden input
                self.segments.flush()

    def _lookup_binding(self, key: list[int]) -> None:
        ip = key[_XREG0] if key[_ETH_TYPE] == 0x86DD else key[_REG0]
        mac = self.topology.mac_bindings.get((key[_METADATA], key[_OUTPORT], ip))
        if mac is None:
            key[_REG7] = 0
        else:
            key[_ETH_DST] = mac
            key[_REG7] = 1

    # -- output ------------------------------------------------------------------
    def _output(self, ctx: _Ctx, key: list[int], table: int) -> Walk:
        dp = key[_METADATA]
        kind = self.topology.kinds[dp]
        if ctx.verdict.trace is not None:
            ctx.verdict.note(TraceEvent("output", dp, table, detail=f"outport={key[_OUTPORT]:#x}"))
        if self.topology.pipeline_of(table) == "ingress":
            out = key[_OUTPORT]
            members = self.topology.groups.get((dp, out), ()) if out >= MULTICAST_BASE else (out,)
            if len(members) > 1:
                ctx.rec = None  # not tail calls: no segment (segments.py)
                ctx.verdict.unsegmented = True
            for member in members:
                if member == key[_INPORT] and not key[_FLAGS] & FLAG_LOOPBACK:
                    continue
                copy = list(key)
                copy[_OUTPORT] = member
                copy[_REGS_FIRST:_REGS_END] = _REGS_CLEAR
                copy[_CT_STATE] = 0
                if self._remote(dp, member):
                    if ctx.verdict.trace is not None:
                        note = TraceEvent("note", dp, table, detail="egress runs remotely")
                        ctx.verdict.note(note)
                    yield from self._deliver(ctx, copy, table)
                    continue
                yield from self._run(ctx, copy, self.topology.first_table[(kind, "egress")])
            return
        yield from self._deliver(ctx, key, table)

    def _remote(self, datapath: int, port: int) -> bool:
        """A port on another host (or on none): its egress pipeline is not run here."""
        info = self.topology.ports.get((datapath, port))
        return info is not None and info.kind in REMOTE_KINDS

    def _deliver(self, ctx: _Ctx, key: list[int], table: int) -> Walk:
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
            copy[_REGS_FIRST:_REGS_END] = _REGS_CLEAR
            kind = self.topology.kinds[peer_dp]
            if ctx.verdict.trace is not None:
                detail = f"{kind} ingress via {port.name}"
                ctx.verdict.note(TraceEvent("enter", peer_dp, None, detail=detail))
            yield from self._run(ctx, copy, self.topology.first_table[(kind, "ingress")])
            return
        self._emit(ctx, key, dp, out, port.name)
        if ctx.rec is not None:
            ctx.rec.final = list(key)
        if ctx.verdict.trace is not None:
            ctx.verdict.note(TraceEvent("deliver", dp, table, detail=port.name, key=tuple(key)))

    def _emit(self, ctx: _Ctx, key: list[int], dp: int, port: int, name: str) -> None:
        frame = rewrite_frame(ctx.packet, ctx.orig, key)
        ctx.verdict.outputs.append(Emit(dp, port, name, frame, key[_INPORT]))

    # -- generated packets ---------------------------------------------------------
    def _generate(self, ctx: _Ctx, key: list[int], act: object, table: int) -> Gate:
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
        # the generated packet shares its parent's conntrack association, as before
        child = _Ctx(packet, list(new_key), ctx.verdict, ctx.now, ctx.steps, ctx.hops, ctx.assoc)
        ctx.verdict.note(TraceEvent("emit", key[_METADATA], table, detail=type(act).__name__))
        next_table = yield from self._execute(child, new_key, then, table)
        if next_table is not None:
            yield from self._run(child, new_key, next_table)
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


def _advance(walk: Walk, waiting: list[tuple[Walk, CtCall]]) -> None:
    """Run a packet's walk to its next conntrack call (queued) or to its end."""
    try:
        call = next(walk)
    except StopIteration:
        return
    waiting.append((walk, call))


def _flow_hash(key: list[int]) -> int:
    """Stable (not per-process salted) hash of the 5-tuple for ECMP member choice."""
    data = b"".join(key[i].to_bytes(16, "big") for i in _HASHED)
    return zlib.crc32(data)
