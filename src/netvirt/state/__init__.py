"""Connection state for network functions (conntrack, NAT, LB affinity).

``open_store(url)`` picks the backend: ``memory://`` (this process only),
``redis://host:port/db`` (shared by every host; ``rediss://`` for TLS,
``?prefix=`` to namespace keys) or ``redis+cluster://host:port,host:port``
(a Redis Cluster, sharded; ``rediss+cluster://`` for TLS). See
docs/state-store.md for the contract and docs/stateless-nf.md for the design.
"""

from __future__ import annotations

import os

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


# seconds a port zone's conntrack write may wait before it is flushed to a shared store
# (state/writebehind.py); 0 = every write goes to the store synchronously, as before.
# The environment variable NETVIRT_WRITE_BEHIND overrides it (labs, benchmarks).
DEFAULT_WRITE_BEHIND = 0.0
# ... the datapath's (the process that tracks connections): on since session 11, which
# halves the store time per new connection (docs/stateless-nf.md, "Write-behind")
DATAPATH_WRITE_BEHIND = 0.05


def open_store(url: str, write_behind: float | None = None) -> StateStore:
    """Open the store a URL names; Redis is imported only when asked for.

    ``?write_behind=SECONDS`` on a Redis URL keeps the conntrack records of switch port
    zones in this process and writes them behind (``state/writebehind.py``,
    docs/stateless-nf.md); without it, ``NETVIRT_WRITE_BEHIND``, then ``write_behind``
    (the caller's default: the datapath's is :data:`DATAPATH_WRITE_BEHIND`), then
    :data:`DEFAULT_WRITE_BEHIND`."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f"state store URL needs a scheme: {url!r}")
    if scheme == "memory":
        return MemoryStore()
    url, interval = _write_behind_option(url, write_behind)
    store = _open_shared(scheme, url)
    if interval <= 0:
        return store
    import time

    from netvirt.dataplane.nf.codec import (
        closed_record,
        port_zone_keys,
        record_remaining,
        shared_record,
    )
    from netvirt.state.writebehind import WriteBehindStore

    if not getattr(store, "supports_submit", False):
        from netvirt.state.threaded import ThreadedStore

        store = ThreadedStore(store)  # the datapath parks packets on the shared part
    return WriteBehindStore(
        store,
        port_zone_keys(),
        shared=shared_record,
        closed=closed_record,
        remaining=record_remaining(time.time),  # conntrack's clock (agent/datapath.py)
        interval=interval,
    )


def _write_behind_option(url: str, default: float | None = None) -> tuple[str, float]:
    """The URL without ``write_behind=``, and its value (seconds)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    interval = DEFAULT_WRITE_BEHIND if default is None else default
    if env := os.environ.get("NETVIRT_WRITE_BEHIND"):
        interval = _seconds(env, "NETVIRT_WRITE_BEHIND")
    for name, value in query:
        if name == "write_behind":
            interval = _seconds(value or "0", "write_behind in the state store URL")
    rest = urlencode([(n, v) for n, v in query if n != "write_behind"])
    return urlunsplit(parts._replace(query=rest)), interval


def _seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):  # (NaN fails the first test)
        raise ValueError(f"{where} must be a number of seconds >= 0 (0 = off), not {text!r}")
    return value


def _open_shared(scheme: str, url: str) -> StateStore:
    if scheme in ("redis", "rediss", "unix"):
        from netvirt.state.redis import RedisStore

        return RedisStore.from_url(url)
    if scheme in ("redis+cluster", "rediss+cluster"):
        from netvirt.state.cluster import RedisClusterStore

        return RedisClusterStore.from_url(url)
    raise ValueError(f"unknown state store scheme {scheme!r} in {url!r}")
