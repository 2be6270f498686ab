"""Connection state for network functions (conntrack, NAT, LB affinity).

``open_store(url)`` picks the backend: ``memory://`` (this process only),
``redis://host:port/db`` (shared by every host; ``rediss://`` for TLS,
``?prefix=`` to namespace keys) or ``redis+cluster://host:port,host:port``
(a Redis Cluster, sharded; ``rediss+cluster://`` for TLS). See
docs/state-store.md for the contract and docs/stateless-nf.md for the design.
"""

from __future__ import annotations

from netvirt.state.memory import MemoryStore
from netvirt.state.store import (
    Batch,
    CasResult,
    Entry,
    Pending,
    StateStore,
    StateStoreError,
    StateStoreUnavailable,
)

__all__ = [
    "Batch",
    "CasResult",
    "Entry",
    "MemoryStore",
    "Pending",
    "StateStore",
    "StateStoreError",
    "StateStoreUnavailable",
    "open_store",
]


def open_store(url: str) -> StateStore:
    """Open the store a URL names; Redis is imported only when asked for."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f"state store URL needs a scheme: {url!r}")
    if scheme == "memory":
        return MemoryStore()
    if scheme in ("redis", "rediss", "unix"):
        from netvirt.state.redis import RedisStore

        return RedisStore.from_url(url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        from netvirt.state.cluster import RedisClusterStore

        return RedisClusterStore.from_url(url)
    raise ValueError(f"unknown state store scheme {scheme!r} in {url!r}")
