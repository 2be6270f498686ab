"""How conntrack sees a record it read: the entry, its kind, and whether a cache answered.

Split out of ``conntrack.py`` (which decides on these); see its docstring, "Read cache",
and ``state/writebehind.py`` for the local absence.
"""

from __future__ import annotations

from dataclasses import dataclass

from netvirt.dataplane.nf.codec import MIRROR, CodecError, CtEntry, decode
from netvirt.state.store import CACHED_ABSENT, LOCAL_ABSENT, CachedEntry, Entry


@dataclass(frozen=True, slots=True)
class Seen:
    """A record as read: version 0 = absent; entry None with a version = unreadable/stale.

    ``cached``: a read cache answered it (``CachedEntry``), so it may be stale."""

    version: int
    entry: CtEntry | None
    mirror: bool
    cached: bool = False


ABSENT = Seen(0, None, False)
# what a step returns when it would reject the packet on a cached record: read it again
RECHECK = Seen(-1, None, False)
CACHED_ABSENT_SEEN = Seen(0, None, False, True)
# absent from a write-behind store's local records: final for a packet that opens a
# connection (SYN, a first datagram), read again from the store for any other
LOCAL_ABSENT_SEEN = Seen(0, None, False, True)


def seen_of(raw: object) -> Seen:
    if not isinstance(raw, Entry):
        return ABSENT
    if raw is CACHED_ABSENT:
        return CACHED_ABSENT_SEEN
    if raw is LOCAL_ABSENT:
        return LOCAL_ABSENT_SEEN
    cached = type(raw) is CachedEntry
    try:
        entry, kind = decode(raw.value, raw.version)
    except CodecError:
        return Seen(raw.version, None, False, cached)
    return Seen(raw.version, entry, kind == MIRROR, cached)
