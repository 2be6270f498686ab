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

*What is cached.* Present entries returned by ``get``/``get_many`` (value +
version) that ``cacheable`` accepts, for at most ``max_age`` seconds after
they were read; absences are never cached (a connection another host just
created is seen at once). The datapath passes ``nf.codec.stable_record``:
only ESTABLISHED and REPLIED connections, whose packets change nothing, are
served from memory; a connection in a handshake or closing is read every
packet, because a packet judged on a stale transitional record could be
refused without writing (and so without a compare-and-set to correct it). Every
write made through this store updates the cache with the version it produced
(put, successful compare-and-set), a failed compare-and-set replaces the
cached entry with the current one the store returned, and a delete or expire
drops it. Pools (SNAT ports, LB backends) are not cached.

*Consistency.* Writes are never served from the cache: every change is a
compare-and-set against the store, with the version this host last saw. If
another host changed the record meanwhile, the CAS fails, this host learns
the current entry (and caches it), and conntrack re-decides — exactly the
lost-race path it has without the cache. What the cache can do is let a
packet that changes nothing be judged on a record up to ``max_age`` old: a
connection closed (RST, FIN) or re-marked on another host may pass packets
here for at most ``max_age`` more; one that expired is still refused, because
conntrack checks the record's own expiry time. That bound is the documented
price (docs/stateless-nf.md); ``max_age = 0`` turns the cache off.

*Bounds.* At most ``capacity`` entries; the oldest read is evicted first
(insertion order of a dict, moved to the end when re-read from the store).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from netvirt.state.jobs import AsyncStore, Reply, Ticket
from netvirt.state.store import (
    Batch,
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
        self._cache: dict[str, tuple[Entry, float]] = {}
        self.hits = 0
        self.misses = 0

    # -- the cache --------------------------------------------------------------------------

    def _fresh(self, key: str, now: float) -> Entry | None:
        cached = self._cache.get(key)
        if cached is None:
            return None
        entry, at = cached
        if now - at > self.max_age:
            del self._cache[key]
            return None
        return entry

    def _remember(self, key: str, entry: Entry | None, now: float) -> None:
        if entry is None or (self.cacheable is not None and not self.cacheable(entry.value)):
            self._cache.pop(key, None)
            return
        self._cache.pop(key, None)
        self._cache[key] = (entry, now)
        if len(self._cache) > self.capacity:
            del self._cache[next(iter(self._cache))]

    def _forget(self, key: str) -> None:
        self._cache.pop(key, None)

    def invalidate(self) -> None:
        self._cache.clear()

    # -- reads ------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.get_many([key])[0]

    def _served(self, keys: Sequence[str], now: float) -> tuple[list[Entry | None], list[int]]:
        """What the cache answers for ``keys`` (None where it cannot) and the positions it
        cannot answer; counts hits and misses."""
        out: list[Entry | None] = []
        missing: list[int] = []
        for i, key in enumerate(keys):
            entry = self._fresh(key, now) if self.max_age > 0 else None
            out.append(entry)
            if entry is None:
                missing.append(i)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return out, missing

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        now = self.clock()
        out, missing = self._served(keys, now)
        if missing:
            fetched = self.inner.get_many([keys[i] for i in missing])
            for i, entry in zip(missing, fetched, strict=True):
                out[i] = entry
                self._remember(keys[i], entry, now)
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
            return list(self.get_many([op.key for op in ops if isinstance(op, GetOp)]))
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
                self._remember(op.key, result if isinstance(result, Entry) else None, now)
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
            keys = [op.key for op in ops if isinstance(op, GetOp)]
            served, missing = self._served(keys, self.clock())
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
                    self._remember(keys[i], entry if isinstance(entry, Entry) else None, at)
                outer.complete(found)

            _then(self._inner_async().submit([GetOp(keys[i]) for i in missing]), fetched)
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
