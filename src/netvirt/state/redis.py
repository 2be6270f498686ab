"""Redis StateStore: connection state shared by every host, one round trip per batch.

Theory of operation
-------------------
Layout, under a configurable key prefix ``P`` (default ``netvirt:``):

* ``P d:<key>``   one string per entry: 8-byte big-endian version, then the value.
  A packed string (not a hash) lets ``get_many`` be a single MGET.
* ``P version``   the store-wide version counter (see store.py: no ABA).
* ``P p:<len(pool)>:<pool>:<member>``  one string per claimed pool member,
  holding the owner; per-member keys give per-member TTLs. The length prefix
  keeps pool names containing ``:`` from colliding.

A round trip is one command (``redis_ops.py``): ``MGET`` when it only reads,
else one ``EVALSHA`` of the ops-stream script, which runs every operation of
the round trip in order, atomically on the server, and answers one element
per operation. Every write (put, put_many, compare-and-set, the pool
operations) goes through it, single operations included. The SHA1 is computed
locally; the script is loaded on first use and again if the server answers
NOSCRIPT (restart, SCRIPT FLUSH): nothing of that round trip ran, so a
synchronous one is sent again at once (the datapath's asynchronous one fails
once, see ``submit``). ``get_many`` and ``delete_many`` are one command each.

Failure: the client never retries on its own (a retried compare-and-set could
report failure after it actually succeeded; NOSCRIPT, above, is the one exception
because the server ran nothing); socket connect/read timeouts are
short (50 ms by default: a datapath loop waits for them), and every
connection-level failure surfaces as :class:`StateStoreUnavailable`. After such
a failure the server is *held down* for ``hold_down`` seconds (default 0.2):
every call fails at once with StateStoreUnavailable without touching the
network, so a server that stopped answering costs one timeout per hold-down
period instead of one per packet batch. The caller decides whether to retry.

Thread-safety: the store may be shared by threads (redis-py's connection pool
is thread-safe); a :class:`Batch` belongs to the thread that fills it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from netvirt.state import redis_ops
from netvirt.state.jobs import Reply, Ticket
from netvirt.state.redis_async import Address, Arg, RedisPipe, is_noscript, reply_error
from netvirt.state.stats import StoreStats
from netvirt.state.store import (
    AllocateOp,
    Batch,
    CasOp,
    CasResult,
    Entry,
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

DEFAULT_PREFIX = "netvirt:"
DEFAULT_TIMEOUT = 0.05  # seconds, connect and read: a datapath loop waits for it
DEFAULT_HOLD_DOWN = 0.2  # seconds of failing fast after a connection-level failure
VERSION_BYTES = 8

_SCRIPTS = {"ops": redis_ops.SCRIPT}  # one script: every round trip that writes (redis_ops.py)
_SHAS = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in _SCRIPTS.items()}


_px = redis_ops.px
_unpack = redis_ops.unpack


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Callers see only StateStore exceptions, never redis-py's."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StateStoreUnavailable(f"redis unavailable: {exc}") from exc
    except redis.RedisError as exc:
        raise StateStoreError(f"redis error: {exc}") from exc


_OWN_OPTIONS = ("prefix", "hold_down")


def _split_options(url: str) -> tuple[str, dict[str, str]]:
    """Take our own query parameters (``prefix``, ``hold_down``) out; redis-py
    rejects unknown ones."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {name: value for name, value in query if name in _OWN_OPTIONS}
    rest = urlencode([(name, value) for name, value in query if name not in _OWN_OPTIONS])
    return urlunsplit(parts._replace(query=rest)), own


class RedisStore:
    """A :class:`~netvirt.state.store.StateStore` on a Redis server."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        *,
        hold_down: float = DEFAULT_HOLD_DOWN,
    ) -> None:
        if hold_down < 0:
            raise ValueError(f"hold_down must be >= 0, not {hold_down}")
        self._client = client
        self._prefix = prefix
        self.hold_down = hold_down
        self._down_until = 0.0  # time.monotonic() before which calls fail at once
        self._counter = f"{prefix}version"
        self._scripts_loaded = False
        self._stats = StoreStats("redis")
        self._async: RedisPipe | None = None  # the datapath's non-blocking connection
        self._framer = redis_ops.Framer(_SHAS["ops"], prefix)  # its round trips' RESP

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        hold_down: float = DEFAULT_HOLD_DOWN,
    ) -> RedisStore:
        """``redis://host:port/db?prefix=…&socket_timeout=…&socket_connect_timeout=…
        &hold_down=…`` (query values win; times in seconds)."""
        redis_url, own = _split_options(url)
        client = redis.Redis.from_url(
            redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        held = float(own.get("hold_down", hold_down))
        return cls(client, prefix or own.get("prefix") or DEFAULT_PREFIX, hold_down=held)

    # -- key layout ----------------------------------------------------------------------

    def _data_key(self, key: str) -> str:
        return f"{self._prefix}d:{key}"

    def _member_key(self, pool_key: str, member: str) -> str:
        return f"{self._prefix}p:{len(pool_key)}:{pool_key}:{member}"

    # -- StateStore ----------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        if not keys:
            return []
        self._stats.call(len(keys))
        with self._round_trip(len(keys)):
            blobs = self._client.mget([self._data_key(k) for k in keys])
        found = [_unpack(cast(bytes | None, blob)) for blob in blobs]
        self._count_lookups(found)
        return found

    def put(self, key: str, value: bytes, ttl: float | None = None) -> int:
        return self.put_many([(key, value)], ttl)[0]

    def put_many(self, items: Iterable[tuple[str, bytes]], ttl: float | None = None) -> list[int]:
        check_ttl(ttl)
        pairs = list(items)
        if not pairs:
            return []
        return cast(list[int], self._execute([PutOp(k, v, ttl) for k, v in pairs]))

    def compare_and_set(
        self, key: str, expected_version: int, value: bytes, ttl: float | None = None
    ) -> CasResult:
        op = CasOp(key, check_version(expected_version), value, check_ttl(ttl))
        return cast(CasResult, self._execute([op])[0])

    def delete(self, key: str) -> bool:
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        self._stats.call(len(keys))
        with self._round_trip(len(keys)):
            return int(self._client.delete(*[self._data_key(k) for k in keys]))

    def expire(self, key: str, ttl: float) -> bool:
        px = _px(check_positive_ttl(ttl))
        self._stats.call(1)
        with self._round_trip(1):
            return bool(self._client.pexpire(self._data_key(key), px))

    def allocate(
        self, pool_key: str, candidates: Iterable[str], owner: str, ttl: float | None = None
    ) -> str | None:
        op = AllocateOp(pool_key, tuple(candidates), check_owner(owner), check_ttl(ttl))
        if not op.candidates:
            self._stats.call(1)
            return None
        return cast(str | None, self._execute([op])[0])

    def release(self, pool_key: str, member: str, owner: str) -> bool:
        op = ReleaseOp(pool_key, member, check_owner(owner))
        return cast(bool, self._execute([op])[0])

    def batch(self) -> Batch:
        return Batch(self._execute)

    def stats(self) -> dict[str, object]:
        """Round trips, keys per round trip, get hits/misses, latency (see stats.py)."""
        return self._stats.snapshot()

    def close(self) -> None:
        if self._async is not None:
            self._async.close()
        with _translated_errors():
            self._client.close()

    # -- scripts ---------------------------------------------------------------------------

    @contextmanager
    def _round_trip(self, keys: int, requests: int = 1) -> Iterator[None]:
        """Time one exchange with the server, count it, translate its errors; fail at
        once, without an exchange, while the server is held down."""
        held = self._held_down()
        if held is not None:
            raise held
        started = time.perf_counter()
        try:
            with _translated_errors():
                yield
        except StateStoreError as exc:
            if isinstance(exc, StateStoreUnavailable):
                self._went_down()
            else:
                self._stats.failure("error")
            raise
        finally:
            self._stats.round_trip(keys, time.perf_counter() - started, requests)

    def _held_down(self) -> StateStoreUnavailable | None:
        """The error of a call made while the server is held down (counted), else None."""
        if self._down_until and time.monotonic() < self._down_until:
            self._stats.held_down()
            self._stats.failure("unavailable")
            return StateStoreUnavailable("redis unavailable: held down after a failure")
        return None

    def _went_down(self) -> None:
        """A connection-level failure (either connection): count it, hold the server down."""
        self._stats.failure("unavailable")
        if self.hold_down > 0:
            self._down_until = time.monotonic() + self.hold_down

    def _count_lookups(self, found: Iterable[object]) -> None:
        hits = misses = 0
        for entry in found:
            if entry is None:
                misses += 1
            else:
                hits += 1
        self._stats.lookups(hits, misses)

    def _load_scripts(self) -> None:
        for name, text in _SCRIPTS.items():
            with self._round_trip(0):
                sha = self._client.script_load(text)
            if sha != _SHAS[name]:
                raise StateStoreError(f"script {name}: server sha {sha} != {_SHAS[name]}")
        self._scripts_loaded = True

    # -- asynchronous round trips (state/jobs.py, state/redis_async.py) --------------------

    supports_submit = True

    def submit(self, ops: Sequence[Op]) -> Ticket:
        """Send a round trip of ``ops`` now, on the non-blocking connection; the ticket
        completes when :meth:`on_readable` reads its reply (results as ``execute`` would
        return them) or when it fails (held down, timeout, lost connection). The round trip
        is one command (``redis_ops.py``), its operations grouped by kind as
        ``jobs.execute`` groups a synchronous one."""
        ticket = Ticket(ops)
        held = self._held_down()
        if held is not None:
            ticket.complete(held)
            return ticket
        began = time.thread_time()
        stats = self._stats
        stats.call(len(ops))
        buffer = self._framer.frame(ops)  # the script orders by kind (redis_ops.py)
        started = time.perf_counter()

        def finish(raw: list[object]) -> Reply:
            stats.round_trip(len(ops), time.perf_counter() - started, 1, waited=False)
            reply = raw[0]
            error = reply_error(reply)
            if error is None:
                try:
                    results, hits, misses = redis_ops.results(ops, reply)
                except StateStoreError as exc:
                    error = exc
            if error is not None:
                unavailable = isinstance(error, StateStoreUnavailable)
                stats.failure("unavailable" if unavailable else "error")
                if is_noscript(error):
                    self._pipe().send(self._script_loads(), None, None)
                return error
            stats.lookups(hits, misses)
            return results

        self._pipe().send_packed(buffer, 1, ticket, finish)
        stats.client(time.thread_time() - began)
        return ticket

    def _pipe(self) -> RedisPipe:
        if self._async is None:
            kwargs = self._client.connection_pool.connection_kwargs
            address = Address(
                host=str(kwargs.get("host", "localhost")),
                port=int(kwargs.get("port", 6379)),
                path=kwargs.get("path"),
                db=int(kwargs.get("db", 0) or 0),
                username=kwargs.get("username"),
                password=kwargs.get("password"),
            )
            timeout = float(kwargs.get("socket_timeout") or DEFAULT_TIMEOUT)
            self._async = RedisPipe(
                address,
                timeout,
                on_connect=self._script_loads,
                on_failure=lambda _exc: self._went_down(),
                charge=self._stats.client,
                # a round trip that failed unanswered (timeout, lost connection) counts
                # too, with its latency (docs/stateless-nf.md, "Counters")
                on_lost=lambda keys, seconds: self._stats.round_trip(
                    keys, seconds, 1, waited=False
                ),
            )
        return self._async

    @staticmethod
    def _script_loads() -> list[list[Arg]]:
        return [["SCRIPT", "LOAD", text] for text in _SCRIPTS.values()]

    def handle(self) -> tuple[int, int] | None:
        return self._async.handle() if self._async is not None else None

    def wants_write(self) -> bool:
        return self._async is not None and self._async.wants_write()

    def on_readable(self) -> None:
        if self._async is not None:
            self._async.on_readable()

    def on_writable(self) -> None:
        if self._async is not None:
            self._async.on_writable()

    def time_out(self, now: float) -> None:
        if self._async is not None:
            self._async.time_out(now)

    def wait(self, timeout: float) -> None:
        if self._async is not None:
            self._async.wait(timeout)

    def in_flight(self) -> int:
        return self._async.in_flight() if self._async is not None else 0

    # -- batches ---------------------------------------------------------------------------
    #
    # A batch is one command (redis_ops.py): MGET for reads only, else one EVALSHA of the
    # ops-stream script, which runs every operation in order and answers one element each.

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        self._stats.call(len(ops))
        if not self._scripts_loaded:
            self._load_scripts()
        command = redis_ops.command(_SHAS["ops"], self._prefix, ops)
        raw = self._run_command(command, len(ops))
        if raw is _NOSCRIPT:
            # The server lost its script cache (restart, SCRIPT FLUSH). Nothing of the
            # round trip ran (it is one script call), so it is sent again as it was.
            self._load_scripts()
            raw = self._run_command(command, len(ops))
            if raw is _NOSCRIPT:
                self._stats.failure("unavailable")
                raise StateStoreUnavailable("redis lost its scripts again")
        try:
            results, hits, misses = redis_ops.results(ops, raw)
        except StateStoreError:
            self._stats.failure("error")
            raise
        self._stats.lookups(hits, misses)
        return results

    def _run_command(self, command: Sequence[Any], keys: int) -> Any:
        """One command, one round trip (server errors raise StateStoreError, except
        NOSCRIPT: ``_NOSCRIPT`` is returned, the caller loads the script)."""
        with self._round_trip(keys):
            try:
                client: Any = self._client
                return client.execute_command(*command)
            except NoScriptError:
                return _NOSCRIPT


_NOSCRIPT = object()  # what _run_command answers when the server lost its scripts
