"""The slow path's conntrack shortcuts equal what they replace: the record bytes (shared by
every host on a store) are those of the straightforward encoding, and the entry copies and
timeouts equal ``dataclasses.replace`` and the per-state table."""

from __future__ import annotations

import struct
from dataclasses import fields, replace

from hypothesis import given
from hypothesis import strategies as st

from netvirt.dataplane.nf import CtEntry, CtState, CtTuple
from netvirt.dataplane.nf.codec import (
    MIRROR,
    PRIMARY,
    advanced_entry,
    decode,
    encode,
    versioned_entry,
)
from netvirt.dataplane.nf.conntrack import Timeouts
from nf.test_nf_codec import entries, tuples

_HEAD = struct.Struct("!BBBBQBBIQ3d")


def reference_encode(entry: CtEntry, kind: int) -> bytes:
    """The record format spelled out field by field (format 1)."""
    o, r = entry.orig, entry.reply
    width = 4 if o.ip_version == 4 else 16
    head = _HEAD.pack(
        1,
        kind,
        o.ip_version,
        o.proto,
        entry.zone,
        entry.state,
        entry.flags,
        entry.mark,
        entry.serial,
        entry.created,
        entry.last_seen,
        entry.expiry,
    )
    addrs = b"".join(a.to_bytes(width, "big") for a in (o.src, o.dst, r.src, r.dst))
    ports = struct.pack("!4I", o.sport, o.dport, r.sport, r.dport)
    texts = b""
    for text in (entry.lb_counter, entry.lb_backend):
        raw = text.encode()
        texts += struct.pack("!H", len(raw)) + raw
    return head + addrs + ports + texts


@given(entry=entries(), kind=st.sampled_from([PRIMARY, MIRROR]), version=st.integers(0, 99))
def test_records_are_byte_identical_to_the_reference_encoding(
    entry: CtEntry, kind: int, version: int
) -> None:
    record = encode(entry, kind)
    assert record == reference_encode(entry, kind)
    assert decode(record, version) == (replace(entry, version=version), kind)


def test_entry_copies_know_every_field() -> None:
    """advanced_entry/versioned_entry list CtEntry's fields in order: a new one needs adding."""
    assert [f.name for f in fields(CtEntry)][-4:] == [
        "lb_counter",
        "lb_backend",
        "serial",
        "version",
    ]
    assert len(fields(CtEntry)) == 13


@given(
    entry=entries(),
    state=st.sampled_from(list(CtState)),
    mark=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 7),
    times=st.tuples(st.floats(0, 1e9), st.floats(0, 1e9)),
    version=st.integers(0, 2**40),
)
def test_entry_copies_equal_dataclasses_replace(
    entry: CtEntry,
    state: CtState,
    mark: int,
    flags: int,
    times: tuple[float, float],
    version: int,
) -> None:
    seen, expiry = times
    want = replace(entry, state=state, mark=mark, flags=flags, last_seen=seen, expiry=expiry)
    assert advanced_entry(entry, state, mark, flags, seen, expiry) == want
    assert versioned_entry(entry, version) == replace(entry, version=version)


@given(t=tuples().map(lambda t: t._replace(proto=6)), state=st.sampled_from(list(CtState)))
def test_tcp_timeouts_follow_the_state_table(t: CtTuple, state: CtState) -> None:
    timeouts = Timeouts(
        syn_sent=1, syn_recv=2, established=3, fin_wait=4, close_wait=5, time_wait=6, closed=7
    )
    table = {
        CtState.SYN_SENT: 1,
        CtState.SYN_RECV: 2,
        CtState.ESTABLISHED: 3,
        CtState.FIN_WAIT: 4,
        CtState.CLOSE_WAIT: 5,
        CtState.TIME_WAIT: 6,
    }
    assert timeouts.of(t, state) == table.get(state, 7)
