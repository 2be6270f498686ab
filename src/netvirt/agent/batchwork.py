"""The forwarder's batch work: what a packet carries on its way through
:class:`~netvirt.agent.forwarder.Forwarder` (split out of ``forwarder.py`` to keep it
readable), and the small helpers of its dispatch."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from netvirt.agent.counters import Item, PortCounters
from netvirt.agent.parking import Pair
from netvirt.agent.physical import PhysicalState, Remote
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fastpath import TCP4, TCP6, Entry, Layout, Output, derive, frame_key
from netvirt.dataplane.fields import CT_EST, CT_INV, CT_NEW, CT_REL
from netvirt.dataplane.pipeline import Topology, Verdict
from netvirt.dataplane.ports.base import Frame

BatchItem = tuple[bytes, int, int, int | None, float]  # frame, datapath, inport, outport, now


@dataclass(frozen=True, slots=True)
class ToTunnel:
    """A cached output's destination on another chassis (``Output.dest``)."""

    remote: Remote
    vni: int
    ingress: int
    egress: int


@dataclass(slots=True)
class Miss:
    """A frame on its way to the slow path, with what the cache knew of its flow."""

    frame: Frame
    now: float
    key: Hashable
    found: tuple[bytes, Layout] | None
    expired: Entry | None
    iface: str | None = None  # received on this local interface (megaflows are per port)


Work = tuple[Miss, PortCounters, BatchItem]  # a slow-path packet, where it counts, its item


@dataclass(slots=True)
class Job:
    """One slow-path batch on the store: done at once (``inline``) or parked."""

    inline: bool = True
    verdicts: list[Verdict] = field(default_factory=list)
    pairs: set[Pair] = field(default_factory=set)


@dataclass
class Outbox:
    """Frames collected while handling a batch, sent once per destination."""

    local: dict[str, list[Item]] = field(default_factory=dict)
    tunnel: list[tuple[ToTunnel, Item]] = field(default_factory=list)
    vxlan_seen: set[tuple[str, int, bytes]] = field(default_factory=set)


def store_down(verdict: Verdict) -> bool:
    """The slow path failed only because the state store could not be reached."""
    return not verdict.outputs and DropReason.STATE_UNAVAILABLE in verdict.drops


def l2_targets(physical: PhysicalState, dp: int, frame: bytes) -> tuple[int, ...]:
    """Local ports a VXLAN frame is for: by destination MAC, or every flood member."""
    if frame[0] & 1:
        return physical.flood.get(dp, ())
    return physical.macs.get((dp, int.from_bytes(frame[:6], "big")), ())


def keep_learned(old: Topology, new: Topology) -> None:
    """Carry MAC bindings learned by the pipeline over to a new topology (SB ones win)."""
    learned = {k: v for k, v in old.mac_bindings.items() if (k[0], k[1]) in new.ports}
    new.mac_bindings = learned | new.mac_bindings


SYN_RECV = 2  # nf.codec.CtState.SYN_RECV


def reply_of(result: object) -> bool:
    """A conntrack result's direction (``nf.CtResult.reply``)."""
    return bool(getattr(result, "reply", False))


def syn_ack_half(
    iface: str, data: bytes, seeded: bool, verdict: Verdict, wires: list[tuple[Hashable, bytes]],
    now: float,
) -> tuple[Hashable, Entry] | None:  # fmt: skip
    """A SYN-ACK's outcome as an exact-cache key and entry for its direction of its
    connection, or None. Not cacheable itself (SYN_RECV, a SYN), it is the outcome of
    every later packet of that direction while the connection is established: the
    same ct_state bits (est, rpl, NAT), mark and 5-tuple. Offered to the kernel
    connections (``offload/conns.py``) as the reply direction's half, so that the
    original direction's first ACK completes the hand-over."""
    if len(wires) != 1 or verdict.drops or not verdict.ct:
        return None
    framed = frame_key(data)
    layout = framed[1] if framed is not None else None
    if layout is None or layout.name not in (TCP4.name, TCP6.name):
        return None
    if data[47 if layout.name == TCP4.name else 67] & 0x17 != 0x12:
        return None  # only SYN+ACK
    deps: list[tuple[Hashable, int]] = []
    for result in verdict.ct:
        entry, bits = getattr(result, "entry", None), getattr(result, "state", 0)
        if entry is None or not reply_of(result) or getattr(result, "drop", None) is not None:
            return None
        if int(entry.state) != SYN_RECV or not bits & CT_EST or bits & (CT_NEW | CT_INV | CT_REL):
            return None
        deps.append(((entry.zone, entry.orig, entry.serial), 0))
    rewrite = derive(data, wires[0][1], layout, seeded)
    if rewrite is None:
        return None
    covered = b"".join(data[start:stop] for start, stop in layout.covered)
    entry = Entry((Output(wires[0][0], rewrite),), (), tuple(deps), now, (True,) * len(deps))
    return (iface, covered, seeded), entry
