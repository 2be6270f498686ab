"""Connection tracking on a StateStore: state machines, NAT bindings, LB selection.

Theory of operation
-------------------
*What.* For every packet the pipeline sends through ``ct_next``/``ct_commit``/
``ct_dnat``/``ct_snat``/``ct_lb``, :class:`Conntrack` answers the packet's
``ct_state`` bits (``CT_NEW``/``EST``/``REL``/``RPL``/``INV``/``TRK`` and
``SNAT``/``DNAT``), the connection entry (state, mark, NAT) and the packet's
tuple after NAT, and updates the connection in the store. It is a functional
core: every call takes ``now`` and works on the ``StateStore`` it was built
with; nothing here reads a clock or keeps connection state in the process, so
any number of hosts sharing one store track connections together — a packet
of a connection created on host A is continued on host B ("stateless NF").

*Records.* A connection lives under two keys of one key space (``codec.py``):
the **primary**, at its original tuple, is the authority, and every change is
a compare-and-set on it; the **mirror**, at its reply tuple, is a copy written
right after the primary in the same round trip, so that a packet of either
direction finds its connection with a single read. Both carry the same TTL
and the entry's explicit ``expiry``; a record whose expiry has passed is
treated as absent even before the store drops it (the store's clock and
``now`` need not agree exactly; ``now`` should be wall-clock time shared by
the hosts, within a second or so).

*Creating* a connection is ``cas(primary, <version seen or 0>)`` plus
``cas(mirror, 0)`` in one round trip. The mirror "create only" is what makes
reply tuples unique (a NAT collision cannot go unnoticed). When two packets or
hosts race, one primary CAS wins; the loser drops its mirror (unless the
winner has the same reply tuple) and continues as a packet of the winner's
connection. A mirror left by an older incarnation of the same tuple, or by an
expired or closed connection, is taken over with its own version.

*Updating* (TCP state change, first reply, mark, or a refresh) is a CAS on the
primary with the version read, plus a put of the mirror. A reply-direction
packet has read only the mirror, so it first reads the primary (one more
round trip); a mirror whose primary is gone or belongs to a newer incarnation
is stale and treated as absent. The mirror put travels with the CAS and lands
even when the CAS loses, so the loser puts the winner's record back there (or
removes its copy when the winner's reply tuple differs), then re-decides on
the winner's state (which may already be the one wanted). A mirror is thus
briefly behind only while a race is being settled. Refreshes are rate-limited: a record is rewritten
for its timeout only once ``refresh_fraction`` of the timeout has passed since
its last write, so an idle connection expires between 90% and 100% of its
timeout after its last packet, and a busy one costs no write per packet.

*Batches.* Each request runs as a small generator that yields the store
operations it needs next; ``codec.drive`` gathers the operations of all
requests of a batch into one store round trip per step. Round trips per batch:
1 for lookups (one ``get_many``, including load-balancer records); +1 to
create connections; +1 per SNAT window when masquerading (before creating; a
TCP SYN sends its first window with the lookup); +1 for reply-direction writes
(read the primary, unless cached); +1 to flush load-balancer counters and
affinity; +1 per lost race. Packets of one batch are decided on the state at
the start of the batch (CAS keeps concurrent decisions safe).

*ct_state bits.* ``NEW``: no live connection and the packet may start one
(TCP: SYN without ACK; not an echo reply); it stays NEW even on the packet that
commits it. ``EST``: matches a committed, live connection in a way its state
allows — after a commit, not only after a reply is seen (Linux keeps such
packets NEW until the first reply). ``RPL``: the packet is in the reply
direction. ``REL``: an ICMP error quoting a tracked connection (the caller
passes the quoted tuple). ``INV``: TCP flag combinations that are never valid
(SYN+FIN, SYN+RST, none of SYN/ACK/FIN/RST), a non-SYN TCP packet or an echo
reply without a connection, a packet its TCP state does not allow (see
:func:`tcp_step`), an ICMP error quoting nothing tracked, or a NAT failure.
``SNAT``/``DNAT``: NAT was applied and the connection has that kind of NAT.

*TCP.* States follow Linux's names with fewer of them; sequence numbers and
windows are not tracked. SYN_SENT (SYN seen) → SYN_RECV (SYN or SYN-ACK in
reply) → ESTABLISHED (ACK in the original direction) → FIN_WAIT (a FIN from
one side) → CLOSE_WAIT (the other side ACKs it) → TIME_WAIT (the other side's
FIN: Linux's LAST_ACK is folded in here); RST in any state → CLOSED. A SYN
in TIME_WAIT or CLOSED starts a new connection over the old one. Until then a
closed connection is never written again (its packets are still judged, but
neither its state nor its timer moves), so a new connection may take over its
tuples — the reply tuple included — without a later write of the old one
landing on the new one's record.

*Invariants.* Both directions of a live connection that is not closed find
the same entry (a closed one may have lost its mirror to a new connection); an
entry never goes from ESTABLISHED back to SYN_SENT (only a new connection
replacing a TIME_WAIT/CLOSED one starts in SYN_SENT); a record is never
readable as live after its expiry.

*Read cache.* A datapath reads through ``state.cached.CachedStore``, which
answers recent reads from memory as ``CachedEntry`` (possibly stale, within its
``max_age``). A cached record may only let a packet pass without writing:
every decision that would reject the packet (invalid in its state, related to
nothing, association gone), or treat its connection as gone or stale, is
taken again on a fresh read (``_RECHECK``, ``GetOp(fresh=True)``); every change
is a compare-and-set on the cached version, which fails and refreshes if
another host wrote meanwhile. A cached *absence* (``CACHED_ABSENT``, asked for
with ``GetOp(absent_ok=True)``) serves only a creation, which is a
compare-and-set on version 0. So ``ct_next`` followed by ``ct_commit`` reads
once, and a connection this host created or last wrote costs no read at all.

*SNAT claims* are renewed only when the record needs it (``tcp.claim_due``):
not on a fast SYN_SENT → SYN_RECV step, and not on the closing steps after the
first FIN, whose claim is given TIME_WAIT's length at once.

*Store failures.* ``process_batch`` never raises for the store: requests still
waiting on a round trip that failed get a result flagged ``unavailable``,
shaped by ``fail``: ``closed`` (default) drops them (``STATE_UNAVAILABLE``),
``open`` answers lookups and commits as ``trk|est`` without writing anything
(NAT requests still drop: no translation can be invented).

*Thread-safety.* A ``Conntrack`` keeps no state between calls (``codec.decode``
keeps a bounded memo of immutable decoded records); it may be shared by threads
if its store may (both stores are thread-safe).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import (
    CT_DNAT,
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_SNAT,
    CT_TRK,
)
from netvirt.dataplane.nf.codec import (
    FIN_ORIG,
    FIN_REPLY,
    IPPROTO_TCP,
    MIRROR,
    SNAT_POOL,
    CtEntry,
    CtState,
    CtTuple,
    Task,
    advanced_entry,
    ct_key,
    drive_steps,
    encode,
    versioned_entry,
)
from netvirt.dataplane.nf.lb import LbRound, Pick
from netvirt.dataplane.nf.nat import (
    DEFAULT_WINDOW,
    DEFAULT_WINDOWS,
    NatRequest,
    Snat,
    nat_tuple,
    pool_key,
    port_window,
    snat_pool,
    translate,
    translate_related,
)
from netvirt.dataplane.nf.request import CtHit, CtRequest, CtResult  # re-exported
from netvirt.dataplane.nf.seen import (
    ABSENT as _ABSENT,
)
from netvirt.dataplane.nf.seen import (
    CACHED_ABSENT_SEEN as _CACHED_ABSENT,
)
from netvirt.dataplane.nf.seen import (
    LOCAL_ABSENT_SEEN as _LOCAL_ABSENT,
)
from netvirt.dataplane.nf.seen import (
    RECHECK as _RECHECK,
)
from netvirt.dataplane.nf.seen import (
    Seen as _Seen,
)
from netvirt.dataplane.nf.seen import (
    seen_of as _seen,
)
from netvirt.dataplane.nf.tcp import (  # re-exported: callers import them from here
    CLOSING,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Timeouts,
    claim_due,
    claim_ttl,
    tcp_flags_valid,
    tcp_opens,
    tcp_step,
)
from netvirt.state.jobs import Steps, run_steps
from netvirt.state.store import (
    AllocateOp,
    CasOp,
    CasResult,
    DeleteOp,
    Entry,
    GetOp,
    Op,
    PutOp,
    ReleaseOp,
    StateStore,
    StateStoreError,
    StateStoreUnavailable,
)

__all__ = [
    "FAIL_POLICIES",
    "TCP_ACK",
    "TCP_FIN",
    "TCP_RST",
    "TCP_SYN",
    "Conntrack",
    "CtHit",
    "CtRequest",
    "CtResult",
    "Timeouts",
    "tcp_flags_valid",
    "tcp_opens",
    "tcp_step",
]

FAIL_POLICIES = ("closed", "open")
_CLOSING = CLOSING


class Conntrack:
    """Connection tracking for every zone, on one store (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        prefix: str = "ct:",
        *,
        timeouts: Timeouts | None = None,
        snat_window: int = DEFAULT_WINDOW,
        snat_windows: int = DEFAULT_WINDOWS,
        max_attempts: int = 4,
        fail: str = "closed",
    ) -> None:
        if fail not in FAIL_POLICIES:
            raise ValueError(f"state failure policy must be closed or open, not {fail!r}")
        self.fail = fail
        self.store = store
        self.prefix = prefix
        self.timeouts = timeouts or Timeouts()
        self.snat_window = snat_window
        self.snat_windows = snat_windows
        self.max_attempts = max_attempts

    def key(self, zone: int, t: CtTuple) -> str:
        return ct_key(self.prefix, zone, t)

    # -- public API ---------------------------------------------------------------------
    def process(
        self,
        zone: int,
        tup: CtTuple,
        tcp_flags: int,
        now: float,
        *,
        commit: bool = False,
        mark: int | None = None,
        nat: NatRequest | None = None,
        related: CtTuple | None = None,
        hint: CtEntry | None = None,
    ) -> CtResult:
        """Track one packet (a batch of one; see :class:`CtRequest` for the arguments)."""
        request = CtRequest(zone, tup, tcp_flags, commit, mark, nat, related, hint)
        return self.process_batch([request], now)[0]

    def process_batch(self, requests: Sequence[CtRequest], now: float) -> list[CtResult]:
        """Track a batch of packets; results in order. One lookup round trip for all.

        Never raises for the store: a request still waiting on a step whose
        round trip failed gets :meth:`_unreachable`'s result; requests decided
        before keep theirs. Load-balancer counters are advisory: a failed
        flush loses them and nothing else.
        """
        return run_steps(self.store, self.process_steps(requests, now))

    def process_steps(self, requests: Sequence[CtRequest], now: float) -> Steps[list[CtResult]]:
        """:meth:`process_batch` as round trips yielded to its driver (``state/jobs.py``),
        so a datapath can park the batch on an asynchronous store."""
        lb_round = LbRound(self.prefix, now)
        later: list[Op] = []  # early SNAT claims nobody used, released with the LB flush
        tasks = [self._task(r, now, lb_round, later) for r in requests]
        results = yield from drive_steps(tasks, lambda i, exc: self._unreachable(requests[i], exc))
        with suppress(StateStoreError):
            yield from drive_steps([lb_round.flush(), _run(later)])
        return results

    def lookup_batch(self, items: Sequence[tuple[int, CtTuple]], now: float) -> list[CtHit | None]:
        """Live connections of (zone, packet tuple) pairs: one ``get_many``, no writes."""
        hits: list[CtHit | None] = []
        for raw in self.store.get_many([self.key(zone, t) for zone, t in items]):
            seen = _seen(raw)
            live = seen.entry is not None and seen.entry.expiry > now
            hits.append(CtHit(seen.entry, seen.mirror) if live and seen.entry else None)
        return hits

    # -- one packet -------------------------------------------------------------------
    def _lookup_key(self, req: CtRequest) -> tuple[str, bool | None]:
        """The key to read and, for a hinted translated packet, its known direction."""
        if req.related is not None:
            return self.key(req.zone, req.related.reversed()), None
        hint, t = req.hint, req.tuple
        if hint is not None and hint.zone == req.zone:
            if t == hint.reply.reversed() and t != hint.orig:
                return self.key(req.zone, hint.orig), False
            if t == hint.orig.reversed() and t != hint.reply:
                return self.key(req.zone, hint.orig), True
        return self.key(req.zone, t), None

    def _task(
        self, req: CtRequest, now: float, lb_round: LbRound, later: list[Op]
    ) -> Task[CtResult]:
        key, forced = self._lookup_key(req)
        lb = req.nat.lb if req.nat is not None and req.related is None else None
        extra = lb_round.read_keys(req.tuple, lb) if lb is not None else []
        claim = self._early_claim(req, key, forced)
        ops: list[Op] = [GetOp(key, absent_ok=True), *(GetOp(k) for k in extra)]
        got = yield ops if claim is None else [*ops, claim]
        for k, raw in zip(extra, got[1 : 1 + len(extra)], strict=True):
            lb_round.observe(k, raw if isinstance(raw, Entry) else None)
        member = got[-1] if claim is not None and isinstance(got[-1], str) else None
        early = [int(member)] if member is not None else []
        result = yield from self._decide(req, key, forced, _seen(got[0]), now, lb_round, early)
        if claim is not None and member is not None and not self._owns(req, result, claim, member):
            later.append(ReleaseOp(claim.pool_key, member, key))
        return result

    def _owns(self, req: CtRequest, result: CtResult, claim: AllocateOp, member: str) -> bool:
        """Whether the connection the packet ended in holds the early-claimed port (it was
        created with it, or it is this SYN's connection and already had it)."""
        entry = result.entry
        if entry is None or not entry.flags & SNAT_POOL or entry.orig != req.tuple:
            return False
        return snat_pool(self.prefix, entry) == (claim.pool_key, member)

    def _early_claim(self, req: CtRequest, key: str, forced: bool | None) -> AllocateOp | None:
        """A masqueraded TCP SYN is nearly always a new connection: claim its port from the
        first window in the lookup's round trip (released after the batch if unused)."""
        nat, t = req.nat, req.tuple
        snat = nat.snat if nat is not None else None
        if snat is None or snat.port_range is None or forced is not None or req.related:
            return None
        if nat is not None and (nat.dnat is not None or nat.lb is not None):
            return None  # (the pool is the destination's after DNAT, not known yet)
        if t.proto != IPPROTO_TCP or not tcp_opens(req.tcp_flags):
            return None
        lo, hi = snat.port_range
        window = port_window(t, lo, hi, self.snat_window, 0)
        pool = pool_key(self.prefix, snat.ip, t)
        ttl = self.timeouts.of(t, CtState.SYN_SENT)
        return AllocateOp(pool, tuple(str(p) for p in window), key, ttl)

    def _decide(
        self,
        req: CtRequest,
        key: str,
        forced: bool | None,
        seen: _Seen,
        now: float,
        lb_round: LbRound,
        early: list[int],
    ) -> Task[CtResult]:
        if req.related is not None:
            related = self._related(req, seen, now)
            if seen.cached and related.state & CT_INV:
                related = self._related(req, _seen((yield [GetOp(key, True)])[0]), now)
            return related
        fresh = False
        for _ in range(self.max_attempts):
            step = yield from self._step(req, key, seen, forced, now, lb_round, fresh, early)
            if isinstance(step, CtResult):
                return step
            if step is _RECHECK:  # a rejection decided on cached records: ask the store
                fresh = True
                step = _seen((yield [GetOp(key, True)])[0])
            seen = step
        return self._final(req, None, False, CT_INV, note="gave up: store contention")

    def _step(
        self,
        req: CtRequest,
        key: str,
        seen: _Seen,
        forced: bool | None,
        now: float,
        lb_round: LbRound,
        fresh: bool = False,
        early: list[int] | None = None,
    ) -> Task[CtResult | _Seen]:
        """One decision on ``seen``. A decision that would reject the packet, or treat its
        connection as gone, on a record a read cache answered returns ``_RECHECK`` instead
        (the caller reads again with ``fresh``): a stale cached record may only ever let a
        packet pass without writing, never refuse it or replace its connection."""
        entry = seen.entry
        # a cached absence serves only a create (a compare-and-set on version 0); a local
        # one (write-behind) also answers a TCP SYN (Conntrack._opens_here)
        absent = seen is _CACHED_ABSENT or seen is _LOCAL_ABSENT
        creates = absent and forced is None and self._creates(req)
        dead = entry is None or not self._live(entry, req, now)
        if seen.cached and not fresh and dead and not creates and not self._opens_here(seen, req):
            return _RECHECK
        if forced is not None:
            assert req.hint is not None
            if entry is None or seen.mirror or not entry.same_connection(req.hint):
                if seen.cached and not fresh:
                    return _RECHECK
                return self._final(req, None, forced, CT_INV, note="associated connection gone")
            return (yield from self._write(req, key, key, seen, forced, now, lb_round, fresh))
        if entry is None or not self._live(entry, req, now):
            return (yield from self._create(req, key, seen.version, now, lb_round, early))
        if not seen.mirror:
            return (yield from self._write(req, key, key, seen, False, now, lb_round, fresh))
        new = self._advance(entry, True, req, now)
        if new is None:
            if seen.cached and not fresh:
                return _RECHECK
            return self._final(req, entry, True, CT_INV, note=f"invalid in {entry.state.name}")
        if new is entry:
            return self._final(req, entry, True, CT_EST)  # nothing to write: no primary read
        primary_key = self.key(entry.zone, entry.orig)
        primary = _seen((yield [GetOp(primary_key, fresh)])[0])
        if primary.cached and not self._continues(primary, entry, req, now):
            primary = _seen((yield [GetOp(primary_key, True)])[0])
        if not self._continues(primary, entry, req, now):
            if seen.cached and not fresh:  # the mirror itself may be behind: read it again
                return _RECHECK
            return _Seen(seen.version, None, False)  # stale mirror: its connection is gone
        return (yield from self._write(req, key, primary_key, primary, True, now, lb_round, fresh))

    def _opens_here(self, seen: _Seen, req: CtRequest) -> bool:
        """A local absence (write-behind, ``state/writebehind.py``) is final for a TCP SYN:
        only this host writes that key's plain records (a record of an earlier
        incarnation left in the shared store is replaced; a NATed one is found by the
        creation's compare-and-set in the shared store)."""
        if seen is not _LOCAL_ABSENT or req.hint is not None:
            return False  # (a first datagram may be a switch LB's reply: read it)
        return req.tuple.proto == IPPROTO_TCP and tcp_opens(req.tcp_flags)

    def _creates(self, req: CtRequest) -> bool:
        """The packet creates its connection if it finds none (a write, so a compare-and-
        set on the version it saw), rather than being answered new or invalid."""
        t, nat = req.tuple, req.nat
        opens = tcp_opens(req.tcp_flags) if t.proto == IPPROTO_TCP else not t.is_echo_reply
        return opens and (req.commit or (nat is not None and nat.creates))

    def _continues(self, primary: _Seen, mirror: CtEntry, req: CtRequest, now: float) -> bool:
        """The primary read for a mirror is live and the same connection."""
        current = primary.entry
        return (
            current is not None
            and not primary.mirror
            and current.same_connection(mirror)
            and self._live(current, req, now)
        )

    def _live(self, entry: CtEntry, req: CtRequest, now: float) -> bool:
        """Live, and not a closed TCP connection that this SYN replaces."""
        if entry.expiry <= now:
            return False
        closed_tcp = entry.orig.proto == IPPROTO_TCP and entry.state in _CLOSING
        return not (closed_tcp and tcp_opens(req.tcp_flags))

    def _writable(self, entry: CtEntry, now: float) -> bool:
        """Live and not closed: a record whose mirror nobody else may have taken over."""
        closed = entry.orig.proto == IPPROTO_TCP and entry.state in _CLOSING
        return entry.expiry > now and not closed

    def _advance(self, entry: CtEntry, reply: bool, req: CtRequest, now: float) -> CtEntry | None:
        """The entry after this packet: None if invalid, ``entry`` itself if nothing to write."""
        state, fins = entry.state, entry.flags & (FIN_ORIG | FIN_REPLY)
        if entry.orig.proto == IPPROTO_TCP:
            step = tcp_step(state, fins, reply, req.tcp_flags)
            if step is None:
                return None
            if state in _CLOSING:
                return entry  # closed connections are only ever replaced, never rewritten
            state, fins = step
        elif reply:
            state = CtState.REPLIED
        mark = req.mark if req.commit and req.mark is not None else entry.mark
        flags = (entry.flags & ~(FIN_ORIG | FIN_REPLY)) | fins
        timeout = self.timeouts.of(entry.orig, state)
        unchanged = (state, mark, flags) == (entry.state, entry.mark, entry.flags)
        if unchanged and now - entry.last_seen < timeout * self.timeouts.refresh_fraction:
            return entry
        return advanced_entry(entry, state, mark, flags, now, now + timeout)

    def _write(
        self,
        req: CtRequest,
        key: str,
        primary_key: str,
        primary: _Seen,
        reply: bool,
        now: float,
        lb_round: LbRound,
        fresh: bool = False,
    ) -> Task[CtResult | _Seen]:
        """Apply the packet to the live primary record (CAS) and copy it to the mirror.

        ``key`` is the key the packet was looked up by: the primary's own, or the
        mirror's for a reply-direction packet (its caller checked the primary is live).
        A cached primary on which the packet is invalid is read again (``_RECHECK``).
        """
        entry = primary.entry
        assert entry is not None
        if not self._live(entry, req, now):
            return _Seen(primary.version, None, False)
        new = self._advance(entry, reply, req, now)
        if new is None:
            if primary.cached and not fresh:
                return _RECHECK
            return self._final(req, entry, reply, CT_INV, note=f"invalid in {entry.state.name}")
        if new is entry:
            return self._final(req, entry, reply, CT_EST)
        ttl = new.expiry - now
        ops: list[Op] = [CasOp(primary_key, primary.version, encode(new), ttl)]
        mirror_key = self.key(new.zone, new.reply)
        if mirror_key != primary_key:
            ops.append(PutOp(mirror_key, encode(new, MIRROR), ttl))
        if new.flags & SNAT_POOL and claim_due(self.timeouts, entry, new, now):
            pool, member = snat_pool(self.prefix, new)
            ops.append(AllocateOp(pool, (member,), primary_key, claim_ttl(self.timeouts, new)))
        results = yield ops
        cas = results[0]
        assert isinstance(cas, CasResult)
        if cas.ok and cas.entry is not None:
            if new.lb_counter and entry.state not in _CLOSING and new.state in _CLOSING:
                lb_round.release(new.lb_counter, new.lb_backend)
            return self._final(req, versioned_entry(new, cas.entry.version), reply, CT_EST)
        return (yield from self._lost(key, primary_key, cas, new, now))

    def _lost(
        self, key: str, primary_key: str, cas: CasResult, written: CtEntry, now: float
    ) -> Task[_Seen]:
        """After a lost CAS: repair the mirror our put overwrote, and re-read the packet's key.

        The mirror put went out with the CAS, so it landed although the CAS failed.
        If the winner has the same reply tuple, its record goes back there;
        otherwise our copy describes a connection that is gone and is removed.
        """
        winner = _seen(cas.entry)
        current = winner.entry
        mirror_key = self.key(written.zone, written.reply)
        if mirror_key == primary_key:
            return winner if key == primary_key else _seen((yield [GetOp(key)])[0])
        restore = (
            current is not None
            and not winner.mirror
            and current.reply == written.reply
            and current.expiry > now
        )
        ops: list[Op] = []
        if restore and current is not None:
            ops.append(PutOp(mirror_key, encode(current, MIRROR), current.expiry - now))
        else:
            ops.append(DeleteOp(mirror_key))
        if key not in (primary_key, mirror_key):
            ops.append(GetOp(key))
        results = yield ops
        if key == primary_key:
            return winner
        if key == mirror_key:
            version = results[0]
            if restore and isinstance(version, int):
                return _Seen(version, current, True)
            return _ABSENT
        return _seen(results[-1])

    # -- new connections ------------------------------------------------------------------
    def _create(
        self,
        req: CtRequest,
        key: str,
        version: int,
        now: float,
        lb_round: LbRound,
        early: list[int] | None = None,
    ) -> Task[CtResult | _Seen]:
        t, nat = req.tuple, req.nat
        opens = tcp_opens(req.tcp_flags) if t.proto == IPPROTO_TCP else not t.is_echo_reply
        if not opens:
            return self._final(req, None, False, CT_INV, note="cannot start a connection")
        if not (req.commit or (nat is not None and nat.creates)):
            return self._final(req, None, False, CT_NEW)
        dnat: tuple[int, int | None] | None = None
        pick: Pick | None = None
        if nat is not None and nat.lb is not None:
            pick = lb_round.choose(t, nat.lb)
            if pick is None:
                return self._final(
                    req, None, False, CT_INV, drop=DropReason.NO_LB_BACKEND, note="no backend"
                )
            dnat = (pick.backend.ip, pick.backend.port)
        elif nat is not None and nat.dnat is not None:
            dnat = (nat.dnat.ip, nat.dnat.port)
        snat = nat.snat if nat is not None else None
        result = yield from self._claim(req, key, version, now, dnat, snat, pick, early)
        if pick is not None and (not isinstance(result, CtResult) or result.entry is None):
            lb_round.cancel(pick)
        return result

    def _claim(
        self,
        req: CtRequest,
        key: str,
        version: int,
        now: float,
        dnat: tuple[int, int | None] | None,
        snat: Snat | None,
        pick: Pick | None,
        early: list[int] | None = None,
    ) -> Task[CtResult | _Seen]:
        """Create the primary and the mirror; on a reply-tuple collision, try other ports.
        ``early``: a port already claimed for this connection in the lookup's round trip."""
        t = req.tuple
        state = CtState.SYN_SENT if t.proto == IPPROTO_TCP else CtState.UNREPLIED
        ttl = self.timeouts.of(t, state)
        masquerade = snat is not None and snat.port_range is not None and t.has_ports
        excluded: set[int] = set()
        owned, serial = False, version
        for _ in range(self.max_attempts):
            port = None
            if masquerade:
                assert snat is not None
                assert snat.port_range is not None
                if early:
                    port = early.pop()
                else:
                    port = yield from self._allocate(
                        key, t, nat_tuple(t, dnat, None), snat.ip, snat.port_range, ttl, excluded
                    )
                if port is None:
                    yield from self._undo(key if owned else None, None)
                    return self._nat_failure(req, "SNAT port pool exhausted")
            snat_to = (snat.ip, port) if snat is not None else None
            entry = CtEntry(
                req.zone,
                t,
                nat_tuple(t, dnat, snat_to).reversed(),
                state,
                now,
                now,
                now + ttl,
                mark=req.mark if req.commit and req.mark is not None else 0,
                flags=SNAT_POOL if port is not None else 0,
                lb_counter=pick.counter if pick is not None else "",
                lb_backend=pick.backend_id if pick is not None and pick.counter else "",
                serial=serial,
            )
            mirror_key = self.key(req.zone, entry.reply)
            ops: list[Op] = [CasOp(key, version, encode(entry), ttl)]
            if mirror_key != key:
                ops.append(CasOp(mirror_key, 0, encode(entry, MIRROR), ttl))
            results = yield ops
            primary = results[0]
            assert isinstance(primary, CasResult)
            if not primary.ok or primary.entry is None:
                yield from self._abandon(key, entry, results, port)
                return _seen(primary.entry)
            owned, version = True, primary.entry.version
            mirror = results[1] if mirror_key != key else None
            if mirror is None or (isinstance(mirror, CasResult) and mirror.ok):
                return self._final(req, versioned_entry(entry, version), False, CT_NEW)
            assert isinstance(mirror, CasResult)
            if (yield from self._take_over(mirror_key, mirror.entry, entry, now, ttl)):
                return self._final(req, versioned_entry(entry, version), False, CT_NEW)
            if port is None:
                yield from self._undo(key, None)
                return self._nat_failure(req, "reply tuple already in use")
            excluded.add(port)
            yield from self._undo(None, (snat_pool(self.prefix, entry), key))
        yield from self._undo(key if owned else None, None)
        return self._nat_failure(req, "no free reply tuple")

    def _allocate(
        self,
        owner: str,
        t: CtTuple,
        dest: CtTuple,
        ip: int,
        port_range: tuple[int, int],
        ttl: float,
        excluded: set[int],
    ) -> Task[int | None]:
        pool = pool_key(self.prefix, ip, dest)  # dest: ``t`` after DNAT (nat.py: pools)
        lo, hi = port_range
        for attempt in range(self.snat_windows):
            window = port_window(t, lo, hi, self.snat_window, attempt)
            candidates = tuple(str(p) for p in window if p not in excluded)
            if not candidates:
                continue
            results = yield [AllocateOp(pool, candidates, owner, ttl)]
            if isinstance(results[0], str):
                return int(results[0])
        return None

    def _take_over(
        self, mirror_key: str, current: Entry | None, entry: CtEntry, now: float, ttl: float
    ) -> Task[bool]:
        """Replace the record at our reply tuple if it is dead or a twin of our connection."""
        seen = _seen(current)
        other = seen.entry
        if other is not None and other.expiry > now and other.orig != entry.orig:
            closed = other.orig.proto == IPPROTO_TCP and other.state in _CLOSING
            if not (closed and entry.state is CtState.SYN_SENT):
                return False
        results = yield [CasOp(mirror_key, seen.version, encode(entry, MIRROR), ttl)]
        result = results[0]
        return isinstance(result, CasResult) and result.ok

    def _abandon(
        self, key: str, entry: CtEntry, results: list[object], port: int | None
    ) -> Task[None]:
        """We lost the creation race: drop our mirror and port unless the winner uses them."""
        primary = results[0]
        assert isinstance(primary, CasResult)
        winner = _seen(primary.entry).entry
        ops: list[Op] = []
        mirror = results[1] if len(results) > 1 else None
        ours = isinstance(mirror, CasResult) and mirror.ok
        if ours and (winner is None or winner.reply != entry.reply):
            ops.append(DeleteOp(self.key(entry.zone, entry.reply)))
        if port is not None and (winner is None or winner.nat_src != entry.nat_src):
            pool, member = snat_pool(self.prefix, entry)
            ops.append(ReleaseOp(pool, member, key))
        if ops:
            yield ops

    def _undo(
        self, primary_key: str | None, claim: tuple[tuple[str, str], str] | None
    ) -> Task[None]:
        ops: list[Op] = []
        if primary_key is not None:
            ops.append(DeleteOp(primary_key))
        if claim is not None:
            (pool, member), owner = claim
            ops.append(ReleaseOp(pool, member, owner))
        if ops:
            yield ops

    # -- results ------------------------------------------------------------------------
    def _unreachable(self, req: CtRequest, exc: StateStoreError) -> CtResult:
        """The store failed this request: drop it (``closed``), or let it pass as
        established without writing anything (``open``, plain lookups and commits
        only: a NAT request cannot invent a translation). Errors other than
        unavailability (a corrupt reply, a bug) always fail closed."""
        note = f"state store unavailable: {exc}"
        lookup_only = req.nat is None
        if self.fail == "open" and lookup_only and isinstance(exc, StateStoreUnavailable):
            state = CT_TRK | CT_EST
            return CtResult(
                state, None, False, req.tuple, note=f"{note} (fail open)", unavailable=True
            )
        drop = DropReason.STATE_UNAVAILABLE
        return CtResult(
            CT_TRK | CT_INV, None, False, req.tuple, drop=drop, note=note, unavailable=True
        )

    def _related(self, req: CtRequest, seen: _Seen, now: float) -> CtResult:
        entry = seen.entry
        if entry is None or entry.expiry <= now:
            return self._final(req, None, False, CT_INV, note="ICMP error quotes no connection")
        state = CT_TRK | CT_REL | (CT_RPL if seen.mirror else 0)
        outer, quoted = req.tuple, req.related
        if req.nat is not None:
            outer, quoted = translate_related(entry, seen.mirror, req.tuple)
            state |= _nat_bits(entry)
        return CtResult(state, entry, seen.mirror, outer, quoted, note="related")

    def _nat_failure(self, req: CtRequest, note: str) -> CtResult:
        return self._final(req, None, False, CT_INV, drop=DropReason.INVALID_CT_STATE, note=note)

    def _final(
        self,
        req: CtRequest,
        entry: CtEntry | None,
        reply: bool,
        bits: int,
        *,
        drop: DropReason | None = None,
        note: str = "",
    ) -> CtResult:
        state = CT_TRK | bits | (CT_RPL if reply and entry is not None else 0)
        tup = req.tuple
        if req.nat is not None and entry is not None and not bits & CT_INV:
            tup = translate(entry, reply)
            state |= _nat_bits(entry)
        return CtResult(state, entry, reply, tup, drop=drop, note=note)


def _run(ops: list[Op]) -> Task[None]:
    """A task of one round trip of ``ops`` (none if empty)."""
    if ops:
        yield ops


def _nat_bits(entry: CtEntry) -> int:
    return (CT_SNAT if entry.snat else 0) | (CT_DNAT if entry.dnat else 0)
