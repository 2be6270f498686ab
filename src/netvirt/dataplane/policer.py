"""Token-bucket policers: QoS ``bandwidth_limit`` rules enforced per port.

Theory of operation
-------------------
A :class:`Policer` is a bucket of byte credit: it holds at most ``capacity``
bytes, refills at ``rate`` bytes per second, and a frame passes only when the
bucket holds at least its length (which is then spent); otherwise the frame is
dropped. This is policing (as Open vSwitch's ingress policing and Neutron's
OVS/OVN backends do), not shaping: nothing is queued, so a policer never
delays or reorders and costs O(1) per frame. Two properties follow, and the
tests check both with Hypothesis:

* over any interval [t0, t1] the bytes passed never exceed
  ``capacity + rate * (t1 - t0)``;
* a stream that stays within that envelope is never dropped (the bucket
  starts full).

Arithmetic is exact: time in integer nanoseconds, credit in byte-nanoseconds
(bytes * 10**9), so a stream exactly on the envelope's edge passes and the bound
holds with no rounding slack. A clock that steps back refills nothing.

Units are Neutron's: ``max_kbps`` kilobits (1000 bits) per second → rate =
``max_kbps * 125`` bytes/s; ``max_burst_kbps`` kilobits → ``* 125`` bytes.
The SB already carries the burst to use (Neutron's default of 80 % of the
rate when the rule says 0). Capacity is at least ``min_burst_bytes``: a frame
larger than the bucket could never pass, and TAP ports with offloads hand
the datapath TCP super-frames of up to 64 KiB (:data:`MIN_BURST_BYTES`), so a
small burst would otherwise stop TCP dead instead of slowing it down.

Directions, from the VM's side as in Neutron: **egress** is what the VM
sends, policed where the datapath receives it from the interface
(:meth:`PortPolicers.police_rx`); **ingress** is what the VM receives,
policed before the datapath sends it to the interface
(:meth:`PortPolicers.police_tx`). A dropped frame counts as
``DropReason.QOS_POLICED`` (the caller counts it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from netvirt.southbound.model import SBState

NS = 1_000_000_000
BYTES_PER_KBIT = 125  # 1000 bits / 8
MIN_BURST_BYTES = 65535 + 18  # the largest IP packet in an Ethernet frame with a VLAN tag


class RateLimit(Protocol):
    """A bandwidth limit in Neutron's units (``southbound.model.BandwidthLimit``)."""

    @property
    def max_kbps(self) -> int: ...

    @property
    def max_burst_kbps(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Spec:
    """What a policer enforces: the rule's numbers (kbit/s, kbit) and the capacity floor."""

    max_kbps: int
    burst_kbit: int
    min_burst_bytes: int = 0

    @classmethod
    def of(cls, limit: RateLimit, min_burst_bytes: int = 0) -> Spec:
        return cls(limit.max_kbps, limit.max_burst_kbps, min_burst_bytes)


class Policer:
    """One token bucket (see the module docstring); ``allow`` per frame."""

    __slots__ = (
        "_cap",
        "_credit",
        "_last",
        "capacity",
        "dropped_bytes",
        "dropped_packets",
        "passed_bytes",
        "passed_packets",
        "rate",
        "spec",
    )

    def __init__(self, spec: Spec) -> None:
        if spec.max_kbps <= 0:
            raise ValueError("a policer needs a positive rate")
        self.spec = spec
        self.rate = spec.max_kbps * BYTES_PER_KBIT  # bytes per second = credit units per ns
        self.capacity = max(spec.burst_kbit * BYTES_PER_KBIT, spec.min_burst_bytes, 1)
        self._cap = self.capacity * NS
        self._credit = self._cap  # starts full: a conforming stream is never dropped
        self._last: int | None = None
        self.passed_packets = self.passed_bytes = 0
        self.dropped_packets = self.dropped_bytes = 0

    def allow(self, size: int, now: float) -> bool:
        """Does a frame of ``size`` bytes arriving at ``now`` (seconds) conform? If so
        its credit is spent."""
        t = round(now * NS)
        if self._last is not None and t > self._last:
            self._credit = min(self._cap, self._credit + self.rate * (t - self._last))
        if self._last is None or t > self._last:
            self._last = t
        cost = size * NS
        if cost <= self._credit:
            self._credit -= cost
            self.passed_packets += 1
            self.passed_bytes += size
            return True
        self.dropped_packets += 1
        self.dropped_bytes += size
        return False

    def as_dict(self) -> dict[str, int]:
        return {
            "max_kbps": self.spec.max_kbps,
            "burst_bytes": self.capacity,
            "passed_packets": self.passed_packets,
            "passed_bytes": self.passed_bytes,
            "dropped_packets": self.dropped_packets,
            "dropped_bytes": self.dropped_bytes,
        }


Limits = tuple[RateLimit | None, RateLimit | None]  # (egress: from the VM, ingress: to it)


def _keep_or_new(old: Policer | None, spec: Spec | None) -> Policer | None:
    if spec is None:
        return None
    return old if old is not None and old.spec == spec else Policer(spec)


class PortPolicers:
    """The policers of every local port, keyed by whatever the datapath uses (the
    interface name with :meth:`update_from_sb`).

    :meth:`update` with the limits now in force: a port whose numbers did not
    change keeps its bucket (and its credit and counters), a changed one gets
    a new full bucket, a port without limits loses its policers. Ports without
    a policer pass everything at the cost of one dict lookup.
    """

    def __init__(self, min_burst_bytes: int = MIN_BURST_BYTES) -> None:
        self.min_burst_bytes = min_burst_bytes
        self.rx: dict[str, Policer] = {}  # VM egress, policed on receive
        self.tx: dict[str, Policer] = {}  # VM ingress, policed before send

    def _spec(self, limit: RateLimit | None) -> Spec | None:
        if limit is None or limit.max_kbps <= 0:
            return None
        return Spec.of(limit, self.min_burst_bytes)

    def update(self, limits: Mapping[str, Limits]) -> None:
        """Enforce ``limits`` (key → (egress, ingress)) from now on."""
        rx: dict[str, Policer] = {}
        tx: dict[str, Policer] = {}
        for key, (egress, ingress) in limits.items():
            if (p := _keep_or_new(self.rx.get(key), self._spec(egress))) is not None:
                rx[key] = p
            if (p := _keep_or_new(self.tx.get(key), self._spec(ingress))) is not None:
                tx[key] = p
        self.rx, self.tx = rx, tx

    def update_from_sb(self, sb: SBState, local: Mapping[str, str]) -> None:
        """Limits from the SB port bindings; ``local`` maps each local logical port to its
        interface (``Bindings.local``). Policers are keyed by interface."""
        limits: dict[str, Limits] = {}
        for port, iface in local.items():
            pb = sb.ports.get(port)
            if pb is not None and (pb.egress_limit or pb.ingress_limit):
                limits[iface] = (pb.egress_limit, pb.ingress_limit)
        self.update(limits)

    def police_rx(self, key: str, frame_len: int, now: float) -> bool:
        """A frame the VM sent (received from its interface): pass it?"""
        policer = self.rx.get(key)
        return policer is None or policer.allow(frame_len, now)

    def police_tx(self, key: str, frame_len: int, now: float) -> bool:
        """A frame for the VM (about to be sent to its interface): pass it?"""
        policer = self.tx.get(key)
        return policer is None or policer.allow(frame_len, now)

    def counters(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per key, ``egress``/``ingress`` policer state and counters (for status docs)."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for direction, table in (("egress", self.rx), ("ingress", self.tx)):
            for key, policer in table.items():
                out.setdefault(key, {})[direction] = policer.as_dict()
        return dict(sorted(out.items()))
