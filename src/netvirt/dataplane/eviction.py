"""Eviction for the grouped caches (megaflows, segments): a whole eighth at once.

Why at once: a dict emptied from the front keeps its deleted slots until it is
resized, and finding the first live entry walks over them — about 100 µs per
insert once a full cache churns (measured for the exact cache, see
``fastpath.evict_oldest``). Both grouped caches keep their insertion order as a
dict of ``(group, masked key)``; the oldest eighth leaves its groups and a new
order dict is built from the rest.
"""

from __future__ import annotations

import itertools
from typing import Any, TypeVar

# (group, masked key): the group has ``entries``, masked key -> entry
Slot = TypeVar("Slot", bound=tuple[Any, Any])


def evict_grouped(order: dict[Slot, None], capacity: int) -> tuple[dict[Slot, None], int]:
    """``order`` without its oldest eighth (at least one), each of those removed from its
    group; and how many went."""
    drop = max(1, capacity // 8)
    for group, key in itertools.islice(order, drop):
        group.entries.pop(key, None)
    return dict(itertools.islice(order.items(), drop, None)), drop


def place(order: dict[Slot, None], slot: Slot, capacity: int) -> tuple[dict[Slot, None], int]:
    """``order`` with ``slot`` recorded as its newest, the oldest eighth evicted first when
    a new slot finds it full; and how many were evicted (the caller then stores the
    entry in the slot's group)."""
    dropped = 0
    if slot not in order and len(order) >= capacity:
        order, dropped = evict_grouped(order, capacity)
    order[slot] = None
    return order, dropped
