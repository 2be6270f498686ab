"""Conntrack when the store cannot be reached: per-request results, never an exception."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import CT_EST, CT_INV, CT_NEW, CT_TRK
from netvirt.dataplane.nf import Conntrack, CtRequest, CtTuple, NatRequest, Snat
from netvirt.state import Entry, MemoryStore, StateStoreError, StateStoreUnavailable
from netvirt.state.store import Op

SYN, ACK = 0x02, 0x10
ZONE = 0x10001


class StepFailingStore(MemoryStore):
    """Round trips after the first ``good`` ones raise ``error``."""

    def __init__(self, good: int, error: StateStoreError) -> None:
        super().__init__()
        self.good = good
        self.error = error
        self.trips = 0

    def _trip(self) -> None:
        self.trips += 1
        if self.trips > self.good:
            raise self.error

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        self._trip()
        return super().get_many(keys)

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        self._trip()
        return super()._execute(ops)


def tcp(sport: int) -> CtTuple:
    return CtTuple(4, 6, 0x0A000001, 0x0A000002, sport, 80)


def established(ct: Conntrack, t: CtTuple) -> None:
    ct.process(ZONE, t, SYN, 1.0, commit=True)
    ct.process(ZONE, t.reversed(), SYN | ACK, 1.0)
    ct.process(ZONE, t, ACK, 1.0)


@pytest.mark.parametrize("fail", ["closed", "open"])
def test_requests_decided_before_the_failure_keep_their_results(fail: str) -> None:
    """Step 1 (lookups) works, step 2 (creating) fails: only the new connection pays."""
    store = StepFailingStore(good=10**6, error=StateStoreUnavailable("down"))
    ct = Conntrack(store, fail=fail)
    established(ct, tcp(1000))
    store.good = store.trips + 1  # the batch's lookup works, its writes do not
    old, new = ct.process_batch(
        [CtRequest(ZONE, tcp(1000), ACK), CtRequest(ZONE, tcp(2000), SYN, commit=True)], 2.0
    )
    assert old.state == CT_TRK | CT_EST
    assert not old.unavailable
    assert new.unavailable
    if fail == "closed":
        assert (new.state, new.drop) == (CT_TRK | CT_INV, DropReason.STATE_UNAVAILABLE)
    else:
        assert (new.state, new.drop, new.entry) == (CT_TRK | CT_EST, None, None)


def test_open_never_invents_a_translation() -> None:
    ct = Conntrack(StepFailingStore(0, StateStoreUnavailable("down")), fail="open")
    nat = NatRequest(snat=Snat(0xC0000201, (1024, 65535)))
    plain, masq = ct.process_batch(
        [CtRequest(ZONE, tcp(1), SYN, commit=True), CtRequest(ZONE, tcp(2), SYN, nat=nat)], 1.0
    )
    assert plain.state == CT_TRK | CT_EST
    assert masq.drop is DropReason.STATE_UNAVAILABLE


def test_other_store_errors_fail_closed_even_when_open() -> None:
    ct = Conntrack(StepFailingStore(0, StateStoreError("WRONGTYPE")), fail="open")
    result = ct.process(ZONE, tcp(1), SYN, 1.0, commit=True)
    assert result.drop is DropReason.STATE_UNAVAILABLE
    assert result.unavailable


def test_after_the_store_returns_the_connection_is_created_normally() -> None:
    store = StepFailingStore(0, StateStoreUnavailable("down"))
    ct = Conntrack(store)
    assert ct.process(ZONE, tcp(1), SYN, 1.0, commit=True).drop is DropReason.STATE_UNAVAILABLE
    store.good = 10**6
    result = ct.process(ZONE, tcp(1), SYN, 1.5, commit=True)
    assert (result.state, result.drop) == (CT_TRK | CT_NEW, None)
    assert result.entry is not None
