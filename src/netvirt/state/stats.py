"""Per-store counters: how often and how long a StateStore talks to its server.

Why: external state costs a network round trip per batch, so the numbers that
decide whether it keeps up are round trips, keys per round trip, how often a
lookup finds something, and the latency distribution of the round trips.
Every store keeps a :class:`StoreStats` and returns :meth:`StoreStats.snapshot`
from ``stats()``; the memory store never makes a round trip and reports zeros
there.

Latency is a log2 histogram in microseconds: bucket ``i`` counts round trips
that took less than ``2**i`` µs and (for ``i > 0``) at least ``2**(i-1)`` µs;
the last bucket also takes everything slower. Failed round trips (timeouts,
refused connections) are counted too: a timeout is exactly the latency worth
seeing. ``waited_us_sum`` is the part of that time callers were blocked
(synchronous calls); asynchronous round trips (``submit``) block nobody and
instead count the client's own work (encode, send, read, decode) in
``client_us_sum`` (CPU time): together, what the store cost its caller. Calls refused
at once because their server is *held down* after a failure (nothing sent, no
round trip) count in ``held_down`` (and, since they raise
StateStoreUnavailable, in ``unavailable``).
"""

from __future__ import annotations

import threading
from typing import Literal

LATENCY_BUCKETS = 24  # the last one starts at 2**22 µs ≈ 4.2 s: beyond any socket timeout

Failure = Literal["unavailable", "error"]


def latency_bucket(micros: float) -> int:
    """The histogram bucket of a round trip that took ``micros`` µs."""
    return min(int(micros).bit_length(), LATENCY_BUCKETS - 1) if micros >= 1 else 0


class StoreStats:
    """Thread-safe counters of one store (see the module docstring)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._calls = 0
        self._ops = 0
        self._round_trips = 0
        self._round_trip_keys = 0
        self._requests = 0
        self._hits = 0
        self._misses = 0
        self._unavailable = 0
        self._errors = 0
        self._held_down = 0
        self._latency = [0] * LATENCY_BUCKETS
        self._latency_sum = 0.0
        self._waited_sum = 0.0  # µs callers were blocked on round trips
        self._client_sum = 0.0  # µs of client work for asynchronous round trips
        self._async_round_trips = 0
        self._nodes: dict[str, list[int]] = {}  # cluster: name -> [requests, failures]

    def call(self, ops: int) -> None:
        """One API call (a single operation, a bulk call or a batch) of ``ops`` operations."""
        with self._lock:
            self._calls += 1
            self._ops += ops

    def round_trip(
        self, keys: int, seconds: float, requests: int = 1, *, waited: bool = True
    ) -> None:
        """One network round trip carrying ``keys`` operations in ``requests`` commands.

        A cluster batch that writes to three nodes and then reads the three
        replies is one round trip of three requests. ``waited``: the caller was
        blocked for it (a synchronous call); an asynchronous round trip (``submit``)
        costs its caller only the client's own work, counted by :meth:`client`.
        """
        micros = seconds * 1e6
        with self._lock:
            if waited:
                self._waited_sum += micros
            else:
                self._async_round_trips += 1
            self._round_trips += 1
            self._round_trip_keys += keys
            self._requests += requests
            self._latency[latency_bucket(micros)] += 1
            self._latency_sum += micros

    def client(self, seconds: float) -> None:
        """CPU time the caller spent in the client for asynchronous round trips: encoding
        and sending, reading and decoding (not waiting: the caller went on meanwhile).
        CPU, not wall time: on a busy machine the wall time of that work is mostly the
        time other processes had the CPU."""
        with self._lock:
            self._client_sum += seconds * 1e6

    def lookups(self, hits: int, misses: int) -> None:
        with self._lock:
            self._hits += hits
            self._misses += misses

    def node_request(self, name: str, *, failed: bool) -> None:
        """One request to one cluster node (a batch makes one per node it touches)."""
        with self._lock:
            counts = self._nodes.setdefault(name, [0, 0])
            counts[0] += 1
            counts[1] += failed

    def held_down(self) -> None:
        """A call (or a cluster node's part of one) failed at once: its server is held
        down after a recent failure, nothing was sent."""
        with self._lock:
            self._held_down += 1

    def failure(self, kind: Failure) -> None:
        with self._lock:
            if kind == "unavailable":
                self._unavailable += 1
            else:
                self._errors += 1

    def snapshot(self) -> dict[str, object]:
        """The counters as plain JSON-able data (what ``StateStore.stats()`` returns)."""
        with self._lock:
            snapshot: dict[str, object] = {
                "backend": self.backend,
                "calls": self._calls,
                "ops": self._ops,
                "round_trips": self._round_trips,
                "round_trip_keys": self._round_trip_keys,
                "requests": self._requests,
                "hits": self._hits,
                "misses": self._misses,
                "unavailable": self._unavailable,
                "errors": self._errors,
                "held_down": self._held_down,
                "latency_us_log2": list(self._latency),
                "latency_us_sum": round(self._latency_sum, 1),
                "async_round_trips": self._async_round_trips,
                "waited_us_sum": round(self._waited_sum, 1),
                "client_us_sum": round(self._client_sum, 1),
            }
            if self._nodes:
                snapshot["nodes"] = {
                    name: {"requests": requests, "failures": failures}
                    for name, (requests, failures) in sorted(self._nodes.items())
                }
            return snapshot
