"""Stateful: random add/remove/apply/replace_all sequences keep the classifier equal to
the reference, keep megaflow wildcards sound, and move ``version`` exactly on changes."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dataplane.test_classifier import TABLES, Reference, agreeing, keys, relaxed, rules
from netvirt.dataplane.classifier import Classifier, Delta, Wildcards
from netvirt.dataplane.flow import Rule

few_rules = st.lists(rules(), max_size=8)


class ClassifierVsReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cls = Classifier()
        self.ref = Reference()
        self.version = 0

    def _changed(self, delta: Delta) -> None:
        if delta != Delta(0, 0):
            self.version += 1

    @rule(new=rules())
    def add(self, new: Rule) -> None:
        self._changed(Delta(int(self.cls.add(new)), 0))
        self.ref.add(new)

    @precondition(lambda self: self.ref.rules)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        old = data.draw(st.sampled_from(self.ref.rules))
        self.cls.remove(old)
        self.ref.remove(old)
        self._changed(Delta(0, 1))

    @rule(data=st.data(), new=few_rules)
    def apply(self, data: st.DataObject, new: list[Rule]) -> None:
        gone = data.draw(st.lists(st.sampled_from(self.ref.rules))) if self.ref.rules else []
        self._changed(self.cls.apply(add=new, remove=gone))
        self.ref.apply(new, gone)

    @rule(data=st.data(), new=few_rules)
    def replace_all(self, data: st.DataObject, new: list[Rule]) -> None:
        kept = data.draw(st.lists(st.sampled_from(self.ref.rules))) if self.ref.rules else []
        wanted = kept + new
        self._changed(self.cls.replace_all(wanted))
        self.ref.replace_all(wanted)

    @rule(key=keys(), other=keys())
    def lookup(self, key: list[int], other: list[int]) -> None:
        for table in TABLES:
            wc = Wildcards()
            got = self.cls.lookup(table, key, wc)
            assert got == self.ref.lookup(table, key)
            assert self.ref.lookup(table, agreeing(key, wc, other)) == got

    @invariant()
    def same_rules_in_tie_order(self) -> None:
        assert list(self.cls.rules()) == self.ref.rules
        assert len(self.cls) == len(self.ref.rules)
        assert self.cls.version == self.version

    @invariant()
    def no_empty_tables(self) -> None:
        for table in self.cls.tables():
            assert self.cls.subtables(table)
            assert all(s.rules for s in self.cls.subtables(table))


ClassifierVsReference.TestCase.settings = settings(relaxed, max_examples=40, stateful_step_count=20)
TestClassifierVsReference = ClassifierVsReference.TestCase
