"""SYN templates: a new TCP connection through stateful ACL + masquerade SNAT made by the
kernel from its SYN alone (docs/conn-rate.md, step 2; docs/offload.md, "SYN templates").

Why: with the hand-over at the SYN-ACK (``handshake.py``) a connection still costs the
datapath two slow-path walks (SYN, SYN-ACK), the ACK's prediction and the hand-over:
~2 ms of Python against OVN's ≤ 200 µs budget per connection. The connections a
client opens to one server port differ, in everything the pipeline reads, only in
the client's source port — provided no installed rule reads that port (a match on
``tp.src`` or an action reading it: :func:`reads_source_port`) — and in the SNAT port
conntrack claims for them. So once one such connection has been handed over at its
SYN-ACK with all three outcomes known from the real pipeline (the SYN's, equal to the
predicted ACK's; the SYN-ACK's), those outcomes are every later connection's of the
same *template* (the SYN's ``conns`` key with the source port zeroed), with the two
ports patched in. The kernel (``flows.bpf.c``: ``tpls``, ``tpl_ports``, ``made``,
``syn_make``) then makes such a connection itself: a SNAT port from the template's own
supply, which the datapath claimed in the SNAT pool of the template's destination
(pools are per destination address and port, ``nf/nat.py``; a template has exactly one
destination, so its ports are claimed there and nowhere else), both ``conns`` entries
and the ``cstates`` entry in SYN_SENT, and a report (a BPF ring buffer, ``ringbuf.py``)
from which the datapath registers the connection in
:class:`~netvirt.dataplane.offload.conns.KernelConns` (:meth:`SynTemplates.drain`). Its
user-space conntrack records are *deferred* (:data:`DEFER`, session 11): written, in
the kernel's state, only when user space needs them (:meth:`SynTemplates.settle`,
:meth:`SynTemplates.materialize`, :meth:`SynTemplates.fault_in`); a connection with
anything at its keys has them written at its report instead (the eager path).

On by default (:data:`DEFAULT_ON`; ``NETVIRT_SYN_TEMPLATES=1``/``0`` overrides): see
docs/conn-rate.md, "Session 10", for what is built and measured. Refused (counted by
reason): IPv6, a rule reading the source port, a SYN outcome that differs from the ACK's, records
other than plain conntrack (no NAT) and masquerade SNAT, load-balancer counters.

Thread-safety: none (the datapath loop's).
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final, NamedTuple, cast

from netvirt.dataplane.nf.codec import (
    FIN_ORIG,
    FIN_REPLY,
    MIRROR,
    SNAT_POOL,
    CodecError,
    CtEntry,
    CtState,
    decode,
    encode,
)
from netvirt.dataplane.nf.nat import snat_pool
from netvirt.dataplane.nf.tcp import CLOSING, claim_ttl
from netvirt.dataplane.offload import kmap
from netvirt.dataplane.offload.conns import KernelConn, read_primary
from netvirt.dataplane.offload.envflag import env_flag

log = logging.getLogger(__name__)

ENV = "NETVIRT_SYN_TEMPLATES"
_KEY_HEAD = 16  # struct fkey before its covered bytes
_SPORT = _KEY_HEAD + 28  # TCP4 covered bytes: the source port
_DPORT = _KEY_HEAD + 30  # ... the destination port
_FLAGS = _KEY_HEAD + 32  # ... the data offset and flags
_TUPLE, _TUPLE_END = _KEY_HEAD + 19, _KEY_HEAD + 32  # ... the ingress tuple (``covered_tuple``)
FVAL = 176  # sizeof(struct fval)
FKEY = 76  # sizeof(struct fkey)
_TPL = struct.Struct(f"={FVAL}s{FVAL}s{FKEY}sII4x")  # struct tpl: id, head, tail (440 bytes)
_TPORT = struct.Struct("=II")  # struct tport: template id, sequence number
_MADE = struct.Struct("=QQIHH")  # struct made: conn, ns, tpl, sport, port (ports big-endian)
_U64 = struct.Struct("=Q")
FIRST_KERNEL_ID = 1 << 62  # kernel-made connection ids (user space counts from 1)
BLOCK = 1024  # SNAT ports a template's supply holds at most, untaken or taken but not yet
# reported (refilled below 3/4 at each report drain; the first fill is at learning, so a
# run's start has the whole supply)
SUPPLY_LIMIT = 4096  # the same for all templates together (each gets its share, at least
# 64): it bounds the reports a drain may find waiting, and a drain runs before any
# slow-path frame — 16k waiting reports were a ~2 s stall of the datapath, every SYN
# the kernel could not serve meanwhile timing out (the client errors of session 10).
# ``tpl_ports`` holds 65,536: a port the kernel puts back always finds room.
BLOCK_TTL = 3600.0  # a block port's claim in the pool (renewed while the datapath runs)
TPL_LIMIT = 1024  # the kernel map's size
HOLD = 30.0  # an undone connection's entries send its packets to the datapath this long
DEFER = True  # a made connection's records are written when user space needs them, not at
# its report (``SynTemplates.settle``): writing them at every report and folding each state
# change back was ~70 % of the datapath's CPU at 4k connections/s (docs/conn-rate.md)
RENEW_EVERY = BLOCK_TTL / 4  # block claims (untaken ports, deferred connections') renewed


DEFAULT_ON = True  # the one switch for the default (``NETVIRT_SYN_TEMPLATES`` overrides it)


def enabled_by_env() -> bool:
    """:data:`ENV` as ``netvirt datapath`` reads it (a boolean word), else the default;
    anything else is a clear error (``envflag.env_flag``)."""
    return env_flag(ENV, DEFAULT_ON)


def template_key(conn_key: bytes) -> bytes | None:
    """The template key of an IPv4 TCP ``conns`` key: its source port zeroed."""
    if int.from_bytes(conn_key[4:8], "little") != 1:
        return None
    return conn_key[:_SPORT] + b"\0\0" + conn_key[_SPORT + 2 :]


def reply_template_key(conn_key: bytes) -> bytes:
    """The reply direction's ``conns`` key with its destination port (the SNAT port) zeroed."""
    return conn_key[:_DPORT] + b"\0\0" + conn_key[_DPORT + 2 :]


def pack_template(orig: bytes, reply: bytes, rkey: bytes, tid: int) -> bytes:
    """``struct tpl``: both directions' ``fval`` and the reply key."""
    return _TPL.pack(orig[:FVAL], reply[:FVAL], reply_template_key(rkey), tid, 0)


def reads_source_port(match_fields: Iterable[str], reads: Iterable[tuple[int, int]] | None) -> bool:
    """Whether a rule may read the TCP/UDP source port: it matches on it, or its actions
    read it (``segments.segment_reads``; None: outside the whitelist, so maybe)."""
    from netvirt.dataplane.fields import BY_NAME

    if "tp.src" in match_fields:
        return True
    if reads is None:
        return True
    index = BY_NAME["tp.src"].index
    return any(field == index and mask for field, mask in reads)


@dataclass(frozen=True)
class Template:
    """One learned template: its id, kernel key and the records of its learning
    connection (one per zone, the shape every made connection's records take)."""

    tid: int
    key: bytes  # the original direction's ``conns`` key, source port zeroed
    rkey: bytes  # the reply direction's, destination port zeroed
    records: tuple[CtEntry, ...]
    sport: int  # the learning connection's client source port
    pool: str  # the SNAT pool its records claim from
    keyparts: tuple[tuple[str, str, str, bool], ...] = ()  # (:func:`key_parts`, per record)


class Made(NamedTuple):
    """A connection the kernel made (its report; a NamedTuple: one per connection)."""

    conn: int
    ns: int
    tid: int
    sport: int
    port: int


@dataclass(slots=True)
class Deferred:
    """A made connection whose records are not written (:data:`DEFER`): what writing
    them takes, besides its template's records."""

    tid: int
    sport: int
    port: int
    ns: int  # when the kernel made it (monotonic ns)


Parked = tuple[float, int, int, int, int, int, int, bytes, bytes, int]
"""A closed deferred connection out of the kernel, its records unwritten: (until (monotonic
s), template id, client port, SNAT port, made at (ns), kernel state, last packet (ns), its
two ingress tuples, a sequence number). They are written if a frame of it comes
(:meth:`SynTemplates.fault_in`) before its timeout (TIME_WAIT's, CLOSED's) ends; its SNAT
port stays claimed until then. A tuple of numbers and bytes, not an object: up to 120 s
of connections are parked (~2M at 16k/s), and CPython's collector stops tracking such
tuples, where every object of a class would be walked by each full collection (they
took 340 ms each, a quarter of the datapath's CPU, in a connection-rate run)."""


# fields of a :data:`Parked`
_P_TID: Final = 1
_P_PORT: Final = 3
_P_T0: Final = 7
_P_T1: Final = 8
_P_SEQ: Final = 9


def key_parts(prefix: str, rec: CtEntry) -> tuple[str, str, str, bool]:
    """The store keys of ``rec``'s tuples as :func:`~netvirt.dataplane.nf.codec.ct_key`
    writes them, split around the ports a made connection changes: (the primary's key up
    to its source port, the rest after it, the mirror's key up to its destination port,
    whether that port is the SNAT port (else the client's)). :meth:`SynTemplates._free`
    looks a made connection's four keys up from these without building its records."""
    o, r = rec.orig, rec.reply
    head = f"{prefix}{rec.zone:x}:{o.ip_version}:{o.proto}:{o.src:x}:{o.dst:x}:"
    rhead = f"{prefix}{rec.zone:x}:{r.ip_version}:{r.proto}:{r.src:x}:{r.dst:x}:{r.sport:x}:"
    return head, f":{o.dport:x}", rhead, bool(rec.flags & SNAT_POOL)


@dataclass
class Supply:
    """One template's SNAT ports in the kernel (``tpl_ports``): posted at sequence
    numbers ``0..tail-1``; the kernel takes them in order (its ``head``)."""

    tid: int
    tkey: bytes
    pool: str
    port_range: tuple[int, int]
    tail: int = 0
    owner: str = ""  # its claims' owner in the pool (one per template: two templates to
    # one destination share its pool, and ``allocate`` gives an owner its own ports back)
    posted: dict[int, int] = field(default_factory=dict)  # port -> seq, not yet reported
    inuse: set[int] = field(default_factory=set)  # ports of its deferred connections, live or
    # parked: still claimed by ``owner`` (``allocate`` would give them back to it)
    live: bool = True  # False once its template is flushed (reports may still come)


def made_records(
    t: Template, sport: int, port: int, now: float, ttl: float,
    state: CtState = CtState.SYN_SENT, fins: int = 0, seen: float | None = None,
) -> list[CtEntry]:  # fmt: skip
    """The conntrack records a connection made from ``t`` with client source port
    ``sport`` and SNAT port ``port`` has, as conntrack's ``_claim`` creates them: the
    learning connection's tuples with the ports substituted, SYN_SENT, created ``now``
    (its timeout ``ttl``). A deferred connection's are written later in the kernel's
    state: ``state``, the FIN bits ``fins``, its last packet at ``seen``."""
    out: list[CtEntry] = []
    seen = now if seen is None else seen
    for rec in t.records:
        orig = rec.orig._replace(sport=sport)
        if rec.flags & SNAT_POOL:
            reply = rec.reply._replace(dport=port)
        else:
            reply = rec.reply._replace(dport=sport)
        flags = (rec.flags & ~(FIN_ORIG | FIN_REPLY)) | fins
        out.append(
            replace(
                rec, orig=orig, reply=reply, state=state, created=now, last_seen=seen,
                expiry=seen + ttl, flags=flags, serial=0, version=0,
            )
        )  # fmt: skip
    return out


def template_records(records: Iterable[CtEntry], sport: int) -> tuple[CtEntry, ...] | str:
    """The learning connection's records if every one has the shape :func:`made_records`
    can repeat (else the refusal's reason): TCP over IPv4 from ``sport``, no load-balancer
    counter, and either no NAT at all or masquerade SNAT (source translated, pool flag)."""
    out = []
    for rec in records:
        o, r = rec.orig, rec.reply
        if o.proto != 6 or o.ip_version != 4 or o.sport != sport:
            return "not IPv4 TCP from the SYN's port"
        if rec.lb_counter or rec.dnat:
            return "load balancing or DNAT"
        if rec.flags & SNAT_POOL:
            same = (r.proto, r.ip_version, r.src, r.sport) == (
                o.proto,
                o.ip_version,
                o.dst,
                o.dport,
            )
            if not same or not rec.snat:
                return "SNAT shape"
        elif r != o.reversed():
            return "NAT without a pool"
        out.append(rec)
    if not out:
        return "no records"
    return tuple(out)


class SynTemplates:
    """The datapath's side: templates into the kernel, the SNAT port block, reports
    drained into records and kernel-owned connections (see the module docstring)."""

    def __init__(self, loaded: Any, kconns: Any) -> None:
        self.lib = loaded.lib
        self.fds = (loaded.tpls_fd, loaded.tpl_ports_fd, loaded.made_fd, loaded.next_conn_fd)
        self._ports_map = kmap.BatchedMap(loaded.lib, loaded.tpl_ports_fd)  # (batched posts)
        self.kconns = kconns  # conns.KernelConns
        self.available = min(self.fds) >= 0
        self.enabled = False
        self.why = "off (NETVIRT_SYN_TEMPLATES=1 turns it on)"
        self.templates: dict[bytes, Template] = {}
        self.by_id: dict[int, Template] = {}
        self.next_tid = 1
        self.owner = f"kblock:{os.getpid()}"
        self.supply: dict[int, Supply] = {}  # template id -> its ports in the kernel
        self._live = 0  # supplies of live templates ...
        self._dead = 0  # ... and of flushed ones still holding ports (:meth:`_census`)
        self._census_key: tuple[int, int] | None = None
        self._cursor: dict[str, int] = {}  # pool -> where the next claims are looked for
        self.ring = getattr(loaded, "made_ring", None)  # ``ringbuf.RingReader`` of ``made``
        self.defer = DEFER
        self.parked: dict[bytes, Parked] = {}  # by both ingress tuples (``conns.frame_tuple``)
        # in order of parking, one queue per timeout (TIME_WAIT's, CLOSED's): each nearly in
        # ``until`` order (a connection's idle time at parking varies by a sweep period),
        # so one may go back up to that much later than its timeout, never earlier
        self._park_queues: dict[float, deque[Parked]] = {}
        self._park_seq = 0
        self._written: set[int] = set()  # parked ones faulted in (their ports are the records')
        self._next_renew = time.monotonic() + RENEW_EVERY
        self.counters: dict[str, int] = dict.fromkeys(
            ("learned", "made", "records_written", "record_conflicts", "ports_claimed",
             "ports_returned", "flushes", "deferred", "materialized", "parked", "faulted_in",
             "let_go"), 0
        )  # fmt: skip
        self.refused: dict[str, int] = {}
        self.conflicts: dict[str, int] = {}  # why a made connection's records were refused

    def enable(self, on: bool) -> None:
        if not self.available:
            self.why = "the loaded program has no template maps"
            return
        if on and not self.kconns.enabled:
            self.why = f"kernel connections off: {self.kconns.why}"
            return
        self.enabled = on
        self.why = "" if on else "off"
        if on:
            self._update(self.fds[3], struct.pack("=I", 0), _U64.pack(FIRST_KERNEL_ID))

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def conflict(self, reason: str) -> None:
        self.conflicts[reason] = self.conflicts.get(reason, 0) + 1

    # -- learning -------------------------------------------------------------------------
    def learn(
        self, orig_key: bytes, orig_value: bytes, reply_key: bytes, reply_value: bytes,
        deps: tuple[Hashable, ...], sport: int,
        snat_range: Callable[[int], tuple[int, int] | None],
    ) -> bool:  # fmt: skip
        """A connection handed over at its SYN-ACK whose SYN's outcome equals its ACK's
        (the caller checked, with no rule reading the source port): its template."""
        if not self.enabled:
            return False
        tkey = template_key(orig_key)
        if tkey is None:
            self.refuse("not IPv4 TCP")
            return False
        if tkey in self.templates:
            return False
        if len(self.templates) >= TPL_LIMIT:
            self.refuse("template map full")
            return False
        found = [read_primary(self.kconns.conntrack, dep) for dep in deps]
        if any(f is None for f in found):
            self.refuse("records gone")
            return False
        records = template_records((cast(tuple[CtEntry, int], f)[0] for f in found), sport)
        if isinstance(records, str):
            self.refuse(records)
            return False
        prefix = self.kconns.conntrack.prefix
        snats = {(snat_pool(prefix, r)[0], r.nat_src[0]) for r in records if r.flags & SNAT_POOL}
        if len(snats) > 1:
            self.refuse("two SNAT pools")
            return False
        pool = ""
        port_range: tuple[int, int] | None = None
        if snats:
            pool, ip = snats.pop()
            port_range = snat_range(ip)
            if port_range is None:
                self.refuse("SNAT port range unknown")
                return False
        tid = self.next_tid
        self.next_tid += 1
        parts = tuple(key_parts(prefix, rec) for rec in records)
        t = Template(tid, tkey, reply_template_key(reply_key), records, sport, pool, parts)
        self._update(self.fds[0], tkey, pack_template(orig_value, reply_value, reply_key, tid))
        self.templates[tkey] = t
        self.by_id[tid] = t
        if port_range is not None:
            self.supply[tid] = Supply(tid, tkey, pool, port_range, owner=f"{self.owner}:{tid}")
        self.counters["learned"] += 1
        self.refill()
        return True

    def flush(self) -> None:
        """Every exact-cache flush (rules, topology, MAC bindings): templates go, and the
        ports of their supplies the kernel has not taken go back to their pools."""
        if not self.templates:
            return
        for tkey in self.templates:
            self._delete(self.fds[0], tkey)
        self.templates.clear()
        for sup in self.supply.values():
            sup.live = False
        self._return_unused()
        self.counters["flushes"] += 1  # (by_id stays: reports of made connections may wait)

    def _census(self) -> None:
        """Count live and flushed supplies again when the set of supplies or their liveness
        changed (a refill runs at every report drain: not a walk of every supply each)."""
        key = (len(self.supply), self.counters["flushes"])
        if key == self._census_key:
            return
        self._census_key = key
        self._live = sum(1 for sup in self.supply.values() if sup.live)
        self._dead = len(self.supply) - self._live

    def _return_unused(self) -> None:
        """Ports of flushed templates' supplies: those still in the kernel map are taken
        back (deleting them there wins against a SYN that raced for them) and released;
        a supply is forgotten once nothing of it is left (a report may still be due)."""
        store = self.kconns.conntrack.store if self.kconns.conntrack is not None else None
        for tid, sup in list(self.supply.items()):
            if sup.live:
                continue
            for port, seq in list(sup.posted.items()):
                if self._delete(self.fds[1], _TPORT.pack(tid, seq)):
                    del sup.posted[port]
                    if store is not None:
                        store.release(sup.pool, str(port), sup.owner)
                    self.counters["ports_returned"] += 1
            if not sup.posted:
                del self.supply[tid]

    # -- the SNAT port supplies -------------------------------------------------------------
    def refill(self) -> None:
        """Keep each live template's supply at :data:`BLOCK` ports (refilled below 3/4;
        fewer each when many templates share :data:`SUPPLY_LIMIT`), claimed in the SNAT
        pool of the template's destination. A port counts until its report is drained:
        that bounds the reports waiting (backpressure: a kernel ahead of user space runs
        out of ports and its SYNs take the slow path, instead of a backlog growing)."""
        self._census()
        if self._dead:
            self._return_unused()
            self._census()
        if not self._live:
            return
        target = max(64, min(BLOCK, SUPPLY_LIMIT // self._live))
        low = target * 3 // 4
        store = self.kconns.conntrack.store
        for sup in self.supply.values():
            if not sup.live or len(sup.posted) > low:
                continue
            lo, hi = sup.port_range
            span = hi - lo + 1
            cursor = self._cursor.get(sup.pool, 0)
            posted, inuse = sup.posted, sup.inuse
            batch: list[tuple[bytes, bytes]] = []  # (written in one syscall below)
            tries = 0
            while len(posted) < target and tries < span:
                port = lo + cursor
                cursor = (cursor + 1) % span
                tries += 1
                if port in posted or port in inuse:
                    continue  # (the owner's own: ``allocate`` would give it back)
                member = str(port)
                # one candidate per call: a window of them costs a scan of the window
                # per port claimed (~40 % of the datapath's CPU at 15k connections/s)
                if store.allocate(sup.pool, (member,), sup.owner, BLOCK_TTL) != member:
                    continue
                batch.append((_TPORT.pack(sup.tid, sup.tail), port.to_bytes(2, "big")))
                posted[port] = sup.tail
                sup.tail += 1
                self.counters["ports_claimed"] += 1
            self._cursor[sup.pool] = cursor
            failed = self._ports_map.write_known(batch) if batch else set()
            if failed:  # the map is full: those ports go back, the supply stops there (the
                # kernel takes ports in sequence: a gap would stall it at the first hole)
                first = min(_TPORT.unpack(k)[1] for k in failed)
                for key, value in batch:
                    seq = _TPORT.unpack(key)[1]
                    if seq >= first:
                        port = int.from_bytes(value, "big")
                        del posted[port]
                        store.release(sup.pool, str(port), sup.owner)
                        self.counters["ports_claimed"] -= 1
                        if key not in failed:
                            self._delete(self.fds[1], key)
                sup.tail = first
                log.warning("offload: the template port map is full")

    # -- reports --------------------------------------------------------------------------
    def drain(self) -> int:
        """The kernel's reports: records written, connections registered as the kernel's."""
        if not self.enabled:
            return 0
        ring = self.ring
        if ring is None:
            return 0
        n = 0
        for raw in ring.read():
            conn, ns, tid, sport, port = _MADE.unpack(raw)  # (ports in network order)
            self._record(Made(conn, ns, tid, (sport & 0xFF) << 8 | sport >> 8,
                              (port & 0xFF) << 8 | port >> 8))  # fmt: skip
            n += 1
        if n:
            self.refill()  # (a no-op for a supply holding more than 3/4 of its target)
        return n

    def _record(self, m: Made) -> None:
        self.counters["made"] += 1
        t = self.by_id.get(m.tid)
        ct = self.kconns.conntrack
        if t is None:  # (cannot happen: ids are never reused, templates kept by id)
            self.counters["record_conflicts"] += 1
            self.kconns.drop_made(m.conn, ())
            return
        sp, pp = m.sport.to_bytes(2, "big"), m.port.to_bytes(2, "big")
        keys = (
            t.key[:_SPORT] + sp + t.key[_SPORT + 2 :],
            t.rkey[:_DPORT] + pp + t.rkey[_DPORT + 2 :],
        )
        ifindexes = (int.from_bytes(keys[0][:4], "little"), int.from_bytes(keys[1][:4], "little"))
        sup = self.supply.get(m.tid)
        if sup is not None:
            sup.posted.pop(m.port, None)
        if self.defer and t.keyparts and self._free(t, m.sport, m.port):
            # nothing on its tuples: the kernel's alone until user space needs its records
            kc = self.kconns.adopt_deferred(
                m.conn, keys, ifindexes, Deferred(m.tid, m.sport, m.port, m.ns),
                (keys[0][_TUPLE:_TUPLE_END], keys[1][_TUPLE:_TUPLE_END]),
            )  # fmt: skip
            if kc is None:
                self._let_go(t, m.port)
                return
            self.counters["deferred"] += 1
            if sup is not None:
                sup.inuse.add(m.port)
            for tup in kc.tuples:  # a closed one parked on its tuple is over (a SYN replaces
                old = self.parked.get(tup)  # a closed record); its port stays claimed until
                if old is not None:  # its own timeout ends (the heap still has it)
                    self._unpark(old)
            return
        now = time.time() - (time.monotonic_ns() - m.ns) / 1e9
        ttl = ct.timeouts.of(t.records[0].orig, CtState.SYN_SENT)
        deps = self._write_all(t, made_records(t, m.sport, m.port, now, ttl), m.port, now)
        if deps is not None:
            self.kconns.adopt_made(m.conn, keys, ifindexes, deps, m.ns)
            return
        # a record of the tuple is there already (an older connection): the kernel's is
        # undone, its SYN's retransmission takes the slow path
        self.kconns.drop_made(m.conn, keys, HOLD)

    def _write_all(
        self, t: Template, records: list[CtEntry], port: int, now: float
    ) -> tuple[Hashable, ...] | None:
        """Write a made connection's records (:meth:`_write`), its SNAT claim moved from the
        template's block to the connection: their deps, or None (nothing left written, the
        block's port released) when a tuple is a live connection's."""
        ct = self.kconns.conntrack
        store = ct.store
        owner = f"{self.owner}:{t.tid}"
        timeouts = ct.timeouts
        deps: list[Hashable] = []
        for i, rec in enumerate(records):
            ttl = max(rec.expiry - now, 1.0)
            written = self._write(rec, now, ttl)
            if written is None:
                break
            records[i] = rec = written
            if rec.flags & SNAT_POOL:  # the claim moves from the block to the connection
                pool, member = snat_pool(ct.prefix, rec)
                store.release(pool, member, owner)
                store.allocate(
                    pool, (member,), ct.key(rec.zone, rec.orig), claim_ttl(timeouts, rec)
                )
            deps.append((rec.zone, rec.orig, rec.serial))
        else:
            self.counters["records_written"] += len(records)
            return tuple(deps)
        self.counters["record_conflicts"] += 1
        for rec in records[: len(deps)]:
            store.delete(ct.key(rec.zone, rec.orig))
            mirror = ct.key(rec.zone, rec.reply)
            if mirror != ct.key(rec.zone, rec.orig):
                store.delete(mirror)
            if rec.flags & SNAT_POOL:
                pool, member = snat_pool(ct.prefix, rec)
                store.release(pool, member, ct.key(rec.zone, rec.orig))
        self._let_go(t, port)
        return None

    # -- deferred records -----------------------------------------------------------------
    def _free(self, t: Template, sport: int, port: int) -> bool:
        """No record (of any kind) at any of the made connection's four keys: its records
        may wait (every other case takes :meth:`_write`'s rules now)."""
        sp, pp = f"{sport:x}", f"{port:x}"
        keys: list[str] = []
        for head, tail, rhead, snat in t.keyparts:
            keys += (head + sp + tail, rhead + (pp if snat else sp))
        return not any(self.kconns.conntrack.store.get_many(keys))

    def settle(self, kc: Any, found: tuple[int, int] | None, fault: bool) -> None:
        """A deferred connection leaves the kernel (``KernelConns.release_many``; its entries
        are out, ``found`` = its last (st, last_ns) there): expired, it needs no records;
        closed, it is parked until its timeout ends (records written only if a frame of
        it comes); otherwise — or when a frame of it is about to take the slow path
        (``fault``) — its records are written now, in the kernel's state."""
        d: Deferred = kc.made
        t = self.by_id.get(d.tid)
        if t is None:
            return
        if found is None:
            self._let_go(t, d.port)
            return
        st, last_ns = found
        state = CtState(st & 0xFF)
        timeout = self.kconns.conntrack.timeouts.of(t.records[0].orig, state)
        idle = (time.monotonic_ns() - last_ns) / 1e9
        if idle > timeout:
            self._let_go(t, d.port)
            return
        if fault or state not in CLOSING:
            self.materialize(kc, st, last_ns)
            return
        self._park_seq += 1
        t0, t1 = kc.tuples
        p: Parked = (
            time.monotonic() + timeout - idle, d.tid, d.sport, d.port, d.ns, st, last_ns, t0, t1,
            self._park_seq,
        )  # fmt: skip
        self.parked[t0] = self.parked[t1] = p
        queue = self._park_queues.get(timeout)
        if queue is None:
            queue = self._park_queues[timeout] = deque()
        queue.append(p)
        self.counters["parked"] += 1

    def materialize(self, kc: Any, st: int, last_ns: int) -> bool:
        """Write a deferred connection's records as conntrack would hold them now: created
        when the kernel made it, in the kernel's state ``st`` (and FIN bits), its last
        packet at ``last_ns``. The connection is then an ordinary kernel one (deps, no
        ``made``), or — a tuple taken meanwhile (cannot happen while its entries are in
        the kernel) — nothing is written and False."""
        d: Deferred = kc.made
        t = self.by_id[d.tid]
        ct = self.kconns.conntrack
        now, mono = time.time(), time.monotonic_ns()
        created = now - (mono - d.ns) / 1e9
        seen = now - (mono - last_ns) / 1e9
        state, fins = CtState(st & 0xFF), (st >> 8) & (FIN_ORIG | FIN_REPLY)
        ttl = ct.timeouts.of(t.records[0].orig, state)
        records = made_records(t, d.sport, d.port, created, ttl, state, fins, seen)
        deps = self._write_all(t, records, d.port, now)
        if deps is None:
            return False
        kc.deps, kc.made = deps, None
        kc.state, kc.last_ns = st, last_ns
        sup = self.supply.get(d.tid)
        if sup is not None:
            sup.inuse.discard(d.port)  # (the connection's claim now, not the block's)
        self.counters["materialized"] += 1
        return True

    def fault_in(self, tup: bytes) -> None:
        """A frame of a parked connection is about to take the slow path: its records
        first (conntrack then finds it closed, as it would have all along)."""
        p = self.parked.get(tup)
        if p is None:
            return
        self._unpark(p)
        _until, tid, sport, port, ns, st, last_ns, t0, t1, seq = p
        self._written.add(seq)
        self.counters["faulted_in"] += 1
        kc = KernelConn(
            (b"", b""), (t0, t1), (0, 0), (), st, last_ns, Deferred(tid, sport, port, ns)
        )
        self.materialize(kc, st, last_ns)

    def _unpark(self, p: Parked) -> None:
        for tup in (p[_P_T0], p[_P_T1]):
            if self.parked.get(tup) is p:
                del self.parked[tup]

    def expire(self, mono: float) -> None:
        """Parked connections whose timeout ended: their SNAT ports go back; and now and
        then the block's claims are renewed (the sweep's, ``KernelConns.tick``)."""
        for queue in self._park_queues.values():
            while queue and queue[0][0] <= mono:
                p = queue.popleft()
                self._unpark(p)
                if p[_P_SEQ] in self._written:
                    self._written.discard(p[_P_SEQ])
                    continue
                t = self.by_id.get(p[_P_TID])
                if t is not None:
                    self._let_go(t, p[_P_PORT])
        if mono >= self._next_renew:
            self._next_renew = mono + RENEW_EVERY
            self.renew()

    def renew(self) -> None:
        """The block's claims last :data:`BLOCK_TTL`: renewed for every port it still
        holds (untaken in a supply, a deferred connection's, a parked one's)."""
        store = self.kconns.conntrack.store
        held: list[tuple[int, int]] = []
        for sup in self.supply.values():
            held += [(sup.tid, port) for port in sup.posted]
        for kc in self.kconns.owned.values():
            if kc.made is not None:
                held.append((kc.made.tid, kc.made.port))
        for queue in self._park_queues.values():
            held += [(p[_P_TID], p[_P_PORT]) for p in queue if p[_P_SEQ] not in self._written]
        for tid, port in held:
            t = self.by_id.get(tid)
            if t is not None and t.pool:
                store.allocate(t.pool, (str(port),), f"{self.owner}:{tid}", BLOCK_TTL)

    def _let_go(self, t: Template, port: int) -> None:
        """A made connection is over without records: its SNAT port leaves the block."""
        self.counters["let_go"] += 1
        sup = self.supply.get(t.tid)
        if sup is not None:
            sup.inuse.discard(port)
        if t.pool:
            self.kconns.conntrack.store.release(t.pool, str(port), f"{self.owner}:{t.tid}")

    def _write(self, rec: CtEntry, now: float, ttl: float) -> CtEntry | None:
        """Create ``rec`` and its mirror as conntrack's ``_claim`` does for a SYN: over no
        record, or over one the SYN replaces (expired, or a closed TCP connection: its
        version becomes the serial); a mirror over none or over a dead connection's.
        None when the tuple is a live connection's (the kernel's is then undone)."""
        ct = self.kconns.conntrack
        store = ct.store
        key = ct.key(rec.zone, rec.orig)
        version = 0
        old = store.get(key)
        entry = rec
        if old is not None:
            try:
                entry, kind = decode(old.value, old.version)
            except CodecError:
                return None
            closed = entry.state in CLOSING
            if kind == MIRROR:
                self.conflict("a mirror at the primary's key")
                return None
            if not (entry.expiry <= now or closed):
                self.conflict(f"a live record ({entry.state.name})")
                return None
            version = old.version
            rec = replace(rec, serial=version)
        if not store.compare_and_set(key, version, encode(rec), ttl).ok:
            self.conflict("the record changed meanwhile")
            return None
        mirror = ct.key(rec.zone, rec.reply)
        if mirror == key:
            return rec
        if store.compare_and_set(mirror, 0, encode(rec, MIRROR), ttl).ok:
            return rec
        if self._dead_mirror(mirror, now) and store.put(mirror, encode(rec, MIRROR), ttl):
            return rec
        self.conflict("the reply tuple is a live connection's")
        if old is not None:  # the record it replaced comes back
            store.put(key, old.value, max(entry.expiry - now, 1.0))
        else:
            store.delete(key)
        return None

    def _dead_mirror(self, mirror: str, now: float) -> bool:
        """The mirror at ``mirror`` is of a connection that is over (its primary gone,
        expired, closed or another connection's): a new one may take it over."""
        ct = self.kconns.conntrack
        raw = ct.store.get(mirror)
        if raw is None:
            return True
        try:
            entry, kind = decode(raw.value, raw.version)
        except CodecError:
            return False
        if kind != MIRROR:
            return False
        primary = ct.store.get(ct.key(entry.zone, entry.orig))
        if primary is None:
            return True
        try:
            current, pkind = decode(primary.value, primary.version)
        except CodecError:
            return False
        if pkind == MIRROR or current.serial != entry.serial:
            return True
        return current.expiry <= now or current.state in CLOSING

    def release_block(self) -> None:
        """At exit (templates flushed, reports drained): the unused ports go back."""
        for sup in self.supply.values():
            sup.live = False
        self._census_key = None
        self._return_unused()

    # -- map access -----------------------------------------------------------------------
    def _update(self, fd: int, key: bytes, value: bytes) -> bool:
        if kmap.update_elem(self.lib, fd, key, value):
            return True
        log.warning("offload: a template map write failed")
        return False

    def _delete(self, fd: int, key: bytes) -> bool:
        return kmap.delete_elem(self.lib, fd, key)

    def stats(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "why_not": self.why,
            "templates": len(self.templates),
            "supplies": sum(1 for sup in self.supply.values() if sup.live),
            "block_ports": sum(len(sup.posted) for sup in self.supply.values()),
            **self.counters,
            "refused": dict(self.refused),
            "conflicts": dict(self.conflicts),
        }
