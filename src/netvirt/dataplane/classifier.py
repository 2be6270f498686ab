"""Multi-table priority classifier using tuple-space search, with megaflow wildcards.

Theory of operation
-------------------
What.  A :class:`Classifier` holds :class:`~netvirt.dataplane.flow.Rule` objects
in numbered tables and answers ``lookup(table, key)``: the highest-priority
rule of ``table`` whose every ``FieldMatch`` holds for the flow key (a
sequence of ints indexed by :mod:`~netvirt.dataplane.fields`). It optionally
records in a :class:`Wildcards` which key bits the answer depended on, so a
megaflow cache can reuse the answer for every key that agrees on those bits.

How (tuple-space search, as Open vSwitch).  A rule's matches are normalized
into a *signature* ``((field index, mask), ...)`` sorted by field index
(several matches on one field are merged; mask-0 matches vanish) and the
tuple of masked values.  Rules of one table with the same signature form a
*subtable*: a dict from masked values to the best rule with those values, so
probing a subtable is one masking of the key plus one dict lookup,
independent of how many rules it holds.  A lookup probes the subtables of
the table in decreasing order of the best rank they hold and stops as soon
as the next subtable's best rank cannot beat the best hit so far (priority
sorting): tables whose high-priority rules sit in few masks are answered
after one or two probes.  The masking code of each signature is built once
and cached per signature (``operator.itemgetter`` when every mask is a
whole field, else a small generated function), so a probe costs a call, a
tuple and a dict lookup, without per-field Python loops.

Ordering and ties (contract).  Rules are ranked by ``(priority, -seq)``
where ``seq`` counts additions: among matching rules of equal priority the
one added *earlier* wins.  Re-adding an equal rule is a no-op (it keeps its
place); :meth:`Classifier.replace_all` keeps the place of rules that stay,
so reconciliation never reorders ties.  Ranks are unique, which is what
lets priority sorting stop at the first subtable whose best rank is below
the best hit, ties included.  The reference classifier of the tests uses
exactly this order.

Memo (the slow path).  A lookup without wildcards first asks the table's
memo: its answers keyed by the key's bits under the union of every subtable's
masks. The full search reads no other bit, so its answer is a function of that
key and can be remembered; the pipeline's lookups mostly repeat (a handful of
datapaths and ports per table), so most are one masking and one dict lookup
instead of one per probed subtable. A table's memo is replaced whenever its
rules change (``_Table.refresh``) and when it reaches ``_MEMO_LIMIT`` answers.
Lookups with wildcards never use it: they record exactly what the search probed.

Wildcards (the megaflow contract). Every probed subtable ORs its mask into
the ``Wildcards`` — on a miss too, because the miss is part of why the
answer came out as it did. The probed subtables are always a prefix of the
probe order, so each probe-order entry carries the union of the masks before
it and a lookup ORs one precomputed union instead of folding at every probe:
recording wildcards costs almost nothing. Subtables skipped by priority
sorting contribute nothing: whatever they hold ranks below the answer for
every key agreeing on the probed bits, since the probe order and the
stopping point depend only on those bits. Hence the invariant the tests
check: every key equal to the looked-up key on the recorded bits gets the
same answer, and fields no probed subtable matches on stay fully wildcarded
(mask 0). Callers that read key bits themselves (a ``Move`` source, a hash
for ``ct_lb``) must add them with :meth:`Wildcards.add`; a pipeline whose
outcome depends on state outside the key (conntrack) must split its
megaflows where it reads it.

Staged lookup (the megaflow cache's variant, :meth:`Classifier.lookup_megaflow`).
Probing a high-priority subtable that misses un-wildcards its whole mask: the
DHCP rules of an ACL table (``ip.proto == 17 && tp.src == 68 && tp.dst == 67``)
would pin the TCP source port of every packet, one megaflow per connection. As
Open vSwitch does, each subtable also indexes the prefixes of its signature
that end at a stage boundary (metadata, L2, L3 — ARP and IP —, L4, in field
index order): a prefix no rule of the subtable has means a miss, and only the
fields of that prefix are recorded. A TCP packet misses the DHCP subtable at
the L3 stage and records ``ip.proto``, not its ports. The indexes count the
subtable's distinct values per prefix and follow every insert and delete. The
staged search reads no bit outside the table's memo key either, so its answer
*and* the bits it read are remembered together (``_Table.wmemo``): a lookup
that hits the memo ORs a precomputed tuple of masks, and the search itself
runs once per distinct memo key, not once per packet.

Invariants. Key values lie within their field's width (``key[i] & full mask
== key[i]``; the parser and the actions keep it so); whole-field masks are
not applied. ``version`` increases by one on every call that changes the
rule set, never otherwise. Each subtable is non-empty, its ``max_rank`` is
the best rank it holds, and a table's probe order is sorted by it; all of
this is restored before a mutating call returns, so lookups never repair
anything. Unsatisfiable rules (two matches on one field that disagree) are
kept, so they can be removed, but never returned.

Thread-safety.  None internally: one writer, and lookups from the same
thread (the datapath applies flow changes between packet batches).  Under
the GIL a lookup racing a writer in another thread is memory-safe (probe
orders are replaced, not mutated) but may see a half-applied change; such a
reader must discard its answer if ``version`` moved during the lookup. An
answer such a reader puts in a memo lands in the memo the change replaces, or
is computed after that table's change completed; lookups only ever insert
into or clear the memo they read, never install one.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple, cast

from netvirt.dataplane.fields import FIELDS, NUM_FIELDS
from netvirt.dataplane.flow import FieldMatch, Rule

Signature = tuple[tuple[int, int], ...]
"""``((field index, mask), ...)`` sorted by field index, masks non-zero."""

KeyFunction = Callable[[Sequence[int]], Hashable]

_SEQ_BITS = 48
_SEQ_LIMIT = 1 << _SEQ_BITS
_NO_RANK = -1  # below every rank: priorities are >= 0
_UNKNOWN = object()  # not in a table's memo (None is an answer: no rule matches)
_MEMO_LIMIT = 1 << 14  # answers remembered per table

FIELDS_BY_NAME_INDEX: dict[str, int] = {f.name: f.index for f in FIELDS}
_ZEROS = (0,) * NUM_FIELDS


# --------------------------------------------------------------------------- #
# generated masking code
# --------------------------------------------------------------------------- #


def _values_expr(sig: Signature) -> str:
    """Expression for the masked values; one field is a bare int, not a 1-tuple.

    Whole-field masks are left out: key values already lie within their width.
    """
    terms = [
        f"k[{index}]" if mask == FIELDS[index].full_mask else f"k[{index}] & {mask}"
        for index, mask in sig
    ]
    if len(terms) == 1:
        return terms[0]
    return "(" + ", ".join(terms) + ")"


def _compile(name: str, source: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<classifier {name}>", "exec"), {"__builtins__": {}}, namespace)
    return namespace[name]


@lru_cache(maxsize=4096)
def key_function(sig: Signature) -> KeyFunction:
    """``f(key) -> masked values`` for ``sig``: the dict key of a subtable or megaflow.

    When every mask is a whole field, masking is the identity (key values lie
    within their field's width) and C-level ``itemgetter`` does the job;
    otherwise a small function is generated from the signature's integers
    (safe to compile: nothing else goes into its source).  Cached by
    signature, so each shape is built once.
    """
    if sig and all(mask == FIELDS[index].full_mask for index, mask in sig):
        return cast(KeyFunction, itemgetter(*(index for index, _ in sig)))
    source = f"def key_of(k):\n    return {_values_expr(sig)}\n"
    return cast(KeyFunction, _compile("key_of", source))


def normalize(match: Iterable[FieldMatch]) -> tuple[Signature, Hashable] | None:
    """(signature, masked values) of a rule's match; ``None`` if it can never match.

    Matches on the same field are merged (``ct.trk && ct.new`` are two masks of
    ``ct_state``); they conflict when they require different values on a
    shared bit.  The values have the shape :func:`key_function` produces.
    """
    merged: dict[int, tuple[int, int]] = {}
    for m in match:
        index = FIELDS_BY_NAME_INDEX[m.field]
        mask, value = merged.get(index, (0, 0))
        if (value ^ m.value) & mask & m.mask:
            return None
        merged[index] = (mask | m.mask, value | m.value)
    items = sorted((i, mv) for i, mv in merged.items() if mv[0])
    sig = tuple((i, mask) for i, (mask, _) in items)
    values = tuple(value for _, (_, value) in items)
    return sig, (values[0] if len(values) == 1 else values)


# --------------------------------------------------------------------------- #
# wildcards
# --------------------------------------------------------------------------- #


class Wildcards:
    """Per field index, the union of the mask bits lookups consulted (0 = wildcarded).

    ``masks`` is a plain list so the classifier's generated code can OR into it
    without method calls; treat it as read-only outside the classifier.
    """

    __slots__ = ("masks",)

    def __init__(self, masks: Sequence[int] | None = None) -> None:
        if masks is not None and len(masks) != NUM_FIELDS:
            raise ValueError(f"expected {NUM_FIELDS} masks, got {len(masks)}")
        self.masks: list[int] = list(masks) if masks is not None else [0] * NUM_FIELDS

    def reset(self) -> None:
        """Back to all-wildcarded, reusing the list (a pipeline keeps one per thread)."""
        self.masks[:] = _ZEROS

    def add(self, index: int, mask: int) -> None:
        """Record that the outcome also depends on ``key[index] & mask``."""
        self.masks[index] |= mask

    def add_field(self, name: str, mask: int | None = None) -> None:
        """Like :meth:`add` by field name; ``mask=None`` means the whole field."""
        spec = FIELDS[FIELDS_BY_NAME_INDEX[name]]
        self.masks[spec.index] |= spec.full_mask if mask is None else mask

    def union(self, other: Wildcards) -> None:
        """OR ``other`` into this one (a pipeline combines its tables' wildcards)."""
        mine = self.masks
        for index, mask in enumerate(other.masks):
            if mask:
                mine[index] |= mask

    def covers(self, other: Wildcards) -> bool:
        """True if every bit consulted by ``other`` is consulted here too."""
        return all(
            not (theirs & ~mine) for mine, theirs in zip(self.masks, other.masks, strict=True)
        )

    def signature(self) -> Signature:
        return tuple((i, m) for i, m in enumerate(self.masks) if m)

    def masked(self, key: Sequence[int]) -> tuple[int, ...]:
        """``key & masks`` field by field (the part of the key the answer depends on)."""
        return tuple(k & m for k, m in zip(key, self.masks, strict=True))

    def copy(self) -> Wildcards:
        return Wildcards(self.masks)

    def as_dict(self) -> dict[str, int]:
        """Consulted masks by field name, for traces and dumps."""
        return {FIELDS[i].name: m for i, m in enumerate(self.masks) if m}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wildcards) and self.masks == other.masks

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={mask:#x}" for name, mask in self.as_dict().items())
        return f"Wildcards({inner})"


# --------------------------------------------------------------------------- #
# tables and subtables
# --------------------------------------------------------------------------- #

_Hit = tuple[int, Rule]  # (rank, rule)


def _neg_rank(hit: _Hit) -> int:
    return -hit[0]


def _stage_of(index: int) -> int:
    """0 metadata, 1 L2, 2 L3 (ARP and IP), 3 L4: the staged lookup's field order."""
    return bisect.bisect_right(_STAGE_STARTS, index)


_STAGE_STARTS = tuple(FIELDS_BY_NAME_INDEX[name] for name in ("eth.src", "arp.op", "tp.src"))
assert list(_STAGE_STARTS) == sorted(_STAGE_STARTS), "stages must follow field-index order"


def _prefix(values: Hashable, length: int) -> Hashable:
    """The first ``length`` masked values, shaped as :func:`key_function` shapes them."""
    items = cast(tuple[int, ...], values)
    return items[0] if length == 1 else items[:length]


# (key function of a prefix of the signature, prefix values -> buckets with it, the prefix)
_Stage = tuple[KeyFunction, dict[Hashable, int], Signature]


class _Subtable:
    """Rules of one table sharing one signature."""

    __slots__ = ("buckets", "heads", "key_of", "max_rank", "sig", "stages", "stale")

    def __init__(self, sig: Signature) -> None:
        self.sig = sig
        self.key_of = key_function(sig)
        self.heads: dict[Hashable, _Hit] = {}  # values -> best (rank, rule)
        self.buckets: dict[Hashable, list[_Hit]] = {}  # values -> all, best first
        self.max_rank = _NO_RANK
        self.stale = False  # max_rank may be too high after a removal
        # staged lookup: one index per stage boundary inside the signature (a proper prefix)
        ends = [i for i in range(1, len(sig)) if _stage_of(sig[i][0]) != _stage_of(sig[i - 1][0])]
        self.stages: tuple[_Stage, ...] = tuple(
            (key_function(sig[:end]), {}, sig[:end]) for end in ends
        )

    def _index(self, values: Hashable, step: int) -> None:
        for _, present, prefix in self.stages:
            part = _prefix(values, len(prefix))
            count = present.get(part, 0) + step
            if count:
                present[part] = count
            else:
                del present[part]

    def insert(self, values: Hashable, hit: _Hit) -> None:
        bucket = self.buckets.get(values)
        if bucket is None:
            bucket = self.buckets[values] = []
            self._index(values, 1)
        bisect.insort(bucket, hit, key=_neg_rank)
        self.heads[values] = bucket[0]
        self.max_rank = max(self.max_rank, hit[0])

    def delete(self, values: Hashable, hit: _Hit) -> None:
        bucket = self.buckets[values]
        bucket.remove(hit)
        if bucket:
            self.heads[values] = bucket[0]
        else:
            del self.buckets[values]
            del self.heads[values]
            self._index(values, -1)
        if hit[0] == self.max_rank:
            self.stale = True

    def refresh(self) -> None:
        if self.stale:
            self.max_rank = max((rank for rank, _ in self.heads.values()), default=_NO_RANK)
            self.stale = False


# (max_rank, key_of, heads, masks of the subtables probed before this one)
_Probe = tuple[int, KeyFunction, dict[Hashable, _Hit], Signature]
# (max_rank, key_of, heads, stages, signature): the probe order of the staged lookup
_StagedProbe = tuple[int, KeyFunction, dict[Hashable, _Hit], tuple[_Stage, ...], Signature]
# a staged lookup's answer and the bits it read, as ((field index, mask), ...)
_Staged = tuple[Rule | None, Signature]


class _Table:
    __slots__ = ("memo", "probe", "staged", "subtables", "wmemo")

    def __init__(self) -> None:
        self.subtables: dict[Signature, _Subtable] = {}
        # (probe order by max_rank descending, masks of all subtables): one
        # tuple, replaced whole, so a racing reader never mixes two versions
        self.probe: tuple[list[_Probe], Signature] = ([], ())
        # (key function of the union of all subtables' masks, its values -> answer):
        # the answers of lookups without wildcards; replaced whole by refresh()
        self.memo: tuple[KeyFunction, dict[Hashable, Rule | None]] = (key_function(()), {})
        self.staged: list[_StagedProbe] = []
        # the staged lookup's answers with their wildcards, under the memo's key function
        self.wmemo: dict[Hashable, _Staged] = {}

    def refresh(self) -> None:
        for sig in [sig for sig, sub in self.subtables.items() if not sub.heads]:
            del self.subtables[sig]
        subs = list(self.subtables.values())
        for sub in subs:
            sub.refresh()
        subs.sort(key=lambda sub: sub.max_rank, reverse=True)
        order: list[_Probe] = []
        seen: dict[int, int] = {}
        for sub in subs:
            order.append((sub.max_rank, sub.key_of, sub.heads, tuple(seen.items())))
            for index, mask in sub.sig:
                seen[index] = seen.get(index, 0) | mask
        self.probe = (order, tuple(seen.items()))
        self.memo = (key_function(tuple(sorted(seen.items()))), {})
        self.staged = [(s.max_rank, s.key_of, s.heads, s.stages, s.sig) for s in subs]
        self.wmemo = {}

    def search_staged(self, key: Sequence[int]) -> _Staged:
        """The priority search with staged probes (see :meth:`Classifier.lookup_megaflow`)."""
        best: Rule | None = None
        best_rank = _NO_RANK
        read: dict[int, int] = {}
        for max_rank, key_of, heads, stages, sig in self.staged:
            if max_rank < best_rank:
                break
            for prefix_of, present, prefix in stages:
                if prefix_of(key) not in present:
                    sig = prefix  # no rule has this prefix: what it read is all that counts
                    break
            else:
                hit = heads.get(key_of(key))
                if hit is not None and hit[0] > best_rank:
                    best_rank, best = hit
            for index, mask in sig:
                read[index] = read.get(index, 0) | mask
        return best, tuple(read.items())


class Delta(NamedTuple):
    """What a bulk change did (for agent counters)."""

    added: int
    removed: int


@dataclass(frozen=True, slots=True)
class SubtableInfo:
    """One subtable, for dumps and benchmarks."""

    table: int
    signature: dict[str, int]  # field name -> mask
    rules: int
    max_priority: int


# --------------------------------------------------------------------------- #
# the classifier
# --------------------------------------------------------------------------- #

_Placement = tuple[int, Signature | None, Hashable]  # (rank, subtable sig, values)


class Classifier:
    """Tables of rules with priority lookup; see the module docstring."""

    def __init__(self) -> None:
        self.version = 0  # read-only for callers; bumped once per changing call
        self._tables: dict[int, _Table] = {}
        self._rules: dict[Rule, _Placement] = {}  # in ascending seq (tie) order
        self._seq = 0

    # -- lookup (hot path) -------------------------------------------------- #

    def lookup(self, table: int, key: Sequence[int], wc: Wildcards | None = None) -> Rule | None:
        """Best rule of ``table`` matching ``key``; ORs consulted masks into ``wc``.

        The probed subtables are always a prefix of the probe order, so their
        masks are folded into ``wc`` once, from a precomputed union, instead
        of at every probe.
        """
        tab = self._tables.get(table)
        if tab is None:
            return None
        if wc is None:
            memo_key, memo = tab.memo
            values = memo_key(key)
            known = memo.get(values, _UNKNOWN)
            if known is not _UNKNOWN:
                return known  # type: ignore[return-value]  # (no cast: a call per lookup)
        order, consulted = tab.probe
        best: Rule | None = None
        best_rank = _NO_RANK
        for max_rank, key_of, heads, before in order:
            if max_rank < best_rank:
                consulted = before
                break
            hit = heads.get(key_of(key))
            if hit is not None and hit[0] > best_rank:
                best_rank, best = hit
        if wc is not None:
            masks = wc.masks
            for index, mask in consulted:
                masks[index] |= mask
        else:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()  # full: start over (connections churn); in place, see refresh()
            memo[values] = best
        return best

    def lookup_megaflow(self, table: int, key: Sequence[int], masks: list[int]) -> Rule | None:
        """:meth:`lookup` with *staged* probes, ORing the key bits the answer depends on into
        ``masks`` (a :attr:`Wildcards.masks` list); see "Staged lookup" in the module
        docstring. Answered from the table's wildcard memo when it can."""
        tab = self._tables.get(table)
        if tab is None:
            return None
        values = tab.memo[0](key)
        wmemo = tab.wmemo
        known = wmemo.get(values)
        if known is None:
            known = tab.search_staged(key)
            if len(wmemo) >= _MEMO_LIMIT:
                wmemo.clear()
            wmemo[values] = known
        for index, mask in known[1]:
            masks[index] |= mask
        return known[0]

    # -- changes ------------------------------------------------------------ #

    def add(self, rule: Rule) -> bool:
        """Install ``rule``; False (and no change) if an equal rule is installed."""
        return self.apply(add=(rule,)).added == 1

    def remove(self, rule: Rule) -> None:
        """Uninstall ``rule``; ``KeyError`` if it is not installed."""
        self.apply(remove=(rule,))

    def discard(self, rule: Rule) -> bool:
        """Uninstall ``rule`` if installed; True if it was."""
        return rule in self._rules and self.apply(remove=(rule,)).removed == 1

    def apply(self, add: Iterable[Rule] = (), remove: Iterable[Rule] = ()) -> Delta:
        """Remove then add, as one change (one ``version`` bump).

        All-or-nothing: a rule in ``remove`` that is not installed, or a rule
        with a negative priority in ``add``, raises before anything changes.
        Rules in ``add`` equal to installed ones (after the removals) are
        skipped and keep their tie-breaking place.
        """
        removing = list(dict.fromkeys(remove))
        adding = list(dict.fromkeys(add))
        missing = [r for r in removing if r not in self._rules]
        if missing:
            raise KeyError(f"rule not installed: {missing[0]!r}")
        for rule in adding:
            _check_rule(rule)
        gone = set(removing)
        adding = [r for r in adding if r in gone or r not in self._rules]
        touched: set[int] = set()
        for rule in removing:
            self._unplace(rule)
            touched.add(rule.table)
        for rule in adding:
            self._place(rule)
            touched.add(rule.table)
        for table in touched:
            self._refresh_table(table)
        if removing or adding:
            self.version += 1
        return Delta(len(adding), len(removing))

    def replace_all(self, rules: Iterable[Rule]) -> Delta:
        """Make the installed set equal ``rules``, changing only the difference.

        Rules that stay keep their place; new rules are placed in the order
        given.  This is the agent's desired-vs-installed reconciliation step.
        """
        wanted = dict.fromkeys(rules)
        stale = [r for r in self._rules if r not in wanted]
        new = [r for r in wanted if r not in self._rules]
        return self.apply(add=new, remove=stale)

    def clear(self) -> None:
        self.replace_all(())

    # -- introspection -------------------------------------------------------- #

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, rule: object) -> bool:
        return rule in self._rules

    def rules(self, table: int | None = None) -> Iterator[Rule]:
        """Installed rules in tie-breaking order (earliest added first)."""
        return (r for r in self._rules if table is None or r.table == table)

    def tables(self) -> list[int]:
        return sorted(self._tables)

    def subtables(self, table: int) -> list[SubtableInfo]:
        """Subtables of ``table`` in probe order."""
        tab = self._tables.get(table)
        if tab is None:
            return []
        subs = sorted(tab.subtables.values(), key=lambda s: s.max_rank, reverse=True)
        return [
            SubtableInfo(
                table=table,
                signature={FIELDS[i].name: m for i, m in s.sig},
                rules=sum(len(b) for b in s.buckets.values()),
                max_priority=s.max_rank >> _SEQ_BITS,
            )
            for s in subs
        ]

    # -- internals ------------------------------------------------------------ #

    def _place(self, rule: Rule) -> None:
        if self._seq >= _SEQ_LIMIT:  # pragma: no cover - 2**48 additions
            raise OverflowError("classifier sequence space exhausted; rebuild it")
        rank = (rule.priority << _SEQ_BITS) | (_SEQ_LIMIT - 1 - self._seq)
        self._seq += 1
        norm = normalize(rule.match)
        if norm is None:
            self._rules[rule] = (rank, None, None)
            return
        sig, values = norm
        tab = self._tables.get(rule.table)
        if tab is None:
            tab = self._tables[rule.table] = _Table()
        sub = tab.subtables.get(sig)
        if sub is None:
            sub = tab.subtables[sig] = _Subtable(sig)
        sub.insert(values, (rank, rule))
        self._rules[rule] = (rank, sig, values)

    def _unplace(self, rule: Rule) -> None:
        rank, sig, values = self._rules.pop(rule)
        if sig is None:
            return
        self._tables[rule.table].subtables[sig].delete(values, (rank, rule))

    def _refresh_table(self, table: int) -> None:
        tab = self._tables.get(table)
        if tab is None:
            return
        tab.refresh()
        if not tab.subtables:
            del self._tables[table]


def _check_rule(rule: Rule) -> None:
    if rule.priority < 0:
        raise ValueError(f"negative priority {rule.priority} in {rule!r}")
