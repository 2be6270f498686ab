"""Connection tuples and conntrack entries, their encoding, and the batched store driver.

A connection is identified by a :class:`CtTuple` (ip version, protocol,
source, destination, source port, destination port) in a conntrack *zone*.
Every tuple is a store key (:func:`ct_key`); a connection occupies two keys:
its *original* tuple (the first packet as seen before NAT) holds the
**primary** record, and its *reply* tuple (what the answer looks like before
un-NAT) holds a **mirror**: a copy of the primary, so that a packet of either
direction finds everything it needs in one read. See ``conntrack.py`` for how
the two are kept in step.

Ports are 32-bit in tuples (not 16) for one reason: ICMP echo. Linux tracks an
echo by its identifier; here a request is ``(sport=ident, dport=ECHO_PORT)``
and a reply ``(sport=ECHO_PORT, dport=ident)``, so that the reply's tuple is
exactly the reverse of the request's and ``ECHO_PORT`` (65536), which no real
port can take, keeps echo tuples from ever equalling one another by accident.

Records are packed with :mod:`struct` (90 bytes for IPv4), not JSON:
the Redis store moves them for every packet batch that misses the flow cache.

:func:`drive` runs store *tasks* side by side: generators that yield the
operations of their next step and receive the results, so that per-packet
logic reads sequentially while every step of a whole batch costs one round
trip.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from netvirt.state.jobs import Reply, Steps, run_steps
from netvirt.state.store import Op, StateStore, StateStoreError

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136
PORT_PROTOCOLS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_UDPLITE})

ECHO_PORT = 0x10000  # the "port" of the echo side that has no identifier (see module doc)
_ECHO_REQUEST = {4: 8, 6: 128}
_ECHO_REPLY = {4: 0, 6: 129}
_ICMP_ERRORS = {4: frozenset({3, 4, 5, 11, 12}), 6: frozenset({1, 2, 3, 4})}


class CtTuple(NamedTuple):
    """One direction of a connection as a packet shows it (addresses as ints)."""

    ip_version: int
    proto: int
    src: int
    dst: int
    sport: int = 0
    dport: int = 0

    def reversed(self) -> CtTuple:
        return CtTuple(self.ip_version, self.proto, self.dst, self.src, self.dport, self.sport)

    @property
    def is_icmp(self) -> bool:
        return self.proto == (IPPROTO_ICMP if self.ip_version == 4 else IPPROTO_ICMPV6)

    @property
    def is_echo_reply(self) -> bool:
        """A reply-shaped echo tuple: never the first packet of a connection."""
        return self.is_icmp and self.sport == ECHO_PORT

    @property
    def has_ports(self) -> bool:
        """Whether NAT may rewrite the source "port" (an echo request's identifier counts)."""
        return self.proto in PORT_PROTOCOLS or (self.is_icmp and self.dport == ECHO_PORT)


def icmp_tuple(ip_version: int, src: int, dst: int, icmp_type: int, ident: int = 0) -> CtTuple:
    """The tuple of an ICMP/ICMPv6 packet: echo by identifier, anything else by addresses."""
    proto = IPPROTO_ICMP if ip_version == 4 else IPPROTO_ICMPV6
    if icmp_type == _ECHO_REQUEST[ip_version]:
        return CtTuple(ip_version, proto, src, dst, ident, ECHO_PORT)
    if icmp_type == _ECHO_REPLY[ip_version]:
        return CtTuple(ip_version, proto, src, dst, ECHO_PORT, ident)
    return CtTuple(ip_version, proto, src, dst)


def icmp_ident(t: CtTuple) -> int:
    """The echo identifier carried by an echo tuple (0 for other ICMP)."""
    if t.dport == ECHO_PORT:
        return t.sport
    return t.dport if t.sport == ECHO_PORT else 0


def is_icmp_error(ip_version: int, icmp_type: int) -> bool:
    """ICMP errors quote a packet and are *related* to its connection, never one of their own."""
    return icmp_type in _ICMP_ERRORS.get(ip_version, frozenset())


def quoted_tuple(ip_version: int, quote: bytes) -> CtTuple | None:
    """The tuple of the packet an ICMP error quotes (its IP header + 8 bytes), or None.

    Parsed by hand rather than with the header codecs because the quote is
    truncated by design: the inner total length never matches what is there.
    IPv6 extension headers in the quote are not walked (the quote is None).
    """
    if ip_version == 4:
        if len(quote) < 20 or quote[0] >> 4 != 4:
            return None
        ihl = (quote[0] & 0x0F) * 4
        proto = quote[9]
        src, dst = int.from_bytes(quote[12:16], "big"), int.from_bytes(quote[16:20], "big")
        return _quoted_l4(4, proto, src, dst, quote[ihl : ihl + 8])
    if len(quote) < 40 or quote[0] >> 4 != 6:
        return None
    proto = quote[6]
    src, dst = int.from_bytes(quote[8:24], "big"), int.from_bytes(quote[24:40], "big")
    return _quoted_l4(6, proto, src, dst, quote[40:48])


def _quoted_l4(ip_version: int, proto: int, src: int, dst: int, l4: bytes) -> CtTuple | None:
    if proto in PORT_PROTOCOLS:
        if len(l4) < 4:
            return None
        sport, dport = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
        return CtTuple(ip_version, proto, src, dst, sport, dport)
    if proto == (IPPROTO_ICMP if ip_version == 4 else IPPROTO_ICMPV6):
        if len(l4) < 6:
            return None
        return icmp_tuple(ip_version, src, dst, l4[0], int.from_bytes(l4[4:6], "big"))
    return CtTuple(ip_version, proto, src, dst)


def ct_key(prefix: str, zone: int, t: CtTuple) -> str:
    """The store key of a tuple in a zone; both record kinds share this one key space."""
    return f"{prefix}{zone:x}:{t.ip_version}:{t.proto}:{t.src:x}:{t.dst:x}:{t.sport:x}:{t.dport:x}"


class CtState(enum.IntEnum):
    """Connection states: TCP's (simplified, see conntrack.py) and one pair for the rest."""

    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    TIME_WAIT = 6
    CLOSED = 7
    UNREPLIED = 8  # UDP, ICMP echo, other protocols: only the original direction seen
    REPLIED = 9  # ... and a reply seen too


# CtEntry.flags
FIN_ORIG = 0x01  # a FIN was seen in the original direction
FIN_REPLY = 0x02  # a FIN was seen in the reply direction
SNAT_POOL = 0x04  # the SNAT source port was claimed from a pool (refresh and release it)


@dataclass(frozen=True, slots=True)
class CtEntry:
    """One tracked connection.

    ``last_seen`` is the time of the last *write* of the record (writes are
    rate-limited, see ``Timeouts.refresh_fraction``), ``expiry`` the time it
    stops being live. ``version`` is the store version of the record it was
    read from (0: not stored); it is not part of the encoding. ``serial`` tells
    incarnations of one tuple apart: the store version of the record the
    connection replaced when it was created (0 if none), so a connection
    reopened in the same second as its predecessor is still another one.
    ``lb_counter``/``lb_backend`` name the least-connections counter that
    counted this connection, so that its end can be subtracted.
    """

    zone: int
    orig: CtTuple
    reply: CtTuple
    state: CtState
    created: float
    last_seen: float
    expiry: float
    mark: int = 0
    flags: int = 0
    lb_counter: str = ""
    lb_backend: str = ""
    serial: int = 0
    version: int = 0

    @property
    def snat(self) -> bool:
        """The source was translated: replies come back to another address or port."""
        return (self.reply.dst, self.reply.dport) != (self.orig.src, self.orig.sport)

    @property
    def dnat(self) -> bool:
        """The destination was translated (floating IP, load-balancer VIP)."""
        return (self.reply.src, self.reply.sport) != (self.orig.dst, self.orig.dport)

    @property
    def nat_src(self) -> tuple[int, int]:
        """(address, port) the original source is translated to."""
        return self.reply.dst, self.reply.dport

    @property
    def nat_dst(self) -> tuple[int, int]:
        """(address, port) the original destination is translated to."""
        return self.reply.src, self.reply.sport

    def same_connection(self, other: CtEntry) -> bool:
        """Same incarnation: a tuple reused after expiry is a different connection."""
        mine = (self.zone, self.orig, self.reply, self.created, self.serial)
        return mine == (other.zone, other.orig, other.reply, other.created, other.serial)

    def describe(self) -> str:
        """One line for traces: state, tuples, NAT, mark."""
        nat = []
        if self.snat:
            nat.append(f"snat->{self.nat_src[0]:#x}:{self.nat_src[1]}")
        if self.dnat:
            nat.append(f"dnat->{self.nat_dst[0]:#x}:{self.nat_dst[1]}")
        text = f"{self.state.name} zone={self.zone:#x} {_fmt(self.orig)} reply {_fmt(self.reply)}"
        return " ".join([text, *nat, f"mark={self.mark:#x}"])


def advanced_entry(
    entry: CtEntry, state: CtState, mark: int, flags: int, last_seen: float, expiry: float
) -> CtEntry:
    """``dataclasses.replace(entry, state=..., ...)`` without its per-call field walk."""
    e = entry
    return CtEntry(
        e.zone, e.orig, e.reply, state, e.created, last_seen, expiry, mark, flags,
        e.lb_counter, e.lb_backend, e.serial, e.version,
    )  # fmt: skip


def versioned_entry(entry: CtEntry, version: int) -> CtEntry:
    """``dataclasses.replace(entry, version=version)``, as :func:`advanced_entry`."""
    e = entry
    return CtEntry(
        e.zone, e.orig, e.reply, e.state, e.created, e.last_seen, e.expiry, e.mark, e.flags,
        e.lb_counter, e.lb_backend, e.serial, version,
    )  # fmt: skip


def _fmt(t: CtTuple) -> str:
    return f"[{t.proto} {t.src:#x}:{t.sport} > {t.dst:#x}:{t.dport}]"


class CodecError(ValueError):
    """A stored record that this code cannot read (corrupt, or a newer format)."""


FORMAT = 1
PRIMARY, MIRROR = 0, 1
_HEAD = struct.Struct("!BBBBQBBIQ3d")  # format kind ipver proto zone state flags mark serial times
_PORTS = struct.Struct("!4I")
_ADDRS4 = struct.Struct("!4I")  # the four IPv4 addresses (orig src, dst, reply src, dst)
_LEN = struct.Struct("!H")
_NO_TEXTS = b"\x00\x00\x00\x00"  # lb_counter and lb_backend both empty: the usual tail
_STATES = {int(state): state for state in CtState}  # CtState(n) without the enum call
_MIN_SIZE = _HEAD.size + 4 * 4 + _PORTS.size + len(_NO_TEXTS)  # the smallest record: IPv4


def encode(entry: CtEntry, kind: int = PRIMARY) -> bytes:
    """Pack an entry as a primary or mirror record."""
    o, r = entry.orig, entry.reply
    width = _width(o.ip_version)
    parts = [
        _HEAD.pack(
            FORMAT,
            kind,
            o.ip_version,
            o.proto,
            entry.zone,
            entry.state,
            entry.flags,
            entry.mark,
            entry.serial,
            entry.created,
            entry.last_seen,
            entry.expiry,
        ),
        _ADDRS4.pack(o.src, o.dst, r.src, r.dst)
        if width == 4
        else b"".join(a.to_bytes(width, "big") for a in (o.src, o.dst, r.src, r.dst)),
        _PORTS.pack(o.sport, o.dport, r.sport, r.dport),
    ]
    if not entry.lb_counter and not entry.lb_backend:
        parts.append(_NO_TEXTS)
        return b"".join(parts)
    for text in (entry.lb_counter, entry.lb_backend):
        raw = text.encode()
        parts += [_LEN.pack(len(raw)), raw]
    return b"".join(parts)


def cacheable_record(value: bytes) -> bool:
    """A conntrack record a host's read cache (``state.cached``) may keep: any readable one.

    Safe in every state because conntrack never *rejects* a packet on a cached record
    (``CachedEntry``): a decision that would refuse the packet, treat its connection as
    gone or replace it is made again on a fresh read, and every change is a
    compare-and-set that fails on a stale version. What a cached record can do is let a
    packet pass without writing on a record up to the cache's ``max_age`` old
    (docs/stateless-nf.md, "Consistency"). Records of other kinds (LB counters) are
    never cached. Checked by the header alone: this runs for every write a host makes,
    and a record that turns out unreadable is re-read by conntrack anyway."""
    return len(value) >= _MIN_SIZE and value[0] == FORMAT and value[1] in (PRIMARY, MIRROR)


def port_zone_keys(prefix: str = "ct:") -> Callable[[str], bool]:
    """Which store keys are records of a switch port's zone (``(datapath << 16) | port``,
    ``Pipeline._zone``): the keys a write-behind store may keep authoritative on this host
    (``state/writebehind.py``). Router zones (port bits 0), SNAT pools and LB records are
    shared. Only a port's own host writes un-NATed records in its zone: they are made by
    the security-group ACL of a VM port, whose ingress and egress pipelines both run on the
    VM's host (docs/agent.md); NATed ones (a switch load balancer, which a routing host may
    create and a member's host answer) are :func:`shared_record` and stay shared."""
    size = len(prefix)

    def local(key: str) -> bool:
        if not key.startswith(prefix):
            return False
        zone, sep, _ = key[size : size + 24].partition(":")
        if not sep:
            return False
        try:
            return int(zone, 16) & 0xFFFF != 0
        except ValueError:
            return False  # snat:, lbrr:, … : pools and LB records

    return local


def shared_record(value: bytes) -> bool:
    """A record another host may decide on although its key is a port zone's: NATed (its
    reply tuple is not its original reversed: a switch LB), LB-counted, or unreadable."""
    if not cacheable_record(value):
        return True
    width = 4 if value[2] == 4 else 16
    a = _HEAD.size
    p = a + 4 * width
    return (
        value[a : a + width] != value[a + 3 * width : a + 4 * width]
        or value[a + width : a + 2 * width] != value[a + 2 * width : a + 3 * width]
        or value[p : p + 4] != value[p + 12 : p + 16]
        or value[p + 4 : p + 8] != value[p + 8 : p + 12]
        or value[p + 16 :] != _NO_TEXTS
    )


def closed_record(value: bytes) -> bool:
    """A TCP record in TIME_WAIT or CLOSED: once closed, a connection that was never
    written behind needs nothing in the shared store (``state/writebehind.py``)."""
    return (
        cacheable_record(value)
        and value[3] == IPPROTO_TCP
        and value[12] in (CtState.TIME_WAIT, CtState.CLOSED)
    )


_EXPIRY = struct.Struct("!d")
_EXPIRY_AT = _HEAD.size - _EXPIRY.size  # the last of the head's three times


def record_remaining(clock: Callable[[], float]) -> Callable[[bytes], float | None]:
    """A record's seconds left by ``clock`` (conntrack's packet clock): the TTL conntrack
    writes it with is ``expiry - now``, so a store that takes a record over from another
    (``state/writebehind.py``) keeps it exactly as long. None for an unreadable value."""

    def remaining(value: bytes) -> float | None:
        if not cacheable_record(value):
            return None
        return float(_EXPIRY.unpack_from(value, _EXPIRY_AT)[0]) - clock()

    return remaining


# The name the datapath imports (agent/datapath.py). Until session 6 only ESTABLISHED and
# REPLIED records were cached; conntrack's fresh re-read of rejections made all states safe.
stable_record = cacheable_record


# Records decoded lately, by their bytes: a packet of a connection reads the record the
# previous packet (or this packet's previous conntrack action) read or wrote — with the
# memory store the very same bytes object, whose hash Python caches. Bounded: cleared
# when full. Entries are immutable, so sharing them is safe.
_MEMO: dict[bytes, tuple[CtEntry, int]] = {}
MEMO_SIZE = 16384


def decode(value: bytes, version: int = 0) -> tuple[CtEntry, int]:
    """Unpack a record: the entry (with ``version``) and its kind (PRIMARY or MIRROR)."""
    memo = _MEMO.get(value)
    if memo is not None:
        entry, kind = memo
        if entry.version == version:
            return memo
        memo = versioned_entry(entry, version), kind
        _MEMO[value] = memo
        return memo
    try:
        memo = _decode(value, version)
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise CodecError(f"unreadable conntrack record: {err}") from None
    if len(_MEMO) >= MEMO_SIZE:
        _MEMO.clear()
    _MEMO[value] = memo
    return memo


def _decode(value: bytes, version: int) -> tuple[CtEntry, int]:
    head = _HEAD.unpack_from(value, 0)
    fmt, kind, ipv, proto, zone, state, flags, mark, serial, created, last_seen, expiry = head
    if fmt != FORMAT or kind not in (PRIMARY, MIRROR):
        raise CodecError(f"record format {fmt}, kind {kind}")
    width = _width(ipv)
    offset = _HEAD.size
    if width == 4 and len(value) >= offset + 16:
        addrs: Sequence[int] = _ADDRS4.unpack_from(value, offset)
    else:
        addrs = [
            int.from_bytes(value[offset + i * width : offset + (i + 1) * width], "big")
            for i in range(4)
        ]
    offset += 4 * width
    osport, odport, rsport, rdport = _PORTS.unpack_from(value, offset)
    offset += _PORTS.size
    texts = _texts(value, offset)
    orig = CtTuple(ipv, proto, addrs[0], addrs[1], osport, odport)
    reply = CtTuple(ipv, proto, addrs[2], addrs[3], rsport, rdport)
    known = _STATES.get(state)
    entry = CtEntry(
        zone,
        orig,
        reply,
        known if known is not None else CtState(state),
        created,
        last_seen,
        expiry,
        mark,
        flags,
        lb_counter=texts[0],
        lb_backend=texts[1],
        serial=serial,
        version=version,
    )
    return entry, kind


def _texts(value: bytes, offset: int) -> Sequence[str]:
    """``lb_counter`` and ``lb_backend``: a length-prefixed string each."""
    if value[offset:] == _NO_TEXTS:
        return ("", "")
    texts: list[str] = []
    for _ in range(2):
        (size,) = _LEN.unpack_from(value, offset)
        offset += _LEN.size
        if offset + size > len(value):
            raise CodecError("truncated record")
        texts.append(value[offset : offset + size].decode())
        offset += size
    return texts


def _width(ip_version: int) -> int:
    if ip_version == 4:
        return 4
    if ip_version == 6:
        return 16
    raise CodecError(f"ip version {ip_version}")


_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """A 64-bit finalizer (splitmix64's): every input bit flips about half the output bits."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def stable_hash(*values: int) -> int:
    """A hash that is the same on every host and run (Python's ``hash`` is salted per process).

    Used where hosts must agree without talking: SNAT port windows, source-IP
    load balancing. 128-bit values (IPv6 addresses) are folded to 64 bits.
    """
    h = 0x9E3779B97F4A7C15
    for value in values:
        h = _mix64((h + ((value ^ (value >> 64)) & _M64)) & _M64)
    return h


# -- running store operations in batches ---------------------------------------------

R = TypeVar("R")
Task = Generator[list[Op], list[object], R]  # yields a step's operations, receives their results


def drive_steps(
    tasks: Sequence[Task[R]],
    failed: Callable[[int, StateStoreError], R] | None = None,
) -> Steps[list[R]]:
    """Run store tasks side by side: each step of all tasks is one round trip, yielded
    (``state/jobs.py``: run synchronously or parked on an asynchronous store).

    A round trip answered with :class:`StateStoreError` raises out of here, unless
    ``failed`` is given: then each task waiting on that round trip is closed and
    its result is ``failed(index, error)``; tasks already done keep theirs.
    """
    done: dict[int, R] = {}
    waiting: list[tuple[int, Task[R], list[Op]]] = []

    def advance(index: int, task: Task[R], sent: list[object] | None) -> None:
        try:
            ops = next(task) if sent is None else task.send(sent)
        except StopIteration as stop:
            done[index] = stop.value
            return
        waiting.append((index, task, ops))

    for index, task in enumerate(tasks):
        advance(index, task, None)
    while waiting:
        current, waiting = waiting, []
        flat = [op for _, _, ops in current for op in ops]
        reply: Reply = (yield flat) if flat else []
        if isinstance(reply, StateStoreError):
            if failed is None:
                raise reply
            for index, task, _ in current:
                task.close()
                done[index] = failed(index, reply)
            continue
        offset = 0
        for index, task, ops in current:
            advance(index, task, reply[offset : offset + len(ops)])
            offset += len(ops)
    return [done[i] for i in range(len(tasks))]


def drive(
    store: StateStore,
    tasks: Sequence[Task[R]],
    failed: Callable[[int, StateStoreError], R] | None = None,
) -> list[R]:
    """:func:`drive_steps` with synchronous round trips on ``store``."""
    return run_steps(store, drive_steps(tasks, failed))
