"""Classifier rules: masked field matches, a priority, actions and provenance.

A :class:`Rule` is what the datapath executes. Logical flows compile to one
or more rules (a disjunction in the match becomes several rules with the same
priority and actions); ``cookie`` carries the provenance of the logical flow
so the datapath trace can say which builder and NB object produced a hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from netvirt.dataplane.fields import BY_NAME


@dataclass(frozen=True, slots=True, order=True)
class FieldMatch:
    """``key[field] & mask == value`` (``value`` is already masked)."""

    field: str
    value: int
    mask: int

    def __post_init__(self) -> None:
        spec = BY_NAME.get(self.field)
        if spec is None:
            raise ValueError(f"unknown field {self.field!r}")
        if self.mask & ~spec.full_mask or self.value & ~self.mask:
            raise ValueError(
                f"value/mask out of range for {self.field}: {self.value:#x}/{self.mask:#x}"
            )

    def matches(self, key: Sequence[int]) -> bool:
        return key[BY_NAME[self.field].index] & self.mask == self.value


def exact(name: str, value: int) -> FieldMatch:
    return FieldMatch(name, value, BY_NAME[name].full_mask)


@dataclass(frozen=True, slots=True)
class Rule:
    table: int
    priority: int
    match: tuple[FieldMatch, ...]
    actions: tuple[Any, ...]
    cookie: Any = field(default=None, compare=False)
    # the hash, made once: an install of 150k rules hashes each in the translator, the
    # reconciler's plan and the classifier, and a rule's hash walks every match and action
    _hash: int = field(init=False, default=0, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            made = hash((self.table, self.priority, self.match, self.actions))
        except TypeError:  # unhashable actions: hashing the rule raises, as it always did
            made = -1  # never a hash value in CPython
        object.__setattr__(self, "_hash", made)

    def __hash__(self) -> int:
        if self._hash == -1:
            return hash((self.table, self.priority, self.match, self.actions))
        return self._hash

    def __reduce__(self) -> tuple[type[Rule], tuple[Any, ...]]:
        # rebuilt (and hashed again) on unpickling: string hashes differ between processes
        return Rule, (self.table, self.priority, self.match, self.actions, self.cookie)

    def matches(self, key: Sequence[int]) -> bool:
        return all(m.matches(key) for m in self.match)
