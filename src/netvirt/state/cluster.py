"""Redis Cluster StateStore: the Redis store's contract, sharded over many nodes.

Theory of operation
-------------------
``open_store("redis+cluster://h1:p1,h2:p2,...?prefix=...")``. The store
keeps its own map of the 16384 hash slots to nodes (``cluster_nodes.py``)
and routes every operation by the slot of its key (or pool), with hash tags
that keep an entry and its slot's version counter together
(``cluster_ops.py``, ``slots.py``).

A batch is split per node and sent as one script call per node. All the
requests are *written* first and the replies read afterwards, so a batch
over three nodes costs one round trip, not three. redis-py's own
``RedisCluster`` pipeline cannot do this: it refuses ``EVALSHA`` whose keys
span slots (and ``MGET`` altogether) and would need a command per slot;
the store therefore uses redis-py only for connections and the protocol.

Consistency is per key, as in the single-server store: each operation is
atomic (a node even runs its whole part of a batch atomically), a batch is
not a transaction, and the operations of one batch that touch one key run in
batch order (they go to the same node, in order). Operations on different
nodes run concurrently. Versions: see ``cluster_ops.py`` — per key they grow
and never repeat; across keys they follow each client's order (a Lamport
clock kept here), not one global order.

Failures:

* a node that refuses, resets or times out → :class:`StateStoreUnavailable`
  for every batch that needs it, and the node is held down for a moment
  (``cluster_nodes.py``); batches that touch only other nodes go on.
* the slot map is wrong (resharding, failover: the node answers "non local
  key", ``MOVED``, ``CLUSTERDOWN``, ``TRYAGAIN``, ``READONLY``) → the map is
  reloaded. A direct call of one operation, or of reads only, is tried once
  more on the new map (the operation did not run: a node refuses a key
  before touching it); anything else raises :class:`StateStoreUnavailable`,
  since parts of it may have run.
* a node lost its script cache (``NOSCRIPT``: restart, ``SCRIPT FLUSH``) →
  the script is loaded there and that node's request is sent again. Its
  operations had not run; those on other nodes did, but operations on
  different nodes are unordered anyway, so this reorders nothing.
* no other retries, as in the single-server store.

Thread-safety: the store may be shared by threads (per-node connection pools
are thread-safe; the slot map is replaced, never mutated); a ``Batch``
belongs to the thread that fills it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    ReadOnlyError,
    TryAgainError,
)

from netvirt.state.cluster_nodes import ClusterConfig, Node, SlotMap, Topology
from netvirt.state.cluster_ops import SCRIPT, SHA, Layout, NodeStream
from netvirt.state.slots import SLOTS, crc16, slot_of
from netvirt.state.stats import StoreStats
from netvirt.state.store import (
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
    StateStoreError,
    StateStoreUnavailable,
    check_owner,
    check_positive_ttl,
    check_ttl,
    check_version,
)

__all__ = ["ClusterConfig", "RedisClusterStore", "TopologyChanged"]

_TOPOLOGY_TEXTS = ("non local key", "cluster is down", "MOVED", "CLUSTERDOWN", "TRYAGAIN")


class TopologyChanged(StateStoreUnavailable):
    """A node does not serve a slot the map says it does; the map is being reloaded."""


@dataclass
class _Reply:
    """What one node answered to its part of a batch, or why it did not."""

    node: Node
    stream: NodeStream
    value: Any = None
    error: BaseException | None = None


class RedisClusterStore:
    """A :class:`~netvirt.state.store.StateStore` on a Redis Cluster."""

    supports_submit = False  # synchronous only: the datapath wraps it (state/threaded.py)

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self._layout = Layout(config.prefix)
        self._stats = StoreStats("redis-cluster")
        self._topology = Topology(config, self._stats)
        self._lock = threading.Lock()
        self._seen = 0  # the highest version this client has seen (Lamport clock)

    @classmethod
    def from_url(cls, url: str) -> RedisClusterStore:
        return cls(ClusterConfig.from_url(url))

    # -- StateStore ----------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        results = self._call([GetOp(k) for k in keys])
        return [r if isinstance(r, Entry) else None for r in results]

    def put(self, key: str, value: bytes, ttl: float | None = None) -> int:
        return self.put_many([(key, value)], ttl)[0]

    def put_many(self, items: Iterable[tuple[str, bytes]], ttl: float | None = None) -> list[int]:
        check_ttl(ttl)
        return [cast(int, v) for v in self._call([PutOp(k, v, ttl) for k, v in items])]

    def compare_and_set(
        self, key: str, expected_version: int, value: bytes, ttl: float | None = None
    ) -> CasResult:
        op = CasOp(key, check_version(expected_version), value, check_ttl(ttl))
        return cast(CasResult, self._call([op])[0])

    def delete(self, key: str) -> bool:
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Sequence[str]) -> int:
        return sum(bool(r) for r in self._call([DeleteOp(k) for k in keys]))

    def expire(self, key: str, ttl: float) -> bool:
        return bool(self._call([ExpireOp(key, check_positive_ttl(ttl))])[0])

    def allocate(
        self, pool_key: str, candidates: Iterable[str], owner: str, ttl: float | None = None
    ) -> str | None:
        op = AllocateOp(pool_key, tuple(candidates), check_owner(owner), check_ttl(ttl))
        result = self._call([op])[0]
        return result if isinstance(result, str) else None

    def release(self, pool_key: str, member: str, owner: str) -> bool:
        return bool(self._call([ReleaseOp(pool_key, member, check_owner(owner))])[0])

    def batch(self) -> Batch:
        return Batch(self._execute)

    def stats(self) -> dict[str, object]:
        """Round trips (one per batch, whatever the node count), per-node requests, etc."""
        return self._stats.snapshot()

    def close(self) -> None:
        self._topology.close()

    # -- for tests, the lab and benchmarks ----------------------------------------------------

    def node_of(self, name: str) -> str:
        """``host:port`` of the node that holds store key (or pool) ``name`` now."""
        node = self._topology.current().node_of(slot_of(name))
        if node is None:
            raise StateStoreUnavailable(f"no node serves the slot of {name!r}")
        return node.name

    def node_addresses(self) -> list[str]:
        """Every master the slot map knows, ``host:port``."""
        return [node.name for node in self._topology.current().nodes]

    # -- one call ------------------------------------------------------------------------------

    def _call(self, ops: Sequence[Op]) -> list[object]:
        """A direct call: tried again once if the map was wrong and nothing of it ran."""
        retryable = len(ops) == 1 or all(isinstance(op, GetOp) for op in ops)
        try:
            return self._execute(ops, retryable=retryable)
        except TopologyChanged:
            return self._execute(ops)

    def _execute(self, ops: Sequence[Op], *, retryable: bool = False) -> list[object]:
        if not ops:
            return []
        self._stats.call(len(ops))
        streams, results = self._route(self._topology.current(), ops)
        replies = self._exchange(list(streams.items()), len(ops)) if streams else []
        lost = [r for r in replies if isinstance(r.error, NoScriptError)]
        if lost:
            replies = [r for r in replies if r not in lost] + self._reload_and_resend(lost)
        self._raise_failures(replies, retryable=retryable)
        for reply in replies:
            try:
                decoded = reply.stream.decode(reply.value)
            except (ValueError, TypeError) as exc:  # not what the script returns
                self._stats.failure("error")
                raise StateStoreError(f"unexpected reply from {reply.node.name}: {exc}") from exc
            for position, result in zip(reply.stream.positions, decoded, strict=True):
                results[position] = result
        self._observe(ops, results)
        return results

    def _route(
        self, slot_map: SlotMap, ops: Sequence[Op]
    ) -> tuple[dict[Node, NodeStream], list[object]]:
        """Split ``ops`` per node, with hints for the writes (see cluster_ops.py)."""
        streams: dict[Node, NodeStream] = {}
        results: list[object] = [None] * len(ops)
        hint = self._seen
        node_of = slot_map.node_of
        for position, op in enumerate(ops):
            kind = type(op)
            if kind is AllocateOp or kind is ReleaseOp:
                if kind is AllocateOp and not op.candidates:  # type: ignore[union-attr]
                    continue  # nothing to claim: None, without asking anyone
                name = op.pool_key  # type: ignore[union-attr]
            else:
                name = op.key  # type: ignore[union-attr]
            slot = crc16(name.encode()) % SLOTS  # slots.slot_of, inlined
            node = node_of(slot)
            if node is None:
                self._topology.stale(now=True)
                self._stats.failure("unavailable")
                raise StateStoreUnavailable(f"no redis cluster node serves slot {slot}")
            stream = streams.get(node)
            if stream is None:
                stream = streams[node] = NodeStream()
            stream.positions.append(position)
            stream.ops.append(op)
            stream.slots.append(slot)
            if kind is CasOp or kind is PutOp:  # a write takes a version: its hint
                stream.hints.append(hint)
                hint += 1
            else:
                stream.hints.append(0)
        return streams, results

    def _observe(self, ops: Sequence[Op], results: Sequence[object]) -> None:
        """Advance the Lamport clock to the highest version among the results and count
        get hits and misses, in one pass over exact types."""
        seen = hits = misses = 0
        for op, result in zip(ops, results, strict=True):
            kind = type(result)
            if kind is CasResult:
                entry = result.entry  # type: ignore[attr-defined]
                if entry is not None and entry.version > seen:
                    seen = entry.version
            elif kind is int:
                if result > seen:  # type: ignore[operator]
                    seen = result  # type: ignore[assignment]
            elif type(op) is GetOp:
                if result is None:
                    misses += 1
                else:
                    hits += 1
                    if result.version > seen:  # type: ignore[attr-defined]
                        seen = result.version  # type: ignore[attr-defined]
        if seen > self._seen:
            with self._lock:
                self._seen = max(self._seen, seen)
        self._stats.lookups(hits, misses)

    # -- talking to nodes ------------------------------------------------------------------

    def _exchange(self, work: Sequence[tuple[Node, NodeStream]], keys: int) -> list[_Reply]:
        """Write every node's request, then read every reply: one round trip in all."""
        replies = [_Reply(node, stream) for node, stream in work]
        commands = [("EVALSHA", SHA, 0, *stream.argv(self._layout)) for _, stream in work]
        connections: list[Any] = [None] * len(replies)
        started = time.perf_counter()
        try:
            for i, (reply, command) in enumerate(zip(replies, commands, strict=True)):
                connections[i] = self._send(reply, command)
            for reply, connection in zip(replies, connections, strict=True):
                if connection is not None:
                    self._receive(reply, connection)
        finally:
            for reply, connection in zip(replies, connections, strict=True):
                if connection is not None:
                    reply.node.pool.release(connection)
                failed = reply.error is not None and not isinstance(reply.error, NoScriptError)
                self._stats.node_request(reply.node.name, failed=failed)
            self._stats.round_trip(keys, time.perf_counter() - started, len(replies))
        return replies

    def _send(self, reply: _Reply, command: Sequence[Any]) -> Any:
        node = reply.node
        if node.held_down(time.monotonic()):
            reply.error = redis.ConnectionError(f"{node.name} is held down after a failure")
            self._stats.held_down()
            return None
        connection: Any = None
        try:
            connection = node.pool.get_connection()
            connection.send_packed_command(connection.pack_command(*command), check_health=False)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            reply.error = exc
            self._topology.hold_down(node)
            if connection is not None:
                node.pool.release(connection)
            return None
        return connection

    def _receive(self, reply: _Reply, connection: Any) -> None:
        try:
            reply.value = connection.read_response()
        except redis.ResponseError as exc:  # the whole reply was read: the connection is clean
            reply.error = exc
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            connection.disconnect()
            reply.error = exc
            self._topology.hold_down(reply.node)

    def _reload_and_resend(self, lost: Sequence[_Reply]) -> list[_Reply]:
        """Load the script where it was missing and send those nodes' requests again."""
        for reply in lost:
            started = time.perf_counter()
            try:
                reply.node.client.script_load(SCRIPT)
            except redis.RedisError as exc:
                reply.error = exc
            finally:
                self._stats.round_trip(0, time.perf_counter() - started)
        again = [(r.node, r.stream) for r in lost if isinstance(r.error, NoScriptError)]
        keys = sum(len(stream.ops) for _, stream in again)
        resent = self._exchange(again, keys) if again else []
        return [r for r in lost if not isinstance(r.error, NoScriptError)] + resent

    def _raise_failures(self, replies: Sequence[_Reply], *, retryable: bool) -> None:
        failed = [r for r in replies if r.error is not None]
        if not failed:
            return
        moved = [r for r in failed if _topology_error(r.error)]
        unavailable = [r for r in failed if _unavailable(r.error)]
        if moved or unavailable:
            self._topology.stale(now=bool(moved))
            self._stats.failure("unavailable")
            what = "; ".join(f"{r.node.name}: {r.error}" for r in moved or unavailable)
            if moved and retryable:
                raise TopologyChanged(f"redis cluster slot map changed: {what}")
            if moved:
                raise StateStoreUnavailable(f"redis cluster slot map changed: {what}")
            raise StateStoreUnavailable(f"redis cluster node(s) unavailable: {what}")
        self._stats.failure("error")
        reply = failed[0]
        raise StateStoreError(f"redis error on {reply.node.name}: {reply.error}") from reply.error


def _unavailable(error: BaseException | None) -> bool:
    return isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError | MasterDownError)


def _topology_error(error: BaseException | None) -> bool:
    """The node says the slot map is wrong (moved, migrating, failed over, cluster down)."""
    if isinstance(error, AskError | TryAgainError | ClusterDownError | ReadOnlyError):
        return True
    text = str(error)
    return isinstance(error, redis.ResponseError) and any(m in text for m in _TOPOLOGY_TEXTS)
