"""The single Redis server's wire format: a round trip's operations as one script call.

Theory of operation
-------------------
A round trip that writes becomes **one** ``EVALSHA`` of :data:`SCRIPT` with two
arguments: the store prefix and the round trip's operations packed into one
binary *stream* (below); the reply is a flat array with one element per
operation, in the round trip's own order. A round trip of reads only is one
``MGET`` (cheaper for the server than a script). Before session 7 each
compare-and-set and each allocation was a command of its own (~20 per round
trip of a datapath batch).

Session 10: until then the operations travelled as ~5 RESP arguments each,
grouped by kind on the client. Profiled per operation (``bench/nvb/nf_client.py``'s
round trips replayed): building the argument list 0.7 µs, hiredis packing it
0.6 µs, grouping 0.17 µs, decoding the reply 0.6 µs, the syscalls 0.27 µs. The
stream is one ``struct.pack`` and two or three byte strings per operation,
the command's RESP framing is pre-built per store (:class:`Framer`), grouping
by kind is done by the script (it executes the operations in the order
``jobs.grouped`` gives, stable within a kind, and answers in the original
order, so the client neither reorders nor maps results back), and results are
built with ``tuple.__new__`` (a NamedTuple's own ``__new__`` is a Python
function). The store's semantics, the key layout and the execution order are
unchanged, so old and new clients share a server (each loads its own script).

The script builds the Redis key names itself from the prefix (the client
sends store keys, not Redis keys), so the layout is the one documented in
``redis.py``: ``P d:<key>`` entries (8-byte big-endian version, then the
value), ``P p:<len>:<pool>:<member>`` pool claims, ``P version`` the counter.
The script declares no keys: a standalone server lets a script touch any
key; this store is never a cluster member (the cluster has ``cluster_ops.py``).

A script runs atomically, so a round trip is applied as a whole or, if the
script raises (``WRONGTYPE``), up to the failing operation — the store
contract asks less ("a batch is not a transaction"). A server that lost its
scripts (restart, ``SCRIPT FLUSH``) answers ``NOSCRIPT`` and ran *nothing*,
so a synchronous round trip is simply sent again after loading the script.

The stream: per operation one kind byte, a 4-byte big-endian body length (so
the script can bucket operations by kind without parsing them), then the body.
Integers are big-endian (``Q``: 8 bytes, ``I``: 4); ``px`` is the TTL in
milliseconds, 0 = none; ``head`` is ``<len(pool)>:<pool>:``; the last string
of a body takes what the body length leaves.

====  ==============================================  ======================================
op    body                                            reply element
====  ==============================================  ======================================
G     key                                             blob or nil
P     Q px, I len(key), key, value                    version
C     Q expected, Q px, I len(key), key, value        version (integer) if written, else the
                                                      current blob or nil
D     key                                             0/1
E     Q px, key                                       0/1
W     Q px, I len(owner), I len(head), owner, head,   1-based index claimed, 0 = none
      "member,member,..."
A     Q px, I len(owner), I len(head), I n, owner,    the same (``W`` unless a member is
      head, (I len(member), member) * n               empty or has a comma)
R     I len(head), I len(member), head, member, owner 0/1
====  ==============================================  ======================================
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence

from netvirt.state.store import (
    AllocateOp,
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
)

VERSION_BYTES = 8
Arg = str | bytes | int | float

SCRIPT = """
local D = ARGV[1] .. 'd:'
local M = ARGV[1] .. 'p:'
local COUNTER = ARGV[1] .. 'version'
local s = ARGV[2]
local n = #s
local sub, byte, get = string.sub, string.byte, struct.unpack
-- ARGV[3] = 'g': run the operations in the order jobs.grouped sends a round trip in
-- (gets, allocations, compare-and-sets, puts, expiries, releases, deletes; stable within
-- a kind), else in the stream's order. Either way the answer is in the stream's order.
local RANK = {[71] = 1, [65] = 2, [87] = 2, [67] = 3, [80] = 4, [69] = 5, [82] = 6, [68] = 7}
local buckets = {{}, {}, {}, {}, {}, {}, {}}
local grouped = ARGV[3] == 'g'
local out = {}
local count = 0
local pos = 1
while pos <= n do
  local rank = RANK[byte(s, pos)]
  if not rank then
    return redis.error_reply('netvirt: unknown operation ' .. tostring(byte(s, pos)))
  end
  local size = get('>I4', s, pos + 1)
  if pos + 4 + size > n then return redis.error_reply('netvirt: truncated operation') end
  count = count + 1
  local b = buckets[grouped and rank or 1]
  b[#b + 1] = count
  b[#b + 1] = pos
  pos = pos + 5 + size
end
local plan = buckets[1]  -- (index, position) pairs in execution order
for rank = 2, 7 do
  for _, x in ipairs(buckets[rank]) do plan[#plan + 1] = x end
end

local function store(key, blob, px)
  if px > 0 then
    redis.call('SET', key, blob, 'PX', px)
  else
    redis.call('SET', key, blob)
  end
end

local function claim(index, px, owner, keys, curs)
  local mine, free = 0, 0
  for j = 1, #keys do
    local cur = curs[j]
    if cur == owner then
      mine = j
      break
    end
    if not cur and free == 0 then free = j end
  end
  if mine > 0 then
    local key = keys[mine]
    if px > 0 then redis.call('PEXPIRE', key, px) else redis.call('PERSIST', key) end
    out[index] = mine
  else
    if free > 0 then store(keys[free], owner, px) end
    out[index] = free
  end
end

local function key_of(p)
  return D .. sub(s, p + 5, p + 4 + get('>I4', s, p + 1))
end

local j = 1
local run, next_version = 0, 0  -- puts left in the current run, and the next one's version
while j <= #plan do
  local index, p = plan[j], plan[j + 1]
  local op = byte(s, p)
  if op == 71 then  -- G: a run of gets is one MGET per 1000 keys (unpack's limit)
    local keys, where = {key_of(p)}, {index}
    j = j + 2
    while j <= #plan and #keys < 1000 and byte(s, plan[j + 1]) == 71 do
      keys[#keys + 1] = key_of(plan[j + 1])
      where[#where + 1] = plan[j]
      j = j + 2
    end
    if #keys == 1 then
      out[index] = redis.call('GET', keys[1])
    else
      local found = redis.call('MGET', unpack(keys))
      for k = 1, #keys do out[where[k]] = found[k] end
    end
  else
    j = j + 2
    local last = p + 4 + get('>I4', s, p + 1)  -- the body's last byte
    if op == 67 then  -- C
      local expected, px, klen, at = get('>I8I8I4', s, p + 5)
      local key = D .. sub(s, at, at + klen - 1)
      local cur = redis.call('GET', key)
      local have = 0
      if cur then have = get('>I8', cur) end
      if have ~= expected then
        out[index] = cur
      else
        local v = redis.call('INCR', COUNTER)
        store(key, struct.pack('>I8', v) .. sub(s, at + klen, last), px)
        out[index] = v
      end
    elseif op == 80 then  -- P: a run of puts takes its versions with one INCRBY
      if run == 0 then
        local k = j
        while k <= #plan and byte(s, plan[k + 1]) == 80 do k = k + 2 end
        run = (k - j) / 2 + 1
        next_version = redis.call('INCRBY', COUNTER, run) - run + 1
      end
      local v = next_version
      next_version, run = v + 1, run - 1
      local px, klen, at = get('>I8I4', s, p + 5)
      store(D .. sub(s, at, at + klen - 1), struct.pack('>I8', v) .. sub(s, at + klen, last), px)
      out[index] = v
    elseif op == 87 then  -- W
      local px, olen, hlen, at = get('>I8I4I4', s, p + 5)
      local owner = sub(s, at, at + olen - 1)
      local head = M .. sub(s, at + olen, at + olen + hlen - 1)
      local keys = {}
      for member in string.gmatch(sub(s, at + olen + hlen, last), '[^,]+') do
        keys[#keys + 1] = head .. member
      end
      claim(index, px, owner, keys, redis.call('MGET', unpack(keys)))
    elseif op == 65 then  -- A
      local px, olen, hlen, members, at = get('>I8I4I4I4', s, p + 5)
      local owner = sub(s, at, at + olen - 1)
      local head = M .. sub(s, at + olen, at + olen + hlen - 1)
      at = at + olen + hlen
      local keys, curs = {}, {}
      for k = 1, members do
        local mlen = get('>I4', s, at)
        keys[k] = head .. sub(s, at + 4, at + 3 + mlen)
        curs[k] = redis.call('GET', keys[k])
        at = at + 4 + mlen
      end
      claim(index, px, owner, keys, curs)
    elseif op == 82 then  -- R
      local hlen, mlen, at = get('>I4I4', s, p + 5)
      local key = M .. sub(s, at, at + hlen + mlen - 1)
      if redis.call('GET', key) == sub(s, at + hlen + mlen, last) then
        out[index] = redis.call('DEL', key)
      else
        out[index] = 0
      end
    elseif op == 68 then  -- D
      out[index] = redis.call('DEL', D .. sub(s, p + 5, last))
    elseif op == 69 then  -- E
      local px, at = get('>I8', s, p + 5)
      out[index] = redis.call('PEXPIRE', D .. sub(s, at, last), px)
    end
  end
end
return out
"""
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


def px(ttl: float | None) -> int:
    """Milliseconds for PX, rounded up so a key never expires before its TTL; 0 = none."""
    return 0 if ttl is None else max(1, math.ceil(ttl * 1000))


def pool_head(pool_key: str) -> str:
    """What precedes a member in its claim key (after ``P p:``): the length keeps pool
    names that contain ``:`` apart."""
    return f"{len(pool_key)}:{pool_key}:"


def window_arg(candidates: Sequence[str]) -> str | None:
    """A pool window as one comma-joined argument (op ``W``), or None when a member's own
    comma or emptiness would make it ambiguous (op ``A``, one argument per member)."""
    joined = ",".join(candidates)
    if joined.count(",") != len(candidates) - 1 or not joined:
        return None  # a member with a comma (or no members, or one empty one)
    # no member has a comma, so an empty one shows as a leading, trailing or double comma
    if joined[0] == "," or joined[-1] == "," or ",," in joined:
        return None
    return joined


def unpack(blob: bytes | None) -> Entry | None:
    if blob is None:
        return None
    return Entry(blob[VERSION_BYTES:], int.from_bytes(blob[:VERSION_BYTES], "big"))


def reads_only(ops: Sequence[Op]) -> bool:
    return all(type(op) is GetOp for op in ops)


_HEAD = struct.Struct(">BI").pack  # kind, body length
_PUT = struct.Struct(">BIQI").pack  # kind, body length, px, len(key)
_CAS = struct.Struct(">BIQQI").pack  # kind, body length, expected, px, len(key)
_WINDOW = struct.Struct(">BIQII").pack  # kind, body length, px, len(owner), len(head)
_ALLOCATE = struct.Struct(">BIQIII").pack  # kind, body length, px, len(owner), len(head), n
_RELEASE = struct.Struct(">BIII").pack  # kind, body length, len(head), len(member)
_EXPIRE = struct.Struct(">BIQ").pack  # kind, body length, px
_LENGTH = struct.Struct(">I").pack
_G, _P, _C, _D, _E, _W, _A, _R = b"GPCDEWAR"
_PX: dict[float | None, int] = {}  # px() of the TTLs seen (a handful: conntrack's timeouts)


def px_cached(ttl: float | None) -> int:
    """:func:`px`, remembered for the first 64 TTLs seen (conntrack uses a handful)."""
    ms = _PX.get(ttl)
    return ms if ms is not None else _px_remembered(ttl)


def _px_remembered(ttl: float | None) -> int:
    ms = px(ttl)
    if len(_PX) < 64:  # bounded: a caller with ever-new TTLs computes them every time
        _PX[ttl] = ms
    return ms


def stream(ops: Sequence[Op]) -> bytes:
    """The round trip's operations as the script's stream argument (module docstring)."""
    parts: list[bytes] = []
    extend = parts.extend
    cached_px = _PX
    for op in ops:
        kind = type(op)
        if kind is CasOp:
            key = op.key.encode()  # type: ignore[union-attr]
            value = op.value  # type: ignore[union-attr]
            ttl = op.ttl  # type: ignore[union-attr]
            ms = cached_px.get(ttl)
            if ms is None:
                ms = _px_remembered(ttl)
            size = 20 + len(key) + len(value)
            extend((_CAS(_C, size, op.expected_version, ms, len(key)), key, value))  # type: ignore[union-attr]
        elif kind is PutOp:
            key = op.key.encode()  # type: ignore[union-attr]
            value = op.value  # type: ignore[union-attr]
            ttl = op.ttl  # type: ignore[union-attr]
            ms = cached_px.get(ttl)
            if ms is None:
                ms = _px_remembered(ttl)
            extend((_PUT(_P, 12 + len(key) + len(value), ms, len(key)), key, value))
        elif kind is GetOp:
            key = op.key.encode()  # type: ignore[union-attr]
            extend((_HEAD(_G, len(key)), key))
        elif kind is AllocateOp:
            _allocation(parts, op)  # type: ignore[arg-type]
        elif kind is ReleaseOp:
            head = pool_head(op.pool_key).encode()  # type: ignore[union-attr]
            member = op.member.encode()  # type: ignore[union-attr]
            owner = op.owner.encode()  # type: ignore[union-attr]
            size = 8 + len(head) + len(member) + len(owner)
            extend((_RELEASE(_R, size, len(head), len(member)), head, member, owner))
        elif kind is DeleteOp:
            key = op.key.encode()  # type: ignore[union-attr]
            extend((_HEAD(_D, len(key)), key))
        elif kind is ExpireOp:
            key = op.key.encode()  # type: ignore[union-attr]
            extend((_EXPIRE(_E, 8 + len(key), px(op.ttl)), key))  # type: ignore[union-attr]
        else:
            raise TypeError(f"unknown operation {op!r}")
    return b"".join(parts)


_HEADS: dict[str, bytes] = {}  # pool_head(pool).encode() of the pools seen (bounded)


def _allocation(parts: list[bytes], op: AllocateOp) -> None:
    owner = op.owner.encode()
    head = _HEADS.get(op.pool_key)
    if head is None:
        head = pool_head(op.pool_key).encode()
        if len(_HEADS) < 1024:
            _HEADS[op.pool_key] = head
    ms = _PX.get(op.ttl)
    if ms is None:
        ms = _px_remembered(op.ttl)
    candidates = op.candidates
    if len(candidates) == 1 and candidates[0] and "," not in candidates[0]:
        window = candidates[0].encode()  # a renewal: the connection's own member
    else:
        joined = window_arg(candidates)
        if joined is None:
            _long_allocation(parts, op, owner, head, ms)
            return
        window = joined.encode()
    size = 16 + len(owner) + len(head) + len(window)
    parts += (_WINDOW(_W, size, ms, len(owner), len(head)), owner, head, window)


def _long_allocation(
    parts: list[bytes], op: AllocateOp, owner: bytes, head: bytes, ms: int
) -> None:
    members = [m.encode() for m in op.candidates]
    size = 20 + len(owner) + len(head) + sum(4 + len(m) for m in members)
    parts += (_ALLOCATE(_A, size, ms, len(owner), len(head), len(members)), owner, head)
    for member in members:
        parts += (_LENGTH(len(member)), member)


def command(sha: str, prefix: str, ops: Sequence[Op], *, grouped: bool = False) -> list[Arg]:
    """The one command of a round trip: ``MGET`` for reads only, else the script call,
    which runs ``ops`` in their order or, ``grouped``, in ``jobs.grouped``'s."""
    if reads_only(ops):
        return ["MGET", *(f"{prefix}d:{op.key}" for op in ops)]  # type: ignore[union-attr]
    return ["EVALSHA", sha, 0, prefix, stream(ops), "g" if grouped else ""]


_GROUPED = b"\r\n$1\r\ng\r\n"  # the stream's end and ARGV[3] = 'g'


class Framer:
    """A round trip's command as one RESP buffer, its constant part built once per store:
    the script call's first four arguments never change, so only the stream's length
    line and the stream itself are new per round trip (no argument list, no packer)."""

    def __init__(self, sha: str, prefix: str) -> None:
        self.prefix = prefix
        fixed = [b"EVALSHA", sha.encode(), b"0", prefix.encode()]
        self._head = b"*6\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in fixed)
        self._data = f"{prefix}d:"

    def frame(self, ops: Sequence[Op]) -> bytes:
        """The RESP bytes of :func:`command` ``(sha, prefix, ops, grouped=True)``."""
        if reads_only(ops):
            data = self._data
            keys = [f"{data}{op.key}".encode() for op in ops]  # type: ignore[union-attr]
            lines = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
            for key in keys:
                lines += (b"$%d\r\n" % len(key), key, b"\r\n")
            return b"".join(lines)
        body = stream(ops)
        return b"".join((self._head, b"$%d\r\n" % len(body), body, _GROUPED))


_new = tuple.__new__  # Entry(...) and CasResult(...) without NamedTuple's Python __new__


def results(ops: Sequence[Op], raw: object) -> tuple[list[object], int, int]:
    """Each operation's result from the command's reply, and the reads' hits and misses."""
    if not isinstance(raw, list) or len(raw) != len(ops):
        size = len(raw) if isinstance(raw, list) else type(raw).__name__
        raise StateStoreError(f"redis answered {size} results for {len(ops)} operations")
    out: list[object] = []
    append = out.append
    hits = misses = 0
    new, entry, cas = _new, Entry, CasResult
    for op, r in zip(ops, raw, strict=True):
        kind = type(op)
        if kind is CasOp:
            if type(r) is int:
                append(new(cas, (True, new(entry, (op.value, r)))))  # type: ignore[union-attr]
            elif r is None:
                append(new(cas, (False, None)))
            else:
                blob: bytes = r
                current = new(entry, (blob[VERSION_BYTES:], int.from_bytes(blob[:VERSION_BYTES])))
                append(new(cas, (False, current)))
        elif kind is PutOp:
            append(r)
        elif kind is GetOp:
            if r is None:
                misses += 1
                append(None)
            else:
                hits += 1
                blob = r
                append(new(entry, (blob[VERSION_BYTES:], int.from_bytes(blob[:VERSION_BYTES]))))
        elif kind is AllocateOp:
            append(op.candidates[r - 1] if r else None)  # type: ignore[union-attr]
        else:
            append(bool(r))
    return out, hits, misses
