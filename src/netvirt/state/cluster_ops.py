"""The cluster store's wire format: key layout, one Lua script, per-node op streams.

Theory of operation
-------------------
A batch becomes **one** ``EVALSHA`` per cluster node it touches: the node's
operations, in batch order, encoded as a flat ARGV stream that a single Lua
script (:data:`SCRIPT`) interprets. Redis runs a script atomically, so each
node applies its part of the batch in order and in one go; every operation
yields exactly one element of the reply array, so replies map back to
operations by position. Compared with one command per operation, this saves
redis-py's per-command packing and parsing, which dominates the cost of a
pipeline (docs/state-store.md).

Redis Cluster rejects a command whose *declared* keys span slots, but a
script flagged ``allow-cross-slot-keys`` may touch keys of several slots as
long as they all live on the node it runs on. So the script declares no keys
and takes them from ARGV; the node itself refuses any key it does not serve
("non local key"), which is how a stale slot map is detected, never papered
over.

Key layout under the prefix ``P`` (``{t}`` is the hash tag of the slot the
store key or pool name hashes to, see slots.py):

* ``P{t}d:<key>``                      entry: 8-byte big-endian version, then the value
* ``P{t}v``                            version counter of slot ``t`` (no TTL; at most 16384)
* ``P{t}p:<len(pool)>:<pool>:<member>`` owner of a claimed pool member (tag of the *pool*)

All members of one pool share a slot, so ``allocate`` scans its candidates
atomically on one node, exactly as in the single-server store.

Versions. One store-wide counter would be one hot key on one node, written
by every write in the cluster, and a script cannot reach it from another
node. Instead each slot has its own counter, and every write carries a
*hint*: the highest version this client has seen, plus the write's position
among the writes of its batch. A write takes ``max(slot counter, hint, last
version given by this script) + 1``. Hence, for every key, versions strictly
grow and never repeat (its slot's counter only grows), and a write issued
after a client saw version ``v`` gets more than ``v`` (a Lamport clock). A
single client therefore sees exactly what one counter would give it —
versions growing across keys in the order of its writes — except that a
compare-and-set that fails inside a batch leaves a gap in the numbering.

ARGV: one binary stream of the node's operations, in batch order (session 10;
until then ~5 ARGV entries per operation, which redis-py packed in Python at
~6 µs per operation, more than the rest of the client's work). Per operation a
kind byte, a 4-byte big-endian body length, then the body; integers are
big-endian (``Q`` 8 bytes, ``I`` 4), ``px`` 0 = no TTL, keys are whole Redis
keys (``P{t}d:<key>``), the last string of a body takes what its length leaves:

====  =====================================================  ==========================
op    body                                                   reply element
====  =====================================================  ==========================
G     key                                                    blob or nil
P     Q hint, Q px, I len(key), key, value                   version
C     Q hint, Q expected, Q px, I len(key), key, value       {1, version} / {0, blob}
D     key                                                    0/1
E     Q px, key                                              0/1
W     Q px, I len(owner), I len(head), owner, member key     1-based index, 0 = none
      head, "m1,m2,..."  (no member empty or with a comma)
A     Q px, I len(owner), I n, owner, (I len, member key)*n  the same
R     I len(member key), member key, owner                   0/1
====  =====================================================  ==========================
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from netvirt.state.redis_ops import pool_head, px, px_cached, unpack, window_arg
from netvirt.state.slots import SLOTS, slot_of, slot_tags
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
)

SCRIPT = """#!lua flags=allow-cross-slot-keys
local out = {}
local clock = 0
local s = ARGV[1]
local n = #s
local sub, byte, get = string.sub, string.byte, struct.unpack

local function new_version(key, hint)
  local ck = string.match(key, '^[^}]*}') .. 'v'
  local v = math.max(tonumber(redis.call('GET', ck) or '0'), hint, clock) + 1
  redis.call('SET', ck, v)
  clock = v
  return v
end

local function store(key, blob, px)
  if px > 0 then
    redis.call('SET', key, blob, 'PX', px)
  else
    redis.call('SET', key, blob)
  end
end

local function version_of(blob)
  if not blob then return 0 end
  local v = struct.unpack('>I8', blob)
  return v
end

local function claim(px, owner, keys, curs)
  local mine, free = 0, 0
  for j = 1, #keys do
    if curs[j] == owner then
      mine = j
      break
    end
    if not curs[j] and free == 0 then free = j end
  end
  if mine > 0 then
    local key = keys[mine]
    if px > 0 then redis.call('PEXPIRE', key, px) else redis.call('PERSIST', key) end
    return mine
  end
  if free > 0 then store(keys[free], owner, px) end
  return free
end

local pos = 1
while pos <= n do
  local op = byte(s, pos)
  local size = get('>I4', s, pos + 1)
  local p, last = pos + 5, pos + 4 + size  -- the body's first and last byte
  if last > n then return redis.error_reply('netvirt: truncated operation') end
  pos = last + 1
  if op == 71 then  -- G
    out[#out + 1] = redis.call('GET', sub(s, p, last))
  elseif op == 67 then  -- C
    local hint, expected, px, klen, at = get('>I8I8I8I4', s, p)
    local key = sub(s, at, at + klen - 1)
    local cur = redis.call('GET', key)
    if version_of(cur) ~= expected then
      out[#out + 1] = {0, cur}
    else
      local v = new_version(key, hint)
      store(key, struct.pack('>I8', v) .. sub(s, at + klen, last), px)
      out[#out + 1] = {1, v}
    end
  elseif op == 80 then  -- P
    local hint, px, klen, at = get('>I8I8I4', s, p)
    local key = sub(s, at, at + klen - 1)
    local v = new_version(key, hint)
    store(key, struct.pack('>I8', v) .. sub(s, at + klen, last), px)
    out[#out + 1] = v
  elseif op == 68 then  -- D
    out[#out + 1] = redis.call('DEL', sub(s, p, last))
  elseif op == 69 then  -- E
    local px, at = get('>I8', s, p)
    out[#out + 1] = redis.call('PEXPIRE', sub(s, at, last), px)
  elseif op == 87 then  -- W
    local px, olen, hlen, at = get('>I8I4I4', s, p)
    local owner = sub(s, at, at + olen - 1)
    local head = sub(s, at + olen, at + olen + hlen - 1)
    local keys = {}
    for member in string.gmatch(sub(s, at + olen + hlen, last), '[^,]+') do
      keys[#keys + 1] = head .. member
    end
    out[#out + 1] = claim(px, owner, keys, redis.call('MGET', unpack(keys)))
  elseif op == 65 then  -- A
    local px, olen, count, at = get('>I8I4I4', s, p)
    local owner = sub(s, at, at + olen - 1)
    at = at + olen
    local keys, curs = {}, {}
    for j = 1, count do
      local klen = get('>I4', s, at)
      keys[j] = sub(s, at + 4, at + 3 + klen)
      curs[j] = redis.call('GET', keys[j])
      at = at + 4 + klen
    end
    out[#out + 1] = claim(px, owner, keys, curs)
  elseif op == 82 then  -- R
    local klen, at = get('>I4', s, p)
    local key = sub(s, at, at + klen - 1)
    if redis.call('GET', key) == sub(s, at + klen, last) then
      out[#out + 1] = redis.call('DEL', key)
    else
      out[#out + 1] = 0
    end
  else
    return redis.error_reply('netvirt: unknown operation ' .. tostring(op))
  end
end
return out
"""
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


class Layout:
    """Redis key names of one store prefix (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"a cluster key prefix may not contain braces: {prefix!r}")
        self.prefix = prefix
        self._heads: list[bytes | None] = [None] * SLOTS

    def at(self, slot: int) -> str:
        """The beginning of every key of ``slot``: the prefix and the slot's hash tag."""
        return f"{self.prefix}{{{slot_tags()[slot]}}}"

    def heads(self) -> list[bytes | None]:
        """:meth:`head` of every slot so far (None: not yet asked), indexed by slot."""
        return self._heads

    def head(self, slot: int) -> bytes:
        """:meth:`at` encoded, remembered (at most 16384 short strings per store)."""
        head = self._heads[slot] = self.at(slot).encode()
        return head

    def data_key(self, key: str) -> str:
        return f"{self.at(slot_of(key))}d:{key}"

    def member_key(self, pool_key: str, member: str) -> str:
        return f"{self.at(slot_of(pool_key))}p:{len(pool_key)}:{pool_key}:{member}"

    def counter_key(self, name: str) -> str:
        """The version counter of the slot ``name`` (a store key) belongs to."""
        return f"{self.at(slot_of(name))}v"


@dataclass
class NodeStream:
    """The operations of one batch that go to one node, and their ARGV stream."""

    positions: list[int] = field(default_factory=list)  # batch positions, in node order
    ops: list[Op] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    hints: list[int] = field(default_factory=list)  # per op (0 for non-writes)

    def add(self, position: int, op: Op, slot: int, hint: int) -> None:
        self.positions.append(position)
        self.ops.append(op)
        self.slots.append(slot)
        self.hints.append(hint)

    def argv(self, layout: Layout) -> list[Any]:
        """The script's ARGV: the node's operations as one binary stream (module docstring)."""
        return [self.stream(layout)]

    def stream(self, layout: Layout) -> bytes:
        parts: list[bytes] = []
        extend = parts.extend
        heads = layout.heads()
        for op, slot, hint in zip(self.ops, self.slots, self.hints, strict=True):
            head = heads[slot]
            if head is None:
                head = layout.head(slot)
            kind = type(op)
            if kind is CasOp:
                key = head + b"d:" + op.key.encode()  # type: ignore[union-attr]
                value = op.value  # type: ignore[union-attr]
                ms = px_cached(op.ttl)  # type: ignore[union-attr]
                size = 28 + len(key) + len(value)
                expected = op.expected_version  # type: ignore[union-attr]
                extend((_CAS(_C, size, hint, expected, ms, len(key)), key, value))
            elif kind is PutOp:
                key = head + b"d:" + op.key.encode()  # type: ignore[union-attr]
                value = op.value  # type: ignore[union-attr]
                ms = px_cached(op.ttl)  # type: ignore[union-attr]
                extend((_PUT(_P, 20 + len(key) + len(value), hint, ms, len(key)), key, value))
            elif kind is GetOp:
                key = head + b"d:" + op.key.encode()  # type: ignore[union-attr]
                extend((_HEAD(_G, len(key)), key))
            else:
                _encode_other(parts, op, head)
        return b"".join(parts)

    def decode(self, reply: Sequence[Any]) -> list[object]:
        """One result per operation, from the script's reply array."""
        if len(reply) != len(self.ops):
            raise ValueError(f"script answered {len(reply)} results for {len(self.ops)} ops")
        return [_decode(op, raw) for op, raw in zip(self.ops, reply, strict=True)]


_HEAD = struct.Struct(">BI").pack  # kind, body length
_PUT = struct.Struct(">BIQQI").pack  # kind, body length, hint, px, len(key)
_CAS = struct.Struct(">BIQQQI").pack  # kind, body length, hint, expected, px, len(key)
_EXPIRE = struct.Struct(">BIQ").pack  # kind, body length, px
_WINDOW = struct.Struct(">BIQII").pack  # kind, body length, px, len(owner), len(head)
_ALLOCATE = struct.Struct(">BIQII").pack  # kind, body length, px, len(owner), n
_RELEASE = struct.Struct(">BII").pack  # kind, body length, len(member key)
_LENGTH = struct.Struct(">I").pack
_G, _P, _C, _D, _E, _W, _A, _R = b"GPCDEWAR"


def _encode_other(parts: list[bytes], op: Op, head: bytes) -> None:
    """The rarer operations; ``head`` is the op's key beginning (``Layout.head``)."""
    match op:
        case DeleteOp(key):
            data = head + b"d:" + key.encode()
            parts += (_HEAD(_D, len(data)), data)
        case ExpireOp(key, ttl):
            data = head + b"d:" + key.encode()
            parts += (_EXPIRE(_E, 8 + len(data), px(ttl)), data)
        case AllocateOp(pool_key, candidates, owner, ttl):
            pool = head + b"p:" + pool_head(pool_key).encode()
            who = owner.encode()
            joined = window_arg(candidates)
            if joined is not None:  # the window as one string
                window = joined.encode()
                size = 16 + len(who) + len(pool) + len(window)
                parts += (_WINDOW(_W, size, px(ttl), len(who), len(pool)), who, pool, window)
                return
            keys = [pool + m.encode() for m in candidates]
            size = 16 + len(who) + sum(4 + len(k) for k in keys)
            parts += (_ALLOCATE(_A, size, px(ttl), len(who), len(keys)), who)
            for k in keys:
                parts += (_LENGTH(len(k)), k)
        case ReleaseOp(pool_key, member, owner):
            data = head + b"p:" + pool_head(pool_key).encode() + member.encode()
            who = owner.encode()
            parts += (_RELEASE(_R, 4 + len(data) + len(who), len(data)), data, who)
        case _:
            raise TypeError(f"unknown operation {op!r}")


def _decode(op: Op, raw: Any) -> object:
    kind = type(op)  # exact types, in order of frequency: cheaper than a match per op
    if kind is GetOp:
        return unpack(raw)
    if kind is CasOp:
        ok, payload = raw
        if ok:
            return CasResult(True, Entry(bytes(op.value), int(payload)))  # type: ignore[union-attr]
        return CasResult(False, unpack(payload))
    if kind is PutOp:
        return int(raw)
    if kind is AllocateOp:
        index = int(raw)
        return op.candidates[index - 1] if index else None  # type: ignore[union-attr]
    return bool(raw)
