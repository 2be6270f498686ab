"""The slow path's lookup (without wildcards: answered from the table's memo when the
key's bits under the union of the table's masks were seen before) answers as the
reference classifier and as the full search, across random changes that must replace
the memo."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from dataplane.test_classifier import TABLES, keys, relaxed, rules
from dataplane.test_classifier_stateful import ClassifierVsReference
from netvirt.dataplane import classifier as classifier_module
from netvirt.dataplane.classifier import Classifier, Wildcards
from netvirt.dataplane.fields import F, new_key
from netvirt.dataplane.flow import FieldMatch, Rule, exact


class MemoLookupVsReference(ClassifierVsReference):
    """Lookups interleaved with changes (the reference machine's): a stale memo would answer
    wrong."""

    @rule(key=keys())
    def memo_lookup(self, key: list[int]) -> None:
        for table in (*TABLES, 99):
            want = self.ref.lookup(table, key)
            assert self.cls.lookup(table, key) == want
            assert self.cls.lookup(table, key) == want  # from the memo
            assert self.cls.lookup(table, key, Wildcards()) == want


MemoLookupVsReference.TestCase.settings = settings(relaxed, max_examples=60, stateful_step_count=25)
TestMemoLookupVsReference = MemoLookupVsReference.TestCase


def _rule(priority: int, *match: FieldMatch, tag: str) -> Rule:
    return Rule(0, priority, tuple(match), (tag,))


def test_the_memo_follows_additions_and_removals() -> None:
    cls = Classifier()
    late = _rule(1, exact("metadata", 4), tag="late")
    cls.add(late)
    key = new_key()
    key[F("metadata")], key[F("tp.dst")] = 4, 80
    assert cls.lookup(0, key) == late
    # a new subtable (another signature) in a table whose answer is remembered
    web = _rule(20, exact("metadata", 4), FieldMatch("tp.dst", 80, 0xFF), tag="web")
    cls.add(web)
    assert cls.lookup(0, key) == web
    cls.remove(web)
    assert cls.lookup(0, key) == late
    cls.remove(late)
    assert cls.lookup(0, key) is None


def test_a_full_memo_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier_module, "_MEMO_LIMIT", 4)
    cls = Classifier()
    cls.add(_rule(1, FieldMatch("tp.src", 0, 0xFFF0), tag="low ports"))
    key = new_key()
    for port in range(40):
        key[F("tp.src")] = port
        hit = cls.lookup(0, key)
        assert (hit is not None) == (port < 16)
        assert hit == cls.lookup(0, key, Wildcards())


@relaxed
@given(st.lists(rules(), max_size=25), st.lists(keys(), min_size=1, max_size=6))
def test_memo_lookup_equals_full_search(rule_list: list[Rule], key_list: list[list[int]]) -> None:
    cls = Classifier()
    cls.apply(add=rule_list)
    for _ in range(2):
        for key in key_list:
            for table in TABLES:
                assert cls.lookup(table, key) == cls.lookup(table, key, Wildcards())
