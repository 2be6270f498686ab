"""Asynchronous round trips for a store that only has synchronous ones, on a worker thread.

Theory of operation
-------------------
The datapath parks store-bound packets on tickets (``state/jobs.py``). The
single Redis store has a non-blocking connection of its own
(``state/redis_async.py``); the cluster store talks to several nodes with
slot routing, redirections and per-node script loading, all synchronous.
Rather than a second implementation of all that, :class:`ThreadedStore`
runs each submitted round trip on one worker thread with the store's own
synchronous code (``jobs.execute``) and hands the reply back to the loop:
the worker puts the finished ticket on a queue and writes an eventfd the loop
waits on; :meth:`ThreadedStore.on_readable` completes the tickets *in the
loop's thread* (their callbacks resume packet walks, which must never run on
the worker). Round trips run one after the other, in submission order, as on
one connection; while one waits for the network the worker holds no GIL, so
the loop forwards meanwhile.

Timeouts are the wrapped store's (its socket timeouts and hold-down): the
worker always answers, with :class:`StateStoreUnavailable` at worst, so
:meth:`time_out` has nothing to do. The synchronous methods go straight to the
wrapped store from the caller's thread (the cluster store is thread-safe).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import cast

from netvirt.state.jobs import Ticket, execute_merged
from netvirt.state.store import Batch, CasResult, Entry, Op, StateStore, StateStoreError

MERGE_MAX = 64  # round trips one worker batch may carry


class ThreadedStore:
    """``inner`` with ``submit`` on a worker thread (see the module docstring)."""

    supports_submit = True

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self._requests: queue.SimpleQueue[Ticket | None] = queue.SimpleQueue()
        self._done: deque[Ticket] = deque()
        self._lock = threading.Lock()
        self._event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._in_flight = 0
        self._worker: threading.Thread | None = None
        self._worker_wall = 0.0  # seconds of round trips on the worker (nobody waited)
        self._worker_cpu = 0.0  # seconds of the worker's CPU: the client's work
        self._worker_trips = 0

    # -- asynchronous side -------------------------------------------------------------------

    def submit(self, ops: Sequence[Op]) -> Ticket:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="state-store", daemon=True)
            self._worker.start()
        ticket = Ticket(ops)
        self._in_flight += 1
        self._requests.put(ticket)
        return ticket

    def _work(self) -> None:
        """Take the next round trip and every other one already waiting: one batch for all
        (``jobs.execute_merged``), as a busy loop would have batched them itself."""
        while True:
            first = self._requests.get()
            if first is None:
                return
            tickets = [first]
            stop = False
            while len(tickets) < MERGE_MAX:
                try:
                    more = self._requests.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                tickets.append(more)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                replies = execute_merged(self.inner, [t.ops for t in tickets])
            except Exception as exc:  # a bug in the store: the packets fail, the loop goes on
                replies = [StateStoreError(f"store failed: {type(exc).__name__}: {exc}")]
                replies *= len(tickets)
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            for ticket, reply in zip(tickets, replies, strict=True):
                ticket.reply = reply
            with self._lock:
                self._done.extend(tickets)
                self._worker_wall += wall
                self._worker_cpu += cpu
                self._worker_trips += 1
            os.eventfd_write(self._event, 1)
            if stop:
                return

    def handle(self) -> tuple[int, int] | None:
        return (self._event, 0)

    def wants_write(self) -> bool:
        return False

    def on_readable(self) -> None:
        """Complete, in this thread and in order, the round trips the worker finished."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._event)
        with self._lock:
            finished, self._done = self._done, deque()
        for ticket in finished:
            self._in_flight -= 1
            reply, ticket.reply = ticket.reply, None
            assert reply is not None
            ticket.complete(reply)

    def on_writable(self) -> None:
        pass

    def time_out(self, now: float) -> None:
        pass  # the inner store's own timeouts bound every round trip

    def wait(self, timeout: float) -> None:
        readable, _, _ = select.select([self._event], [], [], timeout)
        if readable:
            self.on_readable()

    def in_flight(self) -> int:
        return self._in_flight

    # -- the StateStore contract, synchronously -----------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.inner.get(key)

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        return self.inner.get_many(keys)

    def put(self, key: str, value: bytes, ttl: float | None = None) -> int:
        return self.inner.put(key, value, ttl)

    def put_many(self, items: Iterable[tuple[str, bytes]], ttl: float | None = None) -> list[int]:
        return self.inner.put_many(items, ttl)

    def compare_and_set(
        self, key: str, expected_version: int, value: bytes, ttl: float | None = None
    ) -> CasResult:
        return self.inner.compare_and_set(key, expected_version, value, ttl)

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)

    def delete_many(self, keys: Sequence[str]) -> int:
        return self.inner.delete_many(keys)

    def expire(self, key: str, ttl: float) -> bool:
        return self.inner.expire(key, ttl)

    def allocate(
        self, pool_key: str, candidates: Iterable[str], owner: str, ttl: float | None = None
    ) -> str | None:
        return self.inner.allocate(pool_key, candidates, owner, ttl)

    def release(self, pool_key: str, member: str, owner: str) -> bool:
        return self.inner.release(pool_key, member, owner)

    def batch(self) -> Batch:
        return self.inner.batch()

    def stats(self) -> dict[str, object]:
        """The inner store's counters, with the worker's round trips moved from time
        callers waited to client time (its CPU: the process pays it, the loop does not
        wait for the network)."""
        stats = self.inner.stats()
        with self._lock:
            wall, cpu, trips = self._worker_wall, self._worker_cpu, self._worker_trips
        waited = float(cast(float, stats.get("waited_us_sum", 0.0)))
        client = float(cast(float, stats.get("client_us_sum", 0.0)))
        async_trips = int(cast(int, stats.get("async_round_trips", 0)))
        return stats | {
            "waited_us_sum": round(max(0.0, waited - wall * 1e6), 1),
            "client_us_sum": round(client + cpu * 1e6, 1),
            "async_round_trips": async_trips + trips,
            "threaded": {"in_flight": self._in_flight},
        }

    def sweep(self) -> None:
        sweep = getattr(self.inner, "sweep", None)
        if sweep is not None:
            sweep()

    def close(self) -> None:
        if self._worker is not None:
            self._requests.put(None)
            self._worker.join(timeout=2.0)
            self._worker = None
        os.close(self._event)
        self.inner.close()
