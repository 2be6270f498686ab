"""The agent mirror's port index and change set, kept delta by delta, equal what a fresh
look at the mirrored state gives (``physical.port_index``; the ports that differ)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netvirt.agent.physical import port_index
from netvirt.agent.reconcile import SBMirror
from netvirt.southbound.diff import diff
from netvirt.southbound.model import PortBinding, SBState

NAMES = [f"p{i}" for i in range(6)]
PORT = st.tuples(st.sampled_from(NAMES), st.integers(1, 3), st.sampled_from(["vif", "patch"]))
STATE = st.lists(PORT, max_size=6)


def _state(generation: int, ports: list[tuple[Any, ...]]) -> SBState:
    bindings = {
        name: PortBinding(name, NAMES.index(name) + 1, dp, kind, 0xA, ())
        for name, dp, kind in ports
    }
    return SBState(generation=generation, ports=bindings)


@settings(max_examples=150, deadline=None)
@given(STATE, st.lists(STATE, min_size=1, max_size=6))
def test_index_and_changes_follow_the_deltas(
    first: list[tuple[Any, ...]], nexts: list[list[tuple[Any, ...]]]
) -> None:
    mirror = SBMirror()
    old = _state(1, first)
    mirror.load(old)
    assert mirror.take_changed() is None  # a snapshot: everything may have changed
    for generation, ports in enumerate(nexts, start=2):
        new = _state(generation, ports)
        assert mirror.apply(diff(old, new))
        want = port_index(mirror.state())
        got = mirror.index()
        assert {dp: dict(p) for dp, p in got.by_datapath.items()} == want.by_datapath
        assert dict(got.patches) == want.patches
        differ = {
            n for n in old.ports.keys() | new.ports.keys() if old.ports.get(n) != new.ports.get(n)
        }
        changed = mirror.take_changed()
        assert changed is not None
        assert differ <= changed
        old = new
