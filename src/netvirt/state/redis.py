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

Writes that need a version (put, put_many, compare-and-set) and the pool
operations are small Lua scripts, so each is atomic on the server. Scripts are
run with EVALSHA; the SHA1 is computed locally and the scripts are loaded on
first use and again if the server answers NOSCRIPT (restart, SCRIPT FLUSH):
a single operation is then retried (it did not run), a batch raises
StateStoreUnavailable (its other operations did run; see ``_execute``).
Batches are pipelines with ``transaction=False``: all commands go out in one
write and the replies come back in order, one round trip, not atomic as a
whole. ``get_many``/``put_many``/``delete_many`` are one command each.

Failure: the client never retries on its own (a retried compare-and-set could
report failure after it actually succeeded); socket connect/read timeouts are
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
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from netvirt.state.jobs import Reply, Ticket, grouped, ungrouped
from netvirt.state.redis_async import Address, Arg, RedisPipe, is_noscript, reply_error
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

DEFAULT_PREFIX = "netvirt:"
DEFAULT_TIMEOUT = 0.05  # seconds, connect and read: a datapath loop waits for it
DEFAULT_HOLD_DOWN = 0.2  # seconds of failing fast after a connection-level failure
VERSION_BYTES = 8

# KEYS: counter, key...   ARGV: px (0 = no TTL), value...   -> last version given
_PUT = """
local n = #KEYS - 1
local last = redis.call('INCRBY', KEYS[1], n)
local px = tonumber(ARGV[1])
for i = 1, n do
  local blob = struct.pack('>I8', last - n + i) .. ARGV[i + 1]
  if px > 0 then
    redis.call('SET', KEYS[i + 1], blob, 'PX', px)
  else
    redis.call('SET', KEYS[i + 1], blob)
  end
end
return last
"""

# KEYS: counter, key   ARGV: expected, value, px  -> {1, version} | {0, current-or-nil}
_CAS = """
local cur = redis.call('GET', KEYS[2])
local have = 0
if cur then have = struct.unpack('>I8', cur) end
if have ~= tonumber(ARGV[1]) then return {0, cur} end
local v = redis.call('INCR', KEYS[1])
local blob = struct.pack('>I8', v) .. ARGV[2]
local px = tonumber(ARGV[3])
if px > 0 then
  redis.call('SET', KEYS[2], blob, 'PX', px)
else
  redis.call('SET', KEYS[2], blob)
end
return {1, v}
"""

# KEYS: member keys   ARGV: owner, px  -> 1-based index of the member claimed, 0 if none
_ALLOCATE = """
local owner = ARGV[1]
local px = tonumber(ARGV[2])
local free = 0
for i, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if cur == owner then
    if px > 0 then redis.call('PEXPIRE', k, px) else redis.call('PERSIST', k) end
    return i
  end
  if not cur and free == 0 then free = i end
end
if free > 0 then
  if px > 0 then
    redis.call('SET', KEYS[free], owner, 'PX', px)
  else
    redis.call('SET', KEYS[free], owner)
  end
end
return free
"""

# KEYS: member key   ARGV: owner  -> 1 if released
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_SCRIPTS = {
    "put": _PUT,
    "cas": _CAS,
    "allocate": _ALLOCATE,
    "release": _RELEASE,
}
_SHAS = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in _SCRIPTS.items()}


def _px(ttl: float | None) -> int:
    """Milliseconds for PX, rounded up so a key never expires before its TTL; 0 = none."""
    return 0 if ttl is None else max(1, math.ceil(ttl * 1000))


def _unpack(blob: bytes | None) -> Entry | None:
    if blob is None:
        return None
    return Entry(blob[VERSION_BYTES:], int.from_bytes(blob[:VERSION_BYTES], "big"))


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
        self._stats.call(len(pairs))
        last = int(self._script("put", *self._put_call(pairs, ttl)))
        return list(range(last - len(pairs) + 1, last + 1))

    def compare_and_set(
        self, key: str, expected_version: int, value: bytes, ttl: float | None = None
    ) -> CasResult:
        op = CasOp(key, check_version(expected_version), value, check_ttl(ttl))
        self._stats.call(1)
        return self._decode_cas(op, self._script("cas", *self._cas_call(op)))

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
        self._stats.call(1)
        if not op.candidates:
            return None
        return self._decode_allocate(op, self._script("allocate", *self._allocate_call(op)))

    def release(self, pool_key: str, member: str, owner: str) -> bool:
        keys = [self._member_key(pool_key, member)]
        check_owner(owner)
        self._stats.call(1)
        return bool(self._script("release", keys, [owner]))

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

    def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if not self._scripts_loaded:
            self._load_scripts()
        with self._round_trip(1):
            try:
                return self._client.evalsha(_SHAS[name], len(keys), *keys, *args)
            except NoScriptError:
                pass  # the server lost its scripts; the script did not run
        self._load_scripts()
        with self._round_trip(1):
            return self._client.evalsha(_SHAS[name], len(keys), *keys, *args)

    def _put_call(
        self, pairs: Sequence[tuple[str, bytes]], ttl: float | None
    ) -> tuple[list[str], list[Any]]:
        keys = [self._counter, *(self._data_key(k) for k, _ in pairs)]
        return keys, [_px(ttl), *(v for _, v in pairs)]

    def _cas_call(self, op: CasOp) -> tuple[list[str], list[Any]]:
        keys = [self._counter, self._data_key(op.key)]
        return keys, [op.expected_version, op.value, _px(op.ttl)]

    def _allocate_call(self, op: AllocateOp) -> tuple[list[str], list[Any]]:
        keys = [self._member_key(op.pool_key, m) for m in op.candidates]
        return keys, [op.owner, _px(op.ttl)]

    @staticmethod
    def _decode_cas(op: CasOp, raw: Any) -> CasResult:
        ok, payload = raw
        if ok:
            return CasResult(True, Entry(bytes(op.value), int(payload)))
        return CasResult(False, _unpack(payload))

    @staticmethod
    def _decode_allocate(op: AllocateOp, raw: Any) -> str | None:
        index = int(raw)
        return op.candidates[index - 1] if index else None

    # -- asynchronous round trips (state/jobs.py, state/redis_async.py) --------------------

    supports_submit = True

    def submit(self, ops: Sequence[Op]) -> Ticket:
        """Send a round trip of ``ops`` now, on the non-blocking connection; the ticket
        completes when :meth:`on_readable` reads its replies (results as ``execute``
        would return them) or when it fails (held down, timeout, lost connection)."""
        ticket = Ticket(ops)
        held = self._held_down()
        if held is not None:
            ticket.complete(held)
            return ticket
        began = time.thread_time()
        self._stats.call(len(ops))
        order = grouped(ops)
        ordered = [ops[i] for i in order]
        segments = _segments(ordered)
        commands = [self._command(segment) for segment in segments]
        started = time.perf_counter()

        def finish(raw: list[object]) -> Reply:
            took = time.perf_counter() - started
            self._stats.round_trip(len(ops), took, len(segments), waited=False)
            results: list[object] = []
            for segment, reply in zip(segments, raw, strict=True):
                error = reply_error(reply)
                if error is not None:
                    unavailable = isinstance(error, StateStoreUnavailable)
                    self._stats.failure("unavailable" if unavailable else "error")
                    if is_noscript(error):
                        self._pipe().send(self._script_loads(), None, None)
                    return error
                results += self._decode(segment, reply)
            self._count_lookups(
                r for op, r in zip(ordered, results, strict=True) if isinstance(op, GetOp)
            )
            return ungrouped(order, results)

        self._pipe().send(commands, ticket, finish)
        self._stats.client(time.thread_time() - began)
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
    # A batch is cut into segments: a run of consecutive gets becomes one MGET, a run of
    # consecutive puts with the same TTL one put-script call, anything else one command
    # per op. Each segment runs in order, so results are the same as op by op, with far
    # fewer commands for redis-py to pack and parse (its per-command cost dominates).

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        self._stats.call(len(ops))
        if not self._scripts_loaded:
            self._load_scripts()
        segments = _segments(ops)
        raw = self._run_pipeline(segments, len(ops))
        if any(isinstance(r, NoScriptError) for r in raw):
            # The server lost its script cache (restart, SCRIPT FLUSH): the script ops
            # did not run, the others did. Running the missing ones now would reorder
            # the batch, so report it like a connection lost mid-batch.
            self._stats.failure("unavailable")
            self._load_scripts()
            raise StateStoreUnavailable("redis lost its scripts; batch partially applied")
        results: list[object] = []
        for segment, reply in zip(segments, raw, strict=True):
            if isinstance(reply, Exception):
                self._stats.failure("error")
                raise StateStoreError(f"redis error in batch: {reply}") from reply
            results += self._decode(segment, reply)
        self._count_lookups(r for op, r in zip(ops, results, strict=True) if isinstance(op, GetOp))
        return results

    def _run_pipeline(self, segments: Sequence[Sequence[Op]], keys: int) -> list[Any]:
        with self._round_trip(keys, len(segments)):
            pipe: Any = self._client.pipeline(transaction=False)
            for segment in segments:
                pipe.execute_command(*self._command(segment))
            return list(pipe.execute(raise_on_error=False))

    def _command(self, segment: Sequence[Op]) -> list[Any]:
        op = segment[0]
        match op:
            case GetOp():
                gets = cast(Sequence[GetOp], segment)
                return ["MGET", *(self._data_key(o.key) for o in gets)]
            case PutOp(ttl=ttl):
                puts = cast(Sequence[PutOp], segment)
                keys, args = self._put_call([(o.key, o.value) for o in puts], ttl)
                return ["EVALSHA", _SHAS["put"], len(keys), *keys, *args]
            case CasOp():
                keys, args = self._cas_call(op)
                return ["EVALSHA", _SHAS["cas"], len(keys), *keys, *args]
            case DeleteOp(key):
                return ["DEL", self._data_key(key)]
            case ExpireOp(key, ttl):
                return ["PEXPIRE", self._data_key(key), _px(ttl)]
            case AllocateOp() if op.candidates:
                keys, args = self._allocate_call(op)
                return ["EVALSHA", _SHAS["allocate"], len(keys), *keys, *args]
            case AllocateOp():
                return ["ECHO", b"0"]  # no candidates: keep one reply per segment
            case ReleaseOp(pool_key, member, owner):
                key = self._member_key(pool_key, member)
                return ["EVALSHA", _SHAS["release"], 1, key, owner]
        raise TypeError(f"unknown operation {op!r}")

    def _decode(self, segment: Sequence[Op], raw: Any) -> list[object]:
        op = segment[0]
        match op:
            case GetOp():
                return [_unpack(blob) for blob in raw]
            case PutOp():
                last = int(raw)
                return list(range(last - len(segment) + 1, last + 1))
            case CasOp():
                return [self._decode_cas(op, raw)]
            case AllocateOp():
                return [self._decode_allocate(op, raw)]
            case _:
                return [bool(raw)]


def _segments(ops: Sequence[Op]) -> list[list[Op]]:
    """Group runs of ops that one command can serve without changing the results."""
    segments: list[list[Op]] = []
    for op in ops:
        if segments and _joins(segments[-1][-1], op):
            segments[-1].append(op)
        else:
            segments.append([op])
    return segments


def _joins(previous: Op, op: Op) -> bool:
    if isinstance(previous, GetOp):
        return isinstance(op, GetOp)
    return isinstance(previous, PutOp) and isinstance(op, PutOp) and previous.ttl == op.ttl
