"""The pipeline's conntrack calls: the interface it needs from connection tracking and
how a call is answered (one at a time, or a batch's calls together).

Split out of ``pipeline.py``; see "Batches" there for how a walk waits at a conntrack
action, and ``segments.py`` for how the walk is cached around these calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import F
from netvirt.dataplane.nf.codec import CtTuple, quoted_tuple
from netvirt.dataplane.nf.flowkey import CtCall
from netvirt.dataplane.packet import Packet
from netvirt.state.jobs import Steps
from netvirt.state.store import StateStoreError

_CT_STATE = F("ct_state")
_ICMP_ERRORS = {4: (3, 4, 5, 11, 12), 6: (1, 2, 3, 4)}


class ConnTracker(Protocol):
    """What the pipeline needs from connection tracking (see dataplane/nf)."""

    def ct_next(
        self, zone: int, key: list[int], now: float, related: CtTuple | None = None
    ) -> int: ...
    def ct_commit(self, zone: int, key: list[int], now: float, mark: int | None) -> None: ...
    def ct_nat(
        self, zone: int, key: list[int], now: float, action: A.CtDnat | A.CtSnat
    ) -> None: ...
    def ct_lb(self, zone: int, key: list[int], now: float, action: A.CtLb) -> bool: ...


class BatchConnTracker(Protocol):
    """A conntracker that answers the conntrack actions of a packet batch at once
    (``FlowKeyConntrack``); the pipeline uses it when the tracker has ``ct_batch``."""

    def ct_batch(self, calls: Sequence[CtCall]) -> None: ...


def call_one(conntrack: ConnTracker, call: CtCall) -> None:
    """A conntracker without ``ct_batch``: its one-call methods, at once."""
    ct, act, zone, key, now = conntrack, call.action, call.zone, call.key, call.now
    try:
        if isinstance(act, A.CtNext):
            call.state = ct.ct_next(zone, key, now, call.related)
        elif isinstance(act, A.CtLb):
            call.ok = ct.ct_lb(zone, key, now, act)
        elif isinstance(act, A.CtCommit):
            ct.ct_commit(zone, key, now, act.mark)
        else:
            ct.ct_nat(zone, key, now, act)
    except StateStoreError:
        call.drop, call.store_failed = DropReason.STATE_UNAVAILABLE, True
    call.result = getattr(ct, "last", None)


def answer_steps(conntrack: object, calls: list[CtCall]) -> Steps[None]:
    """One step of a batch: all waiting conntrack calls in one ``ct_steps`` (its round
    trips yielded) or, for a tracker without it, one synchronous ``ct_batch``.

    Both handle store failures themselves; this only guards against a tracker
    that lets one through (the batch fails closed, never raises)."""
    steps = getattr(conntrack, "ct_steps", None)
    try:
        if steps is not None:
            yield from steps(calls)
        else:
            batcher: BatchConnTracker = conntrack  # type: ignore[assignment]
            batcher.ct_batch(calls)
    except StateStoreError:
        for call in calls:
            call.drop, call.store_failed = DropReason.STATE_UNAVAILABLE, True


def ct_detail(act: object, zone: int, key: list[int]) -> str:
    """The trace line of an answered ``ct_next``/``ct_lb``/``ct_dnat``/``ct_snat``."""
    if isinstance(act, A.CtNext):
        return f"ct_next zone={zone:#x} state={key[_CT_STATE]:#x}"
    if isinstance(act, A.CtLb):
        return f"ct_lb -> {key[F('ip4.dst')]:#x}:{key[F('tp.dst')]}"
    return f"{type(act).__name__} zone={zone:#x}"


def quoted(packet: Packet) -> CtTuple | None:
    """The connection an ICMP error quotes (for ct.rel), or None."""
    if packet.ip_version not in (4, 6) or packet.ip_proto not in (1, 58):
        return None
    if packet.icmp_type not in _ICMP_ERRORS[packet.ip_version]:
        return None
    quote = packet.payload if packet.ip_version == 4 else packet.payload[4:]
    return quoted_tuple(packet.ip_version, quote)
