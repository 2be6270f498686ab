"""The ops-stream scripts (``state/redis_ops.py``, ``state/cluster_ops.py``): a batch of any
operations, sent as one script call per server, answers what the memory store answers.

Versions differ between stores (each has its own counter), so results are compared by
what they mean: values, outcomes, members. Compare-and-sets name the version they expect
as "what the key had before the batch" (or 0, or a stale one), resolved per store. Pool
members include commas and empty names, which take the long form of an allocation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netvirt.state import MemoryStore
from netvirt.state.cluster import RedisClusterStore
from netvirt.state.redis import RedisStore
from netvirt.state.store import (
    AllocateOp,
    CasOp,
    CasResult,
    DeleteOp,
    Entry,
    ExpireOp,
    GetOp,
    PutOp,
    ReleaseOp,
    StateStore,
)
from state.state_support import RedisClusterServers

KEYS = ("a", "b", "c:d")
MEMBERS = ("1", "2", "3", "x,y", "")
POOLS = ("pool", "p:q")
TTLS = (None, 30.0)

_key = st.sampled_from(KEYS)
_value = st.binary(min_size=0, max_size=12)
_ttl = st.sampled_from(TTLS)
_window = st.one_of(  # mostly plain members (one argument), sometimes odd ones (the long form)
    st.lists(st.sampled_from(MEMBERS[:3]), max_size=3, unique=True),
    st.lists(st.sampled_from(MEMBERS), max_size=4, unique=True),
)
_owner = st.sampled_from(("o1", "o2"))
_pool = st.sampled_from(POOLS[:1] * 3 + POOLS[1:])  # mostly one pool: owners meet

OP = st.one_of(
    st.tuples(st.just("get"), _key),
    st.tuples(st.just("put"), _key, _value, _ttl),
    st.tuples(st.just("cas"), _key, st.sampled_from(("current", "zero", "stale")), _value, _ttl),
    st.tuples(st.just("delete"), _key),
    st.tuples(st.just("expire"), _key),
    st.tuples(st.just("allocate"), _pool, _window, _owner, _ttl),
    st.tuples(st.just("allocate"), _pool, _window, _owner, _ttl),
    st.tuples(st.just("release"), _pool, st.sampled_from(MEMBERS), _owner),
)
ROUNDS = st.lists(st.lists(OP, min_size=1, max_size=12), min_size=1, max_size=4)


def _run(store: StateStore, batch_ops: list[tuple[Any, ...]]) -> list[object]:
    """One batch of ``batch_ops`` on ``store``; results made comparable across stores."""
    before = {key: store.get(key) for key in KEYS}
    batch = store.batch()
    for op in batch_ops:
        match op:
            case ("get", key):
                batch.get(key)
            case ("put", key, value, ttl):
                batch.put(key, value, ttl)
            case ("cas", key, which, value, ttl):
                had = before[key]
                version = had.version if had else 0  # "current"
                if which == "zero":
                    version = 0
                elif which == "stale":
                    # never the key's version, in either store, and never 0 (a key
                    # deleted earlier in the batch has version 0: "current - 1" was 0
                    # where the first write got version 1, and another number in a
                    # store whose counter had moved on)
                    version = (1 << 50) + (had.version if had else 0)
                batch.cas(key, version, value, ttl)
            case ("delete", key):
                batch.delete(key)
            case ("expire", key):
                batch.expire(key, 30.0)
            case ("allocate", pool, window, owner, ttl):
                batch.allocate(pool, window, owner, ttl)
            case ("release", pool, member, owner):
                batch.release(pool, member, owner)
    return [_meaning(result) for result in batch.execute()]


def _meaning(result: object) -> object:
    if isinstance(result, CasResult):
        return ("cas", result.ok, result.entry.value if result.entry else None)
    if isinstance(result, Entry):
        return ("entry", result.value)
    if isinstance(result, int) and not isinstance(result, bool):
        return "version"
    return result


def _same_as_memory(store: StateStore, rounds: list[list[tuple[Any, ...]]]) -> None:
    reference = MemoryStore()
    for batch_ops in rounds:
        assert _run(store, batch_ops) == _run(reference, batch_ops)
    for key in KEYS:  # and the same state after
        got, want = store.get(key), reference.get(key)
        assert (got.value if got else None) == (want.value if want else None)


@pytest.fixture
def fresh_redis(redis_url: str) -> Iterator[tuple[RedisStore, redis.Redis]]:
    raw = redis.Redis.from_url(redis_url)
    raw.flushdb()
    store = RedisStore.from_url(redis_url)
    yield store, raw
    store.close()
    raw.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rounds=ROUNDS)
def test_one_redis_answers_as_the_memory_store(
    fresh_redis: tuple[RedisStore, redis.Redis], rounds: list[list[tuple[Any, ...]]]
) -> None:
    store, raw = fresh_redis
    raw.flushdb()
    _same_as_memory(store, rounds)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rounds=ROUNDS)
def test_the_cluster_answers_as_the_memory_store(
    cluster: RedisClusterServers, rounds: list[list[tuple[Any, ...]]]
) -> None:
    cluster.flush()
    store = RedisClusterStore.from_url(cluster.url)
    try:
        _same_as_memory(store, rounds)
    finally:
        store.close()


def test_an_allocation_window_is_one_argument(fresh_redis: tuple[RedisStore, redis.Redis]) -> None:
    """A window of plain members travels as one comma-joined string (``W``); a member with
    a comma or an empty one makes it the long form (``A``, each member length-prefixed)."""
    from netvirt.state import redis_ops

    plain = AllocateOp("pool", tuple(str(p) for p in range(32)), "me", 5.0)
    odd = AllocateOp("pool", ("1", "2,3"), "me", 5.0)
    empty = AllocateOp("pool", ("1", ""), "me", 5.0)
    assert redis_ops.stream([plain]).endswith(b"me4:pool:" + ",".join(plain.candidates).encode())
    assert redis_ops.stream([plain])[:1] == b"W"
    assert redis_ops.stream([odd])[:1] == b"A"
    assert redis_ops.stream([empty])[:1] == b"A"
    store, _ = fresh_redis
    assert store.allocate("pool", ["1", "2,3"], "me") == "1"
    assert store.allocate("pool", ["1", "2,3"], "you") == "2,3"
    assert store.allocate("pool", ["1", "2,3"], "me") == "1"  # the owner gets its own back


def test_a_long_run_of_reads_in_a_writing_batch(
    fresh_redis: tuple[RedisStore, redis.Redis],
) -> None:
    """Runs of gets are read with MGET in chunks of 1000 keys inside the script; one get
    alone with GET: every key answers in its place across the chunk boundaries."""
    store, raw = fresh_redis
    raw.flushdb()
    store.put_many([(f"k{i}", b"%d" % i) for i in range(0, 2500, 7)])
    batch = store.batch()
    reads = [batch.get(f"k{i}") for i in range(2500)]
    batch.put("other", b"x")
    alone = batch.get("k7")
    batch.execute()
    found = [i for i, r in enumerate(reads) if r.result() is not None]
    assert found == list(range(0, 2500, 7))
    assert all(reads[i].result().value == b"%d" % i for i in found)  # type: ignore[union-attr]
    assert alone.result() is not None
    assert alone.result().value == b"7"  # type: ignore[union-attr]


_ANY_OP = st.one_of(
    st.builds(GetOp, _key),
    st.builds(PutOp, _key, _value, _ttl),
    st.builds(CasOp, _key, st.integers(0, 1 << 52), _value, _ttl),
    st.builds(DeleteOp, _key),
    st.builds(ExpireOp, _key, st.sampled_from((0.001, 30.0, 7200.0))),
    st.builds(AllocateOp, _pool, _window.map(tuple), _owner, _ttl),
    st.builds(ReleaseOp, _pool, st.sampled_from(MEMBERS), _owner),
)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(_ANY_OP, min_size=1, max_size=10), prefix=st.sampled_from(("P:", "netvirt:")))
def test_the_framer_sends_exactly_the_grouped_command(ops: list[Any], prefix: str) -> None:
    """The asynchronous path's pre-framed RESP (``Framer``) is byte for byte the packed
    ``command(..., grouped=True)`` (reads only: the MGET)."""
    import hiredis

    from netvirt.state import redis_ops

    framed = redis_ops.Framer("f" * 40, prefix).frame(ops)
    command = redis_ops.command("f" * 40, prefix, ops, grouped=True)
    assert framed == hiredis.pack_command(tuple(command))


def test_a_malformed_stream_is_an_error_not_a_crash(
    fresh_redis: tuple[RedisStore, redis.Redis],
) -> None:
    """A truncated operation or an unknown kind is refused by the script before it runs
    anything (a clear error reply; the store raises StateStoreError)."""
    from netvirt.state import redis_ops

    _, raw = fresh_redis
    sha = raw.script_load(redis_ops.SCRIPT)
    good = redis_ops.stream([PutOp("a", b"v", None), PutOp("b", b"w", None)])
    for bad, why in ((good[:-1], "truncated"), (b"Z\x00\x00\x00\x00", "unknown operation")):
        with pytest.raises(redis.ResponseError, match=why):
            raw.evalsha(sha, 0, "P:", bad, "")
    assert raw.dbsize() == 0  # nothing of either ran
