"""Redis Cluster hash slots and the hash tags that pin our keys to them.

Redis Cluster shards keys over 16384 slots, ``CRC16(key) mod 16384``, where
only the part between the first ``{`` and the next ``}`` is hashed when a key
has one (a *hash tag*). A Lua script may only touch keys of the node it runs
on, and a key's version counter must be on the key's node (see cluster.py), so
the cluster store chooses the slot of every key itself:

* a store key (or pool name) ``k`` belongs to slot ``s = CRC16(k) mod 16384``
  — the slot Redis would have given ``k`` without a tag, so keys spread
  exactly as Redis would spread them;
* its Redis keys carry the tag ``{t}`` where ``t`` is the shortest string
  (digits and letters) that hashes to ``s``: ``P{t}d:k`` is in slot ``s``,
  and so is that slot's version counter ``P{t}v``.

The tag table (16384 strings of at most 3 characters) is built once per
process on first use, in about 30 ms.
"""

from __future__ import annotations

import binascii
import functools
import itertools
import string

SLOTS = 16384
_ALPHABET = (string.digits + string.ascii_lowercase + string.ascii_uppercase).encode()


def crc16(data: bytes) -> int:
    """Redis Cluster's CRC16 (XMODEM: polynomial 0x1021, initial value 0)."""
    return binascii.crc_hqx(data, 0)


def slot_of(name: str) -> int:
    """The slot a store key or pool name belongs to (its whole name is hashed)."""
    return crc16(name.encode()) % SLOTS


def redis_slot(key: bytes) -> int:
    """The slot Redis assigns to ``key``, honouring a hash tag (for checks and tests)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key) % SLOTS


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For every slot, the shortest tag that hashes to it (first in alphabet order)."""
    tags: list[str | None] = [None] * SLOTS
    missing = SLOTS
    for length in itertools.count(1):
        for combo in itertools.product(_ALPHABET, repeat=length):
            tag = bytes(combo)
            slot = crc16(tag) % SLOTS
            if tags[slot] is None:
                tags[slot] = tag.decode()
                missing -= 1
                if not missing:
                    return tuple(t for t in tags if t is not None)
    raise AssertionError("unreachable")  # itertools.count never ends


def tag_of(name: str) -> str:
    """The hash tag (without braces) of the slot ``name`` belongs to."""
    return slot_tags()[slot_of(name)]
