"""Packets held behind slow-path work that waits for the state store.

Theory of operation
-------------------
With an asynchronous store (``state/jobs.py``) a batch of slow-path packets
that needs connection state is *parked* until the store answers, and the
datapath loop goes on with other packets. Other packets of the same
conversation must not overtake it: the second packet of a UDP flow would
otherwise leave before the first, and a cache hit of an older entry could pass
a packet whose connection state is being changed by the parked one. So while a
job is parked, the conversations of its packets are *held*: every later packet
of those conversations (cache hit or not) waits here, in arrival order, and is
handled again, as if just received, when the job is done.

A conversation (:func:`conversation`) is a connection for TCP, UDP and SCTP
(addresses and ports, both directions) and the pair of hosts for other IP
traffic (ICMP echo, fragments). Only packets of the parked job's conversations
wait; everything else goes on, other connections between the same two hosts
included. A conversation's backlog is bounded (``limit``): beyond it packets
are dropped (``state_backlog``), as a NIC queue would drop them. A packet whose
conversation cannot be read (not IPv4/IPv6 on an untagged frame) is never held
and so is not ordered against parked work; such packets (ARP, VLAN-tagged)
need no connection state on the slow path in practice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from netvirt.dataplane.ports.base import Frame

Pair = tuple[bytes, bytes]  # the two ends of a conversation (see conversation())
DEFAULT_LIMIT = 1024
_PORTED = frozenset({6, 17, 132})  # TCP, UDP, SCTP


def conversation(data: bytes) -> Pair | None:
    """What must keep its order: for TCP, UDP and SCTP over untagged IPv4/IPv6 the
    connection (addresses and ports), else the two hosts; in a canonical order, so both
    directions share it. None for anything else (ARP, tagged frames)."""
    kind = data[12:14]
    if kind == b"\x08\x00" and len(data) >= 34:
        a, b = data[26:30], data[30:34]
        ports = 14 + (data[14] & 0x0F) * 4
        proto = data[23]
        whole = not (data[20] & 0x3F or data[21])  # not a fragment
    elif kind == b"\x86\xdd" and len(data) >= 54:
        a, b = data[22:38], data[38:54]
        ports, proto, whole = 54, data[20], True
    else:
        return None
    if proto in _PORTED and whole and len(data) >= ports + 4:
        a += data[ports : ports + 2]
        b += data[ports + 2 : ports + 4]
        a, b = a + bytes((proto,)), b + bytes((proto,))
    return (a, b) if a <= b else (b, a)


@dataclass(slots=True)
class Held:
    """A packet waiting for its pair's parked job: from a local interface (``iface``)
    or from a tunnel (``tunnel`` = vni, logical ingress, logical egress)."""

    seq: int
    frame: Frame
    iface: str | None = None
    tunnel: tuple[int, int | None, int | None] | None = None


class Parking:
    """Host pairs with parked slow-path work and the packets waiting behind it."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.held: dict[Pair, list[Held]] = {}
        self._seq = itertools.count()
        self.held_total = 0
        self.held_max = 0
        self.overflows = 0

    def park(self, pairs: Iterable[Pair]) -> None:
        """The job carrying packets of ``pairs`` waits for the store: hold their traffic."""
        for pair in pairs:
            self.held.setdefault(pair, [])

    def hold(
        self,
        pair: Pair,
        frame: Frame,
        iface: str | None = None,
        tunnel: tuple[int, int | None, int | None] | None = None,
    ) -> bool:
        """Queue a packet behind its pair's job; False when the backlog is full (drop)."""
        queue = self.held[pair]
        if len(queue) >= self.limit:
            self.overflows += 1
            return False
        queue.append(Held(next(self._seq), frame, iface, tunnel))
        self.held_total += 1
        self.held_max = max(self.held_max, len(queue))
        return True

    def release(self, pairs: Iterable[Pair]) -> list[Held]:
        """The job is done: its pairs flow again; their held packets, in arrival order."""
        out: list[Held] = []
        for pair in pairs:
            out += self.held.pop(pair, ())
        out.sort(key=lambda held: held.seq)
        return out

    def status(self) -> dict[str, int]:
        return {
            "pairs": len(self.held),
            "holding": sum(map(len, self.held.values())),
            "held_total": self.held_total,
            "held_max": self.held_max,
            "overflows": self.overflows,
        }
