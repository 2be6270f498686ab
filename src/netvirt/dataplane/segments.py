"""Segment cache: megaflows split at conntrack, as Open vSwitch's recirculation.

Theory of operation
-------------------
*Why.* A walk that reaches a conntrack action gets no megaflow
(``megaflow.py``): its outcome depends on the connection. But the connection
is only an input of the conntrack call itself; what happens *before* the call
(which tables, which rules, which field writes) and what happens *between* two
calls depends on the key alone, and on far fewer of its bits than the
5-tuple. So a new connection through a security group and SNAT — a SYN, six
to eight slow-path walks of ~50 table lookups each — can run as a few cached
*segments* and the conntrack calls between them.

*What a segment is.* A segment starts at a table with a key: at the start of
a walk (a local port's ingress, a tunnel packet's egress) and where a walk
goes on after a conntrack call (the next table, after the rest of the rule's
actions for a ``ct_commit``). It ends at the next conntrack action, or where
the walk ends (a delivered frame, a drop, nothing). While it runs, the
pipeline records what it read, as for a megaflow: the staged lookups' bits
(``Classifier.lookup_megaflow``) and :func:`segment_reads` of every rule hit,
which puts every field an action writes in the mask whole. The cache keeps
per start table, per mask, the masked start key → :class:`Segment`: the
fields that differ between the key where the segment ended and where it
started (constants: every one of them is exact in the mask), the frame it
delivered (port; the frame itself is rewritten from the packet and the
replayed key, as the walk does), its drops, the conntrack action it ended at
(table, action, the actions of the rule after it), and the tables and
datapaths it went through (the walk's loop limits). Replaying a segment is
applying those writes and effects and making the conntrack call itself, with
the real key (so zones, NAT, load balancing and ``ct.rel`` are live): the
conntrack state, ``ct_mark`` and NAT-rewritten fields are in the key the
following segment starts with, and in its mask as far as its lookups read
them.

*Which walks.* A segment is learned only from a linear stretch of walk: no
multicast fan-out, no action list going on after an ``output``, no generated
packet, no learned MAC binding (:func:`segment_reads` is None for them),
never with ``trace``. In a linear stretch every nested call (ingress →
egress, a patch port into the peer datapath) is in tail position, so what
follows a conntrack call in the deepest frame is what follows it when
replayed from the frame the segment started in. The pipeline's own state
(``metadata``, ports, ``flags``, registers, ``ct_state``) is always in the
mask whole: output and patch ports reset it without a rule reading it.

*Hidden inputs.* The classifier, the topology (ports, groups, table order),
the MAC bindings: :meth:`SegmentCache.sync` flushes when any of them is
another object or changed version, the pipeline flushes when a walk learns a
binding, and the datapath's flow cache flushes it with its own entries
(``FlowCache.sync``: installs, gateways). Conntrack, ECMP (its hash fields are
in the mask), load balancing and gateways chosen per flow (after the
pipeline, in the forwarder) are live or keyed. Counters are the walk's: the
pipeline's drop counts and the verdict's outputs and drops are replayed.

Thread-safety: none; one cache per pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import and_, itemgetter
from typing import Any

from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.actions import Reads, megaflow_reads
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.eviction import place
from netvirt.dataplane.fields import FIELDS, NUM_FIELDS, F

# the pipeline's state: reset by output and patch ports whatever the rules read
ALWAYS: tuple[int, ...] = tuple(
    F(name)
    for name in (
        "metadata",
        "inport",
        "outport",
        "flags",
        *(f"reg{i}" for i in range(8)),
        "xreg0",
        "ct_state",
    )
)
_CT_STATE = F("ct_state")
CtEnd = tuple[int, Any, tuple[object, ...] | None]  # table, ct action, rest of its rule or None


def segment_reads(acts: Iterable[object]) -> Reads | None:
    """What a rule's actions read or write for the segment they run in: as
    ``actions.megaflow_reads``, conntrack actions aside (they end the segment and run
    live), ``ct_clear`` writing ``ct_state``; None for a generated packet or learning."""
    rest: list[object] = []
    clears = False
    for act in acts:
        if isinstance(act, A.CtNext | A.CtCommit | A.CtDnat | A.CtSnat | A.CtLb):
            continue
        clears = clears or isinstance(act, A.CtClear)
        rest.append(act)
    reads = megaflow_reads(rest)
    if reads is None or not clears:
        return reads
    return tuple(sorted((dict(reads) | {_CT_STATE: FIELDS[_CT_STATE].full_mask}).items()))


@dataclass(frozen=True, slots=True)
class Segment:
    """A cached stretch of walk; see the module docstring."""

    writes: tuple[tuple[int, int], ...]  # (field index, value) at the segment's end
    emit: tuple[int, int, str] | None  # delivered: (datapath, port, port name)
    drops: tuple[DropReason, ...]
    ct: CtEnd | None  # ended at this conntrack action (None: the walk ended)
    steps: int  # tables looked up
    hops: int  # datapaths entered through patch ports
    wild: tuple[int, ...]  # the mask per field (a whole walk's megaflow wildcards)


@dataclass(slots=True)
class Recorder:
    """A segment being walked: where it started and what it read so far."""

    owner: list[int]  # the key of the frame it started in (its end closes the segment)
    table: int
    start: tuple[int, ...]
    wild: list[int]
    steps: int
    hops: int
    outputs: int  # verdict.outputs / drops when it started
    drops: int
    final: list[int] | None = None  # the key of the frame delivered


def diff(key: Sequence[int], start: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple((i, v) for i, (v, s) in enumerate(zip(key, start, strict=True)) if v != s)


class _Group:
    """The segments of one start table and mask: masked start key → segment. The masked
    key is the whole-mask fields (most: one ``itemgetter``) then the others ANDed."""

    __slots__ = ("entries", "full", "masks", "part", "signature")

    def __init__(self, signature: tuple[tuple[int, int], ...]) -> None:
        self.signature = signature
        whole = [i for i, m in signature if m == FIELDS[i].full_mask]
        part = [(i, m) for i, m in signature if m != FIELDS[i].full_mask]
        self.full = _getter(whole)
        self.part = _getter([i for i, _ in part])
        self.masks = tuple(m for _, m in part)
        self.entries: dict[tuple[int, ...], Segment] = {}

    def masked(self, key: Sequence[int]) -> tuple[int, ...]:
        if not self.masks:
            return self.full(key)
        return self.full(key) + tuple(map(and_, self.part(key), self.masks))


def _getter(indexes: Sequence[int]) -> Callable[[Sequence[int]], tuple[int, ...]]:
    """``key`` → the tuple of its values at ``indexes`` (itemgetter returns a bare value
    for one index: wrapped)."""
    if len(indexes) > 1:
        return itemgetter(*indexes)
    if indexes:
        (index,) = indexes
        return lambda key: (key[index],)
    return lambda _key: ()


@dataclass
class SegmentCounters:
    hits: int = 0
    misses: int = 0
    inserts: int = 0
    evictions: int = 0
    flushes: int = 0


@dataclass
class SegmentCache:
    """Per start table, mask groups of segments; see the module docstring."""

    capacity: int = 16_384
    counters: SegmentCounters = field(default_factory=SegmentCounters)
    tables: dict[int, list[_Group]] = field(default_factory=dict)
    order: dict[tuple[_Group, tuple[int, ...]], None] = field(default_factory=dict)
    token: tuple[object, ...] = ()

    def sync(self, token: tuple[object, ...]) -> None:
        """Flush unless ``token`` (objects and versions the segments depend on) is the
        one they were learned under; compared by identity, element by element."""
        old = self.token
        if len(old) != len(token) or any(
            a is not b and (type(a) is not int or a != b) for a, b in zip(old, token, strict=True)
        ):
            self.flush()
            self.token = token

    def flush(self) -> None:
        if self.order:
            self.counters.flushes += 1
        self.tables.clear()
        self.order.clear()

    def lookup(self, table: int, key: Sequence[int]) -> Segment | None:
        for group in self.tables.get(table, ()):
            segment = group.entries.get(group.masked(key))
            if segment is not None:
                self.counters.hits += 1
                return segment
        self.counters.misses += 1
        return None

    def insert(self, table: int, start: Sequence[int], segment: Segment) -> None:
        signature = tuple((i, m) for i, m in enumerate(segment.wild) if m)
        groups = self.tables.setdefault(table, [])
        group = next((g for g in groups if g.signature == signature), None)
        if group is None:
            group = _Group(signature)
            groups.append(group)
        masked = group.masked(start)
        self.order, dropped = place(self.order, (group, masked), self.capacity)
        group.entries[masked] = segment
        self.counters.evictions += dropped
        self.counters.inserts += 1

    def stats(self) -> dict[str, int]:
        counters = self.counters
        return {
            "entries": len(self.order),
            "groups": sum(len(groups) for groups in self.tables.values()),
            "capacity": self.capacity,
            "hits": counters.hits,
            "misses": counters.misses,
            "inserts": counters.inserts,
            "evictions": counters.evictions,
            "flushes": counters.flushes,
        }


def start(
    owner: list[int], table: int, wild: list[int] | None, steps: int, hops: int, n: tuple[int, int]
) -> Recorder:
    """A recorder for a segment starting at ``table`` with key ``owner``."""
    masks = [0] * NUM_FIELDS if wild is None else wild
    return Recorder(owner, table, tuple(owner), masks, steps, hops, n[0], n[1])


def finish(
    rec: Recorder,
    key: Sequence[int] | None,
    outputs: Sequence[Any],
    drops: Sequence[DropReason],
    steps: int,
    hops: int,
    ct: CtEnd | None,
) -> Segment | None:
    """The segment ``rec`` recorded, ended at ``ct`` (with the walk's ``key`` there) or at
    the end of its frame (``key`` None: the delivered frame's, if any); None when it may
    not be cached (several outputs, an output before a conntrack call, the loop limits)."""
    emitted, dropped = outputs[rec.outputs :], tuple(drops[rec.drops :])
    if len(emitted) > 1 or DropReason.LOOP_LIMIT in dropped or (ct and (emitted or dropped)):
        return None
    emit = None
    if emitted:
        if rec.final is None:
            return None
        key = rec.final
        out = emitted[0]
        emit = (out.datapath, out.port, out.port_name)
    wild = list(rec.wild)
    for index in ALWAYS:
        wild[index] = FIELDS[index].full_mask
    writes = diff(key, rec.start) if key is not None else ()
    return Segment(writes, emit, dropped, ct, steps - rec.steps, hops - rec.hops, tuple(wild))
