"""The StateStore contract, run against every implementation (see conftest.harness)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from netvirt.state import CasResult, Entry, MemoryStore, StateStore
from state.state_support import FakeClock, Harness

TTL = 0.15  # short enough for a real Redis, long enough to read back right away
PAST_TTL = 0.35


# -- get / put / delete ---------------------------------------------------------------------


def test_get_absent_key_is_none(harness: Harness) -> None:
    assert harness.store.get("nope") is None
    assert harness.store.get_many(["a", "b"]) == [None, None]


def test_put_then_get_returns_value_and_version(harness: Harness) -> None:
    store = harness.store
    version = store.put("ct/1", b"\x00\x01binary\xff")
    assert version >= 1
    assert store.get("ct/1") == Entry(b"\x00\x01binary\xff", version)


def test_get_many_keeps_order_with_gaps(harness: Harness) -> None:
    store = harness.store
    va = store.put("a", b"A")
    vc = store.put("c", b"C")
    assert store.get_many(["c", "missing", "a", "c"]) == [
        Entry(b"C", vc),
        None,
        Entry(b"A", va),
        Entry(b"C", vc),
    ]


def test_put_many_returns_increasing_versions_and_last_write_wins(harness: Harness) -> None:
    store = harness.store
    versions = store.put_many([("x", b"1"), ("y", b"2"), ("x", b"3")])
    assert versions == sorted(set(versions))
    assert store.get_many(["x", "y"]) == [Entry(b"3", versions[2]), Entry(b"2", versions[1])]


def test_empty_batched_calls_are_no_ops(harness: Harness) -> None:
    store = harness.store
    assert store.get_many([]) == []
    assert store.put_many([]) == []
    assert store.delete_many([]) == 0
    assert store.batch().execute() == []


def test_delete_and_delete_many_count_existing_keys(harness: Harness) -> None:
    store = harness.store
    store.put_many([("a", b"1"), ("b", b"2"), ("c", b"3")])
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.delete_many(["b", "c", "zzz"]) == 2
    assert store.get_many(["a", "b", "c"]) == [None, None, None]


def test_empty_value_is_distinct_from_absent(harness: Harness) -> None:
    version = harness.store.put("k", b"")
    assert harness.store.get("k") == Entry(b"", version)


# -- versions and compare-and-set --------------------------------------------------------------


def test_every_write_gets_a_fresh_larger_version(harness: Harness) -> None:
    store = harness.store
    seen = [store.put("a", b"1"), store.put("b", b"1"), store.put("a", b"2")]
    seen += store.put_many([("c", b"1"), ("a", b"3")])
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)


def test_cas_with_zero_creates_only_when_absent(harness: Harness) -> None:
    store = harness.store
    created = store.compare_and_set("k", 0, b"first")
    assert created.ok
    assert created.entry is not None
    assert created.entry.value == b"first"
    again = store.compare_and_set("k", 0, b"second")
    assert again == CasResult(False, created.entry)
    assert store.get("k") == created.entry


def test_cas_success_increments_version(harness: Harness) -> None:
    store = harness.store
    v1 = store.put("k", b"a")
    result = store.compare_and_set("k", v1, b"b")
    assert result.ok
    assert result.entry is not None
    assert result.entry.version > v1
    assert store.get("k") == result.entry


def test_cas_with_stale_version_fails_and_reports_current(harness: Harness) -> None:
    store = harness.store
    v1 = store.put("k", b"a")
    v2 = store.put("k", b"b")
    result = store.compare_and_set("k", v1, b"lost update")
    assert result == CasResult(False, Entry(b"b", v2))
    assert store.get("k") == Entry(b"b", v2)


def test_cas_on_absent_key_with_nonzero_version_fails(harness: Harness) -> None:
    assert harness.store.compare_and_set("k", 7, b"x") == CasResult(False, None)
    assert harness.store.get("k") is None


def test_recreated_key_never_reuses_a_version(harness: Harness) -> None:
    """A stale writer must not win against a new incarnation of the same key (ABA)."""
    store = harness.store
    old = store.compare_and_set("conn", 0, b"old").entry
    assert old is not None
    store.delete("conn")
    new = store.compare_and_set("conn", 0, b"new").entry
    assert new is not None
    assert new.version > old.version
    assert not store.compare_and_set("conn", old.version, b"stale").ok


def test_invalid_arguments_are_rejected(harness: Harness) -> None:
    store = harness.store
    with pytest.raises(ValueError, match="ttl"):
        store.put("k", b"v", ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        store.expire("k", -1)
    with pytest.raises(ValueError, match="expected_version"):
        store.compare_and_set("k", -1, b"v")
    with pytest.raises(ValueError, match="owner"):
        store.allocate("pool", ["1"], "")
    assert store.get("k") is None


# -- batches -----------------------------------------------------------------------------------


def test_batch_mixes_ops_and_returns_results_in_order(harness: Harness) -> None:
    store = harness.store
    v0 = store.put("a", b"A")
    batch = store.batch()
    batch.get("a")
    batch.put("b", b"B")
    batch.cas("a", v0, b"A2")
    batch.cas("a", v0, b"A3")
    batch.get("missing")
    batch.delete("a")
    batch.expire("b", 30)
    batch.allocate("snat", ["1000", "1001"], "conn-1")
    batch.release("snat", "1000", "someone-else")
    results = batch.execute()
    assert len(results) == len(batch) == 9
    assert results[0] == Entry(b"A", v0)
    assert isinstance(results[1], int)
    assert results[1] > v0
    assert results[2] == CasResult(True, Entry(b"A2", results[1] + 1))
    assert results[3] == CasResult(False, Entry(b"A2", results[1] + 1))
    assert results[4:] == [None, True, True, "1000", False]


def test_batch_ops_see_earlier_ops_of_the_same_batch(harness: Harness) -> None:
    batch = harness.store.batch()
    put = batch.put("k", b"v")
    read = batch.get("k")
    gone = batch.delete("k")
    reread = batch.get("k")
    batch.execute()
    assert read.result() == Entry(b"v", put.result())
    assert gone.result() is True
    assert reread.result() is None


def test_pending_results_are_typed_handles(harness: Harness) -> None:
    batch = harness.store.batch()
    cas = batch.cas("k", 0, b"v")
    with pytest.raises(RuntimeError, match="not executed"):
        cas.result()
    batch.execute()
    assert cas.result().ok


def test_batch_runs_once(harness: Harness) -> None:
    batch = harness.store.batch()
    batch.put("k", b"v")
    batch.execute()
    with pytest.raises(RuntimeError, match="already executed"):
        batch.execute()
    with pytest.raises(RuntimeError, match="already executed"):
        batch.get("k")


# -- TTL ---------------------------------------------------------------------------------------


def test_put_with_ttl_expires(harness: Harness) -> None:
    store = harness.store
    version = store.put("k", b"v", ttl=TTL)
    store.put("forever", b"v")
    assert store.get("k") == Entry(b"v", version)
    harness.advance(PAST_TTL)
    assert store.get_many(["k", "forever"])[0] is None
    assert store.get("forever") is not None


def test_expired_key_counts_as_absent_for_cas_and_delete(harness: Harness) -> None:
    store = harness.store
    store.put_many([("a", b"1"), ("b", b"2")], ttl=TTL)
    harness.advance(PAST_TTL)
    assert store.delete("a") is False
    assert store.compare_and_set("b", 0, b"reborn").ok


def test_put_without_ttl_clears_an_earlier_ttl(harness: Harness) -> None:
    store = harness.store
    store.put("k", b"short", ttl=TTL)
    version = store.put("k", b"long")
    harness.advance(PAST_TTL)
    assert store.get("k") == Entry(b"long", version)


def test_cas_can_set_a_ttl(harness: Harness) -> None:
    store = harness.store
    assert store.compare_and_set("k", 0, b"v", ttl=TTL).ok
    harness.advance(PAST_TTL)
    assert store.get("k") is None


def test_expire_sets_ttl_on_live_keys_only(harness: Harness) -> None:
    store = harness.store
    version = store.put("k", b"v")
    assert store.expire("k", TTL) is True
    assert store.expire("absent", TTL) is False
    assert store.get("k") == Entry(b"v", version)  # expire keeps the version
    harness.advance(PAST_TTL)
    assert store.get("k") is None


def test_expire_extends_a_ttl(harness: Harness) -> None:
    store = harness.store
    store.put("k", b"v", ttl=TTL)
    assert store.expire("k", 30)
    harness.advance(PAST_TTL)
    assert store.get("k") is not None


# -- allocation pools ---------------------------------------------------------------------------


PORTS = [str(p) for p in range(40000, 40004)]


def test_allocate_claims_the_first_free_member(harness: Harness) -> None:
    store = harness.store
    assert store.allocate("snat:10.0.0.1", PORTS, "conn-a") == "40000"
    assert store.allocate("snat:10.0.0.1", PORTS, "conn-b") == "40001"
    assert store.allocate("snat:10.0.0.1", PORTS[::-1], "conn-c") == "40003"


def test_allocate_is_idempotent_for_the_same_owner(harness: Harness) -> None:
    store = harness.store
    assert store.allocate("pool", PORTS[1:], "conn-a") == "40001"
    # a retry (even with a wider window) returns what the owner already holds
    assert store.allocate("pool", PORTS, "conn-a") == "40001"
    assert store.allocate("pool", PORTS, "conn-b") == "40000"


def test_allocate_returns_none_when_exhausted(harness: Harness) -> None:
    store = harness.store
    owners = [store.allocate("pool", PORTS, f"o{i}") for i in range(len(PORTS))]
    assert sorted(o for o in owners if o) == PORTS
    assert store.allocate("pool", PORTS, "late") is None
    assert store.allocate("pool", [], "late") is None


def test_release_needs_the_owner(harness: Harness) -> None:
    store = harness.store
    member = store.allocate("pool", PORTS[:1], "owner")
    assert member == "40000"
    assert store.release("pool", member, "intruder") is False
    assert store.allocate("pool", PORTS[:1], "other") is None
    assert store.release("pool", member, "owner") is True
    assert store.release("pool", member, "owner") is False
    assert store.allocate("pool", PORTS[:1], "other") == "40000"


def test_pools_are_independent_even_with_colons_in_names(harness: Harness) -> None:
    store = harness.store
    assert store.allocate("a:b", ["c"], "x") == "c"
    assert store.allocate("a", ["b:c"], "y") == "b:c"
    assert store.allocate("other", ["c"], "z") == "c"


def test_claims_expire_and_reallocation_refreshes_them(harness: Harness) -> None:
    store = harness.store
    assert store.allocate("pool", ["p"], "a", ttl=0.4) == "p"
    harness.advance(0.25)
    assert store.allocate("pool", ["p"], "a", ttl=0.4) == "p"  # refresh
    harness.advance(0.25)
    assert store.allocate("pool", ["p"], "b", ttl=0.4) is None  # still held by a
    harness.advance(0.5)
    assert store.allocate("pool", ["p"], "b", ttl=0.4) == "p"
    assert store.release("pool", "p", "a") is False


# -- concurrency ---------------------------------------------------------------------------------


def _run_threads(count: int, work: Callable[[int], None]) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors


def test_concurrent_allocations_never_share_a_member(harness: Harness) -> None:
    store = harness.store
    members = [str(p) for p in range(30)]
    claims: dict[str, str] = {}
    lock = threading.Lock()

    def work(index: int) -> None:
        for round_ in range(6):
            owner = f"t{index}-{round_}"
            got = store.allocate("pool", members, owner, ttl=60)
            if got is not None:
                with lock:
                    assert got not in claims, f"{got} given to {claims.get(got)} and {owner}"
                    claims[got] = owner

    _run_threads(8, work)
    assert sorted(claims, key=int) == members  # 48 requests for 30 members: all taken
    for member, owner in claims.items():
        assert store.release("pool", member, owner)


def test_concurrent_cas_loops_lose_no_update(harness: Harness) -> None:
    store = harness.store
    store.put("counter", b"0")

    def work(_: int) -> None:
        for _ in range(25):
            while True:
                entry = store.get("counter")
                assert entry is not None
                value = str(int(entry.value) + 1).encode()
                if store.compare_and_set("counter", entry.version, value).ok:
                    break

    _run_threads(4, work)
    final = store.get("counter")
    assert final is not None
    assert final.value == b"100"


# -- memory-only maintenance -------------------------------------------------------------------


def test_memory_sweep_drops_expired_entries_and_claims() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    store.put("short", b"v", ttl=1)
    store.put("long", b"v", ttl=10)
    store.allocate("pool", ["p"], "owner", ttl=1)
    assert store.sweep() == 0
    assert store.sweep(now=clock.now + 5) == 2
    assert len(store) == 1
    assert store.allocate("pool", ["p"], "other") == "p"


def test_memory_store_satisfies_the_protocol() -> None:
    store: StateStore = MemoryStore()
    assert store.put("k", b"v") == 1


def test_batch_runs_of_gets_and_puts_keep_per_op_results(harness: Harness) -> None:
    """Backends may merge runs of gets or puts; results must not show it."""
    store = harness.store
    batch = store.batch()
    gets_before = [batch.get(k) for k in ("a", "b")]
    puts = [batch.put("a", b"1"), batch.put("b", b"2"), batch.put("a", b"3")]
    short = batch.put("b", b"4", ttl=TTL)  # a different TTL starts a new run
    gets_after = [batch.get(k) for k in ("a", "b", "a")]
    batch.execute()
    versions = [p.result() for p in puts]
    assert [g.result() for g in gets_before] == [None, None]
    assert versions == sorted(set(versions))
    assert short.result() > versions[-1]
    assert [g.result() for g in gets_after] == [
        Entry(b"3", versions[2]),
        Entry(b"4", short.result()),
        Entry(b"3", versions[2]),
    ]
    harness.advance(PAST_TTL)
    assert store.get_many(["a", "b"]) == [Entry(b"3", versions[2]), None]
