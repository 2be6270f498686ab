"""The single Redis server's wire format: a round trip's operations as one script call.

Theory of operation
-------------------
A round trip that writes becomes **one** ``EVALSHA`` of :data:`SCRIPT`, whose
ARGV is the store prefix followed by a stream of operations, and whose reply
is a flat array with one element per operation, in order. A round trip of
reads only is one ``MGET`` (cheaper for the server than a script). Before
session 7 each compare-and-set and each allocation was a command of its own
(~20 per round trip of a datapath batch): the client's cost per command —
building its arguments, packing, parsing its reply, decoding it through
generic code — was most of the ~10-15 µs of client CPU an operation cost.
One command per round trip and one tight encode/decode loop per operation
leave little besides the syscalls.

The script builds the Redis key names itself from the prefix (the client
sends store keys, not Redis keys), so the layout is the one documented in
``redis.py``: ``P d:<key>`` entries (8-byte big-endian version, then the
value), ``P p:<len>:<pool>:<member>`` pool claims, ``P version`` the counter.
The script declares no keys: a standalone server lets a script touch any
key; this store is never a cluster member (the cluster has ``cluster_ops.py``).

A script runs atomically, so a round trip is now applied as a whole or, if
the script raises (``WRONGTYPE``), up to the failing operation — the store
contract asks less ("a batch is not a transaction"). A server that lost its
scripts (restart, ``SCRIPT FLUSH``) answers ``NOSCRIPT`` and ran *nothing*,
so a synchronous round trip is simply sent again after loading the script.

ARGV stream after the prefix (``px`` 0 = no TTL; ``head`` = ``<len(pool)>:<pool>:``):

====  ============================================  ======================================
op    arguments                                     reply element
====  ============================================  ======================================
G     n, key * n                                    blob or nil, per key
P     n, px, (key, value) * n                       version, per key
C     key, expected, px, value                      version (integer) if written, else the
                                                    current blob or nil
D     key                                           0/1
E     key, px                                       0/1
A     n, owner, px, head, member * n                1-based index claimed, 0 = none
W     owner, px, head, "member,member,..."          the same (``A`` when no member has a
                                                    comma: one argument, not a window of 32)
R     head, member, owner                           0/1
====  ============================================  ======================================
"""

from __future__ import annotations

import hashlib
import math
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
local out = {}
local i = 2
local n = #ARGV

local function store(key, blob, px)
  if px > 0 then
    redis.call('SET', key, blob, 'PX', px)
  else
    redis.call('SET', key, blob)
  end
end

while i <= n do
  local op = ARGV[i]
  if op == 'G' then
    local count = tonumber(ARGV[i + 1])
    if count == 1 then out[#out + 1] = redis.call('GET', D .. ARGV[i + 2]) end
    for first = 1, count > 1 and count or 0, 1000 do  -- MGET per 1000 keys (unpack's limit)
      local keys = {}
      for j = first, math.min(count, first + 999) do keys[#keys + 1] = D .. ARGV[i + 1 + j] end
      local found = redis.call('MGET', unpack(keys))
      for j = 1, #keys do out[#out + 1] = found[j] end
    end
    i = i + 2 + count
  elseif op == 'C' then
    local key = D .. ARGV[i + 1]
    local cur = redis.call('GET', key)
    local have = 0
    if cur then have = struct.unpack('>I8', cur) end
    if have ~= tonumber(ARGV[i + 2]) then
      out[#out + 1] = cur
    else
      local v = redis.call('INCR', COUNTER)
      store(key, struct.pack('>I8', v) .. ARGV[i + 4], tonumber(ARGV[i + 3]))
      out[#out + 1] = v
    end
    i = i + 5
  elseif op == 'P' then
    local count, px = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    local last = redis.call('INCRBY', COUNTER, count)
    for j = 1, count do
      local v = last - count + j
      store(D .. ARGV[i + 1 + 2 * j], struct.pack('>I8', v) .. ARGV[i + 2 + 2 * j], px)
      out[#out + 1] = v
    end
    i = i + 3 + 2 * count
  elseif op == 'A' then
    local count, owner, px = tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
    local head = M .. ARGV[i + 4]
    local mine, free = 0, 0
    for j = 1, count do
      local cur = redis.call('GET', head .. ARGV[i + 4 + j])
      if cur == owner then
        mine = j
        break
      end
      if not cur and free == 0 then free = j end
    end
    if mine > 0 then
      local key = head .. ARGV[i + 4 + mine]
      if px > 0 then redis.call('PEXPIRE', key, px) else redis.call('PERSIST', key) end
      out[#out + 1] = mine
    else
      if free > 0 then store(head .. ARGV[i + 4 + free], owner, px) end
      out[#out + 1] = free
    end
    i = i + 5 + count
  elseif op == 'W' then
    local owner, px = ARGV[i + 1], tonumber(ARGV[i + 2])
    local head = M .. ARGV[i + 3]
    local keys = {}
    for member in string.gmatch(ARGV[i + 4], '[^,]+') do keys[#keys + 1] = head .. member end
    local curs = redis.call('MGET', unpack(keys))
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
      out[#out + 1] = mine
    else
      if free > 0 then store(keys[free], owner, px) end
      out[#out + 1] = free
    end
    i = i + 5
  elseif op == 'R' then
    local key = M .. ARGV[i + 1] .. ARGV[i + 2]
    if redis.call('GET', key) == ARGV[i + 3] then
      out[#out + 1] = redis.call('DEL', key)
    else
      out[#out + 1] = 0
    end
    i = i + 4
  elseif op == 'D' then
    out[#out + 1] = redis.call('DEL', D .. ARGV[i + 1])
    i = i + 2
  elseif op == 'E' then
    out[#out + 1] = redis.call('PEXPIRE', D .. ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  else
    return redis.error_reply('netvirt: unknown operation ' .. tostring(op))
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
    if candidates and joined.count(",") == len(candidates) - 1 and "" not in candidates:
        return joined
    return None


def unpack(blob: bytes | None) -> Entry | None:
    if blob is None:
        return None
    return Entry(blob[VERSION_BYTES:], int.from_bytes(blob[:VERSION_BYTES], "big"))


def reads_only(ops: Sequence[Op]) -> bool:
    return all(type(op) is GetOp for op in ops)


def command(sha: str, prefix: str, ops: Sequence[Op]) -> list[Arg]:
    """The one command of a round trip: ``MGET`` for reads only, else the script call."""
    if reads_only(ops):
        return ["MGET", *(f"{prefix}d:{op.key}" for op in ops)]  # type: ignore[union-attr]
    out: list[Arg] = ["EVALSHA", sha, 0, prefix]
    append, extend = out.append, out.extend
    i, n = 0, len(ops)
    while i < n:
        op = ops[i]
        kind = type(op)
        if kind is CasOp:
            assert isinstance(op, CasOp)
            extend(("C", op.key, op.expected_version, px(op.ttl), op.value))
            i += 1
        elif kind is GetOp:
            end = i + 1
            while end < n and type(ops[end]) is GetOp:
                end += 1
            extend(("G", end - i))
            extend([o.key for o in ops[i:end]])  # type: ignore[union-attr]
            i = end
        elif kind is PutOp:
            assert isinstance(op, PutOp)
            end = i + 1
            while end < n and type(ops[end]) is PutOp and ops[end].ttl == op.ttl:  # type: ignore[union-attr]
                end += 1
            extend(("P", end - i, px(op.ttl)))
            for o in ops[i:end]:
                append(o.key)  # type: ignore[union-attr]
                append(o.value)  # type: ignore[union-attr]
            i = end
        else:
            _encode_other(out, op)
            i += 1
    return out


def _encode_other(out: list[Arg], op: Op) -> None:
    if type(op) is AllocateOp:
        assert isinstance(op, AllocateOp)
        members = op.candidates
        joined = window_arg(members)
        if joined is not None:
            out += ["W", op.owner, px(op.ttl), pool_head(op.pool_key), joined]
            return
        out += ["A", len(members), op.owner, px(op.ttl), pool_head(op.pool_key), *members]
    elif type(op) is ReleaseOp:
        assert isinstance(op, ReleaseOp)
        out += ["R", pool_head(op.pool_key), op.member, op.owner]
    elif type(op) is DeleteOp:
        assert isinstance(op, DeleteOp)
        out += ["D", op.key]
    elif type(op) is ExpireOp:
        assert isinstance(op, ExpireOp)
        out += ["E", op.key, px(op.ttl)]
    else:
        raise TypeError(f"unknown operation {op!r}")


def results(ops: Sequence[Op], raw: object) -> tuple[list[object], int, int]:
    """Each operation's result from the command's reply, and the reads' hits and misses."""
    if not isinstance(raw, list) or len(raw) != len(ops):
        size = len(raw) if isinstance(raw, list) else type(raw).__name__
        raise StateStoreError(f"redis answered {size} results for {len(ops)} operations")
    out: list[object] = []
    append = out.append
    hits = misses = 0
    for op, r in zip(ops, raw, strict=True):
        kind = type(op)
        if kind is GetOp:
            if r is None:
                misses += 1
                append(None)
            else:
                hits += 1
                append(Entry(r[VERSION_BYTES:], int.from_bytes(r[:VERSION_BYTES], "big")))
        elif kind is CasOp:
            if type(r) is int:
                append(CasResult(True, Entry(op.value, r)))  # type: ignore[union-attr]
            else:
                append(CasResult(False, unpack(r)))
        elif kind is PutOp:
            append(r)
        elif kind is AllocateOp:
            append(op.candidates[r - 1] if r else None)  # type: ignore[union-attr]
        else:
            append(bool(r))
    return out, hits, misses
