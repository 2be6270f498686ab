"""The client's first ACK of a TCP connection, predicted at the SYN-ACK (docs/offload.md,
"Kernel connections"), so that the kernel takes the connection one packet earlier.

Why: the kernel connections (``conns.py``) need both directions' outcomes. The SYN-ACK
gives the reply direction's (``agent/batchwork.syn_ack_half``); the original direction's
established outcome was known only once the client's first ACK had been through the
slow path: SYN, SYN-ACK and ACK, three slow-path packets per connection, the ACK on
the path of every connection's latency (the server answers after it).

The datapath knows that ACK before the client sends it: the SYN's frame with the ACK
flag instead of SYN (the same ingress port, MACs, addresses, ports and TTL; no rule
reads sequence numbers or options, and while an installed rule matches TCP flags
nothing is handed over at all). At the SYN-ACK, :func:`predict` runs it through the
real pipeline with a conntracker answering from the connection's records as conntrack
will (:class:`_WhatIf`): the same walk, the same conntrack step (SYN_RECV →
ESTABLISHED) the real ACK will take, nothing written to the store (a scratch
``Conntrack`` on a copy of the records did the same at twice the cost). The outcome
is accepted only when it is what a cached
outcome must be (one output to a local port, no drop, cacheable) and conntrack answered
it as the real ACK will be answered: every record the SYN-ACK consulted, in the
original direction, established, the mark unchanged. The kernel then gets the
connection in SYN_RECV; its tracker serves the original direction's first ACK
(→ ESTABLISHED, or FIN_WAIT with a FIN) with this outcome, and gives anything else in
SYN_RECV (a retransmitted SYN or SYN-ACK, an RST, a reply without SYN) to the
datapath, which folds the kernel's state back first, as for every other packet.

Thread-safety: none (the datapath loop's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from netvirt.dataplane.fastpath import TCP4, TCP6, Entry, Output, derive, frame_key
from netvirt.dataplane.fields import (
    BY_NAME,
    CT_DNAT,
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_SNAT,
    CT_TRK,
)
from netvirt.dataplane.nf.codec import (
    FIN_ORIG,
    FIN_REPLY,
    IPPROTO_TCP,
    CtEntry,
    CtState,
    CtTuple,
    advanced_entry,
)
from netvirt.dataplane.nf.conntrack import Conntrack, CtRequest, CtResult
from netvirt.dataplane.nf.flowkey import CtCall, FlowKeyConntrack
from netvirt.dataplane.nf.nat import translate
from netvirt.dataplane.nf.tcp import tcp_opens, tcp_step
from netvirt.dataplane.offload.conns import read_primary
from netvirt.dataplane.pipeline import Pipeline, Verdict
from netvirt.state.jobs import Steps

log = logging.getLogger(__name__)

TCP_SYN, TCP_ACK = 0x02, 0x10
SYN_LIMIT = 65_536  # SYNs waiting for their SYN-ACK (the oldest dropped past it)
Group = frozenset[Hashable]  # a connection's conntrack records: (zone, orig, serial)


@dataclass(frozen=True, slots=True)
class Syn:
    """A connection's opening SYN as it entered the host (and, for SYN templates, what
    its walk did: ``templates.py``)."""

    iface: str
    data: bytes
    seeded: bool
    out: bytes = b""  # the frame it was sent on as
    out_at: tuple[int, int] | None = None  # ... to (datapath, port)
    fresh: bool = False  # every conntrack call found no record (+new) and created one or none
    sport_unread: bool = False  # segments prove no table or action read its source port


def port_unread(verdict: Verdict, name: str) -> bool:
    """Whether ``verdict``'s walk provably read nothing of the field ``name`` (every
    stretch of it ran as a segment, none of whose masks has a bit of it)."""
    if verdict.unsegmented or verdict.seg_reads is None:
        return False
    return not verdict.seg_reads[BY_NAME[name].index]


def fresh_walk(verdict: Verdict) -> bool:
    """Every conntrack call of the walk found no connection: +new, with a record created
    now (SYN_SENT) or none (a lookup without commit), nothing related or invalid."""
    if not verdict.ct:
        return False
    for result in verdict.ct:
        if result is None or getattr(result, "drop", None) is not None:
            return False
        if getattr(result, "unavailable", False):
            return False
        bits = getattr(result, "state", 0)
        if not bits & CT_NEW or bits & (CT_EST | CT_INV | CT_REL | CT_RPL):
            return False
        entry = getattr(result, "entry", None)
        if entry is not None and (entry.state is not CtState.SYN_SENT or entry.version == 0):
            return False
    return True


def flags_at(data: bytes) -> int | None:
    """Where a TCP frame's flags byte is (IPv4 without options, or IPv6), or None."""
    if data[12:14] == b"\x08\x00" and len(data) >= 54 and data[14] == 0x45 and data[23] == 6:
        return 47
    if data[12:14] == b"\x86\xdd" and len(data) >= 74 and data[20] == 6:
        return 67
    return None


def records_of(results: Iterable[object]) -> Group:
    """The conntrack records a walk's results name."""
    deps: set[Hashable] = set()
    for result in results:
        entry = getattr(result, "entry", None)
        if entry is not None:
            deps.add((entry.zone, entry.orig, entry.serial))
    return frozenset(deps)


class SynMemo:
    """Opening SYNs of local ports by their records, until their SYN-ACK comes."""

    def __init__(self, limit: int = SYN_LIMIT) -> None:
        self.syns: dict[Group, Syn] = {}
        self.limit = limit
        self.templates = False  # SYN templates on: keep what the SYN's walk did

    def note(self, iface: str, data: bytes, seeded: bool, verdict: Verdict) -> None:
        """Remember a SYN the slow path sent on (only a plain SYN, original direction)."""
        at = flags_at(data)
        if at is None or data[at] & 0x17 != TCP_SYN or not verdict.outputs or verdict.drops:
            return
        if any(getattr(r, "reply", False) for r in verdict.ct):
            return
        group = records_of(verdict.ct)
        if not group:
            return
        self.syns.pop(group, None)  # a retransmitted SYN is the newest again
        while len(self.syns) >= self.limit:
            # the oldest first (insertion order): a SYN whose SYN-ACK never came (end
            # of a run, a dead server) ages out instead of the whole memo being wiped
            del self.syns[next(iter(self.syns))]
        one = verdict.outputs[0] if len(verdict.outputs) == 1 else None
        if one is None or not self.templates:
            self.syns[group] = Syn(iface, data, seeded)
            return
        self.syns[group] = Syn(
            iface, data, seeded, one.frame, (one.datapath, one.port), fresh_walk(verdict),
            port_unread(verdict, "tp.src"),
        )  # fmt: skip

    def take(self, group: Group) -> Syn | None:
        return self.syns.pop(group, None)


def ack_of(syn: bytes, seeded: bool) -> bytes | None:
    """The client's ACK as the SYN's frame with ACK instead of SYN (its L4 checksum kept
    right: updated for the flags word, or left as it is when it is only the
    pseudo-header's seed of a checksum-offloaded frame)."""
    at = flags_at(syn)
    if at is None:
        return None
    out = bytearray(syn)
    old = out[at - 1] << 8 | out[at]
    out[at] = (out[at] & ~0x17 & 0xFF) | TCP_ACK
    new = out[at - 1] << 8 | out[at]
    if not seeded:
        csum_at = at + 3  # the TCP checksum: 16 bytes into the header, the flags 13
        csum = out[csum_at] << 8 | out[csum_at + 1]
        total = (~csum & 0xFFFF) + (~old & 0xFFFF) + new  # RFC 1624, eqn. 3
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        out[csum_at : csum_at + 2] = (~total & 0xFFFF).to_bytes(2, "big")
    return bytes(out)


def predict(
    pipeline: Pipeline, conntrack: Conntrack, item: tuple[bytes, int, int, None, float],
    group: Group,
) -> Verdict | None:  # fmt: skip
    """The walk of ``item`` (the predicted ACK) against ``group``'s records as conntrack
    will find them (:class:`_WhatIf`): its verdict when conntrack answers it as the real
    ACK will be (every record of ``group`` stepped to ESTABLISHED in the original
    direction, marks unchanged), else None. Nothing is written to the store."""
    records: dict[str, CtEntry] = {}
    for dep in group:
        zone, orig, _serial = cast(tuple[int, CtTuple, int], dep)
        found = read_primary(conntrack, dep)
        if found is None or found[0].state is not CtState.SYN_RECV:
            return None
        records[conntrack.key(zone, orig)] = found[0]
    whatif = _WhatIf(conntrack, records)
    saved = pipeline.conntrack
    pipeline.conntrack = whatif
    try:
        verdict = pipeline.process_batch([item])[0]
    finally:
        pipeline.conntrack = saved
    if whatif.unsure or len(verdict.outputs) != 1 or verdict.drops or not verdict.cacheable:
        return None
    if records_of(verdict.ct) != group:
        return None
    # every other key the walk looked up was taken as absent: so must it be in the store
    if any(raw is not None for raw in conntrack.store.get_many(sorted(whatif.absent))):
        return None
    for result in verdict.ct:
        found = getattr(result, "entry", None)
        if found is not None and found.state is not CtState.ESTABLISHED:
            return None
    return verdict


class _WhatIf(FlowKeyConntrack):
    """Conntrack's answers to the predicted ACK from the handshake's records, without the
    store: exactly the two cases that walk meets, decided as ``Conntrack`` decides them
    (a differential test checks it against the real ACK's slow path). A call on one of
    ``records`` (SYN_RECV, original direction): the TCP step, ct_state +trk+est with its
    NAT bits, the tuple translated when NAT was asked. A call on any other key: no
    connection there, and an ACK cannot start one: +trk+inv (``absent`` collects those
    keys; the caller checks the store has none of them). Anything else (a related or
    load-balancing call, a reply, a mark that would change, an invalid step): ``unsure``,
    and no prediction."""

    def __init__(self, conntrack: Conntrack, records: dict[str, CtEntry]) -> None:
        super().__init__(conntrack)
        self.records = records
        self.absent: set[str] = set()
        self.unsure = False

    def ct_steps(self, calls: Sequence[CtCall]) -> Steps[None]:
        for call in calls:
            request = self._request(call)
            if request is None:
                continue
            result = self._answer(request, call.now)
            if result is None:
                self.unsure = True
                result = CtResult(CT_TRK | CT_INV, None, False, request.tuple)
            self._apply(call, result)
        return
        yield  # (a generator that asks the store nothing)

    def _answer(self, req: CtRequest, now: float) -> CtResult | None:
        ct = self.conntrack
        if req.related is not None or (req.nat is not None and req.nat.lb is not None):
            return None
        key, hint, t = ct.key(req.zone, req.tuple), req.hint, req.tuple
        if hint is not None and hint.zone == req.zone:
            if t == hint.orig.reversed() and t != hint.reply:
                return None  # (a reply: never the predicted ACK)
            if t == hint.reply.reversed() and t != hint.orig:
                key = ct.key(req.zone, hint.orig)
        entry = self.records.get(key)
        if entry is None:
            if t.proto != IPPROTO_TCP or tcp_opens(req.tcp_flags):
                return None
            self.absent.add(key)
            return CtResult(CT_TRK | CT_INV, None, False, t)
        if entry.expiry <= now:
            return None
        step = tcp_step(entry.state, entry.flags & (FIN_ORIG | FIN_REPLY), False, req.tcp_flags)
        mark = req.mark if req.commit and req.mark is not None else entry.mark
        if step is None or mark != entry.mark:
            return None
        state, fins = step
        flags = (entry.flags & ~(FIN_ORIG | FIN_REPLY)) | fins
        timeouts = ct.timeouts
        timeout = timeouts.of(entry.orig, state)
        stale = now - entry.last_seen >= timeout * timeouts.refresh_fraction
        if (state, flags) != (entry.state, entry.flags) or stale:
            entry = advanced_entry(entry, state, mark, flags, now, now + timeout)
            self.records[key] = entry
        bits, tup = CT_TRK | CT_EST, t
        if req.nat is not None:
            tup = translate(entry, False)
            bits |= (CT_SNAT if entry.snat else 0) | (CT_DNAT if entry.dnat else 0)
        return CtResult(bits, entry, False, tup)


def ack_half(
    syn: Syn, reply: Entry, pipeline: Pipeline, conntrack: Conntrack,
    where: tuple[int, int], iface_of: Callable[[tuple[int, int]], str | None],
    now: float, seen: list[Verdict] | None = None,
) -> tuple[Hashable, Entry] | None:  # fmt: skip
    """The original direction's half of a connection whose SYN-ACK gave ``reply`` (its
    reply direction's half): the predicted ACK's exact-cache key and entry, or None
    (``seen``: the predicted ACK's verdict is appended to it)."""
    ack = ack_of(syn.data, syn.seeded)
    framed = frame_key(ack) if ack is not None else None
    if ack is None or framed is None or framed[0] is None:
        return None
    covered, layout = framed
    if layout.name not in (TCP4.name, TCP6.name):
        return None
    group = frozenset(dep for dep, _epoch in reply.deps)
    verdict = predict(pipeline, conntrack, (ack, where[0], where[1], None, now), group)
    if verdict is None:
        return None
    if seen is not None:
        seen.append(verdict)
    emit = verdict.outputs[0]
    iface = iface_of((emit.datapath, emit.port))
    rewrite = derive(ack, emit.frame, layout, syn.seeded) if iface is not None else None
    if iface is None or rewrite is None:
        return None
    deps = tuple((dep, 0) for dep, _epoch in reply.deps)
    entry = Entry((Output(iface, rewrite),), (), deps, now, (False,) * len(deps))
    return (syn.iface, covered, syn.seeded), entry


class Handshakes:
    """The forwarder's side: SYNs remembered, the ACK predicted at their SYN-ACK.
    ``world`` gives the forwarder's pipeline, conntrack and physical state (its
    ``local_ports``: interface -> (datapath, port), and ``local``: the reverse)."""

    def __init__(self, world: Callable[[], tuple[Pipeline, Conntrack, Any]]) -> None:
        self.world = world
        self.memo = SynMemo()
        self.counters = {"predicted": 0, "refused": 0, "errors": 0}
        # SYN templates (``templates.py``): given (the ACK's key, the SYN's entry, the
        # source port) of a handed-over connection that may be one; None: off
        self.templated: Callable[[Hashable, Entry, int], object] | None = None
        self.template_refused: dict[str, int] = {}

    def learned(
        self, half: Callable[[Hashable, Entry], bool], found: tuple[Hashable, Entry] | None,
        iface: str, data: bytes, seeded: bool, verdict: Verdict,
    ) -> None:  # fmt: skip
        """An uncacheable slow-path outcome on a local port, with ``found`` its SYN-ACK
        half (``agent/batchwork.syn_ack_half``) or None: a SYN is remembered; a SYN-ACK's
        half is offered through ``half``, and when taken the original direction's half,
        the predicted first ACK, after it."""
        if found is None:
            self.memo.note(iface, data, seeded, verdict)
            return
        if not half(*found):
            return
        reply = found[1]
        now = reply.born
        syn = self.memo.take(frozenset(dep for dep, _epoch in reply.deps))
        if syn is None:
            return
        pipeline, conntrack, physical = self.world()
        where = physical.local_ports.get(syn.iface)
        ack = None
        seen: list[Verdict] = []
        try:
            if where is not None:
                ack = ack_half(
                    syn, reply, pipeline, conntrack, where, physical.local.get, now, seen
                )
        except Exception:  # a bug: no prediction (the real ACK completes the hand-over)
            self.counters["errors"] += 1
            if self.counters["errors"] == 1:
                log.exception("predicting a connection's first ACK failed")
            return
        self.counters["predicted" if ack is not None else "refused"] += 1
        if ack is None or not half(*ack):
            return
        templated = self.templated
        if templated is not None and self.memo.templates:
            why = template_refusal(syn, verdict, seen[0] if seen else None)
            if why is not None:
                self.template_refused[why] = self.template_refused.get(why, 0) + 1
                return
            syn_entry = syn_half(syn, ack[1], physical.local.get)
            if syn_entry is None:
                self.template_refused["SYN outcome not replayable"] = (
                    self.template_refused.get("SYN outcome not replayable", 0) + 1
                )
                return
            templated(ack[0], syn_entry, int.from_bytes(syn.data[34:36], "big"))

    def stats(self) -> dict[str, Any]:
        found: dict[str, Any] = {**self.counters, "syns_waiting": len(self.memo.syns)}
        if self.template_refused:
            found["template_refused"] = dict(self.template_refused)
        return found


def template_refusal(syn: Syn, syn_ack: Verdict, ack: Verdict | None) -> str | None:
    """Why the connection of ``syn`` cannot be a SYN template (None: it can): IPv4 TCP
    only; the SYN's walk made a fresh connection and read nothing of its source port;
    the SYN-ACK's read nothing of its destination port (the SNAT port, then the client's
    port); the predicted ACK's nothing of its source port."""
    if flags_at(syn.data) != 47:
        return "not IPv4 TCP"
    if not syn.fresh:
        return "SYN not a fresh connection"
    if not syn.sport_unread:
        return "SYN walk may read the source port"
    if not port_unread(syn_ack, "tp.dst"):
        return "SYN-ACK walk may read the destination port"
    if ack is None or not port_unread(ack, "tp.src"):
        return "ACK walk may read the source port"
    return None


def syn_half(
    syn: Syn, ack: Entry, iface_of: Callable[[tuple[int, int]], str | None]
) -> Entry | None:
    """The SYN's outcome as an entry of the same shape as the predicted ACK's ``ack``
    (its rewrite derived from the SYN's frames), or None."""
    if syn.out_at is None:
        return None
    iface = iface_of(syn.out_at)
    rewrite = derive(syn.data, syn.out, TCP4, syn.seeded) if iface is not None else None
    if iface is None or rewrite is None:
        return None
    return Entry((Output(iface, rewrite),), (), ack.deps, ack.born, ack.replies)
