"""What a conntrack call asks and answers: :class:`CtRequest`, :class:`CtResult`,
:class:`CtHit` (split out of ``conntrack.py``, which re-exports them)."""

from __future__ import annotations

from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.nf.codec import CtEntry, CtTuple
from netvirt.dataplane.nf.nat import NatRequest


@dataclass(frozen=True, slots=True)
class CtRequest:
    """One conntrack call for one packet.

    ``commit``: create the connection if it is new (and set ``mark``, if
    given, on it whether new or not). ``nat``: translate the packet (a
    ``NatRequest`` with targets also creates NAT for a new connection, which
    commits it). ``related``: the tuple quoted by an ICMP error (the packet is
    then looked up as related, never as a connection of its own). ``hint``: the
    entry this packet was already matched to in this zone by an earlier call
    (the kernel's skb→conntrack association), so that a packet whose tuple NAT
    has already rewritten still finds its connection.
    """

    zone: int
    tuple: CtTuple
    tcp_flags: int = 0
    commit: bool = False
    mark: int | None = None
    nat: NatRequest | None = None
    related: CtTuple | None = None
    hint: CtEntry | None = None


@dataclass(frozen=True, slots=True)
class CtResult:
    """What conntrack decided: ct_state bits, the entry, the packet's tuple after NAT.

    ``quoted`` is the translated quoted tuple of a related ICMP error; ``drop``
    is set when the packet cannot go on (no LB backend, NAT failure, store
    unreachable); ``note`` explains the decision for traces. ``unavailable``:
    the store could not be reached and ``Conntrack.fail`` decided.
    """

    state: int
    entry: CtEntry | None
    reply: bool
    tuple: CtTuple
    quoted: CtTuple | None = None
    drop: DropReason | None = None
    note: str = ""
    unavailable: bool = False  # the store could not be asked: decided by the failure policy

    @property
    def mark(self) -> int:
        return self.entry.mark if self.entry is not None else 0


@dataclass(frozen=True, slots=True)
class CtHit:
    """A live connection found by :meth:`Conntrack.lookup_batch`."""

    entry: CtEntry
    reply: bool
