"""Classifier vs a linear reference model; megaflow wildcards; tie-breaking; versions.

The reference below is the specification: scan the rules in the order they
were added and keep the first one of the highest priority that matches.
Rules are drawn over a few fields with values and masks on their low three
bits, so random rules overlap and random keys collide with them often.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netvirt.dataplane.classifier import Classifier, Delta, Wildcards, key_function, normalize
from netvirt.dataplane.fields import FIELDS, NUM_FIELDS, F, field
from netvirt.dataplane.flow import FieldMatch, Rule, exact

# --------------------------------------------------------------------------- #
# the reference classifier (~30 lines)
# --------------------------------------------------------------------------- #


class Reference:
    """Linear scan; ties go to the earliest added rule (the classifier's contract)."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def add(self, rule: Rule) -> None:
        if rule not in self.rules:
            self.rules.append(rule)

    def remove(self, rule: Rule) -> None:
        self.rules.remove(rule)

    def apply(self, add: Iterable[Rule], remove: Iterable[Rule]) -> None:
        for rule in dict.fromkeys(remove):
            self.remove(rule)
        for rule in add:
            self.add(rule)

    def replace_all(self, rules: Iterable[Rule]) -> None:
        wanted = list(dict.fromkeys(rules))
        kept = [r for r in self.rules if r in wanted]
        self.rules = kept + [r for r in wanted if r not in kept]

    def lookup(self, table: int, key: Sequence[int]) -> Rule | None:
        best: Rule | None = None
        for rule in self.rules:
            if rule.table != table or not rule.matches(key):
                continue
            if best is None or rule.priority > best.priority:
                best = rule
        return best


# --------------------------------------------------------------------------- #
# strategies (shared with the other classifier and cache tests)
# --------------------------------------------------------------------------- #

MATCH_FIELDS = ("metadata", "eth.dst", "ip4.src", "tp.dst", "ct_state")
LOW = 0b111
TABLES = (0, 1)


@st.composite
def field_matches(draw: st.DrawFn) -> FieldMatch:
    name = draw(st.sampled_from(MATCH_FIELDS))
    mask = draw(st.one_of(st.integers(0, LOW), st.just(field(name).full_mask)))
    value = draw(st.integers(0, LOW)) & mask
    return FieldMatch(name, value, mask)


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    return Rule(
        table=draw(st.sampled_from(TABLES)),
        priority=draw(st.integers(0, 3)),
        match=tuple(draw(st.lists(field_matches(), max_size=3))),
        actions=(draw(st.integers(0, 3)),),
    )


@st.composite
def keys(draw: st.DrawFn) -> list[int]:
    """Low bits in the matched fields, noise (cheap to draw) in the others."""
    noise = draw(st.integers(0, 2**64 - 1))
    key = [(noise * (f.index + 1) * 0x9E3779B97F4A7C15 >> 7) & f.full_mask for f in FIELDS]
    for name in MATCH_FIELDS:
        key[F(name)] = draw(st.integers(0, LOW))
    return key


rule_lists = st.lists(rules(), max_size=25)

# the machine is shared: slow draws and examples are load, not bugs
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def agreeing(key: Sequence[int], wc: Wildcards, other: Sequence[int]) -> list[int]:
    """``key`` on the consulted bits, ``other`` everywhere else."""
    return [(k & m) | (o & ~m) for k, m, o in zip(key, wc.masks, other, strict=True)]


def build(rule_list: Iterable[Rule]) -> tuple[Classifier, Reference]:
    cls, ref = Classifier(), Reference()
    for rule in rule_list:
        cls.add(rule)
        ref.add(rule)
    return cls, ref


def rule(table: int, priority: int, *match: FieldMatch, tag: object = None) -> Rule:
    return Rule(table, priority, tuple(match), (tag,))


# --------------------------------------------------------------------------- #
# properties
# --------------------------------------------------------------------------- #


@relaxed
@given(rule_lists, st.lists(keys(), min_size=1, max_size=8))
def test_lookup_equals_reference(rule_list: list[Rule], key_list: list[list[int]]) -> None:
    cls, ref = build(rule_list)
    for key in key_list:
        for table in TABLES:
            assert cls.lookup(table, key) == ref.lookup(table, key)
            assert cls.lookup(table, key, Wildcards()) == ref.lookup(table, key)


@relaxed
@given(rule_lists, keys(), st.lists(keys(), min_size=1, max_size=5))
def test_megaflow_wildcards_are_sound(
    rule_list: list[Rule], key: list[int], others: list[list[int]]
) -> None:
    """Any key equal on the consulted bits gets the same answer from the reference."""
    cls, ref = build(rule_list)
    for table in TABLES:
        wc = Wildcards()
        got = cls.lookup(table, key, wc)
        for other in others:
            assert ref.lookup(table, agreeing(key, wc, other)) == got


@relaxed
@given(rule_lists, keys())
def test_unmatched_fields_stay_wildcarded(rule_list: list[Rule], key: list[int]) -> None:
    cls, _ = build(rule_list)
    for table in TABLES:
        wc = Wildcards()
        cls.lookup(table, key, wc)
        used = {F(m.field) for r in rule_list if r.table == table for m in r.match if m.mask}
        for index, mask in enumerate(wc.masks):
            if index not in used:
                assert mask == 0, FIELDS[index].name
            # consulted bits are always bits some rule of the table matches on
            allowed = 0
            for r in rule_list:
                for m in r.match:
                    if r.table == table and F(m.field) == index:
                        allowed |= m.mask
            assert mask & ~allowed == 0


@relaxed
@given(rule_lists, rule_lists, st.lists(keys(), min_size=1, max_size=4))
def test_replace_all_equals_reference(
    first: list[Rule], second: list[Rule], key_list: list[list[int]]
) -> None:
    cls, ref = build(first)
    version = cls.version
    delta = cls.replace_all(second)
    ref.replace_all(second)
    assert list(cls.rules()) == ref.rules
    assert cls.version == version + (1 if delta != Delta(0, 0) else 0)
    for key in key_list:
        for table in TABLES:
            assert cls.lookup(table, key) == ref.lookup(table, key)


@relaxed
@given(st.lists(field_matches(), max_size=4), keys())
def test_normalize_agrees_with_field_matches(match: list[FieldMatch], key: list[int]) -> None:
    norm = normalize(match)
    expected = all(m.matches(key) for m in match)
    if norm is None:
        assert not expected  # unsatisfiable: no key matches
    else:
        sig, values = norm
        assert (key_function(sig)(key) == values) == expected


# --------------------------------------------------------------------------- #
# examples
# --------------------------------------------------------------------------- #

KEY = [0] * NUM_FIELDS


def key_with(**values: int) -> list[int]:
    key = list(KEY)
    for name, value in values.items():
        key[F(name.replace("__", "."))] = value
    return key


def test_higher_priority_wins_across_subtables() -> None:
    low = rule(0, 10, exact("eth.dst", 5))
    high = rule(0, 20, exact("ip4.src", 7))
    cls, _ = build([low, high])
    assert cls.lookup(0, key_with(eth__dst=5, ip4__src=7)) is high
    assert cls.lookup(0, key_with(eth__dst=5, ip4__src=8)) is low
    assert cls.lookup(0, key_with(eth__dst=6)) is None
    assert cls.lookup(9, key_with(eth__dst=5)) is None  # unknown table


def test_ties_go_to_the_earlier_rule_and_reconciliation_keeps_them() -> None:
    first = rule(0, 5, exact("tp.dst", 80), tag="first")
    second = rule(0, 5, exact("ip4.src", 1), tag="second")
    key = key_with(tp__dst=80, ip4__src=1)
    cls, _ = build([first, second])
    assert cls.lookup(0, key) is first
    cls.replace_all([second, first])  # same set: nothing moves
    assert cls.lookup(0, key) is first
    cls.remove(first)
    cls.add(first)  # re-added: now the later one
    assert cls.lookup(0, key) is second


def test_duplicate_add_is_a_noop_and_keeps_the_cookie() -> None:
    one = Rule(0, 1, (exact("tp.dst", 22),), ("a",), cookie="old")
    again = Rule(0, 1, (exact("tp.dst", 22),), ("a",), cookie="new")
    cls = Classifier()
    assert cls.add(one)
    version = cls.version
    assert not cls.add(again)
    assert cls.version == version
    hit = cls.lookup(0, key_with(tp__dst=22))
    assert hit is not None
    assert hit.cookie == "old"


def test_matches_on_one_field_merge_and_conflicts_never_match() -> None:
    trk_new = rule(0, 1, FieldMatch("ct_state", 0x20, 0x20), FieldMatch("ct_state", 0x01, 0x01))
    conflict = rule(0, 9, FieldMatch("ct_state", 0x01, 0x03), FieldMatch("ct_state", 0x02, 0x02))
    cls, _ = build([trk_new, conflict])
    assert cls.lookup(0, key_with(ct_state=0x21)) is trk_new
    assert cls.lookup(0, key_with(ct_state=0x23)) is trk_new  # conflict never matches
    assert cls.lookup(0, key_with(ct_state=0x20)) is None
    assert [s.signature for s in cls.subtables(0)] == [{"ct_state": 0x21}]
    cls.remove(conflict)
    assert conflict not in cls
    assert len(cls) == 1


def test_catch_all_rule_has_an_empty_signature() -> None:
    default = rule(0, 0, tag="default")
    specific = rule(0, 5, exact("eth.dst", 1))
    cls, _ = build([default, specific])
    wc = Wildcards()
    assert cls.lookup(0, key_with(eth__dst=2), wc) is default
    assert wc.as_dict() == {"eth.dst": field("eth.dst").full_mask}


def test_wildcards_only_cover_tables_fields() -> None:
    """A table matching only eth.dst leaves ip4.src wildcarded, on a hit and a miss."""
    cls, _ = build([rule(0, 1, exact("eth.dst", n)) for n in range(3)])
    for dst in (1, 99):
        wc = Wildcards()
        cls.lookup(0, key_with(eth__dst=dst, ip4__src=0x0A000001), wc)
        assert wc.masks[F("ip4.src")] == 0
        assert wc.as_dict() == {"eth.dst": field("eth.dst").full_mask}


def test_priority_sorting_skips_subtables_that_cannot_win() -> None:
    high = rule(0, 100, FieldMatch("ip4.src", 0x0A000000, 0xFF000000))
    low = rule(0, 1, exact("tp.dst", 443))
    cls, _ = build([high, low])
    wc = Wildcards()
    assert cls.lookup(0, key_with(ip4__src=0x0A010203, tp__dst=443), wc) is high
    assert wc.as_dict() == {"ip4.src": 0xFF000000}  # tp.dst never probed
    wc = Wildcards()
    assert cls.lookup(0, key_with(ip4__src=0x0B010203, tp__dst=443), wc) is low
    assert wc.as_dict() == {"ip4.src": 0xFF000000, "tp.dst": 0xFFFF}


def test_version_moves_once_per_change() -> None:
    a, b = rule(0, 1, exact("tp.dst", 1)), rule(1, 1, exact("tp.dst", 2))
    cls = Classifier()
    assert cls.version == 0
    assert cls.apply(add=[a, b]) == Delta(2, 0)
    assert cls.version == 1
    assert cls.replace_all([a, b]) == Delta(0, 0)
    assert cls.version == 1
    assert not cls.discard(rule(0, 7))
    assert cls.version == 1
    assert cls.discard(a)
    assert cls.version == 2
    cls.clear()
    assert cls.version == 3
    assert len(cls) == 0
    assert cls.tables() == []


def test_apply_is_all_or_nothing() -> None:
    a, b = rule(0, 1, exact("tp.dst", 1)), rule(0, 2, exact("tp.dst", 2))
    cls, _ = build([a])
    version = cls.version
    with pytest.raises(KeyError, match="not installed"):
        cls.apply(add=[b], remove=[a, rule(0, 3)])
    with pytest.raises(ValueError, match="negative priority"):
        cls.apply(add=[b, rule(0, -1)], remove=[a])
    assert list(cls.rules()) == [a]
    assert cls.version == version


def test_subtables_are_listed_in_probe_order() -> None:
    cls, _ = build(
        [
            rule(3, 10, exact("eth.dst", 1)),
            rule(3, 10, exact("eth.dst", 2)),
            rule(3, 50, exact("metadata", 1), exact("tp.dst", 80)),
        ]
    )
    info = cls.subtables(3)
    assert [(s.signature, s.rules, s.max_priority) for s in info] == [
        ({"metadata": 0xFFFFFFFF, "tp.dst": 0xFFFF}, 1, 50),
        ({"eth.dst": field("eth.dst").full_mask}, 2, 10),
    ]
    cls.remove(rule(3, 50, exact("metadata", 1), exact("tp.dst", 80)))
    assert [s.max_priority for s in cls.subtables(3)] == [10]
    assert cls.subtables(4) == []


def test_wildcards_helpers() -> None:
    wc = Wildcards()
    wc.add_field("ip4.dst", 0xFFFFFF00)
    wc.add(F("tp.dst"), 0xFFFF)
    other = Wildcards()
    other.add_field("ip4.dst")
    assert not wc.covers(other)
    assert other.covers(Wildcards())
    wc.union(other)
    assert wc.covers(other)
    assert wc.signature() == ((F("ip4.dst"), 0xFFFFFFFF), (F("tp.dst"), 0xFFFF))
    assert wc.masked(key_with(ip4__dst=7, tp__dst=8, eth__src=9))[F("eth.src")] == 0
    assert wc.copy() == wc
    assert wc.copy() is not wc
    assert repr(wc) == "Wildcards(ip4.dst=0xffffffff, tp.dst=0xffff)"
    masks = wc.masks
    wc.reset()
    assert wc == Wildcards()
    assert wc.masks is masks  # reused, as the lookup code holds on to it
    with pytest.raises(ValueError, match="masks"):
        Wildcards([0])
