"""Helpers shared by the network-function tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from netvirt.dataplane.nf import Conntrack
from netvirt.state import Entry, MemoryStore, StateStore
from netvirt.state.store import Op
from state.state_support import FakeClock


@dataclass
class NfEnv:
    """A store under test and the fake time given to conntrack as ``now``."""

    kind: str
    store: StateStore
    clock: FakeClock

    @property
    def now(self) -> float:
        return self.clock.now

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def conntrack(self, **kwargs: Any) -> Conntrack:
        return Conntrack(self.store, "ct:", **kwargs)


class CountingMemoryStore(MemoryStore):
    """A memory store that counts round trips: ``get_many`` calls and executed batches."""

    round_trips = 0

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        self.round_trips += 1
        return super().get_many(keys)

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        self.round_trips += 1
        return super()._execute(ops)
