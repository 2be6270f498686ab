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
from netvirt.dataplane.fastpath import Entry, Layout
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
