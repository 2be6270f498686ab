"""Hypothesis stateful tests: each store must behave like a plain dict model.

The model below is the specification in executable form: a dict of entries, a
dict of pool claims and a version counter, with time as a number. The same
state machine drives the memory store (fake clock, short TTLs that do expire),
a real Redis and a real Redis Cluster (TTLs long enough never to expire during
the run, fewer examples because every step is a round trip).

Versions: memory and single Redis draw them from one counter, so the model
predicts them exactly. The cluster has a counter per slot and a per-client
clock (docs/state-store.md); for it the model checks what the contract
promises one client instead — every write gets a version above every version
seen before — and then adopts the store's number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from netvirt.state import Batch, CasResult, Entry, MemoryStore, StateStore
from netvirt.state.cluster import RedisClusterStore
from netvirt.state.redis import RedisStore
from netvirt.state.store import (
    AllocateOp,
    CasOp,
    DeleteOp,
    ExpireOp,
    GetOp,
    Op,
    PutOp,
    ReleaseOp,
)
from state.state_support import FakeClock, RedisClusterServers

KEYS = ["a", "b", "c:d"]
MEMBERS = ["m0", "m1", "m2", "m3"]


@dataclass
class _Item:
    value: bytes
    version: int
    expires_at: float | None


class Model:
    """The reference: what every StateStore must do, written as plainly as possible."""

    def __init__(self, exact: bool = True) -> None:
        self.now = 0.0
        self.items: dict[str, _Item] = {}
        self.claims: dict[tuple[str, str], tuple[str, float | None]] = {}
        self.version = 0
        self.exact = exact
        self.offered: int | None = None  # the store's version for the write being checked

    def _new_version(self) -> int:
        """The next version: counted, or (inexact) the store's, if above all seen so far."""
        if self.exact or self.offered is None:
            self.version += 1
        else:
            assert self.offered > self.version, f"version {self.offered} <= {self.version}"
            self.version = self.offered
        self.offered = None
        return self.version

    def _until(self, ttl: float | None) -> float | None:
        return None if ttl is None else self.now + ttl

    def _alive(self, expires_at: float | None) -> bool:
        return expires_at is None or expires_at > self.now

    def get(self, key: str) -> Entry | None:
        item = self.items.get(key)
        if item is None or not self._alive(item.expires_at):
            return None
        return Entry(item.value, item.version)

    def put(self, key: str, value: bytes, ttl: float | None) -> int:
        version = self._new_version()
        self.items[key] = _Item(value, version, self._until(ttl))
        return version

    def cas(self, key: str, expected: int, value: bytes, ttl: float | None) -> CasResult:
        current = self.get(key)
        if (current.version if current else 0) != expected:
            return CasResult(False, current)
        return CasResult(True, Entry(value, self.put(key, value, ttl)))

    def delete(self, key: str) -> bool:
        existed = self.get(key) is not None
        self.items.pop(key, None)
        return existed

    def expire(self, key: str, ttl: float) -> bool:
        if self.get(key) is None:
            return False
        self.items[key].expires_at = self.now + ttl
        return True

    def owner(self, pool: str, member: str) -> str | None:
        owner, expires_at = self.claims.get((pool, member), (None, None))
        return owner if self._alive(expires_at) else None

    def allocate(
        self, pool: str, candidates: tuple[str, ...], owner: str, ttl: float | None
    ) -> str | None:
        mine = [m for m in candidates if self.owner(pool, m) == owner]
        free = [m for m in candidates if self.owner(pool, m) is None]
        chosen = (mine or free or [None])[0]
        if chosen is not None:
            self.claims[(pool, chosen)] = (owner, self._until(ttl))
        return chosen

    def release(self, pool: str, member: str, owner: str) -> bool:
        if self.owner(pool, member) != owner:
            return False
        del self.claims[(pool, member)]
        return True

    def apply(self, op: Op, actual: object = None) -> object:
        """The result ``op`` must have; ``actual`` (the store's) supplies inexact versions."""
        self.offered = _version_of(actual)
        match op:
            case GetOp(key):
                return self.get(key)
            case PutOp(key, value, ttl):
                return self.put(key, value, ttl)
            case CasOp(key, expected, value, ttl):
                return self.cas(key, expected, value, ttl)
            case DeleteOp(key):
                return self.delete(key)
            case ExpireOp(key, ttl):
                return self.expire(key, ttl)
            case AllocateOp(pool, candidates, owner, ttl):
                return self.allocate(pool, candidates, owner, ttl)
            case ReleaseOp(pool, member, owner):
                return self.release(pool, member, owner)
        raise TypeError(op)


def _version_of(result: object) -> int | None:
    if isinstance(result, CasResult):
        return result.entry.version if result.ok and result.entry is not None else None
    return result if isinstance(result, int) and not isinstance(result, bool) else None


def call(store: StateStore, op: Op) -> object:
    """Run one operation through the store's direct (non-batch) method."""
    match op:
        case GetOp(key):
            return store.get(key)
        case PutOp(key, value, ttl):
            return store.put(key, value, ttl)
        case CasOp(key, expected, value, ttl):
            return store.compare_and_set(key, expected, value, ttl)
        case DeleteOp(key):
            return store.delete(key)
        case ExpireOp(key, ttl):
            return store.expire(key, ttl)
        case AllocateOp(pool, candidates, owner, ttl):
            return store.allocate(pool, candidates, owner, ttl)
        case ReleaseOp(pool, member, owner):
            return store.release(pool, member, owner)
    raise TypeError(op)


def queue(batch: Batch, op: Op) -> None:
    match op:
        case GetOp(key):
            batch.get(key)
        case PutOp(key, value, ttl):
            batch.put(key, value, ttl)
        case CasOp(key, expected, value, ttl):
            batch.cas(key, expected, value, ttl)
        case DeleteOp(key):
            batch.delete(key)
        case ExpireOp(key, ttl):
            batch.expire(key, ttl)
        case AllocateOp(pool, candidates, owner, ttl):
            batch.allocate(pool, candidates, owner, ttl)
        case ReleaseOp(pool, member, owner):
            batch.release(pool, member, owner)


def operations(ttls: st.SearchStrategy[float]) -> st.SearchStrategy[Op]:
    keys = st.sampled_from(KEYS)
    values = st.binary(max_size=6)
    maybe_ttl = st.none() | ttls
    pools = st.sampled_from(["pool", "pool:x"])
    owners = st.sampled_from(["o1", "o2", "o3"])
    candidates = st.lists(st.sampled_from(MEMBERS), max_size=4, unique=True).map(tuple)
    return st.one_of(
        st.builds(GetOp, keys),
        st.builds(PutOp, keys, values, maybe_ttl),
        st.builds(CasOp, keys, st.integers(0, 12), values, maybe_ttl),
        st.builds(DeleteOp, keys),
        st.builds(ExpireOp, keys, ttls),
        st.builds(AllocateOp, pools, candidates, owners, maybe_ttl),
        st.builds(ReleaseOp, pools, st.sampled_from(MEMBERS), owners),
    )


Opener = Callable[[], tuple[StateStore, FakeClock | None]]


def build_machine(
    ttls: st.SearchStrategy[float], *, exact: bool = True
) -> type[RuleBasedStateMachine]:
    """A machine class whose TTL choices suit the store's clock."""
    ops = operations(ttls)

    class StoreVsModel(RuleBasedStateMachine):
        def __init__(self, opener: Opener) -> None:
            super().__init__()
            self.store, self.clock = opener()
            self.model = Model(exact)

        def teardown(self) -> None:
            self.store.close()

        @rule(op=ops)
        def single(self, op: Op) -> None:
            actual = call(self.store, op)
            assert actual == self.model.apply(op, actual), op

        @rule(ops=st.lists(ops, max_size=6))
        def batch(self, ops: list[Op]) -> None:
            batch = self.store.batch()
            for op in ops:
                queue(batch, op)
            results = batch.execute()
            expected = [self.model.apply(op, r) for op, r in zip(ops, results, strict=True)]
            assert results == expected, ops

        @rule(key=st.sampled_from(KEYS), value=st.binary(max_size=6))
        def cas_with_current_version(self, key: str, value: bytes) -> None:
            current = self.model.get(key)
            op = CasOp(key, current.version if current else 0, value, None)
            actual = self.store.compare_and_set(key, op.expected_version, value)
            assert actual.ok
            assert self.model.apply(op, actual) == CasResult(True, Entry(value, self.model.version))

        @rule(
            items=st.lists(st.tuples(st.sampled_from(KEYS), st.binary(max_size=6)), max_size=4),
            ttl=st.none() | ttls,
        )
        def put_many(self, items: list[tuple[str, bytes]], ttl: float | None) -> None:
            actual = self.store.put_many(items, ttl)
            expected = [
                self.model.apply(PutOp(k, v, ttl), version)
                for (k, v), version in zip(items, actual, strict=True)
            ]
            assert actual == expected

        @rule(keys=st.lists(st.sampled_from(KEYS), max_size=4))
        def delete_many(self, keys: list[str]) -> None:
            assert self.store.delete_many(keys) == sum(self.model.delete(k) for k in keys)

        @precondition(lambda self: self.clock is not None)
        @rule(seconds=st.sampled_from([0.25, 0.5, 1.0]))
        def tick(self, seconds: float) -> None:
            assert self.clock is not None
            self.clock.advance(seconds)
            self.model.now += seconds

        @precondition(lambda self: isinstance(self.store, MemoryStore))
        @rule()
        def sweep(self) -> None:
            assert isinstance(self.store, MemoryStore)
            self.store.sweep()
            assert len(self.store) == sum(self.model.get(k) is not None for k in KEYS)

        @invariant()
        def same_entries(self) -> None:
            assert self.store.get_many(KEYS) == [self.model.get(k) for k in KEYS]

    return StoreVsModel


MemoryMachine = build_machine(st.sampled_from([0.25, 0.5, 1.0, 2.0]))
RedisMachine = build_machine(st.sampled_from([600.0, 1200.0]))  # never expire mid-run
ClusterMachine = build_machine(st.sampled_from([600.0, 1200.0]), exact=False)


def _memory() -> tuple[StateStore, FakeClock | None]:
    clock = FakeClock(start=0.0)
    return MemoryStore(clock), clock


def test_memory_store_matches_the_model() -> None:
    run_state_machine_as_test(
        lambda: MemoryMachine(_memory),  # type: ignore[call-arg]
        settings=settings(max_examples=60, stateful_step_count=25, deadline=None),
    )


def test_redis_store_matches_the_model(redis_url: str, redis_raw: redis.Redis) -> None:
    def opener() -> tuple[StateStore, Any]:
        redis_raw.flushdb()  # a fresh store, version counter included, per example
        return RedisStore.from_url(redis_url), None

    run_state_machine_as_test(
        lambda: RedisMachine(opener),  # type: ignore[call-arg]
        settings=settings(max_examples=20, stateful_step_count=20, deadline=None),
    )


def test_cluster_store_matches_the_model(cluster: RedisClusterServers) -> None:
    def opener() -> tuple[StateStore, Any]:
        cluster.flush()  # a fresh store, slot counters included, per example
        return RedisClusterStore.from_url(cluster.url), None

    run_state_machine_as_test(
        lambda: ClusterMachine(opener),  # type: ignore[call-arg]
        settings=settings(max_examples=20, stateful_step_count=20, deadline=None),
    )
