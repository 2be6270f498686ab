"""The cluster store's view of the cluster: URL, nodes, slot map, unreachable nodes.

Theory of operation
-------------------
The store routes by its own copy of the slot map (``CLUSTER SLOTS``, asked of
the URL's nodes first, then of every node seen since). The map is replaced,
never mutated, so a batch routes on one consistent map without a lock. It is
reloaded when a node says it is wrong (right away) or after a node failed to
answer (at most once per ``REFRESH_AFTER_FAILURE``: a failover moves slots to
another address). A reload that finds no node keeps the old map — its nodes
may come back before the map changes — and is tried again a second later.

Unreachable nodes are *held down*: after a refused, reset or timed-out
connection, requests to that node fail at once with StateStoreUnavailable for
``hold_down`` seconds (URL parameter, default 0.2 s, 0 turns it off); then one
request tries again. Without it a node that stopped answering (as opposed to
refusing) would stall every batch that touches it for the socket timeout, and
a datapath's loop with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from netvirt.state.slots import SLOTS
from netvirt.state.stats import StoreStats
from netvirt.state.store import StateStoreUnavailable

DEFAULT_PREFIX = "netvirt:"
DEFAULT_TIMEOUT = 0.05  # seconds, connect and read: a datapath loop waits for it
DEFAULT_HOLD_DOWN = 0.2
REFRESH_AFTER_FAILURE = 1.0  # seconds between slot-map reloads after a node failed
SCHEMES = ("redis+cluster", "rediss+cluster")
_OPTIONS = ("prefix", "socket_timeout", "socket_connect_timeout", "hold_down")


@dataclass(frozen=True)
class ClusterConfig:
    """What a ``redis+cluster://`` URL says."""

    addresses: tuple[tuple[str, int], ...]
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_TIMEOUT
    hold_down: float = DEFAULT_HOLD_DOWN
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> ClusterConfig:
        """``redis+cluster://[user:password@]host:port[,host:port...][/0][?prefix=…]``.

        Query parameters: ``prefix``; ``socket_timeout``, ``socket_connect_timeout``
        and ``hold_down`` in seconds. ``rediss+cluster://`` uses TLS. A cluster has
        only database 0.
        """
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"not a cluster URL (want {' or '.join(SCHEMES)}): {url!r}")
        userinfo, _, hosts = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        addresses = tuple(_address(h, url) for h in hosts.split(",") if h)
        if not addresses:
            raise ValueError(f"cluster URL names no node: {url!r}")
        if parts.path not in ("", "/", "/0"):
            raise ValueError(f"a Redis Cluster has only database 0: {url!r}")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise ValueError(f"unknown cluster URL parameter(s) {sorted(unknown)} in {url!r}")
        timeout = float(options.get("socket_timeout", DEFAULT_TIMEOUT))
        return cls(
            addresses,
            prefix=options.get("prefix", DEFAULT_PREFIX),
            timeout=timeout,
            connect_timeout=float(options.get("socket_connect_timeout", timeout)),
            hold_down=float(options.get("hold_down", DEFAULT_HOLD_DOWN)),
            username=unquote(user) or None,
            password=unquote(password) or None,
            tls=parts.scheme == "rediss+cluster",
        )


def _address(text: str, url: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"cluster node {text!r} is not host:port in {url!r}")
    return host.strip("[]"), int(port)


@dataclass(eq=False)  # identity: nodes are dict keys while a batch is routed
class Node:
    """One master: its connection pool and whether it is held down."""

    address: tuple[str, int]
    pool: redis.ConnectionPool
    client: Any  # redis.Redis; Any because redis-py's execute_command is untyped
    down_until: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def held_down(self, now: float) -> bool:
        return now < self.down_until


@dataclass(frozen=True)
class SlotMap:
    owners: tuple[int, ...]  # node index per slot, -1: nobody serves it
    nodes: tuple[Node, ...]

    def node_of(self, slot: int) -> Node | None:
        index = self.owners[slot]
        return self.nodes[index] if index >= 0 else None


class Topology:
    """Nodes and the slot map of one cluster store (see the module docstring)."""

    def __init__(self, config: ClusterConfig, stats: StoreStats) -> None:
        self.config = config
        self._stats = stats
        self._lock = threading.Lock()
        self._nodes: dict[tuple[str, int], Node] = {}
        self._map: SlotMap | None = None
        self._reload_at: float | None = None  # None: the map is good

    def current(self) -> SlotMap:
        """The slot map, reloaded first when that is due."""
        current = self._map
        if current is not None and not self._due():
            return current
        with self._lock:
            if self._map is not None and not self._due():
                return self._map  # another thread just reloaded it
            try:
                self._map = self._load()
                self._reload_at = None
            except StateStoreUnavailable:
                self._reload_at = time.monotonic() + REFRESH_AFTER_FAILURE
                if self._map is None:
                    raise
            return self._map

    def stale(self, *, now: bool) -> None:
        """A node failed (``now=False``: reload within a second) or said the map is wrong."""
        with self._lock:
            at = time.monotonic() + (0.0 if now else REFRESH_AFTER_FAILURE)
            if self._reload_at is None or at < self._reload_at:
                self._reload_at = at

    def hold_down(self, node: Node) -> None:
        node.down_until = time.monotonic() + self.config.hold_down

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def close(self) -> None:
        for node in self.nodes():
            node.pool.disconnect()

    def _due(self) -> bool:
        return self._reload_at is not None and time.monotonic() >= self._reload_at

    def _load(self) -> SlotMap:
        """Ask the known nodes, the URL's first, for ``CLUSTER SLOTS``."""
        errors = []
        for address in dict.fromkeys([*self.config.addresses, *self._nodes]):
            node = self.node(address)
            if node.held_down(time.monotonic()):
                errors.append(f"{node.name}: held down")
                self._stats.held_down()
                continue
            started = time.perf_counter()
            try:
                ranges = node.client.execute_command("CLUSTER SLOTS")
            except redis.RedisError as exc:
                errors.append(f"{node.name}: {exc}")
                if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                    self.hold_down(node)
                continue
            finally:
                self._stats.round_trip(0, time.perf_counter() - started)
            return self._build(ranges, address[0])
        self._stats.failure("unavailable")
        raise StateStoreUnavailable(f"no redis cluster node answers: {'; '.join(errors)}")

    def _build(self, ranges: Sequence[Any], asked_host: str) -> SlotMap:
        owners = [-1] * SLOTS
        nodes: list[Node] = []
        index: dict[tuple[str, int], int] = {}
        for lo, hi, master, *_replicas in ranges:
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            address = (host if host and host != "?" else asked_host, int(master[1]))
            if address not in index:
                index[address] = len(nodes)
                nodes.append(self.node(address))
            owners[int(lo) : int(hi) + 1] = [index[address]] * (int(hi) - int(lo) + 1)
        return SlotMap(tuple(owners), tuple(nodes))

    def node(self, address: tuple[str, int]) -> Node:
        node = self._nodes.get(address)
        if node is None:
            config = self.config
            options: dict[str, Any] = {
                "host": address[0],
                "port": address[1],
                "socket_timeout": config.timeout,
                "socket_connect_timeout": config.connect_timeout,
                "retry": Retry(NoBackoff(), 0),
                "username": config.username,
                "password": config.password,
            }
            if config.tls:
                options["connection_class"] = redis.SSLConnection
            pool = redis.ConnectionPool(**options)
            node = Node(address, pool, redis.Redis(connection_pool=pool))
            self._nodes[address] = node
        return node
