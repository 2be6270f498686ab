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

ARGV stream, one entry per run of operations (``px`` 0 = no TTL):

====  =====================================================  ==========================
op    arguments                                              reply element(s)
====  =====================================================  ==========================
G     n, key * n                                             blob or nil, per key
P     n, px, (key, hint, value) * n                          version, per key
C     key, hint, expected, px, value                         {1, version} / {0, blob}
D     key                                                    0/1
E     key, px                                                0/1
A     n, owner, px, member key * n                           1-based index, 0 = none
W     owner, px, member key head, "m1,m2,..."                the same (no member has a comma)
R     member key, owner                                      0/1
====  =====================================================  ==========================
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from netvirt.state.redis_ops import pool_head, px, unpack, window_arg
from netvirt.state.slots import slot_of, slot_tags
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
local i = 1
local n = #ARGV

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

while i <= n do
  local op = ARGV[i]
  if op == 'G' then
    local count = tonumber(ARGV[i + 1])
    for j = 1, count do
      out[#out + 1] = redis.call('GET', ARGV[i + 1 + j])
    end
    i = i + 2 + count
  elseif op == 'P' then
    local count, px = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    for j = 0, count - 1 do
      local at = i + 3 + 3 * j
      local key = ARGV[at]
      local v = new_version(key, tonumber(ARGV[at + 1]))
      store(key, struct.pack('>I8', v) .. ARGV[at + 2], px)
      out[#out + 1] = v
    end
    i = i + 3 + 3 * count
  elseif op == 'C' then
    local key = ARGV[i + 1]
    local cur = redis.call('GET', key)
    if version_of(cur) ~= tonumber(ARGV[i + 3]) then
      out[#out + 1] = {0, cur}
    else
      local v = new_version(key, tonumber(ARGV[i + 2]))
      store(key, struct.pack('>I8', v) .. ARGV[i + 5], tonumber(ARGV[i + 4]))
      out[#out + 1] = {1, v}
    end
    i = i + 6
  elseif op == 'D' then
    out[#out + 1] = redis.call('DEL', ARGV[i + 1])
    i = i + 2
  elseif op == 'E' then
    out[#out + 1] = redis.call('PEXPIRE', ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'A' then
    local count, owner, px = tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
    local mine, free = 0, 0
    for j = 1, count do
      local cur = redis.call('GET', ARGV[i + 3 + j])
      if cur == owner then
        mine = j
        break
      end
      if not cur and free == 0 then free = j end
    end
    if mine > 0 then
      local key = ARGV[i + 3 + mine]
      if px > 0 then redis.call('PEXPIRE', key, px) else redis.call('PERSIST', key) end
      out[#out + 1] = mine
    else
      if free > 0 then store(ARGV[i + 3 + free], owner, px) end
      out[#out + 1] = free
    end
    i = i + 4 + count
  elseif op == 'W' then
    local owner, px, head = ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
    local keys = {}
    for member in string.gmatch(ARGV[i + 4], '[^,]+') do keys[#keys + 1] = head .. member end
    local curs = redis.call('MGET', unpack(keys))
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
      out[#out + 1] = mine
    else
      if free > 0 then store(keys[free], owner, px) end
      out[#out + 1] = free
    end
    i = i + 5
  elseif op == 'R' then
    if redis.call('GET', ARGV[i + 1]) == ARGV[i + 2] then
      out[#out + 1] = redis.call('DEL', ARGV[i + 1])
    else
      out[#out + 1] = 0
    end
    i = i + 3
  else
    return redis.error_reply('netvirt: unknown operation ' .. tostring(op))
  end
end
return out
"""
SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


def is_write(op: Op) -> bool:
    """Operations that take a version (and therefore a hint)."""
    return isinstance(op, (PutOp, CasOp))  # a tuple: cheaper than building a union per call


def op_slot(op: Op) -> int:
    """The slot an operation runs in: its key's, or its pool's."""
    if isinstance(op, (AllocateOp, ReleaseOp)):
        return slot_of(op.pool_key)
    return slot_of(op.key)


class Layout:
    """Redis key names of one store prefix (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"a cluster key prefix may not contain braces: {prefix!r}")
        self.prefix = prefix

    def at(self, slot: int) -> str:
        """The beginning of every key of ``slot``: the prefix and the slot's hash tag."""
        return f"{self.prefix}{{{slot_tags()[slot]}}}"

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
        """The script's ARGV: runs of gets and of same-TTL puts become one entry each."""
        out: list[Any] = []
        index, ops = 0, self.ops
        while index < len(ops):
            end = _run_end(ops, index)
            heads = [layout.at(slot) for slot in self.slots[index:end]]
            _encode(out, ops[index:end], heads, self.hints[index:end])
            index = end
        return out

    def decode(self, reply: Sequence[Any]) -> list[object]:
        """One result per operation, from the script's reply array."""
        if len(reply) != len(self.ops):
            raise ValueError(f"script answered {len(reply)} results for {len(self.ops)} ops")
        return [_decode(op, raw) for op, raw in zip(self.ops, reply, strict=True)]


def _run_end(ops: Sequence[Op], start: int) -> int:
    first, end = ops[start], start + 1
    if isinstance(first, GetOp):
        while end < len(ops) and isinstance(ops[end], GetOp):
            end += 1
    elif isinstance(first, PutOp):
        while end < len(ops) and _same_put_run(first, ops[end]):
            end += 1
    return end


def _same_put_run(first: PutOp, op: Op) -> bool:
    return isinstance(op, PutOp) and op.ttl == first.ttl


def _encode(out: list[Any], run: Sequence[Op], heads: Sequence[str], hints: Sequence[int]) -> None:
    """Append one run; ``heads`` are the ops' key beginnings (``Layout.at`` of their slot)."""
    op, head = run[0], heads[0]
    match op:
        case GetOp():
            gets = cast(Sequence[GetOp], run)
            out += ["G", len(run), *(f"{h}d:{o.key}" for o, h in zip(gets, heads, strict=True))]
        case PutOp(ttl=ttl):
            out += ["P", len(run), px(ttl)]
            for o, h, hint in zip(run, heads, hints, strict=True):
                assert isinstance(o, PutOp)
                out += [f"{h}d:{o.key}", hint, o.value]
        case CasOp(key, expected, value, ttl):
            out += ["C", f"{head}d:{key}", hints[0], expected, px(ttl), value]
        case DeleteOp(key):
            out += ["D", f"{head}d:{key}"]
        case ExpireOp(key, ttl):
            out += ["E", f"{head}d:{key}", px(ttl)]
        case AllocateOp(pool_key, candidates, owner, ttl):
            pool = f"{head}p:{pool_head(pool_key)}"
            joined = window_arg(candidates)
            if joined is not None:
                out += ["W", owner, px(ttl), pool, joined]  # the window as one argument
            else:
                out += ["A", len(candidates), owner, px(ttl), *(pool + m for m in candidates)]
        case ReleaseOp(pool_key, member, owner):
            out += ["R", f"{head}p:{pool_head(pool_key)}{member}", owner]
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


def versions_in(results: Sequence[object]) -> int:
    """The highest version among results (0 if none): what a client has now seen."""
    seen = 0
    for result in results:
        if isinstance(result, Entry):
            seen = max(seen, result.version)
        elif isinstance(result, CasResult) and result.entry is not None:
            seen = max(seen, result.entry.version)
        elif isinstance(result, int) and not isinstance(result, bool):
            seen = max(seen, result)
    return seen
