"""Store-bound work that never blocks the loop: step generators, tickets and their driver.

Theory of operation
-------------------
*Steps.* The slow path's store access is written as generators that yield one
round trip's operations (``list[Op]``) and receive its results, or the
:class:`~netvirt.state.store.StateStoreError` that failed it, as a value
(``codec.drive_steps``, ``Conntrack.process_steps``, ``Pipeline.process_steps``).
How a round trip is carried out is left to whoever drives the generator:

* :func:`run_steps` runs the round trips synchronously, one after the other
  (:func:`execute`): what tests, tools and stores without asynchronous I/O get;
* :class:`StoreJobs` hands them to a store that can *submit* a round trip and
  answer it later (``RedisStore.submit``): the generator is parked on the
  round trip's :class:`Ticket` and resumed when the reply arrives, while the
  datapath loop goes on with other packets.

*Tickets.* ``store.submit(ops)`` sends the round trip at once and returns a
:class:`Ticket`; the loop calls the store's ``on_readable`` when its socket is
readable, which completes tickets in order (their callbacks resume the
parked generators, which may submit their next round trip at once), and
``time_out(now)`` to fail tickets past their deadline (the store's timeout).
A store without ``supports_submit`` runs every job to its end inside
:meth:`StoreJobs.start`: nothing is ever parked, exactly the synchronous path.

*Draining.* Before anything a parked job depends on changes under it (an
install of new flows, closing the datapath), :meth:`StoreJobs.drain` waits for
every parked job to finish; a store that stops answering fails them at its
timeout, so a drain is bounded by one timeout.

Thread-safety: one thread (the datapath loop) owns a StoreJobs and its store's
asynchronous side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol, TypeVar, cast

from netvirt.state.store import (
    AllocateOp,
    CasOp,
    DeleteOp,
    ExpireOp,
    GetOp,
    Op,
    PutOp,
    ReleaseOp,
    StateStore,
    StateStoreError,
)

R = TypeVar("R")
Reply = list[object] | StateStoreError
# yields a round trip's operations, receives their results (or the error that failed them)
Steps = Generator[list[Op], Reply, R]


class Ticket:
    """One submitted round trip: its operations, then its reply (results or the error).

    ``callback`` (set by the submitter) runs once, with the reply, when the
    ticket completes; a ticket completed before the callback is set is
    picked up by whoever checks ``done``."""

    __slots__ = ("callback", "done", "ops", "reply")

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = ops
        self.reply: Reply | None = None
        self.done = False
        self.callback: Callable[[Reply], None] | None = None

    def complete(self, reply: Reply) -> None:
        if self.done:
            return
        self.reply, self.done = reply, True
        callback, self.callback = self.callback, None
        if callback is not None:
            callback(reply)


def completed(ops: Sequence[Op], reply: Reply) -> Ticket:
    """A ticket answered at once (a store cache hit, a store held down)."""
    ticket = Ticket(ops)
    ticket.complete(reply)
    return ticket


class AsyncStore(Protocol):
    """The asynchronous side a store may offer (``RedisStore``, ``CachedStore`` over it)."""

    def submit(self, ops: Sequence[Op]) -> Ticket: ...
    def handle(self) -> tuple[int, int] | None: ...
    def wants_write(self) -> bool: ...
    def on_readable(self) -> None: ...
    def on_writable(self) -> None: ...
    def time_out(self, now: float) -> None: ...
    def wait(self, timeout: float) -> None: ...
    def in_flight(self) -> int: ...


_RANK = {GetOp: 0, AllocateOp: 1, CasOp: 2, PutOp: 3, ExpireOp: 4, ReleaseOp: 5, DeleteOp: 6}


def grouped(ops: Sequence[Op]) -> list[int]:
    """The order to send a round trip's operations in: by kind, stable (each kind keeps
    its order), so the Redis store merges runs of gets into one MGET; tasks never put
    dependent operations in one step."""
    buckets: list[list[int]] = [[] for _ in _RANK]
    for i, op in enumerate(ops):
        buckets[_RANK[type(op)]].append(i)
    return [i for bucket in buckets for i in bucket]


def ungrouped(order: Sequence[int], out: Sequence[object]) -> list[object]:
    """Results of operations sent in ``order`` back in the round trip's own order."""
    results: list[object] = [None] * len(order)
    for position, i in enumerate(order):
        results[i] = out[position]
    return results


def execute(store: StateStore, ops: Sequence[Op]) -> list[object]:
    """One round trip: ``get_many`` (a read cache's ``get_ops``) for reads only, else one
    batch grouped by kind."""
    if all(type(op) is GetOp for op in ops):
        gets = cast(Sequence[GetOp], ops)
        get_ops = getattr(store, "get_ops", None)  # a read cache: reads with their options
        if get_ops is not None:
            return list(get_ops(gets))
        return list(store.get_many([op.key for op in gets]))
    order = grouped(ops)
    batch = store.batch()
    for i in order:
        batch.add(ops[i])
    return ungrouped(order, batch.execute())


def execute_merged(store: StateStore, rounds: Sequence[Sequence[Op]]) -> list[Reply]:
    """Several round trips' operations in one batch (a worker that found more than one
    waiting, ``state/threaded.py``): each round trip's operations keep their grouping
    and the round trips their order; a failure fails all of them."""
    if len(rounds) == 1:
        return [execute_now(store, rounds[0])]
    orders = [grouped(ops) for ops in rounds]
    batch = store.batch()
    for ops, order in zip(rounds, orders, strict=True):
        for i in order:
            batch.add(ops[i])
    try:
        out = batch.execute()
    except StateStoreError as exc:
        return [exc] * len(rounds)
    replies: list[Reply] = []
    offset = 0
    for order in orders:
        replies.append(ungrouped(order, out[offset : offset + len(order)]))
        offset += len(order)
    return replies


def execute_now(store: StateStore, ops: Sequence[Op]) -> Reply:
    """One round trip, synchronously; a store failure is returned, not raised."""
    try:
        return execute(store, ops)
    except StateStoreError as exc:
        return exc


def run_steps(store: StateStore, steps: Steps[R]) -> R:
    """Drive a step generator to its end with synchronous round trips."""
    try:
        ops = next(steps)
        while True:
            ops = steps.send(execute_now(store, ops))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def finish_without_store(steps: Steps[R]) -> R:
    """Drive a step generator that is known not to need the store (its conntracker has
    no store, or no conntrack action is reached); a round trip it asks for fails."""
    try:
        ops = next(steps)
        while True:
            ops = steps.send(StateStoreError(f"no store for {len(ops)} operations"))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class StoreJobs:
    """Runs step generators on a store, parking them on tickets when the store is
    asynchronous (see the module docstring). Counters: ``started``, ``inline`` (done
    without parking), ``parked_total`` (round trips waited for), ``parked_max``."""

    def __init__(self, store: StateStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        able = bool(getattr(store, "supports_submit", False))
        self.asynchronous: AsyncStore | None = cast(AsyncStore, store) if able else None
        self.parked = 0
        self.started = 0
        self.inline = 0
        self.parked_total = 0
        self.parked_max = 0

    def start(self, steps: Steps[R], done: Callable[[R], None]) -> bool:
        """Run ``steps``; ``done`` gets its value when it ends. True when it ended here
        (``done`` already called), False when it is parked on the store."""
        self.started += 1
        if self.asynchronous is None:
            done(run_steps(self.store, steps))
            self.inline += 1
            return True
        finished = self._advance(steps, None, done)
        if finished:
            self.inline += 1
        return finished

    def _advance(self, steps: Steps[Any], reply: Reply | None, done: Callable[[Any], None]) -> bool:
        """Resume ``steps`` until it ends (True) or waits on a ticket not yet answered."""
        store = self.asynchronous
        assert store is not None
        while True:
            try:
                ops = next(steps) if reply is None else steps.send(reply)
            except StopIteration as stop:
                done(stop.value)
                return True
            ticket = store.submit(ops)
            if ticket.done:
                reply = ticket.reply
                continue
            self.parked += 1
            self.parked_total += 1
            self.parked_max = max(self.parked_max, self.parked)
            ticket.callback = lambda answer: self._resume(steps, answer, done)
            return False

    def _resume(self, steps: Steps[Any], reply: Reply, done: Callable[[Any], None]) -> None:
        self.parked -= 1
        self._advance(steps, reply, done)

    # -- the loop's side -------------------------------------------------------------------

    def handle(self) -> tuple[int, int] | None:
        """The store's socket to wait on and its connection's serial number (a new
        connection may reuse the fd number of a closed one); None: nothing to wait on."""
        return self.asynchronous.handle() if self.asynchronous is not None else None

    def drain(self, timeout: float = 1.0) -> None:
        """Wait until no job is parked (at most ``timeout``; the store's own timeout fails
        what it does not answer, so this normally ends well before)."""
        store = self.asynchronous
        if store is None:
            return
        deadline = time.monotonic() + timeout
        while self.parked and store.in_flight():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            store.wait(min(left, 0.01))
            store.time_out(self.clock())

    def status(self) -> dict[str, object]:
        return {
            "asynchronous": self.asynchronous is not None,
            "started": self.started,
            "inline": self.inline,
            "parked": self.parked,
            "parked_total": self.parked_total,
            "parked_max": self.parked_max,
        }
