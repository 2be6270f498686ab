"""A read cache in front of a shared StateStore, for the packet path of one host.

Theory of operation
-------------------
*Why.* With external state every packet of a tracked connection reads its
conntrack record: one store round trip (60-120 µs to Redis on loopback here)
per packet and zone, which caps a stateful path at a few thousand packets per
second. Almost all of those reads return what the previous packet read: the
record of an established connection changes only on state transitions
(handshake, FIN, RST) and on rate-limited refreshes. So a host may keep what
it read for a short while, and go to the store only when it must.

*What is cached.* Entries returned by reads (value + version) that
``cacheable`` accepts, and every write made through this store with the version
it produced (put, successful compare-and-set; a failed compare-and-set caches
the current entry the store returned; a delete or expire drops the key), for at
most ``max_age`` seconds. Hits are returned as :class:`CachedEntry` so that the
caller knows they may be stale. The datapath passes ``nf.codec.stable_record``,
which accepts every readable conntrack record, in any state: conntrack itself
re-reads (``GetOp(fresh=True)``) whatever it would *reject* on a cached record
(an invalid packet, a connection it would treat as gone or replace), so a stale
record can only let a packet pass without writing. Absences found by reads are
remembered too (``CACHED_ABSENT``) but served only to reads that ask for them
(``GetOp(absent_ok=True)``): conntrack uses a cached absence only to *create* a
connection, with a compare-and-set on version 0 that fails if anything exists —
it spares the second read of ``ct_next`` then ``ct_commit``. Pools (SNAT ports,
LB backends) are not cached.

*Consistency.* Writes are never served from the cache: every change is a
compare-and-set against the store, with the version this host last saw. If
another host changed the record meanwhile, the CAS fails, this host learns
the current entry (and caches it), and conntrack re-decides — exactly the
lost-race path it has without the cache. What the cache can do is let a
packet that changes nothing be judged on a record up to ``max_age`` old: a
connection closed (RST, FIN) or re-marked on another host may pass packets
here for at most ``max_age`` more; one that expired is still refused, because
conntrack checks the record's own expiry time. That bound is the documented
price (docs/stateless-nf.md, "Consistency"); ``max_age = 0`` turns the cache off.
``tests/nf/test_nf_cached_machine.py`` checks it against the uncached protocol.

*Bounds.* At most ``capacity`` entries; the oldest read is evicted first
(insertion order of a dict, moved to the end when re-read from the store).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from netvirt.state.jobs import AsyncStore, Reply, Ticket
from netvirt.state.store import (
    CACHED_ABSENT,
    LOCAL_ABSENT,
    Batch,
    CachedEntry,
    CasOp,
    CasResult,
    DeleteOp,
    Entry,
    ExpireOp,
    GetOp,
    Op,
    PutOp,
    StateStore,
    StateStoreError,
)

DEFAULT_MAX_AGE = 0.5
DEFAULT_CAPACITY = 65536


class CachedStore:
    """``StateStore`` that serves recent reads from memory (see the module docstring)."""

    def __init__(
        self,
        inner: StateStore,
        max_age: float = DEFAULT_MAX_AGE,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
        cacheable: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.inner = inner
        self.cacheable = cacheable
        self.max_age = max_age
        self.capacity = capacity
        self.clock = clock
        self._cache: dict[str, tuple[CachedEntry, float]] = {}
        self.hits = 0
        self.misses = 0

    # -- the cache --------------------------------------------------------------------------

    def _fresh(self, key: str, now: float, absent_ok: bool = False) -> CachedEntry | None:
        cached = self._cache.get(key)
        if cached is None:
            return None
        entry, at = cached
        if now - at > self.max_age:
            del self._cache[key]
            return None
        if entry is CACHED_ABSENT and not absent_ok:
            return None
        return entry

    def _remember_read(self, key: str, entry: object, now: float) -> None:
        """What a read from the store found: the entry, or the absence (served only to
        reads that ask for it, ``GetOp.absent_ok``). A write-behind store's local absence
        (``LOCAL_ABSENT``) is not remembered: that store answers it without a round trip."""
        if entry is LOCAL_ABSENT:
            self._cache.pop(key, None)
            return
        if isinstance(entry, Entry):
            self._remember(key, entry, now)
            return
        self._cache.pop(key, None)
        self._cache[key] = (CACHED_ABSENT, now)
        if len(self._cache) > self.capacity:
            del self._cache[next(iter(self._cache))]

    def _remember(self, key: str, entry: Entry | None, now: float) -> None:
        if entry is None or (self.cacheable is not None and not self.cacheable(entry.value)):
            self._cache.pop(key, None)
            return
        self._cache.pop(key, None)
        self._cache[key] = (CachedEntry(entry.value, entry.version), now)
        if len(self._cache) > self.capacity:
            del self._cache[next(iter(self._cache))]

    def _forget(self, key: str) -> None:
        self._cache.pop(key, None)

    def invalidate(self) -> None:
        self._cache.clear()

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.get_many([key])[0]

    def _served(self, gets: Sequence[GetOp], now: float) -> tuple[list[Entry | None], list[int]]:
        """What the cache answers for ``gets`` (None where it cannot, or where the read
        asks for the store: ``fresh``) and the positions it cannot answer; counts hits
        and misses."""
        out: list[Entry | None] = []
        missing: list[int] = []
        serve = self.max_age > 0
        for i, op in enumerate(gets):
            entry = self._fresh(op.key, now, op.absent_ok) if serve and not op.fresh else None
            out.append(entry)
            if entry is None:
                missing.append(i)
        self.hits += len(gets) - len(missing)
        self.misses += len(missing)
        return out, missing

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        return self.get_ops([GetOp(key) for key in keys])

    def get_ops(self, gets: Sequence[GetOp]) -> list[Entry | None]:
        """A round trip of reads with their options (``fresh``, ``absent_ok``):
        ``state.jobs.execute`` calls this instead of ``get_many``."""
        now = self.clock()
        out, missing = self._served(gets, now)
        if missing:
            inner_ops = getattr(self.inner, "get_ops", None)  # keeps fresh/absent_ok
            if inner_ops is not None:
                fetched = inner_ops([gets[i] for i in missing])
            else:
                fetched = self.inner.get_many([gets[i].key for i in missing])
            for i, entry in zip(missing, fetched, strict=True):
                out[i] = entry
                self._remember_read(gets[i].key, entry, now)
        return out

    # -- writes (always to the store; the cache learns their outcome) -----------------------

    def put(self, key: str, value: bytes, ttl: float | None = None) -> int:
        version = self.inner.put(key, value, ttl)
        self._remember(key, Entry(value, version), self.clock())
        return version

    def put_many(self, items: Iterable[tuple[str, bytes]], ttl: float | None = None) -> list[int]:
        pairs = list(items)
        versions = self.inner.put_many(pairs, ttl)
        now = self.clock()
        for (key, value), version in zip(pairs, versions, strict=True):
            self._remember(key, Entry(value, version), now)
        return versions

    def compare_and_set(
        self, key: str, expected_version: int, value: bytes, ttl: float | None = None
    ) -> CasResult:
        result = self.inner.compare_and_set(key, expected_version, value, ttl)
        self._remember(key, result.entry, self.clock())
        return result

    def delete(self, key: str) -> bool:
        self._forget(key)
        return self.inner.delete(key)

    def delete_many(self, keys: Sequence[str]) -> int:
        for key in keys:
            self._forget(key)
        return self.inner.delete_many(keys)

    def expire(self, key: str, ttl: float) -> bool:
        self._forget(key)
        return self.inner.expire(key, ttl)

    def allocate(
        self, pool_key: str, candidates: Iterable[str], owner: str, ttl: float | None = None
    ) -> str | None:
        return self.inner.allocate(pool_key, candidates, owner, ttl)

    def release(self, pool_key: str, member: str, owner: str) -> bool:
        return self.inner.release(pool_key, member, owner)

    def batch(self) -> Batch:
        return Batch(self._execute)

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        if all(type(op) is GetOp for op in ops):
            return list(self.get_ops(cast(Sequence[GetOp], ops)))
        inner = self.inner.batch()
        for op in ops:
            inner.add(op)
        results = inner.execute()
        self._learn(ops, results)
        return results

    def _learn(self, ops: Sequence[Op], results: Sequence[object]) -> None:
        """What a round trip through the inner store tells the cache."""
        now = self.clock()
        for op, result in zip(ops, results, strict=True):
            if isinstance(op, GetOp):
                self._remember_read(op.key, result, now)
            elif isinstance(op, PutOp):
                assert isinstance(result, int)
                self._remember(op.key, Entry(op.value, result), now)
            elif isinstance(op, CasOp):
                assert isinstance(result, CasResult)
                self._remember(op.key, result.entry, now)
            elif isinstance(op, DeleteOp | ExpireOp):
                self._forget(op.key)

    # -- asynchronous round trips (state/jobs.py), when the inner store has them ------------

    @property
    def supports_submit(self) -> bool:
        return bool(getattr(self.inner, "supports_submit", False))

    def _inner_async(self) -> AsyncStore:
        return cast(AsyncStore, self.inner)

    def submit(self, ops: Sequence[Op]) -> Ticket:
        """A round trip as ``_execute`` makes it: reads the cache serves are answered
        here (a round trip of cached reads completes at once), the rest go to the inner
        store's ``submit`` and the cache learns from their replies."""
        outer = Ticket(ops)
        if all(type(op) is GetOp for op in ops):
            gets = cast(Sequence[GetOp], ops)
            keys = [op.key for op in gets]
            served, missing = self._served(gets, self.clock())
            found: list[object] = list(served)
            if not missing:
                outer.complete(found)
                return outer

            def fetched(reply: Reply) -> None:
                if isinstance(reply, StateStoreError):
                    outer.complete(reply)
                    return
                at = self.clock()
                for i, entry in zip(missing, reply, strict=True):
                    found[i] = entry
                    self._remember_read(keys[i], entry, at)
                outer.complete(found)

            _then(self._inner_async().submit([gets[i] for i in missing]), fetched)
            return outer

        def written(reply: Reply) -> None:
            if not isinstance(reply, StateStoreError):
                self._learn(ops, reply)
            outer.complete(reply)

        _then(self._inner_async().submit(ops), written)
        return outer

    def handle(self) -> tuple[int, int] | None:
        return self._inner_async().handle()

    def wants_write(self) -> bool:
        return self._inner_async().wants_write()

    def on_readable(self) -> None:
        self._inner_async().on_readable()

    def on_writable(self) -> None:
        self._inner_async().on_writable()

    def time_out(self, now: float) -> None:
        self._inner_async().time_out(now)

    def wait(self, timeout: float) -> None:
        self._inner_async().wait(timeout)

    def in_flight(self) -> int:
        return self._inner_async().in_flight()

    # -- the rest ---------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        return self.inner.stats() | {
            "cache": {
                "hits": self.hits,
                "misses": self.misses,
                "entries": len(self._cache),
                "max_age": self.max_age,
            }
        }

    def sweep(self) -> None:
        """Drop entries past their age (and let the inner store sweep, if it does)."""
        now = self.clock()
        for key in [k for k, (_, at) in self._cache.items() if now - at > self.max_age]:
            del self._cache[key]
        sweep = getattr(self.inner, "sweep", None)
        if sweep is not None:
            sweep()

    def close(self) -> None:
        self._cache.clear()
        self.inner.close()


def _then(ticket: Ticket, callback: Callable[[Reply], None]) -> None:
    """Run ``callback`` with the ticket's reply: now if it is in, else when it comes."""
    if ticket.done:
        assert ticket.reply is not None
        callback(ticket.reply)
    else:
        ticket.callback = callback
