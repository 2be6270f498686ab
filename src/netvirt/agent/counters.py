"""Per-interface traffic counters of a host's datapath (what ``netvirt dp status`` shows).

Kept apart from the forwarder so the agent, the status writers and the
forwarder share one definition without importing the packet path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.ports.base import Frame

Item = bytes | Frame  # a frame on its way out: plain bytes, or with offload metadata


def size_of(item: Item) -> int:
    return len(item.data) if isinstance(item, Frame) else len(item)


@dataclass
class PortCounters:
    """Traffic through one interface (or the tunnel) and what was dropped there."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0
    drops: dict[DropReason, int] = field(default_factory=dict)

    def rx(self, size: int) -> None:
        self.rx_packets += 1
        self.rx_bytes += size

    def tx(self, frames: Sequence[Item]) -> None:
        self.tx_packets += len(frames)
        self.tx_bytes += sum(map(size_of, frames))

    def as_dict(self) -> dict[str, object]:
        return {
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "tx_errors": self.tx_errors,
            "drops": {r.value: n for r, n in sorted(self.drops.items(), key=by_value)},
        }


def by_value(item: tuple[DropReason, int]) -> str:
    return item[0].value


# what the kernel offload counts per port (offload/manager.py ``stats()["ports"]``)
OFFLOADED = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")


def fold_offloaded(ports: object, offloaded: object) -> dict[str, object]:
    """Port counters (``PortCounters.as_dict`` per interface) with the frames the kernel
    offload forwarded added in, and those alone under ``"offloaded"``.

    Why: a frame the kernel served never reaches the datapath, but it did cross the
    port; a user (``netvirt host show``, the API's host counters) asks what crossed
    it, not which of the two forwarded it. Interfaces only the offload knows are
    left out (they are closing)."""
    kernel = offloaded if isinstance(offloaded, Mapping) else {}
    rows = ports if isinstance(ports, Mapping) else {}
    return {iface: fold_row(row, kernel.get(iface)) for iface, row in rows.items()}


def fold_row(row: object, extra: object) -> object:
    """One interface's (or the tunnel's) counters with the kernel's ``extra`` folded in;
    ``row`` itself when either is not a counter mapping."""
    if not isinstance(row, Mapping) or not isinstance(extra, Mapping):
        return row
    served = {name: int(extra.get(name, 0)) for name in OFFLOADED}
    merged = dict(row)
    for name, n in served.items():
        merged[name] = int(merged.get(name, 0)) + n
    merged["offloaded"] = served
    return merged
