"""Megaflows: the slow path's outcome cached for every packet agreeing on the bits it read.

Theory of operation
-------------------
*Why.* The exact flow cache (``fastpath.py``) serves the packets of a flow it
has seen, and never TCP SYN/FIN/RST: every new connection runs the slow path
for its setup, its first packet each way and its teardown, hundreds of
microseconds each. But most walks read far less than the whole header: a
switch without security groups looks at the ingress port and the destination
MAC, a router at the destination address and the TTL. As Open vSwitch's
megaflows, an entry here is keyed on only those bits, so the second connection
between two VMs is served without running a table.

*Which walks.* With ``Pipeline.record_wildcards`` every lookup of a walk is the
classifier's staged lookup (``classifier.py``), which ORs the bits it read into
``Verdict.wildcards``; each rule hit adds what its actions read or write
(``actions.megaflow_reads``, a whitelist). Any other action — conntrack, NAT,
load balancing, a generated packet, learning a MAC binding — leaves no
wildcards (None): that walk gets no megaflow (the exact cache may still take
it). The forwarder also requires what the exact cache requires (a cacheable
verdict, every output queued, the frame's offload metadata unchanged) plus no
conntrack result at all and no output through a gateway chosen per flow. A
port whose walks cannot be megaflows records only now and then (the
pipeline's backoff), so conntrack-bound traffic does not pay for recording.

*Bytes, per port.* The wildcards are over flow-key fields; the key of a frame
received on a local port is its header fields plus constants of the port
(datapath, logical inport; registers, flags and connection state start at 0).
So entries live per ingress interface, and :func:`byte_mask` turns the header
fields' masks into a mask over the frame's first ``Layout.end`` bytes for the
frame's layout (``fastpath.Layout``: IPv4/IPv6 without options or extension
headers carrying TCP, UDP or ICMP echo; TCP options are allowed, they are after
``end`` and never rewritten). The layout comes from ``fastpath.frame_key``,
which the forwarder calls once per packet for both caches (so a frame the
parser would drop still takes the slow path and is dropped there); a lookup is
then one ``int.from_bytes`` of the header and one ``&`` and dict probe per mask
group of that port and layout. SYN, FIN and
RST are served too: ``tcp.flags`` is in the mask only when a rule read it.

*Outputs.* The rewrite is derived as for the exact cache (``fastpath.derive``)
from the learning packet. Every field an action wrote is exact in the mask
(``megaflow_reads``), and every byte the rewrite patches is added to the mask
besides (more specific is always correct), so all packets of a megaflow have
the same bytes where the output differs from the input: the patches and the
checksum adjustments are constants of the megaflow. Several megaflows may
cover a packet; each gives the slow path's answer for it, the first found is
used.

*Validity.* As the exact cache: entries go when the installed state changes
(:meth:`MegaflowCache.flush`, from ``FlowCache.sync``), after ``max_age``, and
the oldest eighth at once when ``capacity`` is reached. An expired entry is
dropped (the slow path runs again for one packet and learns it anew):
megaflows depend on no connection, so there is nothing to keep serving while
the store is down.

Thread-safety: none; one cache per datapath loop.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.eviction import place
from netvirt.dataplane.fastpath import (
    ICMP4,
    ICMP6,
    TCP4,
    TCP6,
    UDP4,
    UDP6,
    Entry,
    Layout,
    Output,
    derive,
    frame_layout,
)
from netvirt.dataplane.fields import F

# where a key field sits in a frame of a layout: (start, stop, shift), the field's value
# being ``int(frame[start:stop]) >> shift`` within its width; absent fields are constant
Place = tuple[int, int, int]
_ETH = {F("eth.dst"): (0, 6, 0), F("eth.src"): (6, 12, 0), F("eth.type"): (12, 14, 0)}
_IP4 = _ETH | {
    F("ip.dscp"): (15, 16, 2),
    F("ip.ecn"): (15, 16, 0),
    F("ip.ttl"): (22, 23, 0),
    F("ip.proto"): (23, 24, 0),
    F("ip4.src"): (26, 30, 0),
    F("ip4.dst"): (30, 34, 0),
}
_IP6 = _ETH | {
    F("ip.dscp"): (14, 16, 6),
    F("ip.ecn"): (14, 16, 4),
    F("ip.proto"): (20, 21, 0),
    F("ip.ttl"): (21, 22, 0),
    F("ip6.src"): (22, 38, 0),
    F("ip6.dst"): (38, 54, 0),
}
_TP_SRC, _TP_DST, _FLAGS = F("tp.src"), F("tp.dst"), F("tcp.flags")
_ICMP_TYPE, _ICMP_CODE = F("icmp.type"), F("icmp.code")


def _l4(l4: int, kind: str) -> dict[int, Place]:
    if kind == "icmp":  # tp.src is the echo identifier (key.py), tp.dst is 0
        return {
            _ICMP_TYPE: (l4, l4 + 1, 0),
            _ICMP_CODE: (l4 + 1, l4 + 2, 0),
            _TP_SRC: (l4 + 4, l4 + 6, 0),
        }
    places = {_TP_SRC: (l4, l4 + 2, 0), _TP_DST: (l4 + 2, l4 + 4, 0)}
    if kind == "tcp":  # the key's tcp.flags is the flags byte
        places[_FLAGS] = (l4 + 13, l4 + 14, 0)
    return places


PLACES: dict[str, dict[int, Place]] = {
    TCP4.name: _IP4 | _l4(34, "tcp"),
    UDP4.name: _IP4 | _l4(34, "udp"),
    ICMP4.name: _IP4 | _l4(34, "icmp"),
    TCP6.name: _IP6 | _l4(54, "tcp"),
    UDP6.name: _IP6 | _l4(54, "udp"),
    ICMP6.name: _IP6 | _l4(54, "icmp"),
}


def byte_mask(wildcards: Sequence[int], layout: Layout) -> int:
    """The mask over ``int.from_bytes(frame[:layout.end])`` of the header bits behind
    ``wildcards`` (per key field) in frames of ``layout``."""
    end = layout.end
    mask = 0
    for index, (start, stop, shift) in PLACES[layout.name].items():
        bits = wildcards[index]
        if bits:
            window = (bits << shift) & ((1 << 8 * (stop - start)) - 1)
            mask |= window << 8 * (end - stop)
    return mask


class _Group:
    """The megaflows of one port, layout and mask: masked header → entry."""

    __slots__ = ("entries", "mask")

    def __init__(self, mask: int) -> None:
        self.mask = mask
        self.entries: dict[int, Entry] = {}


@dataclass
class MegaflowCounters:
    hits: int = 0
    misses: int = 0  # frames with a layout that no megaflow covered
    inserts: int = 0
    expired: int = 0
    evictions: int = 0
    flushes: int = 0


@dataclass
class MegaflowCache:
    """Per ingress interface, layout and offload checksum seed: mask groups; see the module
    docstring."""

    capacity: int = 16_384
    max_age: float = 0.5
    counters: MegaflowCounters = field(default_factory=MegaflowCounters)
    # (iface, layout name, seeded) -> groups, most recently created last
    groups: dict[tuple[Hashable, str, bool], list[_Group]] = field(default_factory=dict)
    order: dict[tuple[_Group, int], None] = field(default_factory=dict)  # insertion order

    def flush(self) -> None:
        if self.order:
            self.counters.flushes += 1
        self.groups.clear()
        self.order.clear()

    def lookup(
        self, port: Hashable, data: bytes, seeded: bool, now: float, layout: Layout
    ) -> Entry | None:
        """The entry covering ``data`` (of ``layout``: ``fastpath.frame_key``'s, which the
        caller found already) received on ``port``, or None."""
        groups = self.groups.get((port, layout.name, seeded))
        if groups is not None:
            header = int.from_bytes(data[: layout.end], "big")
            for group in groups:
                masked = header & group.mask
                entry = group.entries.get(masked)
                if entry is None:
                    continue
                if now - entry.born > self.max_age:
                    del group.entries[masked]
                    self.order.pop((group, masked), None)
                    self.counters.expired += 1
                    break
                self.counters.hits += 1
                return entry
        self.counters.misses += 1
        return None

    def learn(
        self,
        port: Hashable,
        data: bytes,
        seeded: bool,
        wildcards: Sequence[int],
        outputs: Sequence[tuple[Hashable, bytes]],
        drops: Sequence[DropReason],
        now: float,
    ) -> Entry | None:
        """Insert the megaflow of a walk of ``data`` (``outputs``: destination and frame
        bytes); the entry, or None when the outcome is not a rewrite of the input."""
        layout = frame_layout(data)
        if layout is None:
            return None
        mask = byte_mask(wildcards, layout)
        end = layout.end
        cached: list[Output] = []
        for dest, wire in outputs:
            rewrite = derive(data, wire, layout, seeded)
            if rewrite is None:
                return None
            for offset, value in rewrite.patches:  # patched bytes: exact in the megaflow
                stop = offset + len(value)
                mask |= ((1 << 8 * len(value)) - 1) << 8 * (end - stop)
            cached.append(Output(dest, rewrite))
        entry = Entry(tuple(cached), tuple(drops), (), now)
        self._insert((port, layout.name, seeded), mask, int.from_bytes(data[:end], "big"), entry)
        return entry

    def _insert(
        self, where: tuple[Hashable, str, bool], mask: int, header: int, entry: Entry
    ) -> None:
        groups = self.groups.setdefault(where, [])
        group = next((g for g in groups if g.mask == mask), None)
        if group is None:
            group = _Group(mask)
            groups.append(group)
        masked = header & mask
        self.order, dropped = place(self.order, (group, masked), self.capacity)
        group.entries[masked] = entry
        self.counters.evictions += dropped
        self.counters.inserts += 1

    def stats(self) -> dict[str, int]:
        counters = self.counters
        return {
            "entries": len(self.order),
            "groups": sum(len(groups) for groups in self.groups.values()),
            "capacity": self.capacity,
            "hits": counters.hits,
            "misses": counters.misses,
            "inserts": counters.inserts,
            "expired": counters.expired,
            "evictions": counters.evictions,
            "flushes": counters.flushes,
        }
