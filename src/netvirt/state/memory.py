"""In-memory StateStore: the twin of the Redis store for tests and single-host use.

Theory of operation: two dicts (entries, pool claims) and a version counter,
all guarded by one lock, so every operation and every batch is atomic and the
store is safe to share between threads. Expiry is lazy: an expired entry or
claim is dropped when an operation touches it, and ``sweep(now)`` drops the
rest (call it periodically to bound memory). The clock is injected, so tests
drive time with a fake clock instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, cast

from netvirt.state.stats import StoreStats
from netvirt.state.store import (
    AllocateOp,
    Batch,
    CasOp,
    CasResult,
    DeleteOp,
    Entry,
    ExpireOp,
    GetOp,
    Op,
    PutOp,
    ReleaseOp,
    check_owner,
    check_positive_ttl,
    check_ttl,
    check_version,
)

# A key's value is a plain tuple (value, version, expires_at) and a pool member's claim
# a plain tuple (owner, expires_at), not objects: CPython's collector stops tracking an
# exact tuple of bytes, strings and numbers (not a NamedTuple), so a store of a million
# records or claims costs its full collections nothing; as objects, every one of them
# was walked by each (the datapath's store holds a claim per SNAT port in use).
_Slot = tuple[bytes, int, "float | None"]
_Claim = tuple[str, "float | None"]
_VALUE: Final = 0
_VERSION: Final = 1
_SLOT_EXPIRES: Final = 2
_OWNER: Final = 0
_CLAIM_EXPIRES: Final = 1


def _deadline(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl


def _expired(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and expires_at <= now


class MemoryStore:
    """A :class:`~netvirt.state.store.StateStore` kept in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._claims: dict[tuple[str, str], _Claim] = {}
        self._last_version = 0
        self._stats = StoreStats("memory")

    # -- StateStore ----------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        with self._lock:
            found = self._get(key, self._clock())
        self._stats.call(1)
        self._stats.lookups(found is not None, found is None)
        return found

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        with self._lock:
            now = self._clock()
            found = [self._get(key, now) for key in keys]
        self._stats.call(len(keys))
        self._count_lookups(found)
        return found

    def put(self, key: str, value: bytes, ttl: float | None = None) -> int:
        check_ttl(ttl)
        self._stats.call(1)
        with self._lock:
            return self._put(key, value, ttl, self._clock())

    def put_many(self, items: Iterable[tuple[str, bytes]], ttl: float | None = None) -> list[int]:
        check_ttl(ttl)
        with self._lock:
            now = self._clock()
            versions = [self._put(key, value, ttl, now) for key, value in items]
        self._stats.call(len(versions))
        return versions

    def compare_and_set(
        self, key: str, expected_version: int, value: bytes, ttl: float | None = None
    ) -> CasResult:
        check_version(expected_version)
        check_ttl(ttl)
        self._stats.call(1)
        with self._lock:
            return self._cas(key, expected_version, value, ttl, self._clock())

    def adopt(self, key: str, value: bytes, version: int, ttl: float | None = None) -> None:
        """Hold ``value`` at ``version`` (read from another store: a write-behind store taking
        a record over); later writes get versions above it."""
        check_version(version)
        with self._lock:
            self._last_version = max(self._last_version, version)
            self._slots[key] = (bytes(value), version, _deadline(self._clock(), ttl))

    def delete(self, key: str) -> bool:
        return self.delete_many([key]) == 1

    # -- for a single-threaded owner (``state/writebehind.py``): no lock, no counters --------

    def peek(self, key: str, now: float) -> Entry | None:
        """``get`` without the lock or the counters, at ``now``."""
        return self._get(key, now)

    def apply(self, op: Op, now: float) -> object:
        """One operation's result, as in a batch, without the lock or the counters: for a
        store that one thread owns (its hot path: no ``Batch``, no per-call bookkeeping)."""
        kind = type(op)
        if kind is GetOp:  # the common kinds before _apply's match (class patterns cost)
            return self._get(cast(GetOp, op).key, now)
        if kind is CasOp:
            cas = cast(CasOp, op)
            return self._cas(cas.key, cas.expected_version, cas.value, cas.ttl, now)
        if kind is PutOp:
            put = cast(PutOp, op)
            return self._put(put.key, put.value, put.ttl, now)
        return self._apply(op, now)

    def delete_many(self, keys: Sequence[str]) -> int:
        self._stats.call(len(keys))
        with self._lock:
            now = self._clock()
            return sum(self._delete(key, now) for key in keys)

    def expire(self, key: str, ttl: float) -> bool:
        check_positive_ttl(ttl)
        self._stats.call(1)
        with self._lock:
            return self._expire(key, ttl, self._clock())

    def allocate(
        self, pool_key: str, candidates: Iterable[str], owner: str, ttl: float | None = None
    ) -> str | None:
        check_owner(owner)
        check_ttl(ttl)
        self._stats.call(1)
        with self._lock:
            return self._allocate(pool_key, tuple(candidates), owner, ttl, self._clock())

    def release(self, pool_key: str, member: str, owner: str) -> bool:
        check_owner(owner)
        self._stats.call(1)
        with self._lock:
            return self._release(pool_key, member, owner, self._clock())

    def batch(self) -> Batch:
        return Batch(self._execute)

    def stats(self) -> dict[str, object]:
        """Calls, operations and get hits/misses; no round trips ever (see stats.py)."""
        return self._stats.snapshot()

    def close(self) -> None:
        """Nothing to release; present for the protocol."""

    # -- maintenance -----------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Drop every expired entry and claim; return how many were dropped."""
        with self._lock:
            at = self._clock() if now is None else now
            dead_keys = [k for k, s in self._slots.items() if _expired(s[_SLOT_EXPIRES], at)]
            dead_claims = [k for k, c in self._claims.items() if _expired(c[_CLAIM_EXPIRES], at)]
            for key in dead_keys:
                del self._slots[key]
            for claim in dead_claims:
                del self._claims[claim]
            return len(dead_keys) + len(dead_claims)

    def __len__(self) -> int:
        """Entries held, including expired ones not yet swept (for tests and metrics)."""
        return len(self._slots)

    # -- operations, called with the lock held -------------------------------------------

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        with self._lock:
            now = self._clock()
            results = [self._apply(op, now) for op in ops]
        self._stats.call(len(ops))
        self._count_lookups(r for op, r in zip(ops, results, strict=True) if isinstance(op, GetOp))
        return results

    def _count_lookups(self, found: Iterable[object]) -> None:
        hits = misses = 0
        for result in found:
            if result is None:
                misses += 1
            else:
                hits += 1
        self._stats.lookups(hits, misses)

    def _apply(self, op: Op, now: float) -> object:
        match op:
            case GetOp(key):
                return self._get(key, now)
            case PutOp(key, value, ttl):
                return self._put(key, value, ttl, now)
            case CasOp(key, expected, value, ttl):
                return self._cas(key, expected, value, ttl, now)
            case DeleteOp(key):
                return self._delete(key, now)
            case ExpireOp(key, ttl):
                return self._expire(key, ttl, now)
            case AllocateOp(pool_key, candidates, owner, ttl):
                return self._allocate(pool_key, candidates, owner, ttl, now)
            case ReleaseOp(pool_key, member, owner):
                return self._release(pool_key, member, owner, now)
        raise TypeError(f"unknown operation {op!r}")

    def _live(self, key: str, now: float) -> _Slot | None:
        slot = self._slots.get(key)
        if slot is not None and _expired(slot[_SLOT_EXPIRES], now):
            del self._slots[key]
            return None
        return slot

    def _get(self, key: str, now: float) -> Entry | None:
        slot = self._live(key, now)
        return None if slot is None else Entry(slot[_VALUE], slot[_VERSION])

    def _put(self, key: str, value: bytes, ttl: float | None, now: float) -> int:
        self._last_version += 1
        self._slots[key] = (bytes(value), self._last_version, _deadline(now, ttl))
        return self._last_version

    def _cas(
        self, key: str, expected: int, value: bytes, ttl: float | None, now: float
    ) -> CasResult:
        current = self._get(key, now)
        if (0 if current is None else current[_VERSION]) != expected:
            return CasResult(False, current)
        version = self._put(key, value, ttl, now)
        return CasResult(True, Entry(bytes(value), version))

    def _delete(self, key: str, now: float) -> bool:
        return self._live(key, now) is not None and self._slots.pop(key) is not None

    def _expire(self, key: str, ttl: float, now: float) -> bool:
        slot = self._live(key, now)
        if slot is None:
            return False
        self._slots[key] = (slot[_VALUE], slot[_VERSION], now + ttl)
        return True

    def _live_owner(self, pool_key: str, member: str, now: float) -> str | None:
        claim = self._claims.get((pool_key, member))
        if claim is None:
            return None
        if _expired(claim[_CLAIM_EXPIRES], now):
            del self._claims[(pool_key, member)]
            return None
        return claim[_OWNER]

    def _allocate(
        self,
        pool_key: str,
        candidates: tuple[str, ...],
        owner: str,
        ttl: float | None,
        now: float,
    ) -> str | None:
        first_free: str | None = None
        for member in candidates:
            holder = self._live_owner(pool_key, member, now)
            if holder == owner:
                self._claims[(pool_key, member)] = (owner, _deadline(now, ttl))
                return member
            if holder is None and first_free is None:
                first_free = member
        if first_free is not None:
            self._claims[(pool_key, first_free)] = (owner, _deadline(now, ttl))
        return first_free

    def _release(self, pool_key: str, member: str, owner: str, now: float) -> bool:
        if self._live_owner(pool_key, member, now) != owner:
            return False
        del self._claims[(pool_key, member)]
        return True
