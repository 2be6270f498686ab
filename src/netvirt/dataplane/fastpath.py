"""The datapath's flow cache: the slow path's outcome for a flow, replayed as byte patches.

Theory of operation
-------------------
*Why.* The pipeline (``pipeline.py``) walks a dozen classifier tables with
conntrack for every packet: hundreds of microseconds in CPython. Nearly every
packet of a connection gets the same treatment as the one before it, so the
forwarder remembers, per flow, what the slow path did to the packet's bytes
and where it sent them, and applies that to the next packets without running
any table (Open vSwitch's exact-match cache plays the same part).

*Key.* :func:`flow_key` takes the frame's header bytes that the slow path may
read — everything of the Ethernet, IP and L4 headers except what changes from
one packet of a flow to the next: IPv4 total length, identification and header
checksum, IPv6 payload length, TCP sequence/ack numbers, window, checksum and
urgent pointer, UDP length and checksum, ICMP checksum and echo sequence. It
covers every field of the pipeline's flow key (``key.py``), TTL included, so a
cached outcome is the slow path's outcome for any packet with that key, given
the same rules, bindings and connection states. Only the frames the cache can
serve get a key: unicast IPv4 (no options, not a fragment) and IPv6 (no
extension headers) carrying TCP without SYN/FIN/RST, UDP, or ICMP echo; all
others (ARP, ND, DHCP, fragments, connection setup and teardown) miss this
cache. Behind it, :attr:`FlowCache.megaflows` (``megaflow.py``) serves the
frames of this shape, SYN/FIN/RST included, that agree with a walk without
conntrack on the bits it read; a megaflow hit fills this cache when the frame
has a key here (the entry then serves the exact flow first). Everything else
takes the slow path.

*Outcome.* :func:`derive` compares the slow path's output frame with its input:
a byte that differs must be in the key (then every packet of the flow gets the
same value: a patch) or be a checksum (then the difference of the two one's
complement sums is a constant of the flow, RFC 1624: an adjustment); anything
else — a different length or payload, a changed non-key byte such as a new IP
id — means the output is not a rewrite of the input and the flow is not
cached. The patches are verified on the packet they came from: applying them
to the input must give the slow path's bytes exactly, or nothing is cached.
A seeded L4 checksum (``virtio_net_hdr`` NEEDS_CSUM: the field holds the
pseudo-header sum, not its complement) is adjusted without the complement.

*Validity.* An entry holds while (1) the forwarder's installed state is the
one it was learned under (rules, topology, MAC bindings, live gateways: the
``version`` given to :meth:`FlowCache.sync`, which flushes the megaflows too);
(2) every connection the slow path consulted is still in the state it was in
(:class:`ConnEpochs`: only outcomes with connections ESTABLISHED, UNREPLIED or
REPLIED are cached, and any change of a connection's state seen by the slow
path — its first reply, its FIN — bumps that connection's epoch and so
invalidates its entries); (3) it is younger than ``max_age``: the slow path
then runs again for one packet, which refreshes the connection in the state
store and picks up changes made by other hosts sharing the store (the same
bound as the state read cache, ``state/cached.py``). An entry whose
revalidation fails only because the store is unreachable keeps serving its
flow (``stale_served``): established connections continue while their state
cannot be read.

*Bounds.* ``capacity`` entries; a full cache drops its oldest eighth at once
(:func:`evict_oldest`) before inserting; the connection
epochs are cleared (and the cache flushed) past ``ConnEpochs.limit`` connections.

Thread-safety: none; one cache per datapath loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import CT_EST, CT_INV, CT_NEW, CT_REL
from netvirt.dataplane.segments import SegmentCache

if TYPE_CHECKING:
    from netvirt.dataplane.megaflow import MegaflowCache

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58
_TCP_SYN_FIN_RST = 0x07
_CT_UNSTABLE = CT_NEW | CT_INV | CT_REL
# CtState (nf.codec) ESTABLISHED, UNREPLIED, REPLIED: a connection whose next packets, in
# either direction, see the same ct_state until its state changes (which bumps its epoch)
STABLE_STATES = frozenset({3, 8, 9})


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a kind of frame keeps its key bytes and checksums (offsets in the frame)."""

    name: str
    covered: tuple[tuple[int, int], ...]  # [start, end) ranges that are in the key
    ip_checksum: int | None  # IPv4 header checksum offset
    l4_checksum: int  # TCP/UDP/ICMP checksum offset
    end: int  # first byte after the L4 header the key reads
    udp: bool = False  # a computed 0 is sent as 0xFFFF (RFC 768)
    seeded: bool = True  # the L4 checksum may be a NEEDS_CSUM seed (not for ICMP)


TCP4 = Layout("tcp4", ((0, 16), (20, 24), (26, 38), (46, 48)), 24, 50, 54)
UDP4 = Layout("udp4", ((0, 16), (20, 24), (26, 38)), 24, 40, 42, udp=True)
ICMP4 = Layout("icmp4", ((0, 16), (20, 24), (26, 36), (38, 40)), 24, 36, 42, seeded=False)
TCP6 = Layout("tcp6", ((0, 18), (20, 58), (66, 68)), None, 70, 74)
UDP6 = Layout("udp6", ((0, 18), (20, 58)), None, 60, 62, udp=True)
ICMP6 = Layout("icmp6", ((0, 18), (20, 56), (58, 60)), None, 56, 62, seeded=False)


def frame_key(data: bytes) -> tuple[bytes | None, Layout] | None:
    """The layout of a frame the caches may serve and its exact-cache key; None for any
    other frame. The key is None for TCP SYN/FIN/RST (connection setup and teardown:
    only a megaflow, ``megaflow.py``, serves those).

    The one copy of the caches' frame checks: a frame the parser would refuse
    (lengths that do not hold together, a bad IPv4 header checksum) gets no
    layout, so the slow path drops it under its reason even when its flow is
    cached. The slices below are exactly ``Layout.covered`` (a test checks it);
    they are written out because this runs for every packet."""
    size = len(data)
    if size < 42 or data[0] & 1:
        return None
    ethertype = data[12:14]
    if ethertype == b"\x08\x00":
        if data[14] != 0x45 or data[20] & 0x3F or data[21]:  # options, MF, fragment offset
            return None
        end = 14 + (data[16] << 8 | data[17])  # where the IP packet ends
        # one's complement sum of the header words is 0xFFFF, i.e. 0 modulo 0xFFFF
        if end > size or int.from_bytes(data[14:34], "big") % 0xFFFF:
            return None
        proto = data[23]
        if proto == IPPROTO_TCP:
            if end < 54 or 34 + (data[46] >> 4) * 4 > end:
                return None
            if data[47] & _TCP_SYN_FIN_RST:
                return None, TCP4
            return data[:16] + data[20:24] + data[26:38] + data[46:48], TCP4
        if proto == IPPROTO_UDP:
            length = data[38] << 8 | data[39]
            if end < 42 or length < 8 or 34 + length > end or not (data[40] or data[41]):
                return None  # (a zero checksum: no checksum or a zero seed, not cached)
            return data[:16] + data[20:24] + data[26:38], UDP4
        if proto == IPPROTO_ICMP and data[34] in (0, 8) and end >= 42:
            return data[:16] + data[20:24] + data[26:36] + data[38:40], ICMP4
        return None
    if ethertype == b"\x86\xdd" and size >= 62:
        end = 54 + (data[18] << 8 | data[19])
        if end > size:
            return None
        proto = data[20]
        if proto == IPPROTO_TCP:
            if end < 74 or 54 + (data[66] >> 4) * 4 > end:
                return None
            if data[67] & _TCP_SYN_FIN_RST:
                return None, TCP6
            return data[:18] + data[20:58] + data[66:68], TCP6
        if proto == IPPROTO_UDP:
            length = data[58] << 8 | data[59]
            if end < 62 or length < 8 or 54 + length > end:
                return None
            return data[:18] + data[20:58], UDP6
        if proto == IPPROTO_ICMPV6 and data[54] in (128, 129) and end >= 62:
            return data[:18] + data[20:56] + data[58:60], ICMP6
    return None


def flow_key(data: bytes) -> tuple[bytes, Layout] | None:
    """The exact-cache key of a frame and its layout; None for a frame that cache never
    serves (:func:`frame_key` without the layout of connection setup and teardown)."""
    found = frame_key(data)
    if found is None or found[0] is None:
        return None
    return cast(tuple[bytes, Layout], found)


def frame_layout(data: bytes) -> Layout | None:
    """The layout of a frame megaflows may serve (:func:`frame_key`'s checks)."""
    found = frame_key(data)
    return found[1] if found is not None else None


def _fold(value: int) -> int:
    value = (value & 0xFFFF) + (value >> 16)
    return (value & 0xFFFF) + (value >> 16)


class Rewrite:
    """What the slow path did to one output's bytes: patches and checksum adjustments.

    :attr:`apply` starts as an interpreter of the patches; once a rewrite has
    served :data:`COMPILE_AFTER` packets it is replaced by a function generated
    for it (constant pieces, copied slices and the checksum arithmetic written
    out), several times faster per packet. Compiling costs a few hundred
    microseconds, which short flows (a new connection per request) must not
    pay; generated functions are shared by equal rewrites (a re-learned flow,
    flows between the same two VMs)."""

    __slots__ = ("apply", "end", "patches", "sums", "uses")

    def __init__(
        self,
        patches: tuple[tuple[int, bytes], ...] = (),
        sums: tuple[tuple[int, int, bool, bool], ...] = (),
        end: int = 0,
    ) -> None:
        self.patches = patches  # (offset, bytes)
        self.sums = sums  # (offset, delta, seeded, udp)
        self.end = end  # header bytes rewritten; the rest of the frame is shared
        self.uses = 0
        self.apply: Callable[[bytes], bytes]
        if not patches and not sums:
            self.apply = _unchanged
        else:
            self.apply = _COMPILED.get((patches, sums)) or self._interpret

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rewrite) and (self.patches, self.sums, self.end) == (
            other.patches,
            other.sums,
            other.end,
        )

    def __hash__(self) -> int:
        return hash((self.patches, self.sums, self.end))

    def __repr__(self) -> str:
        return f"Rewrite(patches={self.patches!r}, sums={self.sums!r}, end={self.end})"

    def _interpret(self, data: bytes) -> bytes:
        self.uses += 1
        if self.uses >= COMPILE_AFTER:
            signature = (self.patches, self.sums)
            compiled = _COMPILED.get(signature)
            if compiled is None:
                compiled = _generate(self.patches, self.sums)
                if len(_COMPILED) >= _COMPILED_MAX:
                    _COMPILED.clear()
                _COMPILED[signature] = compiled
            self.apply = compiled
        end = self.end
        head = bytearray(data[:end])
        for offset, value in self.patches:
            head[offset : offset + len(value)] = value
        for offset, delta, seeded, udp in self.sums:
            old = head[offset] << 8 | head[offset + 1]
            if seeded:
                new = _fold(old + delta)
            else:
                new = _fold((old ^ 0xFFFF) + delta) ^ 0xFFFF
                if udp and not new:
                    new = 0xFFFF
            head[offset] = new >> 8
            head[offset + 1] = new & 0xFF
        return bytes(head) + data[end:]


COMPILE_AFTER = 32  # packets a rewrite serves interpreted before it is compiled
_COMPILED_MAX = 4096
_COMPILED: dict[
    tuple[tuple[tuple[int, bytes], ...], tuple[tuple[int, int, bool, bool], ...]],
    Callable[[bytes], bytes],
] = {}


def _unchanged(data: bytes) -> bytes:
    return data


def _generate(
    patches: tuple[tuple[int, bytes], ...], sums: tuple[tuple[int, int, bool, bool], ...]
) -> Callable[[bytes], bytes]:
    """``def apply(d): return d rewritten``, compiled from the rewrite's constants."""
    if not patches and not sums:
        return _unchanged
    body: list[str] = []
    pieces: list[tuple[int, int, str]] = []  # (offset, length, expression)
    for offset, value in patches:
        pieces.append((offset, len(value), repr(bytes(value))))
    for i, (offset, delta, seeded, udp) in enumerate(sums):
        word = f"(d[{offset}] << 8 | d[{offset + 1}])"
        if seeded:
            body.append(f"v{i} = {word} + {delta}")
            body.append(f"v{i} = (v{i} & 0xFFFF) + (v{i} >> 16)")
        else:
            body.append(f"v{i} = ({word} ^ 0xFFFF) + {delta}")
            body.append(f"v{i} = ((v{i} & 0xFFFF) + (v{i} >> 16)) ^ 0xFFFF")
            if udp:
                body.append(f"v{i} = v{i} or 0xFFFF")
        pieces.append((offset, 2, f"v{i}.to_bytes(2, 'big')"))
    parts: list[str] = []
    position = 0
    for offset, length, expression in sorted(pieces):
        if offset > position:
            parts.append(f"d[{position}:{offset}]")
        parts.append(expression)
        position = offset + length
    parts.append(f"d[{position}:]")
    lines = ["def apply(d):", *(f"    {line}" for line in body)]
    lines.append(f"    return b''.join(({', '.join(parts)}))")
    namespace: dict[str, object] = {}
    exec(compile("\n".join(lines), "<fastpath rewrite>", "exec"), namespace)
    return cast(Callable[[bytes], bytes], namespace["apply"])


def derive(data: bytes, output: bytes, layout: Layout, seeded: bool) -> Rewrite | None:
    """The :class:`Rewrite` turning ``data`` into ``output`` for every packet of the flow;
    None when ``output`` is not such a rewrite (see the module docstring)."""
    end = layout.end
    if len(output) != len(data) or output[end:] != data[end:]:
        return None
    if output[:end] == data[:end]:
        return Rewrite()
    sums: list[tuple[int, int, bool, bool]] = []
    checksums = [(layout.ip_checksum, False, False)] if layout.ip_checksum is not None else []
    checksums.append((layout.l4_checksum, seeded and layout.seeded, layout.udp))
    skip: set[int] = set()
    for offset, is_seed, udp in checksums:
        if offset is None:
            continue
        skip.update((offset, offset + 1))
        old = int.from_bytes(data[offset : offset + 2], "big")
        new = int.from_bytes(output[offset : offset + 2], "big")
        if old == new:
            continue
        if udp and not is_seed and old == 0:
            return None  # an IPv4 UDP datagram without checksum: not worth a special case
        delta = _fold(new + (~old & 0xFFFF)) if is_seed else _fold((~new & 0xFFFF) + old)
        sums.append((offset, delta, is_seed, udp and not is_seed))
    covered: set[int] = set()
    for start, stop in layout.covered:
        covered.update(range(start, stop))
    patches: list[tuple[int, bytes]] = []
    run_start = -1
    for i in range(end + 1):
        differs = i < end and i not in skip and output[i] != data[i]
        if differs and i not in covered:
            return None  # a byte that varies per packet changed: not a rewrite
        if differs and run_start < 0:
            run_start = i
        elif not differs and run_start >= 0:
            patches.append((run_start, output[run_start:i]))
            run_start = -1
    rewrite = Rewrite(tuple(patches), tuple(sums), end)
    if rewrite.apply(data) != output:
        return None  # verified on the packet it was learned from, or not cached at all
    return rewrite


@dataclass(frozen=True, slots=True)
class Output:
    """One destination of a cached flow: ``dest`` is the forwarder's (opaque here)."""

    dest: Hashable
    rewrite: Rewrite


@dataclass(slots=True)
class Entry:
    """A cached outcome: outputs, drops counted, the connections it depends on."""

    outputs: tuple[Output, ...]
    drops: tuple[DropReason, ...]
    deps: tuple[tuple[Hashable, int], ...]
    born: float
    # per dependency: the packet was in its connection's reply direction (the kernel
    # connections of ``offload/conns.py`` pair an entry with its other direction)
    replies: tuple[bool, ...] = ()


class ConnEpochs:
    """Per-connection epochs: which cached outcomes a connection's changes invalidate."""

    def __init__(self, limit: int = 262_144) -> None:
        self.limit = limit
        self.generation = 0  # moves when the table is cleared (entries must go too)
        # told of every connection whose epoch moves (the kernel offload's entries go at once)
        self.on_change: Callable[[Hashable], None] | None = None
        self._epochs: dict[Hashable, int] = {}
        self._states: dict[Hashable, int] = {}  # the state each connection was last seen in

    def observe(self, results: Sequence[object]) -> tuple[tuple[Hashable, int], ...] | None:
        """The dependencies of an outcome with these conntrack results, or None if it may
        not be cached. Every result whose connection changed state bumps its epoch."""
        deps: list[tuple[Hashable, int]] = []
        stable = True
        for result in results:
            entry = getattr(result, "entry", None)
            if entry is None:
                stable = False
                continue
            conn = (entry.zone, entry.orig, entry.serial)
            state = int(entry.state)
            if self._states.get(conn) != state:
                self._changed(conn, state)
            bits = getattr(result, "state", 0)
            if (
                state in STABLE_STATES
                and getattr(result, "drop", None) is None
                and bits & CT_EST
                and not bits & _CT_UNSTABLE
            ):
                deps.append((conn, self._epochs.get(conn, 0)))
            else:
                stable = False
        return tuple(deps) if stable else None

    def _changed(self, conn: Hashable, state: int) -> None:
        if len(self._states) >= self.limit and conn not in self._states:
            self._epochs.clear()
            self._states.clear()
            self.generation += 1
        self._states[conn] = state
        self.bump(conn)

    def bump(self, conn: Hashable) -> None:
        """Invalidate a connection's cached outcomes without a state change (its packets
        are the kernel's from now on: ``offload/conns.py``)."""
        self._epochs[conn] = self._epochs.get(conn, 0) + 1
        if self.on_change is not None:
            self.on_change(conn)

    def valid(self, deps: tuple[tuple[Hashable, int], ...]) -> bool:
        epochs = self._epochs
        for conn, epoch in deps:  # noqa: SIM110 (all() costs a generator per packet)
            if epochs.get(conn, 0) != epoch:
                return False
        return True


def evict_oldest(entries: dict[Hashable, Entry], capacity: int) -> dict[Hashable, Entry]:
    """The newest entries of a full cache, the oldest eighth (at least one) left out.

    A new dict, not ``del entries[next(iter(entries))]`` per insert: a dict emptied
    from the front keeps the deleted slots until it is resized, and finding the first
    live entry walks over them — about 100 µs per insert once a 65,536-entry cache is
    full and churning (new connections), measured."""
    drop = max(1, capacity // 8)
    return dict(itertools.islice(entries.items(), drop, None))


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    inserts: int = 0
    uncacheable: int = 0
    expired: int = 0  # hits on an entry past max_age (the slow path ran again)
    invalidated: int = 0  # hits on an entry whose connection changed
    stale_served: int = 0  # expired entries replayed because the state store was down
    flushes: int = 0
    evictions: int = 0


def _megaflows() -> MegaflowCache:
    from netvirt.dataplane.megaflow import MegaflowCache  # (it builds on this module)

    return MegaflowCache()


class CacheListener(Protocol):
    """Told what the exact cache keeps (the kernel offload mirrors it)."""

    def inserted(self, key: Hashable, entry: Entry) -> None: ...
    def forget(self, key: Hashable) -> None: ...  # no longer valid: must not be served
    def evicted(self, key: Hashable) -> None: ...  # still valid, dropped for room
    def flushed(self) -> None: ...
    def conn_changed(self, conn: Hashable) -> None: ...
    def commit(self) -> None: ...  # once per batch, before its lookups (batched writes)


@dataclass
class FlowCache:
    """Key → :class:`Entry`, with the megaflows behind it (``megaflow.py``; None: off) and
    the segments the slow path replays (``segments.py``; None: off); see the module
    docstring."""

    capacity: int = 65_536
    max_age: float = 0.5
    epochs: ConnEpochs = field(default_factory=ConnEpochs)
    counters: CacheCounters = field(default_factory=CacheCounters)
    entries: dict[Hashable, Entry] = field(default_factory=dict)
    version: Hashable = None
    megaflows: MegaflowCache | None = field(default_factory=_megaflows)
    segments: SegmentCache | None = field(default_factory=SegmentCache)
    # mirrors inserts, removals and flushes (``offload/manager.py``: the kernel's copy)
    listener: CacheListener | None = None
    # the forwarder's conntrack (``nf.Conntrack``), for a listener that owns connections
    conntrack: object = None
    # called with the frames of a slow-path job before they take it (``offload/conns.py``: a
    # connection the kernel owns is folded back first); None: nothing to do
    fold_back: Callable[[Sequence[bytes]], None] | None = None
    # given a SYN-ACK's outcome as its direction's entry (``offload/conns.py``); None: off
    # (True: taken, waiting for the other direction or completing the connection)
    half_learned: Callable[[Hashable, Entry], bool] | None = None

    def attach(self, listener: CacheListener) -> None:
        self.listener = listener
        self.epochs.on_change = listener.conn_changed
        bind = getattr(listener, "bind", None)
        if bind is not None and self.conntrack is not None:
            bind(self.conntrack, self.epochs)
        self.fold_back = getattr(listener, "fold_frames", None)
        self.half_learned = getattr(listener, "half_learned", None)

    def sync(self, version: Hashable) -> None:
        """Flush when what the entries were learned under changed (call once per batch;
        the listener commits its queued writes here too)."""
        version = (version, self.epochs.generation)
        if self.listener is not None:
            self.listener.commit()
        if version != self.version:
            if self.listener is not None:
                self.listener.flushed()
            if self.entries:
                self.entries.clear()
                self.counters.flushes += 1
            if self.megaflows is not None:
                self.megaflows.flush()
            if self.segments is not None:
                self.segments.flush()
            self.version = version

    def lookup(self, key: Hashable, now: float) -> tuple[Entry | None, Entry | None]:
        """``(entry to replay, expired entry)``: at most one is set; both None on a miss."""
        entry = self.entries.get(key)
        counters = self.counters
        if entry is None:
            counters.misses += 1
            return None, None
        if entry.deps and not self.epochs.valid(entry.deps):
            del self.entries[key]
            counters.invalidated += 1
            if self.listener is not None:
                self.listener.forget(key)
            return None, None
        if now - entry.born > self.max_age:
            counters.expired += 1
            return None, entry
        counters.hits += 1
        return entry, None

    def insert(self, key: Hashable, entry: Entry) -> None:
        entries = self.entries
        listener = self.listener
        if key not in entries and len(entries) >= self.capacity:
            if listener is not None:
                for old in itertools.islice(entries, max(1, self.capacity // 8)):
                    listener.evicted(old)
            self.entries = entries = evict_oldest(entries, self.capacity)
            self.counters.evictions += self.capacity - len(entries)
        entries[key] = entry
        self.counters.inserts += 1
        if listener is not None:
            listener.inserted(key, entry)

    def stats(self) -> dict[str, int]:
        counters = self.counters
        return {
            "entries": len(self.entries),
            "capacity": self.capacity,
            "hits": counters.hits,
            "misses": counters.misses,
            "inserts": counters.inserts,
            "uncacheable": counters.uncacheable,
            "expired": counters.expired,
            "invalidated": counters.invalidated,
            "stale_served": counters.stale_served,
            "flushes": counters.flushes,
            "evictions": counters.evictions,
        }
