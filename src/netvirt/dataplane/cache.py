"""Flow caches in front of the classifier: exact-match cache and megaflow cache.

Theory of operation
-------------------
What.  The slow path runs a packet's flow key through every pipeline table
of the :class:`~netvirt.dataplane.classifier.Classifier`.  Two caches let
later packets skip it, as in Open vSwitch's userspace datapath:

* :class:`ExactMatchCache` (EMC): the whole flow key (a tuple) → result.
  One dict lookup; tiny and bounded (default 8,192 entries) because every
  distinct key — every connection — needs its own entry.
* :class:`MegaflowCache`: entries ``(wildcards, masked key, result)``.  A
  key hits an entry when ``key & wildcards == masked key`` field by field,
  so one entry serves every key that agrees on the bits the slow path
  consulted (the union of the :class:`Wildcards` of every table visited,
  supplied by the pipeline on :meth:`MegaflowCache.insert`).  Entries are
  grouped by wildcard signature, each group a dict on the masked key: a
  lookup is one generated masking function and one dict probe per group
  (tuple-space search without priorities).

The result is opaque to both caches (the pipeline's outcome object); it must
not be ``None``, which is how the caches say "miss".

Why it is correct.  The slow path must be a pure function of the flow key
and the classifier's rules, and its wildcards must satisfy the classifier's
megaflow contract: every key equal on the consulted bits gets the same
result.  Then an entry is right for every key it matches, and two entries
that overlap give the same result, so groups need no priorities and lookup
may return the first entry it finds.  Anything the result depends on outside
the key (conntrack state) must be split off by the pipeline, as OVS does by
recirculating after ``ct``.

Invalidation.  Both caches watch a version source (the classifier's
``version``) at each lookup.  The EMC is flushed when it moves — refilling
it from the megaflow cache is cheap.  The megaflow cache either flushes too
(no revalidator given) or revalidates lazily: entries remember the version
they were validated at; a hit on an older entry re-runs the slow path for
the packet's key, and the entry is kept (re-stamped) if the result is equal
and the new wildcards need no bit the entry does not already match on —
otherwise it is replaced by the fresh answer.  Either way the caller gets a
correct result without running the slow path itself, popular entries
survive flow churn elsewhere, and :meth:`MegaflowCache.revalidate_all`
sweeps stale entries off the hot path (e.g. between packet batches).

Bounds and eviction.  Both caches are bounded; when full, an insert
overwrites the slot under a clock hand that advances one slot per eviction
(FIFO replacement, O(1), no work on hits).

Thread-safety.  None: one cache per datapath thread, used between that
thread's classifier changes (see the classifier docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

from netvirt.dataplane.classifier import KeyFunction, Signature, Wildcards, key_function

R = TypeVar("R")

SlowPath = Callable[[Sequence[int]], tuple[Wildcards, R]]
"""Re-runs the pipeline for a key: ``(wildcards consulted, result)``."""

_RESORT_EVERY = 64  # megaflow inserts between re-rankings of the mask groups


class Versioned(Protocol):
    """Anything whose ``version`` changes whenever cached results may be stale."""

    @property
    def version(self) -> int: ...


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters for one cache (a snapshot)."""

    hits: int
    misses: int
    entries: int
    capacity: int
    evictions: int
    flushes: int
    masks: int = 0  # megaflow: distinct wildcard masks (a miss probes each once)
    revalidated: int = 0  # megaflow: stale hits answered by re-running the slow path
    invalidated: int = 0  # megaflow: of those, entries that had to be replaced


# --------------------------------------------------------------------------- #
# exact-match cache
# --------------------------------------------------------------------------- #


class ExactMatchCache(Generic[R]):
    """Full flow key tuple → result; flushed whenever the version source moves."""

    def __init__(self, source: Versioned, capacity: int = 8192) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.flushes = 0
        self._source = source
        self._version = source.version
        self._entries: dict[tuple[int, ...], R] = {}
        self._ring: list[tuple[int, ...]] = []  # slot -> key, for eviction
        self._hand = 0

    def lookup(self, key: tuple[int, ...]) -> R | None:
        if self._source.version != self._version:
            self.flush()
        result = self._entries.get(key)
        if result is None:
            self.misses += 1
        else:
            self.hits += 1
        return result

    def insert(self, key: tuple[int, ...], result: R) -> None:
        """Cache ``result`` for ``key`` (computed at the current version)."""
        if self._source.version != self._version:
            self.flush()
        entries = self._entries
        if key not in entries:
            ring = self._ring
            if len(ring) < self.capacity:
                ring.append(key)
            else:
                hand = self._hand
                del entries[ring[hand]]
                ring[hand] = key
                self._hand = (hand + 1) % self.capacity
                self.evictions += 1
        entries[key] = result

    def flush(self) -> None:
        self._entries.clear()
        self._ring = []
        self._hand = 0
        self._version = self._source.version
        self.flushes += 1

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> CacheStats:
        return CacheStats(
            self.hits, self.misses, len(self), self.capacity, self.evictions, self.flushes
        )


# --------------------------------------------------------------------------- #
# megaflow cache
# --------------------------------------------------------------------------- #


class _Entry(Generic[R]):
    __slots__ = ("group", "result", "slot", "values", "version")

    def __init__(self, group: _Group[R], values: Hashable, result: R, version: int) -> None:
        self.group = group
        self.values = values
        self.result = result
        self.version = version  # classifier version this entry was validated at
        self.slot = -1


class _Group(Generic[R]):
    """Entries sharing one wildcard signature."""

    __slots__ = ("entries", "key_of", "sig")

    def __init__(self, sig: Signature) -> None:
        self.sig = sig
        self.key_of: KeyFunction = key_function(sig)
        self.entries: dict[Hashable, _Entry[R]] = {}


@dataclass(frozen=True, slots=True)
class Megaflow(Generic[R]):
    """One megaflow entry, for dumps and traces."""

    wildcards: Wildcards
    key: tuple[int, ...]  # masked key: 0 in every wildcarded bit
    result: R
    stale: bool


class MegaflowCache(Generic[R]):
    """Wildcarded flow entries → result; see the module docstring."""

    def __init__(
        self,
        source: Versioned,
        capacity: int = 65536,
        revalidator: SlowPath[R] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.flushes = 0
        self.revalidated = 0
        self.invalidated = 0
        self._source = source
        self._version = source.version
        self._revalidator = revalidator
        self._groups: dict[Signature, _Group[R]] = {}
        self._order: list[tuple[KeyFunction, dict[Hashable, _Entry[R]]]] = []
        self._ring: list[_Entry[R] | None] = []
        self._free: list[int] = []
        self._hand = 0
        self._count = 0
        self._inserts = 0

    # -- hot path ------------------------------------------------------------- #

    def lookup(self, key: Sequence[int]) -> R | None:
        """The cached result for ``key``, or ``None`` (run the slow path, then insert)."""
        if self._source.version != self._version:
            self._version_moved()
        for key_of, entries in self._order:
            entry = entries.get(key_of(key))
            if entry is not None:
                if entry.version != self._version:
                    return self._revalidate_hit(entry, key)
                self.hits += 1
                return entry.result
        self.misses += 1
        return None

    # -- filling ---------------------------------------------------------------- #

    def insert(self, wc: Wildcards, key: Sequence[int], result: R) -> None:
        """Cache ``result`` for every key equal to ``key`` on the bits of ``wc``.

        ``wc`` and ``result`` must come from a slow-path run at the current
        classifier version (no classifier change in between).
        """
        if self._source.version != self._version:
            self._version_moved()
        sig = wc.signature()
        values = key_function(sig)(key)
        group = self._groups.get(sig)
        if group is not None and (entry := group.entries.get(values)) is not None:
            entry.result = result
            entry.version = self._version
            return
        slot = self._take_slot()  # may evict, even a whole group: look it up after
        group = self._groups.get(sig)
        if group is None:
            group = self._groups[sig] = _Group(sig)
            self._rebuild_order()
        entry = _Entry(group, values, result, self._version)
        entry.slot = slot
        self._ring[slot] = entry
        group.entries[values] = entry
        self._count += 1
        self._inserts += 1
        if self._inserts % _RESORT_EVERY == 0:
            self._rebuild_order()

    def flush(self) -> None:
        self._groups.clear()
        self._order = []
        self._ring = []
        self._free = []
        self._hand = 0
        self._count = 0
        self._version = self._source.version
        self.flushes += 1

    def revalidate_all(self) -> tuple[int, int]:
        """Revalidate every stale entry now; returns (kept, dropped).

        Uses the entry's masked key as the probe: it matches the entry, so the
        slow path's answer for it is the answer for the whole entry.  Without a
        revalidator, flushes if the version moved.
        """
        if self._source.version != self._version:
            self._version_moved()
        if self._revalidator is None:
            return (self._count, 0)
        kept = dropped = 0
        for entry in [e for e in self._ring if e is not None and e.version != self._version]:
            probe = _probe_key(entry.group.sig, entry.values)
            wc, result = self._revalidator(probe)
            if self._still_valid(entry, wc, result):
                entry.version = self._version
                kept += 1
            else:
                self._remove(entry)
                dropped += 1
        return kept, dropped

    # -- introspection ---------------------------------------------------------- #

    def __len__(self) -> int:
        return self._count

    def stats(self) -> CacheStats:
        return CacheStats(
            hits=self.hits,
            misses=self.misses,
            entries=self._count,
            capacity=self.capacity,
            evictions=self.evictions,
            flushes=self.flushes,
            masks=len(self._groups),
            revalidated=self.revalidated,
            invalidated=self.invalidated,
        )

    def entries(self) -> list[Megaflow[R]]:
        """Every entry (dump-flows), in insertion-slot order."""
        out: list[Megaflow[R]] = []
        current = self._source.version
        for entry in self._ring:
            if entry is None:
                continue
            sig = entry.group.sig
            out.append(
                Megaflow(
                    wildcards=_wildcards_of(sig),
                    key=tuple(_probe_key(sig, entry.values)),
                    result=entry.result,
                    stale=entry.version != current,
                )
            )
        return out

    # -- internals -------------------------------------------------------------- #

    def _version_moved(self) -> None:
        if self._revalidator is None:
            self.flush()
        else:
            self._version = self._source.version  # entries go stale, not away

    def _revalidate_hit(self, entry: _Entry[R], key: Sequence[int]) -> R:
        assert self._revalidator is not None  # stale entries exist only with one
        wc, result = self._revalidator(key)
        self.revalidated += 1
        if self._still_valid(entry, wc, result):
            entry.version = self._version
        else:
            self.invalidated += 1
            self._remove(entry)
            self.insert(wc, key, result)
        return result

    @staticmethod
    def _still_valid(entry: _Entry[R], wc: Wildcards, result: R) -> bool:
        if result != entry.result:
            return False
        return _wildcards_of(entry.group.sig).covers(wc)

    def _take_slot(self) -> int:
        if self._free:
            return self._free.pop()
        if len(self._ring) < self.capacity:
            self._ring.append(None)
            return len(self._ring) - 1
        slot = self._hand
        self._hand = (slot + 1) % self.capacity
        victim = self._ring[slot]
        if victim is not None:
            self._unlink(victim)
            self.evictions += 1
        return slot

    def _remove(self, entry: _Entry[R]) -> None:
        self._unlink(entry)
        self._ring[entry.slot] = None
        self._free.append(entry.slot)

    def _unlink(self, entry: _Entry[R]) -> None:
        group = entry.group
        del group.entries[entry.values]
        self._count -= 1
        if not group.entries:
            del self._groups[group.sig]
            self._rebuild_order()

    def _rebuild_order(self) -> None:
        """Probe big groups first: more entries usually means more traffic."""
        groups = sorted(self._groups.values(), key=lambda g: len(g.entries), reverse=True)
        self._order = [(g.key_of, g.entries) for g in groups]


def _wildcards_of(sig: Signature) -> Wildcards:
    wc = Wildcards()
    for index, mask in sig:
        wc.masks[index] = mask
    return wc


def _probe_key(sig: Signature, values: Hashable) -> list[int]:
    """A key matching an entry: its masked values, zero elsewhere."""
    key = Wildcards().masks  # a zeroed list of the right length
    row = (values,) if len(sig) == 1 else values  # one field is stored as a bare int
    for (index, _), value in zip(sig, cast(tuple[int, ...], row), strict=True):
        key[index] = value
    return key
