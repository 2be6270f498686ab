"""Kernel connections: TCP connections handed over to the kernel, tracked there, folded back.

Why: a short TCP connection is nine packets, every one a conntrack transition, so
none of them hits the exact cache or its kernel copy (docs/conn-rate.md). Once the
slow path has decided both directions of a connection (each direction's exact entry
learned in a stable conntrack state; the reply direction's may be its SYN-ACK's
outcome, ``agent/batchwork.syn_ack_half``), the outcome of every later packet of it is
known as long as its conntrack state allows the packet: the same output and
rewrite, whatever its TCP flags. The kernel (``flows.bpf.c``: ``conns``,
``cstates``, ``tcp_next``) then serves the connection by its 5-tuple key (the
exact key without TCP flags) and moves its TCP state itself, exactly as
``nf/tcp.py`` does from ESTABLISHED on; a packet the state does not allow, or one
of a connection idle past conntrack's timeout, goes to the datapath.

Ownership: while the kernel has a connection, its user-space conntrack records
(one per zone the slow path consulted) are the kernel's. Before the slow path sees
any packet of it (:meth:`KernelConns.fold_frames`, by the packet's ingress 5-tuple),
and on a flush, a port's removal, a state change the slow path observed, a closed
or expired connection (the sweep, :meth:`KernelConns.tick`) and at exit, the
kernel's state is *folded back*: its entries leave the kernel first, then its TCP
state, FIN bits and last packet time are written into every record (a compare-and-
set on the version read, the mirror and the SNAT claim as conntrack writes them).
A long-lived connection's records are rewritten by the sweep once its last packet
is ``refresh_fraction`` of the timeout past the last write, as conntrack's own
refreshes are.

Handed over only with a local state store (``MemoryStore``): with a shared store
other hosts read the records while the kernel owns them (docs/conn-rate.md, step 3).
Not handed over: connections with load-balancer counters, through a tunnel, whose
records are not all ESTABLISHED, or whose two directions do not agree on the
records they consult. Thread-safety: none (the datapath loop's).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import struct
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from netvirt.dataplane.nf.codec import (
    FIN_ORIG,
    FIN_REPLY,
    MIRROR,
    SNAT_POOL,
    CodecError,
    CtState,
    CtTuple,
    advanced_entry,
    decode,
    encode,
)
from netvirt.dataplane.nf.nat import snat_pool
from netvirt.dataplane.nf.tcp import CLOSING, Timeouts, claim_due, claim_ttl
from netvirt.dataplane.offload import kmap

log = logging.getLogger(__name__)

_SYN_SENT = int(CtState.SYN_SENT)
_TCP = CtTuple(4, 6, 0, 0)  # (``Timeouts.of`` reads the protocol: every connection here is TCP)
_CSTATE = struct.Struct("=QQQ")  # struct cstate: last_ns, packets, st
_CID = struct.Struct("=Q")  # the cstates key
_CVAL_TAIL = struct.Struct("=QIHBB")  # struct cval after its fval: conn, reply, port, port_at, pad
_KEY_HEAD = 16  # struct fkey: ifindex, layout, vni, tun_ports, then the covered bytes
_FLAGS_AT = {1: (32, 34), 4: (56, 58)}  # layout id -> covered bytes zeroed in a conn key
SWEEP_EVERY = 0.2  # seconds between sweeps of the kernel connections
LINGER = 0.5  # a closed connection stays in the kernel this long after its last packet
HALF_LIMIT = 65_536  # directions waiting for their other half (cleared past it)


@dataclass
class KernelConn:
    """A connection the kernel owns: its entries, its records and what was last folded."""

    keys: tuple[bytes, bytes]  # the two directions' ``conns`` keys
    tuples: tuple[bytes, bytes]  # the two directions' ingress 5-tuples (:func:`frame_tuple`)
    ifindexes: tuple[int, int]  # the two directions' ingress ports
    deps: tuple[Hashable, ...]  # the conntrack records: (zone, orig, serial)
    state: int  # the state and FIN bits as last written to the records
    last_ns: int  # the kernel's last packet time as last written
    made: Any = None  # a made connection whose records are not written yet: its
    # ``templates.Deferred`` (no deps until ``SynTemplates.materialize`` writes them)


@dataclass
class _Half:
    """One direction of a connection learned, waiting for the other."""

    reply: bool
    key: bytes
    value: bytes
    tuple: bytes
    ifindex: int


def conn_key(kernel_key: bytes) -> bytes | None:
    """The ``conns`` key of an exact entry's kernel key (TCP flags and data offset zeroed,
    as ``bulk_key`` does in the kernel); None for other layouts."""
    layout = int.from_bytes(kernel_key[4:8], "little")
    span = _FLAGS_AT.get(layout)
    if span is None:
        return None
    lo, hi = _KEY_HEAD + span[0], _KEY_HEAD + span[1]
    return kernel_key[:lo] + bytes(hi - lo) + kernel_key[hi:]


def frame_tuple(data: bytes) -> bytes | None:
    """A TCP frame's protocol, addresses and ports as they enter the host (its direction
    of its connection, before any NAT); None for other frames."""
    if len(data) >= 38 and data[12:14] == b"\x08\x00" and data[23] == 6:
        return data[23:24] + data[26:38]
    if len(data) >= 58 and data[12:14] == b"\x86\xdd" and data[20] == 6:
        return data[20:21] + data[22:58]
    return None


def related_tuple(data: bytes) -> bytes | None:
    """The ingress tuple (:func:`frame_tuple`) of the connection an IPv4 ICMP error
    (unreachable, time exceeded, parameter problem) is about, if it quotes a TCP
    segment: the quoted packet went the other way, so its tuple reversed. Conntrack
    matches such an error to the connection's record (RELATED)."""
    if len(data) < 34 or data[12:14] != b"\x08\x00" or data[23] != 1:
        return None
    at = 14 + (data[14] & 0x0F) * 4
    if len(data) < at + 8 + 20 or data[at] not in (3, 11, 12):
        return None
    inner = at + 8
    if data[inner] >> 4 != 4 or data[inner + 9] != 6:
        return None
    ports = inner + (data[inner] & 0x0F) * 4
    if len(data) < ports + 4:
        return None
    src, dst = data[inner + 12 : inner + 16], data[inner + 16 : inner + 20]
    return b"\x06" + dst + src + data[ports + 2 : ports + 4] + data[ports : ports + 2]


def covered_tuple(covered: bytes) -> bytes | None:
    """:func:`frame_tuple` of the frame an exact-cache key (``fastpath.frame_key``) is of."""
    if covered[12:14] == b"\x08\x00" and len(covered) >= 32:
        return covered[19:20] + covered[20:32]
    if covered[12:14] == b"\x86\xdd" and len(covered) >= 56:
        return covered[18:19] + covered[20:56]
    return None


class KernelConns:
    """The datapath's side of the kernel connections (see the module docstring)."""

    def __init__(self, loaded: Any, flows_commit: Any = None) -> None:
        self.lib = loaded.lib
        self.cstates_fd = loaded.cstates_fd
        self.timeouts_fd = loaded.timeouts_fd
        self.conns = kmap.BatchedMap(loaded.lib, loaded.conns_fd)
        self.available = min(loaded.conns_fd, loaded.cstates_fd, loaded.timeouts_fd) >= 0
        self.conntrack: Any = None  # nf.Conntrack: store, prefix, timeouts
        self.epochs: Any = None  # fastpath.ConnEpochs (a handover invalidates exact entries)
        self.enabled = False
        self.why = "not bound to a conntrack"
        self.half: dict[frozenset[Hashable], _Half] = {}
        self.owned: dict[int, KernelConn] = {}
        self.by_tuple: dict[bytes, int] = {}
        self.by_dep: dict[Hashable, int] = {}
        self.next_id = 1
        self._handing = False
        self._next_sweep = 0.0
        # SYN templates (``templates.py``): drains the kernel's reports of connections it
        # made, so that a frame of one finds it owned (None: templates off)
        self.drain: Callable[[], int] | None = None
        self.deferred: Any = None  # templates.SynTemplates: records of made connections
        self.last_handed: tuple[_Half, _Half, tuple[Hashable, ...]] | None = None
        self.held: dict[int, tuple[tuple[bytes, ...], float]] = {}  # (``drop_made``)
        self._lookup_batch = _bind_lookup_batch(loaded.lib)
        self._cstates = kmap.BatchedMap(loaded.lib, loaded.cstates_fd)  # (batch deletes)
        self._kbuf = ctypes.create_string_buffer(_CID.size)
        self._vbuf = ctypes.create_string_buffer(_CSTATE.size)
        self.counters = dict.fromkeys(
            ("handed_over", "folded", "released", "records_written", "record_conflicts",
             "refused", "made", "made_dropped"), 0
        )  # fmt: skip

    # -- setup ----------------------------------------------------------------------------
    def bind(self, conntrack: Any, epochs: Any) -> None:
        """The datapath's conntrack (its store, key prefix and timeouts) and epochs.
        Connections are handed over only with a local store (module docstring)."""
        from netvirt.state.memory import MemoryStore

        self.conntrack, self.epochs = conntrack, epochs
        if not self.available:
            self.why = "the loaded program has no connection maps"
            return
        if not isinstance(getattr(conntrack, "store", None), MemoryStore):
            self.why = "shared state store: connections stay in user space"
            return
        timeouts: Timeouts = conntrack.timeouts
        names = {
            1: "syn_sent", 2: "syn_recv", 3: "established", 4: "fin_wait", 5: "close_wait",
            6: "time_wait", 7: "closed",
        }  # fmt: skip
        for state, name in names.items():
            ns = int(getattr(timeouts, name) * 1e9)
            self._update(self.timeouts_fd, struct.pack("=I", state), struct.pack("=Q", ns))
        self.enabled, self.why = True, ""

    # -- hand-over ------------------------------------------------------------------------
    def offer(
        self, key: Hashable, deps: tuple[Hashable, ...], replies: tuple[bool, ...],
        kernel_key: bytes, value: bytes, ifindex: int,
    ) -> bool:  # fmt: skip
        """An exact entry of a local TCP flow went down as (``kernel_key``, ``value``):
        True when it completed a connection, which the kernel now owns (the caller then
        does not install the exact entry)."""
        if not self.enabled or not deps or len(replies) != len(deps):
            return False
        if any(r != replies[0] for r in replies) or any(d in self.by_dep for d in deps):
            return False
        ckey = conn_key(kernel_key)
        covered = key[1] if isinstance(key, tuple) and len(key) == 3 else None
        tup = covered_tuple(covered) if isinstance(covered, bytes) else None
        if ckey is None or tup is None:
            return False
        group = frozenset(deps)
        mine = _Half(replies[0], ckey, value, tup, ifindex)
        other = self.half.get(group)
        if other is None or other.reply == mine.reply or other.key == mine.key:
            if len(self.half) >= HALF_LIMIT:
                self.half.clear()
            self.half[group] = mine
            return False
        del self.half[group]
        state = self._records_ready(deps)
        if state is None:
            self.counters["refused"] += 1
            return False
        self._hand_over(deps, (other, mine) if mine.reply else (mine, other), state)
        return True

    def _records_ready(self, deps: tuple[Hashable, ...]) -> CtState | None:
        """The records' common state when every record is the one the slow path saw,
        ESTABLISHED (or all SYN_RECV: the original direction's half is then the predicted
        first ACK, ``handshake.py``) with no FIN, live, and without load-balancer counters
        (whose release the kernel does not do); else None."""
        now = time.time()
        states: set[CtState] = set()
        for dep in deps:
            entry = self._read(dep)
            if entry is None:
                return None
            record, _version = entry
            if record.flags & (FIN_ORIG | FIN_REPLY) or record.expiry <= now:
                return None
            if record.lb_counter:
                return None
            states.add(record.state)
        if len(states) != 1 or not states <= {CtState.ESTABLISHED, CtState.SYN_RECV}:
            return None
        return states.pop()

    def _hand_over(
        self, deps: tuple[Hashable, ...], halves: tuple[_Half, _Half], ready: CtState
    ) -> None:
        cid = self.next_id
        self.next_id += 1
        now_ns = time.monotonic_ns()
        state = int(ready)
        # the exact entries of these records (user space and kernel) go first: from now on
        # every packet of the connection is the tracker's, or folds it back
        self._handing = True
        try:
            for dep in deps:
                self.epochs.bump(dep)
        finally:
            self._handing = False
        self._update(self.cstates_fd, struct.pack("=Q", cid), _CSTATE.pack(now_ns, 0, state))
        for half in halves:
            self.conns.put(half.key, half.value + _CVAL_TAIL.pack(cid, int(half.reply), 0, 0, 0))
        self.conns.commit_now()
        keys = (halves[0].key, halves[1].key)
        tuples = (halves[0].tuple, halves[1].tuple)
        ifindexes = (halves[0].ifindex, halves[1].ifindex)
        self._own(cid, KernelConn(keys, tuples, ifindexes, deps, state, now_ns))
        self.last_handed = (halves[0], halves[1], deps)
        self.counters["handed_over"] += 1

    def _own(self, cid: int, kc: KernelConn) -> None:
        self.owned[cid] = kc
        for tup in kc.tuples:
            self.by_tuple[tup] = cid
        for dep in kc.deps:
            self.by_dep[dep] = cid

    def adopt_made(
        self, cid: int, keys: tuple[bytes, bytes], ifindexes: tuple[int, int],
        deps: tuple[Hashable, ...], made_ns: int,
    ) -> bool:  # fmt: skip
        """A connection the kernel made from a SYN template (``templates.py``), its records
        written in SYN_SENT: the kernel's from now on, as a handed-over one is (fold-back,
        sweep, release). False (and the kernel's entries removed) when its tuple or
        records are another kernel connection's."""
        tuples = tuple(covered_tuple(key[_KEY_HEAD:]) for key in keys)
        if (
            None in tuples
            or any(t in self.by_tuple for t in tuples)
            or any(d in self.by_dep for d in deps)
        ):
            self.drop_made(cid, keys)
            return False
        both = cast(tuple[bytes, bytes], tuples)
        for key in keys:  # (written by the kernel: known here so that release deletes them)
            self.conns.live[key] = b""
        self._own(cid, KernelConn(keys, both, ifindexes, deps, int(CtState.SYN_SENT), made_ns))
        self.counters["made"] += 1
        return True

    def adopt_deferred(
        self, cid: int, keys: tuple[bytes, bytes], ifindexes: tuple[int, int], made: Any,
        tuples: tuple[bytes, bytes] | None = None,
    ) -> KernelConn | None:  # fmt: skip
        """:meth:`adopt_made` for a connection whose records wait (``templates.DEFER``):
        the kernel's, with no records until :attr:`deferred` writes them. None (and the
        kernel's entries removed) when a tuple of it is another kernel connection's.
        ``tuples``: the keys' :func:`covered_tuple` when the caller knows them (IPv4)."""
        if tuples is None:
            found = tuple(covered_tuple(key[_KEY_HEAD:]) for key in keys)
            if None in found:
                self.drop_made(cid, keys)
                return None
            tuples = cast(tuple[bytes, bytes], found)
        by_tuple = self.by_tuple
        t0, t1 = tuples
        if t0 in by_tuple or t1 in by_tuple:
            self.drop_made(cid, keys)
            return None
        live = self.conns.live
        live[keys[0]] = live[keys[1]] = b""
        kc = KernelConn(keys, tuples, ifindexes, (), _SYN_SENT, made.ns, made)
        self.owned[cid] = kc
        by_tuple[t0] = by_tuple[t1] = cid
        self.counters["made"] += 1
        return kc

    def drop_made(self, cid: int, keys: tuple[bytes, ...], hold: float = 0.0) -> None:
        """Undo a connection the kernel made that user space cannot take. ``hold`` > 0: its
        entries stay that long with a state the tracker serves nothing in (0), so that
        the client's next packets of it — a retransmitted SYN — take the slow path, which
        answers them from the records that are there (a SYN on a SYN_SENT record is a
        retransmission of that connection, sent with its SNAT port): left out, the kernel
        would make the retransmission a connection again. Else the entries go now."""
        self.counters["made_dropped"] += 1
        if hold > 0 and keys:
            now_ns = time.monotonic_ns()
            self._update(self.cstates_fd, struct.pack("=Q", cid), _CSTATE.pack(now_ns, 0, 0))
            for key in keys:
                self.conns.live[key] = b""
            self.held[cid] = (keys, time.monotonic() + hold)
            return
        self._forget_made(cid, keys)

    def _forget_made(self, cid: int, keys: tuple[bytes, ...]) -> None:
        for key in keys:
            self.conns.live.pop(key, None)
            self._delete(self.conns.fd, key)
        self._delete(self.cstates_fd, struct.pack("=Q", cid))

    def _expire_held(self, now: float, every: bool = False) -> None:
        for cid, (keys, until) in list(self.held.items()):
            if every or now >= until:
                del self.held[cid]
                self._forget_made(cid, keys)

    # -- fold-back ------------------------------------------------------------------------
    def fold_frames(self, frames: Iterable[bytes]) -> None:
        """Frames are about to take the slow path: a connection of theirs the kernel owns
        has its state folded back and is taken back first. The kernel's reports are
        drained once for them all (one syscall, not one per frame): a made connection's
        report was queued at its SYN, before any later frame of it reached the ring."""
        if self.drain is not None:
            self.drain()  # a connection the kernel made: registered first
        deferred = self.deferred
        if not self.by_tuple and not (deferred is not None and deferred.parked):
            return
        for data in frames:
            tup = frame_tuple(data)
            if tup is None:
                self._related(data)
                continue
            cid = self.by_tuple.get(tup)
            if cid is not None:
                self.release_many([cid], fault=True)
            if deferred is not None and deferred.parked:
                deferred.fault_in(tup)

    def _related(self, data: bytes) -> None:
        """An ICMP error about a connection whose records are deferred: they are written
        (the kernel keeps the connection), so conntrack finds it RELATED."""
        deferred = self.deferred
        if deferred is None:
            return
        tup = related_tuple(data)
        if tup is None:
            return
        cid = self.by_tuple.get(tup)
        kc = self.owned.get(cid) if cid is not None else None
        if kc is not None and kc.made is not None:
            found = self._cstate(cid)  # type: ignore[arg-type]
            if found is not None and deferred.materialize(kc, *found):
                for dep in kc.deps:
                    self.by_dep[dep] = cid  # type: ignore[assignment]
        if deferred.parked:
            deferred.fault_in(tup)

    def conn_changed(self, conn: Hashable) -> None:
        """The slow path saw a record change (not at a hand-over): it is no longer the
        kernel's (defensive: the fold-back before the slow path should have come first)."""
        if self._handing:
            return
        cid = self.by_dep.get(conn)
        if cid is not None:
            self.release(cid)

    def release(self, cid: int) -> None:
        """Take a connection back: its entries out of the kernel, then its state folded
        into its records."""
        self.release_many([cid])

    def release_many(
        self, cids: list[int], fault: bool = False, known: dict[int, tuple[int, int]] | None = None
    ) -> None:
        """:meth:`release` for several, their entries out in one syscall first. ``fault``:
        a frame of theirs is about to take the slow path (deferred records are written
        whatever their state, ``SynTemplates.settle``). ``known``: the sweep's read of
        their states, used for deferred connections (closed or expired ones: a packet
        between that read and now could only move a parked connection's timeout by its
        own idle time), whose states then leave the kernel in one syscall."""
        taken: list[tuple[int, KernelConn]] = []
        for cid in cids:
            kc = self.owned.pop(cid, None)
            if kc is None:
                continue
            taken.append((cid, kc))
            for key in kc.keys:
                self.conns.delete(key)
            for tup in kc.tuples:
                if self.by_tuple.get(tup) == cid:
                    del self.by_tuple[tup]
            for dep in kc.deps:
                if self.by_dep.get(dep) == cid:
                    del self.by_dep[dep]
        if not taken:
            return
        self.conns.commit_deletes()  # the kernel stops serving them before their state is read
        gone: list[bytes] = []
        for cid, kc in taken:
            if known is not None and kc.made is not None and cid in known:
                found: tuple[int, int] | None = known[cid]
                gone.append(_CID.pack(cid))
            else:
                found = self._cstate(cid)
                self._delete(self.cstates_fd, _CID.pack(cid))
            self.counters["released"] += 1
            if kc.made is not None:
                self.deferred.settle(kc, found, fault)
            elif found is not None:
                self._fold(kc, *found)
        if gone:
            self._cstates.delete_known(gone)

    def release_all(self) -> None:
        self.release_many(list(self.owned))
        self._expire_held(0.0, every=True)

    def port_closed(self, ifindex: int) -> None:
        self.release_many([cid for cid, kc in self.owned.items() if ifindex in kc.ifindexes])

    def tick(self, now: float | None = None) -> None:
        """The sweep (at most every :data:`SWEEP_EVERY`): closed connections idle for
        :data:`LINGER` and expired ones are taken back; changed ones are folded back when
        their state moved or their records are due a refresh."""
        now = time.monotonic() if now is None else now
        if self.drain is not None:
            self.drain()
        if self.deferred is not None:
            self.deferred.expire(now)
        if now < self._next_sweep or not (self.owned or self.held):
            return
        self._next_sweep = now + SWEEP_EVERY
        if self.held:
            self._expire_held(now)
        now_ns = time.monotonic_ns()
        timeouts: Timeouts = self.conntrack.timeouts
        done: list[int] = []
        every = self._all_cstates()  # (one syscall per ~4k entries, not one per connection)
        # per state byte: its timeout and whether it is closed (ns; no enum per connection)
        limits = {
            int(state): (int(timeouts.of(_TCP, state) * 1e9), state in CLOSING) for state in CtState
        }
        linger_ns = int(LINGER * 1e9)
        refresh = timeouts.refresh_fraction
        for cid, kc in list(self.owned.items()):
            found = every.get(cid) if every is not None else self._cstate(cid)
            if found is None:
                done.append(cid)
                continue
            st, last_ns = found
            timeout_ns, closed = limits.get(st & 0xFF, limits[int(CtState.CLOSED)])
            idle_ns = now_ns - last_ns
            if idle_ns > timeout_ns or (closed and idle_ns > linger_ns):
                done.append(cid)
            elif kc.made is not None:
                continue  # (no records to fold into: the kernel's state is the state)
            elif st != kc.state or last_ns - kc.last_ns > timeout_ns * refresh:
                self._fold(kc, st, last_ns)
        self.release_many(done, known=every)

    def _fold(self, kc: KernelConn, st: int, last_ns: int) -> None:
        """Write the kernel's state into the connection's records (if it moved)."""
        if (st, last_ns) == (kc.state, kc.last_ns):
            return
        kc.state, kc.last_ns = st, last_ns
        self.counters["folded"] += 1
        ct = self.conntrack
        timeouts: Timeouts = ct.timeouts
        now = time.time()
        seen = now - (time.monotonic_ns() - last_ns) / 1e9
        state, fins = CtState(st & 0xFF), (st >> 8) & (FIN_ORIG | FIN_REPLY)
        for dep in kc.deps:
            found = self._read(dep)
            if found is None:
                continue
            entry, version = found
            if entry.state in CLOSING:
                continue  # closed records are never rewritten (conntrack's rule)
            expiry = seen + timeouts.of(entry.orig, state)
            ttl = max(expiry - now, 1.0)  # (an expired one reads as absent until it goes)
            flags = (entry.flags & ~(FIN_ORIG | FIN_REPLY)) | fins
            new = advanced_entry(entry, state, entry.mark, flags, seen, expiry)
            key = ct.key(entry.zone, entry.orig)
            store = ct.store
            if not store.compare_and_set(key, version, encode(new), ttl).ok:
                self.counters["record_conflicts"] += 1
                continue
            self.counters["records_written"] += 1
            mirror = ct.key(entry.zone, entry.reply)
            if mirror != key:
                store.put(mirror, encode(new, MIRROR), ttl)
            if new.flags & SNAT_POOL and claim_due(timeouts, entry, new, now):
                pool, member = snat_pool(ct.prefix, new)
                store.allocate(pool, (member,), key, claim_ttl(timeouts, new))

    def _read(self, dep: Hashable) -> tuple[Any, int] | None:
        return read_primary(self.conntrack, dep)

    # -- kernel map access ----------------------------------------------------------------
    def _cstate(self, cid: int) -> tuple[int, int] | None:
        """(st, last_ns) of a connection in the kernel (one syscall; the buffers are
        reused: the sweep reads every owned connection)."""
        kb, vb = self._kbuf, self._vbuf
        _CID.pack_into(kb, 0, cid)
        if self.lib.bpf_map_lookup_elem(self.cstates_fd, kb, vb) != 0:
            return None
        last_ns, _packets, st = _CSTATE.unpack_from(vb)
        return st, last_ns

    def _all_cstates(self) -> dict[int, tuple[int, int]] | None:
        """Every ``cstates`` entry as ``{cid: (st, last_ns)}``, read with
        ``bpf_map_lookup_batch`` (None: this libbpf has no batch lookup, or it failed —
        the caller then reads them one by one)."""
        call = self._lookup_batch
        if call is None:
            return None
        chunk = _BATCH_CHUNK
        keys = ctypes.create_string_buffer(_CID.size * chunk)
        values = ctypes.create_string_buffer(_CSTATE.size * chunk)
        tokens = (ctypes.create_string_buffer(8), ctypes.create_string_buffer(8))
        opts = kmap.BatchOpts(ctypes.sizeof(kmap.BatchOpts), 0, 0)
        out: dict[int, tuple[int, int]] = {}
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = call(
                self.cstates_fd, None if first else tokens[0], tokens[1], keys, values,
                ctypes.byref(count), ctypes.byref(opts),
            )  # fmt: skip
            n = min(int(count.value), chunk)
            if rc != 0 and rc != -errno.ENOENT:
                return None  # (an incomplete answer must not read as connections gone)
            for (cid,), (last_ns, _packets, st) in zip(
                _CID.iter_unpack(keys.raw[: n * _CID.size]),
                _CSTATE.iter_unpack(values.raw[: n * _CSTATE.size]),
                strict=True,
            ):
                out[cid] = (st, last_ns)
            if rc != 0:  # -ENOENT (libbpf 1.x returns -errno): that was the last of them
                return out
            ctypes.memmove(tokens[0], tokens[1], 8)
            first = False

    def _update(self, fd: int, key: bytes, value: bytes) -> None:
        if not kmap.update_elem(self.lib, fd, key, value):
            log.warning("offload: a kernel connection map write failed")

    def _delete(self, fd: int, key: bytes) -> None:
        kmap.delete_elem(self.lib, fd, key)

    def stats(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "why_not": self.why,
            "owned": len(self.owned),
            "waiting_halves": len(self.half),
            **self.counters,
        }


_BATCH_CHUNK = 4096  # cstates entries per lookup-batch syscall


def _bind_lookup_batch(lib: Any) -> Any:
    """libbpf's ``bpf_map_lookup_batch``, declared (None when this libbpf has none)."""
    call = getattr(lib, "bpf_map_lookup_batch", None)
    if call is None:
        return None
    if hasattr(call, "argtypes"):  # libbpf itself (tests give a fake)
        vp = ctypes.c_void_p
        call.restype = ctypes.c_int
        call.argtypes = [ctypes.c_int, vp, vp, vp, vp, vp, vp]
    return call


def read_primary(conntrack: Any, dep: Hashable) -> tuple[Any, int] | None:
    """The primary record of ``dep`` = (zone, orig, serial) and its version, if the
    store holds one that is that connection's (not a mirror, not a later connection
    on the same tuple)."""
    zone, orig, serial = cast(tuple[int, Any, int], dep)
    raw = conntrack.store.get(conntrack.key(zone, orig))
    if raw is None:
        return None
    try:
        entry, kind = decode(raw.value, raw.version)
    except CodecError:
        return None
    if kind == MIRROR or entry.serial != serial:
        return None
    return entry, raw.version
