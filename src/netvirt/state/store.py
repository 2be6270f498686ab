"""The StateStore contract: where network functions keep per-connection state.

Theory of operation
-------------------
Conntrack, NAT and load-balancer affinity keep small per-connection records.
Keeping them outside the datapath process lets any host or gateway handle any
packet of a connection and lets a failed instance lose nothing. The price is a
round trip to the store, so the contract is shaped around *batches*: a datapath
gathers the lookups of a whole packet batch (flow misses only) and resolves
them in one round trip with ``get_many`` or a mixed :class:`Batch`.

Data model:

* An entry is ``(value: bytes, version: int)``. Every successful write (put,
  compare-and-set) gives the key a new version, strictly increasing per key
  and never reused for a key, even after a delete or an expiry. That makes
  compare-and-set free of the ABA problem: a stale writer holding the version
  of an expired connection can never overwrite the entry of a new connection
  with the same key. Across keys, a write's version exceeds every version the
  same store object has seen: memory and single Redis draw from one
  store-wide counter, the cluster from per-slot counters and a client clock.
* Version ``0`` means "absent": ``compare_and_set(key, 0, ...)`` creates only.
* A TTL (seconds, > 0) may accompany any write; ``None`` means no expiry. An
  expired key reads as absent. A write without TTL clears an earlier TTL.
* Allocation pools (SNAT ports, LB backends): ``allocate`` claims, atomically,
  a member of ``candidates`` for ``owner``. If the owner already holds one of
  the candidates it gets that same member back (so a retry after a lost reply
  does not leak a second member) and its TTL is refreshed; otherwise the first
  free candidate is claimed. ``release`` frees a member only for its owner.
  Callers pass small windows of candidates (tens): the scan is linear.

Atomicity: every single operation is atomic. A batch is *not* a transaction:
its operations run in order, but other clients' operations may interleave
(the in-memory store happens to run a batch under one lock; do not rely on it).
When a batch raises :class:`StateStoreUnavailable`, any part of it may have been
applied, as with a connection lost mid-batch; compare-and-set makes retries safe.

Time: implementations own their clock (the Redis server's, or the clock
callable given to the in-memory store); the contract takes no global clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar, cast

T = TypeVar("T")


class Entry(NamedTuple):
    """A stored value and the version its last write gave it."""

    value: bytes
    version: int


class CachedEntry(Entry):
    """An entry a read cache answered from memory (``state/cached.py``): possibly stale
    within the cache's ``max_age``. A caller that would *reject* something on the strength
    of it (conntrack: an invalid packet) reads it again with ``GetOp(key, fresh=True)``."""

    __slots__ = ()


CACHED_ABSENT = CachedEntry(b"", 0)  # version 0: absent, as a read cache remembers it
# absent from a write-behind store's local records (``state/writebehind.py``): final for
# a packet that may open a connection, re-read with ``GetOp(fresh=True)`` for any other
LOCAL_ABSENT = CachedEntry(b"local", 0)


class CasResult(NamedTuple):
    """Outcome of compare-and-set.

    ``entry`` is the new entry on success and the current one (``None`` when
    absent) on failure, so a caller can retry without another read.
    """

    ok: bool
    entry: Entry | None


class StateStoreError(Exception):
    """The store rejected or failed an operation."""


class StateStoreUnavailable(StateStoreError):
    """The store cannot be reached in time (refused, reset or timed out)."""


# -- operations a batch can queue -------------------------------------------------------
# Treated as immutable; not frozen because frozen dataclasses cost ~3x more to build
# and a datapath batch builds hundreds of them.


@dataclass(slots=True)
class GetOp:
    """Read ``key``. ``fresh``: from the store itself, never from a read cache in between
    (``state/cached.py``). ``absent_ok``: the caller accepts ``CACHED_ABSENT`` (a cache
    remembering that the key was absent) for None. Plain stores ignore both."""

    key: str
    fresh: bool = False
    absent_ok: bool = False


@dataclass(slots=True)
class PutOp:
    key: str
    value: bytes
    ttl: float | None


@dataclass(slots=True)
class CasOp:
    key: str
    expected_version: int
    value: bytes
    ttl: float | None


@dataclass(slots=True)
class DeleteOp:
    key: str


@dataclass(slots=True)
class ExpireOp:
    key: str
    ttl: float


@dataclass(slots=True)
class AllocateOp:
    pool_key: str
    candidates: tuple[str, ...]
    owner: str
    ttl: float | None


@dataclass(slots=True)
class ReleaseOp:
    pool_key: str
    member: str
    owner: str


Op = GetOp | PutOp | CasOp | DeleteOp | ExpireOp | AllocateOp | ReleaseOp
Executor = Callable[[Sequence[Op]], list[object]]


def check_positive_ttl(ttl: float) -> float:
    """Reject TTLs that a backend would silently turn into "expire now" or "never"."""
    if not ttl > 0:
        raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
    return ttl


def check_ttl(ttl: float | None) -> float | None:
    return None if ttl is None else check_positive_ttl(ttl)


def check_version(version: int) -> int:
    if version < 0:
        raise ValueError(f"expected_version must be >= 0, got {version!r}")
    return version


def check_owner(owner: str) -> str:
    """Owners are compared for equality, so an empty owner would be ambiguous."""
    if not owner:
        raise ValueError("owner must be a non-empty string")
    return owner


class Pending(Generic[T]):
    """The typed result slot of one queued operation, filled by ``Batch.execute``."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    def result(self) -> T:
        results = self._batch.results
        if results is None:
            raise RuntimeError("batch not executed yet")
        return cast(T, results[self._index])


class Batch:
    """Mixed operations queued and executed in one round trip, results in order.

    Each queue method returns a :class:`Pending` for typed access; ``execute``
    also returns all results as a list, in queue order. A batch runs once.
    """

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._ops: list[Op] = []
        self.results: list[object] | None = None

    def __len__(self) -> int:
        return len(self._ops)

    def _queue(self, op: Op) -> Pending[T]:
        if self.results is not None:
            raise RuntimeError("batch already executed")
        self._ops.append(op)
        return Pending(self, len(self._ops) - 1)

    def add(self, op: Op) -> Pending[object]:
        """Queue an operation that is already built (and so already checked): what a
        caller that gathers operations first, or a wrapping store, passes on."""
        return self._queue(op)

    def get(self, key: str) -> Pending[Entry | None]:
        return self._queue(GetOp(key))

    def put(self, key: str, value: bytes, ttl: float | None = None) -> Pending[int]:
        return self._queue(PutOp(key, value, check_ttl(ttl)))

    def cas(
        self, key: str, expected_version: int, value: bytes, ttl: float | None = None
    ) -> Pending[CasResult]:
        return self._queue(CasOp(key, check_version(expected_version), value, check_ttl(ttl)))

    def delete(self, key: str) -> Pending[bool]:
        return self._queue(DeleteOp(key))

    def expire(self, key: str, ttl: float) -> Pending[bool]:
        return self._queue(ExpireOp(key, check_positive_ttl(ttl)))

    def allocate(
        self, pool_key: str, candidates: Iterable[str], owner: str, ttl: float | None = None
    ) -> Pending[str | None]:
        op = AllocateOp(pool_key, tuple(candidates), check_owner(owner), check_ttl(ttl))
        return self._queue(op)

    def release(self, pool_key: str, member: str, owner: str) -> Pending[bool]:
        return self._queue(ReleaseOp(pool_key, member, check_owner(owner)))

    def execute(self) -> list[object]:
        if self.results is not None:
            raise RuntimeError("batch already executed")
        results = self._executor(self._ops) if self._ops else []
        self.results = results
        return results


class StateStore(Protocol):
    """Versioned key/value store with TTLs, compare-and-set and allocation pools.

    Every method may raise :class:`StateStoreUnavailable` (cannot reach the
    store in time) or :class:`StateStoreError` (anything else the store refused).
    """

    def get(self, key: str) -> Entry | None: ...

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        """One round trip; results in the order of ``keys``."""
        ...

    def put(self, key: str, value: bytes, ttl: float | None = None) -> int:
        """Unconditional write; returns the new version."""
        ...

    def put_many(self, items: Iterable[tuple[str, bytes]], ttl: float | None = None) -> list[int]:
        """One round trip; returns the new versions in order (last write to a key wins)."""
        ...

    def compare_and_set(
        self, key: str, expected_version: int, value: bytes, ttl: float | None = None
    ) -> CasResult:
        """Write only if the key's version is ``expected_version`` (0: absent)."""
        ...

    def delete(self, key: str) -> bool: ...

    def delete_many(self, keys: Sequence[str]) -> int:
        """One round trip; returns how many of the keys existed."""
        ...

    def expire(self, key: str, ttl: float) -> bool:
        """(Re)set the TTL of a live key without changing its version."""
        ...

    def allocate(
        self, pool_key: str, candidates: Iterable[str], owner: str, ttl: float | None = None
    ) -> str | None:
        """Claim a member for ``owner`` (see the module docstring); None if all are taken."""
        ...

    def release(self, pool_key: str, member: str, owner: str) -> bool:
        """Free ``member`` if ``owner`` holds it."""
        ...

    def batch(self) -> Batch: ...

    def stats(self) -> dict[str, object]:
        """Counters: calls, round trips, keys per round trip, hits/misses, latency (stats.py)."""
        ...

    def close(self) -> None: ...
