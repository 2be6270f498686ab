"""Eviction of the grouped caches: the oldest eighth leaves its groups, the rest stays in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from netvirt.dataplane.eviction import evict_grouped, place


class Group:
    def __init__(self) -> None:
        self.entries: dict[int, str] = {}


@given(st.lists(st.integers(0, 3), min_size=1, max_size=80), st.integers(1, 64))
def test_the_oldest_eighth_leaves_its_groups(placement: list[int], capacity: int) -> None:
    groups = [Group() for _ in range(4)]
    order: dict[tuple[Group, int], None] = {}
    for key, where in enumerate(placement):
        groups[where].entries[key] = f"entry {key}"
        order[(groups[where], key)] = None
    slots = list(order)
    kept, dropped = evict_grouped(order, capacity)
    assert dropped == max(1, capacity // 8)
    assert list(kept) == slots[dropped:]  # the newest, still oldest first
    for group, key in slots[:dropped]:
        assert key not in group.entries
    for group, key in kept:
        assert group.entries[key] == f"entry {key}"


def test_place_evicts_only_for_a_new_slot_of_a_full_order() -> None:
    group = Group()
    order: dict[tuple[Group, int], None] = {}
    for key in range(8):
        group.entries[key] = "x"
        order, dropped = place(order, (group, key), capacity=8)
        assert dropped == 0
    order, dropped = place(order, (group, 3), capacity=8)  # already there: nothing goes
    assert (dropped, len(order)) == (0, 8)
    order, dropped = place(order, (group, 8), capacity=8)  # new and full: the oldest goes
    assert dropped == 1
    assert 0 not in group.entries
    assert list(order)[-1] == (group, 8)
