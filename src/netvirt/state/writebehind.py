"""Write-behind for state only this host decides on: local records, flushed off the packet path.

Theory of operation
-------------------
*Why.* A security group's conntrack zone belongs to one VM port, and only the
port's host ever decides in it: a port's ingress and egress pipelines both run
on the host that owns it (docs/agent.md). Sending every one of its transitions
to the shared store, and waiting for the answer, buys nothing another host
could use while the port lives there; it costs a store round trip per step of
every new connection. What the shared store is for, for such a zone, is to
survive this process (a datapath restart, a port moving to another host).

*What.* :class:`WriteBehindStore` sits between the datapath's read cache
(``state/cached.py``) and the shared store. Keys ``local_key`` accepts (a port
zone's conntrack records, ``nf.codec.port_zone_keys``) live in a
:class:`MemoryStore` of this process, which is their authority: reads,
compare-and-sets and puts are answered there at once, with no round trip.
Every local write is queued, coalesced per key (a connection's transitions
become one put of its latest record), and flushed to the shared store as one
fire-and-forget round trip when the oldest queued write is ``interval`` old
or ``max_pending`` keys wait — from the loop's store tick (``handle``), never
from a packet's step. A new connection's records wait until it is ``hold`` (1 s)
old, and a TCP connection that closes before is not written at all (nothing
would need it). Everything else — router
zones, SNAT pools, load-balancer records, and records ``shared`` says another
host may decide on (NATed ones: a switch load balancer) — goes to the shared
store exactly as before.

*Reads that miss.* A local key absent here is answered :data:`LOCAL_ABSENT`:
conntrack takes it as final for a TCP SYN, and reads the key again with
``GetOp(fresh=True)`` for any other packet, which this store sends to the shared
store — unless a write of that key made here has not reached it yet (the local answer
is then the current one); a record found there is adopted (kept here with its version,
for exactly what is left of its life there) unless it is shared. One authority per
key: a plain compare-and-set whose version was read in
the shared store (or on a key with a NATed record made here) is decided there and
adopted; a NATed one on a key held here fails on the local record, or moves it.
That is how a restarted datapath, or the new host of a port, picks up an
established connection: a mid-stream packet finds the record flushed before.

*What a crash loses.* Connections younger than ``hold`` + ``interval`` (a
handshake is re-made by its next SYN; an established one's next packet is
``inv`` and the endpoints time out), and the last transition of an older one (a
FIN or a refresh, written within ``interval``: the shared record is at worst one
transition behind). So an established long-lived stream is never lost: its
record was flushed when it was ``hold`` old and a later loss can only cost it a
transition that its next packets repeat.

*Failure: closed.* A flush, or any round trip to the shared store, that fails
marks the store *unhealthy*; so does a flush unanswered for ``max_lag``. (Not the
age of the queue itself: a write may wait long because nothing ticked the store — a
loop turn stalled by load — and refusing then would fail connections closed while the
shared store is fine.)
While unhealthy every round trip that would write a local record fails with
:class:`StateStoreUnavailable` (nothing of it applied): conntrack fails new
connections closed (or open, by its policy) as it does when the store is
down, and what only reads still passes. Queued writes are kept (coalesced) and
flushed again every ``interval``; the first flush that succeeds makes the store
healthy — and puts the port zones' records back into a Redis that restarted
empty. An outage nobody has met yet is noticed by the next flush: a host that
made no round trip for a while may admit the SYNs of one ``interval`` before
it fails closed (their handshake then fails at its next write).

Thread-safety: the loop's thread only (as the asynchronous stores it wraps).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import NamedTuple, cast

from netvirt.state.jobs import AsyncStore, Reply, Ticket, completed, execute_now
from netvirt.state.memory import MemoryStore
from netvirt.state.store import (
    LOCAL_ABSENT,
    AllocateOp,
    Batch,
    CasOp,
    CasResult,
    DeleteOp,
    Entry,
    ExpireOp,
    GetOp,
    Op,
    PutOp,
    ReleaseOp,
    StateStore,
    StateStoreError,
    StateStoreUnavailable,
)

DEFAULT_INTERVAL = 0.05  # seconds a local write may wait before it is flushed
DEFAULT_MAX_PENDING = 1024  # keys: flush at once beyond this
DEFAULT_HOLD = 1.0  # seconds a new connection's records wait (most close before: never written)
DEFAULT_MAX_LAG = 1.0  # seconds: a write still unflushed after this makes the store unhealthy
DEFAULT_ADOPT_TTL = 7200.0  # a record adopted from the shared store, until rewritten
KNOWN_KEYS = 65536  # local_key answers remembered
PROBE_KEY = "\x00write-behind probe"  # read to learn whether the shared store answers
SAMPLE = 8  # one local step in SAMPLE has its CPU time measured (``local_us_sum``)


_Plan = tuple[list[object], list[int], list[int]]  # results so far, remote positions, routes


class _Write(NamedTuple):
    """A queued write: the value (None: delete), its TTL, when it was queued, and whether
    the key was created in this window (its closed record need not be flushed)."""

    value: bytes | None
    ttl: float | None
    at: float
    born: bool
    first: float = 0.0  # a young key's creation (it is flushed once ``hold`` old)


# where an operation goes: here; the shared store; there, as a fresh read or a write,
# then kept here; nowhere (a CAS that fails on the local record); there as a put (a CAS
# that matched the local record, whose key goes to the shared store with a NATed record)
_LOCAL, _REMOTE, _FRESH, _ADOPT, _HELD, _MOVE = 0, 1, 2, 3, 4, 5


class WriteBehindStore:
    """``remote`` with the keys ``local_key`` accepts kept here and written behind."""

    def __init__(
        self,
        remote: StateStore,
        local_key: Callable[[str], bool],
        *,
        shared: Callable[[bytes], bool] | None = None,
        closed: Callable[[bytes], bool] | None = None,
        remaining: Callable[[bytes], float | None] | None = None,
        interval: float = DEFAULT_INTERVAL,
        max_pending: int = DEFAULT_MAX_PENDING,
        hold: float = DEFAULT_HOLD,
        max_lag: float = DEFAULT_MAX_LAG,
        adopt_ttl: float = DEFAULT_ADOPT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("write-behind interval must be positive")
        self.remote = remote
        self.local_key = local_key
        self.shared = shared
        self.closed = closed
        self.remaining = remaining  # a record's seconds left (the TTL it was written with)
        self.interval = interval
        self.max_pending = max_pending
        self.hold = hold
        self.max_lag = max(max_lag, interval)
        self.adopt_ttl = adopt_ttl
        self.clock = clock
        self.local = MemoryStore(clock)
        self._known: dict[str, bool] = {}  # local_key's answers (a key is asked ~7 times)
        self._shared_keys: dict[str, float] = {}  # port-zone keys with NATed records there
        self._pending: dict[str, _Write] = {}
        # keys created less than ``hold`` ago, in creation order: written once they are
        # ``hold`` old, or never if they close first (most connections do)
        self._young: dict[str, _Write] = {}
        self._urgent = False  # young keys joined the queue: flush at the next tick
        self._since: float | None = None  # when the oldest unflushed write was queued
        self._flushing: dict[str, _Write] | None = None  # the flush in flight
        self._sent_at = 0.0  # when the flush (or probe) in flight was sent
        self._healthy = True
        self._probed = 0.0  # when an unhealthy store with nothing to flush last asked
        self._contact = float("-inf")  # when the shared store last answered a round trip
        self._async = bool(getattr(remote, "supports_submit", False))
        self._steps = 0  # local steps, for the sampled CPU time
        self.counters = {
            "local_ops": 0,
            "local_us_sum": 0.0,
            "queued": 0,
            "flushes": 0,
            "flushed": 0,
            "skipped": 0,
            "flush_failures": 0,
            "refused": 0,
            "adopted": 0,
            "contacts": 0,
        }

    # -- health ------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        if not self._healthy:
            return False
        return self._flushing is None or self.clock() - self._sent_at <= self.max_lag

    def _remote_failed(self) -> None:
        self._healthy = False

    def _remote_ok(self) -> None:
        self._contact = self.clock()
        if not self._pending and self._flushing is None:
            self._healthy = True

    # -- routing -----------------------------------------------------------------------------

    def _route(self, op: Op) -> int:
        kind = type(op)
        if kind is AllocateOp or kind is ReleaseOp:
            return _REMOTE
        key = cast(GetOp, op).key
        local = self._known.get(key)
        if local is None:
            if len(self._known) >= KNOWN_KEYS:
                self._known.clear()
            local = self._known[key] = self.local_key(key)
        if not local:
            return _REMOTE
        if kind is GetOp:
            return _LOCAL
        if kind is PutOp or kind is CasOp:
            return self._route_write(op, key, cast(PutOp, op).value)
        return (
            _LOCAL if self.local.peek(key, self.clock()) is not None else _REMOTE
        )  # delete, expire

    def _route_write(self, op: Op, key: str, value: bytes) -> int:
        """Where a put or compare-and-set of a port zone's key goes: one authority per key.
        A record held here answers a compare-and-set; a NATed record goes to the shared
        store (a closed local one it replaces is dropped); a plain record replacing one
        the shared store holds (its version was read there) is written there, then
        adopted."""
        held = self.local.peek(key, self.clock())
        cas = op if type(op) is CasOp else None
        if self.shared is not None and self.shared(value):
            self._note_shared(key, cast(PutOp, op).ttl)
            if held is not None and cas is not None and cas.expected_version != held.version:
                return _HELD  # the local record is the current one: the CAS fails on it
            if held is not None:
                self._drop_local(key)  # the CAS matched the local record: it moves there
                return _MOVE if cas is not None else _REMOTE
            return _REMOTE
        remote_first = cas is not None and (cas.expected_version != 0 or self._maybe_shared(key))
        if held is None and remote_first:
            return _ADOPT  # the shared store may hold the current record: decide there
        return _LOCAL

    def _note_shared(self, key: str, ttl: float | None) -> None:
        """Remember that the shared store holds a NATed record of this port-zone key (a
        switch LB's, made here): a plain record created there later must be checked there
        (a reply tuple in use), not here."""
        now = self.clock()
        if len(self._shared_keys) >= KNOWN_KEYS:
            self._shared_keys = {k: t for k, t in self._shared_keys.items() if t > now}
        self._shared_keys[key] = now + (ttl if ttl is not None else self.adopt_ttl)

    def _maybe_shared(self, key: str) -> bool:
        deadline = self._shared_keys.get(key)
        return deadline is not None and deadline > self.clock()

    def _drop_local(self, key: str) -> None:
        self.local.delete(key)
        self._pending.pop(key, None)
        self._young.pop(key, None)
        if not self._pending:
            self._since = None  # nothing waits: no "oldest write" left to age (and flush)

    def _plan(self, ops: Sequence[Op]) -> _Plan | StateStoreError:
        """Apply the local operations of a round trip; the results so far and the positions
        left for the shared store. An error (nothing applied) when the store is unhealthy
        and the round trip writes a local record."""
        routes = [self._route(op) for op in ops]
        local = [i for i, r in enumerate(routes) if r == _LOCAL]
        writes = any(type(ops[i]) is not GetOp for i in local)
        if writes and not self.healthy:
            self.counters["refused"] += 1
            return StateStoreUnavailable("write-behind: the shared store is not reachable")
        results: list[object] = [None] * len(ops)
        if local:
            # CPU, as the Redis client's own time is counted; but a thread clock read costs
            # ~2 us here (no vDSO), as much as a local operation: one step in SAMPLE is
            # timed and counted SAMPLE times (an unbiased estimate)
            self._steps += 1
            timed = self._steps % SAMPLE == 0
            started = time.thread_time() if timed else 0.0
            now = self.clock()
            apply, result_of = self.local.apply, self._local_result
            for i in local:
                op = ops[i]
                results[i] = result_of(op, apply(op, now), routes, i, now)
            self.counters["local_ops"] += len(local)
            if timed:
                self.counters["local_us_sum"] += (time.thread_time() - started) * 1e6 * SAMPLE
        for i, r in enumerate(routes):
            if r == _HELD:
                results[i] = CasResult(False, self.local.get(cast(CasOp, ops[i]).key))
        remote = [i for i, r in enumerate(routes) if r in (_REMOTE, _FRESH, _ADOPT, _MOVE)]
        return results, remote, routes

    def _local_result(
        self, op: Op, result: object, routes: list[int], i: int, now: float
    ) -> object:
        kind = type(op)
        if kind is GetOp:
            if result is None:
                if not cast(GetOp, op).fresh:
                    return LOCAL_ABSENT
                if not self._writing(cast(GetOp, op).key):
                    routes[i] = _FRESH  # another incarnation may have left it: ask the store
                return None  # (a write of it waits here: the shared copy is older)
            return result
        if kind is CasOp:
            cas = cast(CasOp, op)
            if cast(CasResult, result).ok:
                self._queue(cas.key, cas.value, cas.ttl, now, cas.expected_version == 0)
        elif kind is PutOp:
            put = cast(PutOp, op)
            self._queue(put.key, put.value, put.ttl, now, False)
        elif kind is DeleteOp and result:
            self._queue(cast(DeleteOp, op).key, None, None, now, False)
        elif kind is ExpireOp and result:
            expire = cast(ExpireOp, op)
            current = self.local.get(expire.key)
            if current is not None:
                self._queue(expire.key, current.value, expire.ttl, now, False)
        return result

    def _writing(self, key: str) -> bool:
        """A write of ``key`` decided here has not reached the shared store yet (queued,
        young, or in the flush in flight): this host's answer for it is the current one,
        an absence included (a delete waiting), whatever the shared store still holds."""
        flushing = self._flushing
        return (
            key in self._pending or key in self._young or (flushing is not None and key in flushing)
        )

    def _queue(
        self, key: str, value: bytes | None, ttl: float | None, now: float, born: bool
    ) -> None:
        young = self._young.get(key)
        if young is not None:
            closed = value is not None and self.closed is not None and self.closed(value)
            if value is not None and not closed and not born:
                self._young[key] = _Write(value, ttl, now, True, young.first)  # keeps its place
                return
            if value is not None and not closed:  # a new incarnation (the last one expired)
                del self._young[key]
                self._young[key] = _Write(value, ttl, now, True, now)  # young from now
                return
            del self._young[key]
            if closed:
                self.counters["skipped"] += 1  # created and closed unseen: nothing to keep
                return
        earlier = self._pending.pop(key, None)
        if earlier is not None:
            born = earlier.born
        elif born and self.hold > 0:
            self._young[key] = _Write(value, ttl, now, True, now)
            return
        self._enqueue(key, _Write(value, ttl, now, born), now)
        self.counters["queued"] += 1

    def _enqueue(self, key: str, write: _Write, now: float) -> None:
        """Queue ``write``; the flush interval counts from the first write of an empty
        queue (``_drop_local`` and ``flush`` reset it when the queue empties)."""
        self._pending[key] = write
        if self._since is None:
            self._since = now

    def _finish(self, ops: Sequence[Op], plan: _Plan, reply: Reply) -> Reply:
        """Results of a round trip whose remote part answered ``reply``."""
        if isinstance(reply, StateStoreError):
            self._remote_failed()
            return reply
        self._remote_ok()
        results, remote, routes = plan
        for i, result in zip(remote, reply, strict=True):
            op = ops[i]
            if routes[i] == _FRESH:
                self._adopt(cast(GetOp, op).key, result)
            elif routes[i] == _ADOPT and isinstance(result, CasResult) and result.ok:
                self._adopt(cast(CasOp, op).key, result.entry, cast(CasOp, op).ttl)
            elif routes[i] == _MOVE:
                result = CasResult(True, Entry(cast(CasOp, op).value, cast(int, result)))
            results[i] = result
        return results

    def _adopt(self, key: str, found: object, ttl: float | None = None) -> None:
        """A record read (or written, ``ttl``) in the shared store for a local key becomes
        this host's. A read one is kept exactly as long as it lives there (``remaining``):
        longer, and a record gone there would live on here unflushable; shorter, and a
        local absence (final for a SYN) would hide a record the shared store still has."""
        if not isinstance(found, Entry) or (self.shared is not None and self.shared(found.value)):
            return
        if ttl is None:
            ttl = self.adopt_ttl if self.remaining is None else self.remaining(found.value)
            if ttl is None or ttl <= 0:
                return  # unreadable or expired: not a connection to take over
        if self.local.get(key) is None:
            self.local.adopt(key, found.value, found.version, ttl)
            self.counters["adopted"] += 1

    # -- flushing ----------------------------------------------------------------------------

    def _promote(self, now: float, everything: bool = False) -> None:
        """Young keys ``hold`` old (all of them with ``everything``) join the queue."""
        young = self._young
        while young:
            key = next(iter(young))
            w = young[key]
            if not everything and now - w.first < self.hold:
                return
            del young[key]
            self._enqueue(key, _Write(w.value, w.ttl, w.at, False), now)
            self._urgent = True  # waited long enough already: out with the next flush

    def due(self) -> bool:
        if self._young:
            self._promote(self.clock())
        if not self._pending or self._flushing is not None:
            return False
        assert self._since is not None
        if self._urgent or len(self._pending) >= self.max_pending:
            return True
        return self.clock() - self._since >= self.interval

    def flush(self, force: bool = False, sync: bool = False) -> None:
        """Send the queued writes (when due, or now with ``force``) as one round trip that
        no packet waits for (``sync``, or ``force``: wait for it, for callers that use the
        synchronous side only). An unhealthy store with nothing queued is probed instead."""
        if not self._healthy and not self._pending and self._flushing is None:
            self._probe(sync or force)
            return
        if force and self._flushing is None:
            self._promote(self.clock(), everything=True)
        if not (self.due() or (force and self._pending and self._flushing is None)):
            return
        writes, self._pending, self._since = self._pending, {}, None
        self._urgent = False
        now = self.clock()
        ops: list[Op] = []
        for key, w in writes.items():
            if w.value is None:
                ops.append(DeleteOp(key))
            elif w.born and self.closed is not None and self.closed(w.value):
                self.counters["skipped"] += 1  # created and closed unseen: nothing to keep
            elif w.ttl is None:
                ops.append(PutOp(key, w.value, None))
            elif (ttl := w.ttl - (now - w.at)) > 0:
                ops.append(PutOp(key, w.value, ttl))
            elif not w.born:
                ops.append(DeleteOp(key))  # expired here: an older copy there goes too
            else:
                self.counters["skipped"] += 1  # created and expired unseen
        self.counters["flushes"] += 1
        if not ops:
            self._remote_ok()
            return
        self._flushing, self._sent_at = writes, now
        if self._async and not (force or sync):
            _then(cast(AsyncStore, self.remote).submit(ops), self._flushed)
        else:
            self._flushed(execute_now(self.remote, ops))

    def _probe(self, sync: bool) -> None:
        """One read every ``interval`` while unhealthy and idle: its success makes the store
        healthy again (local writes are refused until then, so nothing else would ask)."""
        now = self.clock()
        if now - self._probed < self.interval:
            return
        self._probed = now
        self._flushing, self._sent_at = {}, now
        probe: list[Op] = [GetOp(PROBE_KEY)]
        if self._async and not sync:
            _then(cast(AsyncStore, self.remote).submit(probe), self._flushed)
        else:
            self._flushed(execute_now(self.remote, probe))

    def _flushed(self, reply: Reply) -> None:
        writes, self._flushing = self._flushing, None
        assert writes is not None
        if isinstance(reply, StateStoreError):
            self.counters["flush_failures"] += 1
            self._healthy = False
            for key, w in writes.items():  # newer writes of a key win over the failed ones
                if key not in self._pending:
                    self._pending[key] = w
            if self._pending and self._since is None:
                self._since = min(w.at for w in self._pending.values())
            return
        self.counters["flushed"] += len(reply) if writes else 0
        self._healthy = True
        self._contact = self.clock()

    def _needs_contact(self, ops: Sequence[Op]) -> bool:
        """A round trip that creates a local record (a new connection: compare-and-set on
        version 0) is admitted only if the shared store answered within ``interval``; if
        it did not, it waits for one read (the store may be gone: fail closed)."""
        if not self._healthy or self.clock() - self._contact <= self.interval:
            return False
        for op in ops:
            if type(op) is CasOp and op.expected_version == 0 and self.local_key(op.key):
                return self.shared is None or not self.shared(op.value)
        return False

    def _contacted(self, reply: Reply) -> StateStoreError | None:
        self.counters["contacts"] += 1
        if isinstance(reply, StateStoreError):
            self._remote_failed()
            return reply
        self._contact = self.clock()
        return None

    # -- the StateStore contract -------------------------------------------------------------

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        if self._needs_contact(ops):
            failed = self._contacted(execute_now(self.remote, [GetOp(PROBE_KEY)]))
            if failed is not None:
                raise failed
        plan = self._plan(ops)
        if isinstance(plan, StateStoreError):
            raise plan
        results, remote, _ = plan
        if remote:
            reply = execute_now(self.remote, _sent(ops, plan))
            out = self._finish(ops, plan, reply)
            if isinstance(out, StateStoreError):
                raise out
        self.flush(sync=True)  # a synchronous caller: nobody else ticks
        return results

    def get_ops(self, gets: Sequence[GetOp]) -> list[Entry | None]:
        return cast(list[Entry | None], self._execute(gets))

    def get(self, key: str) -> Entry | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        return self.get_ops([GetOp(key) for key in keys])

    def put(self, key: str, value: bytes, ttl: float | None = None) -> int:
        return cast(int, self._execute([PutOp(key, value, ttl)])[0])

    def put_many(self, items: Iterable[tuple[str, bytes]], ttl: float | None = None) -> list[int]:
        return cast(list[int], self._execute([PutOp(k, v, ttl) for k, v in items]))

    def compare_and_set(
        self, key: str, expected_version: int, value: bytes, ttl: float | None = None
    ) -> CasResult:
        return cast(CasResult, self._execute([CasOp(key, expected_version, value, ttl)])[0])

    def delete(self, key: str) -> bool:
        return bool(self._execute([DeleteOp(key)])[0])

    def delete_many(self, keys: Sequence[str]) -> int:
        return sum(bool(r) for r in self._execute([DeleteOp(k) for k in keys]))

    def expire(self, key: str, ttl: float) -> bool:
        return bool(self._execute([ExpireOp(key, ttl)])[0])

    def allocate(
        self, pool_key: str, candidates: Iterable[str], owner: str, ttl: float | None = None
    ) -> str | None:
        return self.remote.allocate(pool_key, candidates, owner, ttl)

    def release(self, pool_key: str, member: str, owner: str) -> bool:
        return self.remote.release(pool_key, member, owner)

    def batch(self) -> Batch:
        return Batch(self._execute)

    # -- asynchronous round trips --------------------------------------------------------------

    @property
    def supports_submit(self) -> bool:
        return self._async

    def submit(self, ops: Sequence[Op]) -> Ticket:
        """A round trip: the local part answered now; if nothing is left for the shared
        store the ticket is complete at once (the packet never parks). A creation after
        ``interval`` without news from the shared store waits for one read first."""
        if not self._needs_contact(ops):
            return self._submit_now(ops)
        outer = Ticket(ops)

        def contacted(reply: Reply) -> None:
            failed = self._contacted(reply)
            if failed is not None:
                outer.complete(failed)
            else:
                _then(self._submit_now(ops), outer.complete)

        _then(cast(AsyncStore, self.remote).submit([GetOp(PROBE_KEY)]), contacted)
        return outer

    def _submit_now(self, ops: Sequence[Op]) -> Ticket:
        plan = self._plan(ops)
        if isinstance(plan, StateStoreError):
            return completed(ops, plan)
        results, remote, _ = plan
        if not remote:
            return completed(ops, results)
        outer = Ticket(ops)
        sent = cast(AsyncStore, self.remote).submit(_sent(ops, plan))
        _then(sent, lambda reply: outer.complete(self._finish(ops, plan, reply)))
        return outer

    def handle(self) -> tuple[int, int] | None:
        self.flush()  # the loop's store tick: after the packets of this turn
        return cast(AsyncStore, self.remote).handle()

    def wants_write(self) -> bool:
        return cast(AsyncStore, self.remote).wants_write()

    def on_readable(self) -> None:
        cast(AsyncStore, self.remote).on_readable()

    def on_writable(self) -> None:
        cast(AsyncStore, self.remote).on_writable()

    def time_out(self, now: float) -> None:
        cast(AsyncStore, self.remote).time_out(now)
        self.flush()

    def wait(self, timeout: float) -> None:
        cast(AsyncStore, self.remote).wait(timeout)

    def in_flight(self) -> int:
        """The shared store's round trips, plus one while writes wait (or the store must be
        probed): the loop then ticks often enough (``STORE_POLL``) to flush on time."""
        remote = cast(AsyncStore, self.remote).in_flight()
        waiting = self._pending or self._young or not self._healthy
        return remote + (1 if waiting else 0)

    # -- the rest ------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        return self.remote.stats() | {
            "write_behind": dict(self.counters)
            | {
                "pending": len(self._pending),
                "young": len(self._young),
                "local_entries": len(self.local),
                "healthy": self.healthy,
                "interval": self.interval,
            }
        }

    def sweep(self) -> None:
        self.local.sweep()
        sweep = getattr(self.remote, "sweep", None)
        if sweep is not None:
            sweep()

    def close(self) -> None:
        """Flush what waits (best effort, synchronously), then close the shared store."""
        with suppress(StateStoreError):
            if self._flushing is None:
                self.flush(force=True)
        self.remote.close()


def _sent(ops: Sequence[Op], plan: _Plan) -> list[Op]:
    """The operations of a round trip that go to the shared store (a moved CAS as a put)."""
    _, remote, routes = plan
    out: list[Op] = []
    for i in remote:
        op = ops[i]
        if routes[i] == _MOVE:
            cas = cast(CasOp, op)
            op = PutOp(cas.key, cas.value, cas.ttl)
        out.append(op)
    return out


def _then(ticket: Ticket, callback: Callable[[Reply], None]) -> None:
    if ticket.done:
        assert ticket.reply is not None
        callback(ticket.reply)
    else:
        ticket.callback = callback
