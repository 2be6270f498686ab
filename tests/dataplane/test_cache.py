"""Exact-match and megaflow caches: hits, invalidation on rule changes, revalidation, bounds.

The slow path of these tests is a two-table pipeline on the real classifier
(itself checked against the reference in test_classifier.py): its result is
the pair of rules hit, its wildcards the union over both tables.  The
property tests drive caches and rule changes in random order and require the
cached answer to equal a fresh slow-path run every time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.test_classifier import LOW, MATCH_FIELDS, keys, relaxed, rules
from netvirt.dataplane.cache import CacheStats, ExactMatchCache, MegaflowCache
from netvirt.dataplane.classifier import Classifier, Wildcards
from netvirt.dataplane.fields import NUM_FIELDS, F, field
from netvirt.dataplane.flow import FieldMatch, Rule, exact

Result = tuple[Rule | None, Rule | None]


def slow_path(cls: Classifier) -> Callable[[Sequence[int]], tuple[Wildcards, Result]]:
    def run(key: Sequence[int]) -> tuple[Wildcards, Result]:
        wc = Wildcards()
        result = (cls.lookup(0, key, wc), cls.lookup(1, key, wc))
        return wc, result

    return run


def key_with(**values: int) -> list[int]:
    key = [0] * NUM_FIELDS
    for name, value in values.items():
        key[F(name.replace("__", "."))] = value
    return key


L2 = Rule(0, 10, (exact("eth.dst", 0xA),), ("to-a",))
WEB = Rule(1, 10, (exact("tp.dst", 80),), ("web",))


def setup_pipeline(
    revalidate: bool, capacity: int = 16
) -> tuple[Classifier, MegaflowCache[Result], Callable[[Sequence[int]], tuple[Wildcards, Result]]]:
    cls = Classifier()
    cls.apply(add=[L2, WEB])
    run = slow_path(cls)
    cache = MegaflowCache[Result](cls, capacity, run if revalidate else None)
    return cls, cache, run


def through(
    cache: MegaflowCache[Result], run: Callable[..., tuple[Wildcards, Result]], key: list[int]
) -> Result:
    """What the pipeline does per packet: cache, else slow path and insert."""
    hit = cache.lookup(key)
    if hit is not None:
        return hit
    wc, result = run(key)
    cache.insert(wc, key, result)
    return result


# --------------------------------------------------------------------------- #
# exact-match cache
# --------------------------------------------------------------------------- #


def test_emc_hit_after_insert_and_flush_on_rule_change() -> None:
    cls = Classifier()
    emc = ExactMatchCache[str](cls)
    key = tuple(key_with(eth__dst=0xA))
    assert emc.lookup(key) is None
    emc.insert(key, "out:1")
    assert emc.lookup(key) == "out:1"
    assert emc.lookup(tuple(key_with(eth__dst=0xB))) is None
    cls.add(L2)
    assert emc.lookup(key) is None  # version moved: flushed
    assert emc.stats() == CacheStats(
        hits=1, misses=3, entries=0, capacity=8192, evictions=0, flushes=1
    )


def test_emc_is_bounded_and_evicts_oldest_first() -> None:
    emc = ExactMatchCache[int](Classifier(), capacity=4)
    for n in range(10):
        emc.insert((n,), n)
    assert len(emc) == 4
    assert emc.stats().evictions == 6
    assert [emc.lookup((n,)) for n in range(10)] == [None] * 6 + [6, 7, 8, 9]
    emc.insert((9,), 99)  # overwrite: no eviction
    assert emc.lookup((9,)) == 99
    assert emc.stats().evictions == 6
    with pytest.raises(ValueError, match="capacity"):
        ExactMatchCache[int](Classifier(), capacity=0)


# --------------------------------------------------------------------------- #
# megaflow cache
# --------------------------------------------------------------------------- #


def test_megaflow_hit_covers_keys_agreeing_on_consulted_bits() -> None:
    _, cache, run = setup_pipeline(revalidate=False)
    first = key_with(eth__dst=0xA, tp__dst=80, ip4__src=1)
    assert through(cache, run, first) == (L2, WEB)
    assert cache.lookup(key_with(eth__dst=0xA, tp__dst=80, ip4__src=2)) == (L2, WEB)
    assert cache.lookup(key_with(eth__dst=0xA, tp__dst=81)) is None  # consulted bit differs
    [flow] = cache.entries()
    assert flow.wildcards.as_dict() == {
        "eth.dst": field("eth.dst").full_mask,
        "tp.dst": field("tp.dst").full_mask,
    }
    assert flow.key[F("eth.dst")] == 0xA
    assert flow.key[F("ip4.src")] == 0
    assert cache.stats().hits == 1
    assert cache.stats().misses == 2
    assert cache.stats().masks == 1


def test_megaflow_flushes_on_rule_change_without_revalidator() -> None:
    cls, cache, run = setup_pipeline(revalidate=False)
    key = key_with(eth__dst=0xA, tp__dst=80)
    through(cache, run, key)
    cls.add(Rule(1, 20, (exact("tp.dst", 80),), ("web-v2",)))
    assert cache.lookup(key) is None
    assert len(cache) == 0
    assert cache.stats().flushes == 1
    assert cache.revalidate_all() == (0, 0)


def test_megaflow_revalidation_keeps_unaffected_and_replaces_affected_entries() -> None:
    cls, cache, run = setup_pipeline(revalidate=True)
    web = key_with(eth__dst=0xA, tp__dst=80)
    ssh = key_with(eth__dst=0xA, tp__dst=22)
    through(cache, run, web)
    through(cache, run, ssh)
    cls.add(Rule(1, 5, (exact("tp.dst", 443),), ("tls",)))  # lower priority, other port
    assert cache.lookup(web) == (L2, WEB)
    assert cache.stats().revalidated == 1
    assert cache.stats().invalidated == 0
    assert cache.lookup(web) == (L2, WEB)  # re-stamped: a plain hit now
    assert cache.stats().revalidated == 1
    ssh_rule = Rule(1, 50, (exact("tp.dst", 22),), ("ssh",))
    cls.add(ssh_rule)
    assert cache.lookup(ssh) == (L2, ssh_rule)  # answered by the revalidator
    assert cache.stats().invalidated == 1
    assert cache.lookup(ssh) == (L2, ssh_rule)
    assert cache.stats().misses == 2  # only the two first packets
    assert len(cache) == 2


def test_megaflow_revalidation_rejects_entries_that_became_too_broad() -> None:
    """Same result, but the new rules consult a bit the entry does not match on."""
    cls, cache, run = setup_pipeline(revalidate=True)
    key = key_with(eth__dst=0xA, tp__dst=80, ip4__src=1)
    through(cache, run, key)
    cls.add(Rule(1, 50, (exact("ip4.src", 2),), ("blocked",)))
    assert cache.lookup(key) == (L2, WEB)
    assert cache.stats().invalidated == 1
    [flow] = cache.entries()
    assert flow.wildcards.as_dict()["ip4.src"] == field("ip4.src").full_mask
    assert cache.lookup(key_with(eth__dst=0xA, tp__dst=80, ip4__src=2)) is None


def test_megaflow_revalidate_all_sweeps_stale_entries() -> None:
    cls, cache, run = setup_pipeline(revalidate=True)
    for port in (80, 81, 82):
        through(cache, run, key_with(eth__dst=0xA, tp__dst=port))
    cls.add(Rule(1, 50, (exact("tp.dst", 81),), ("new",)))
    assert all(flow.stale for flow in cache.entries())
    assert cache.revalidate_all() == (2, 1)
    assert len(cache) == 2
    assert not any(flow.stale for flow in cache.entries())
    assert cache.lookup(key_with(eth__dst=0xA, tp__dst=81)) is None


def test_megaflow_is_bounded() -> None:
    _, cache, run = setup_pipeline(revalidate=False, capacity=3)
    for port in range(8):
        through(cache, run, key_with(tp__dst=port))
    assert len(cache) == 3
    assert cache.stats().evictions == 5
    assert [cache.lookup(key_with(tp__dst=p)) is not None for p in range(8)] == [False] * 5 + [
        True
    ] * 3
    with pytest.raises(ValueError, match="capacity"):
        MegaflowCache[int](Classifier(), capacity=0)


def test_megaflow_eviction_of_a_groups_last_entry() -> None:
    """Evicting the only entry of the group being inserted into must not lose the insert."""
    cache = MegaflowCache[str](Classifier(), capacity=1)
    wc = Wildcards()
    wc.add_field("tp.dst")
    cache.insert(wc, key_with(tp__dst=1), "one")
    cache.insert(wc, key_with(tp__dst=2), "two")
    assert cache.lookup(key_with(tp__dst=2)) == "two"
    assert cache.lookup(key_with(tp__dst=1)) is None
    assert cache.stats().masks == 1


# --------------------------------------------------------------------------- #
# properties: cached answers always equal the slow path
# --------------------------------------------------------------------------- #

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), rules()),
        st.tuples(st.just("remove"), st.integers(0, 50)),
        st.tuples(st.just("packet"), st.integers(0, 50)),
        st.tuples(st.just("packet"), st.integers(0, 50)),
        st.tuples(st.just("sweep"), st.none()),
    ),
    min_size=8,
    max_size=40,
)


@st.composite
def key_pools(draw: st.DrawFn) -> list[list[int]]:
    """A few keys differing from one base key in one matched field each."""
    base = draw(keys())
    pool = [base]
    for _ in range(draw(st.integers(0, 3))):
        variant = list(base)
        variant[F(draw(st.sampled_from(MATCH_FIELDS)))] = draw(st.integers(0, LOW))
        pool.append(variant)
    return pool


@settings(relaxed, max_examples=150)
@given(key_pools(), ops, st.booleans(), st.integers(1, 6))
def test_caches_always_agree_with_the_slow_path(
    pool: list[list[int]], steps: list[tuple[str, object]], revalidate: bool, capacity: int
) -> None:
    """Packets come from a small pool so flows repeat across rule changes."""
    cls = Classifier()
    run = slow_path(cls)
    megaflows = MegaflowCache[Result](cls, capacity, run if revalidate else None)
    emc = ExactMatchCache[Result](cls, capacity)
    for op, arg in steps:
        if op == "add":
            assert isinstance(arg, Rule)
            cls.add(arg)
        elif op == "remove" and len(cls):
            assert isinstance(arg, int)
            cls.remove(list(cls.rules())[arg % len(cls)])
        elif op == "sweep":
            megaflows.revalidate_all()
        elif op == "packet":
            assert isinstance(arg, int)
            key = pool[arg % len(pool)]
            assert packet(emc, megaflows, run, key) == run(key)[1]
        assert len(megaflows) <= capacity
        assert len(emc) <= capacity


def packet(
    emc: ExactMatchCache[Result],
    megaflows: MegaflowCache[Result],
    run: Callable[[Sequence[int]], tuple[Wildcards, Result]],
    key: list[int],
) -> Result:
    exact_key = tuple(key)
    hit = emc.lookup(exact_key)
    if hit is None:
        hit = through(megaflows, run, key)
        emc.insert(exact_key, hit)
    return hit


@relaxed
@given(st.lists(rules(), max_size=15), st.lists(keys(), min_size=1, max_size=10))
def test_megaflow_entries_cover_their_keys(
    rule_list: list[Rule], key_list: list[list[int]]
) -> None:
    """Every entry answers the slow path's result for its own masked key (probe key)."""
    cls = Classifier()
    cls.apply(add=rule_list)
    run = slow_path(cls)
    cache = MegaflowCache[Result](cls)
    for key in key_list:
        through(cache, run, key)
    for flow in cache.entries():
        assert run(list(flow.key))[1] == flow.result
        assert cache.lookup(flow.key) == flow.result


def test_field_match_masks_are_partial_in_megaflows() -> None:
    """A /24 route consults 24 bits, so the megaflow covers the whole /24."""
    cls = Classifier()
    route = Rule(0, 24, (FieldMatch("ip4.dst", 0x0A000100, 0xFFFFFF00),), ("r",))
    cls.add(route)
    run = slow_path(cls)
    cache = MegaflowCache[Result](cls)
    through(cache, run, key_with(ip4__dst=0x0A000105))
    assert cache.lookup(key_with(ip4__dst=0x0A0001FE)) == (route, None)
    assert cache.lookup(key_with(ip4__dst=0x0A000205)) is None
