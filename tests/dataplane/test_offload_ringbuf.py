"""The ``made`` ring buffer's reader (``offload/ringbuf.py``) against a model of the kernel's
producer: records of drawn lengths, some discarded, one maybe still being written,
wrapping round the data area, read in drawn chunks (no root: a memfd laid out as the
kernel lays out a ring buffer's mapping, its data written twice as the kernel maps it)."""

from __future__ import annotations

import mmap
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from netvirt.dataplane.offload.ringbuf import BUSY, DISCARD, HEADER, RingReader

PAGE = mmap.PAGESIZE
SIZE = PAGE  # the smallest ring: wraps often


class _Producer:
    """The kernel's side, written into the memfd the reader maps."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("ring")
        os.ftruncate(self.fd, 2 * PAGE + 2 * SIZE)
        self.map = mmap.mmap(self.fd, 2 * PAGE + 2 * SIZE)
        self.pos = 0

    def room(self, consumer: int, length: int) -> bool:
        return self.pos + ((length + HEADER + 7) & ~7) - consumer <= SIZE

    def put(self, record: bytes, flags: int = 0) -> None:
        """A record at the producer position (its header's length word with ``flags``),
        written at its offset modulo the data size in both copies of the data area."""
        blob = struct.pack("=II", len(record) | flags, 0) + record
        for i, byte in enumerate(blob):
            k = (self.pos + i) & (SIZE - 1)
            self.map[2 * PAGE + k] = self.map[2 * PAGE + SIZE + k] = byte
        self.pos += (len(record) + HEADER + 7) & ~7
        struct.pack_into("=Q", self.map, PAGE, self.pos)

    def commit(self, at_pos: int, length: int) -> None:
        """Clear the busy bit of the record at ``at_pos`` (both copies)."""
        j = at_pos & (SIZE - 1)
        for base in (2 * PAGE + j, 2 * PAGE + SIZE + j):
            struct.pack_into("=I", self.map, base, length)
        struct.pack_into("=Q", self.map, PAGE, self.pos)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.binary(min_size=1, max_size=80), st.booleans()), max_size=120),
    st.lists(st.integers(1, 7), min_size=1, max_size=20),
)
def test_the_reader_returns_every_committed_record_once_in_order(
    records: list[tuple[bytes, bool]], chunks: list[int]
) -> None:
    ring = _Producer()
    reader = RingReader(ring.fd, SIZE)
    try:
        want: list[bytes] = []
        got: list[bytes] = []
        chunk = 0
        for record, discarded in records:
            consumer = struct.unpack_from("=Q", reader.consumer, 0)[0]
            while not ring.room(consumer, len(record)):  # full: the reader makes room
                got += reader.read(chunks[chunk % len(chunks)])
                chunk += 1
                consumer = struct.unpack_from("=Q", reader.consumer, 0)[0]
            ring.put(record, DISCARD if discarded else 0)
            if not discarded:
                want.append(record)
        got += reader.read()
        assert got == want
        assert reader.read() == []
    finally:
        reader.close()
        ring.map.close()
        os.close(ring.fd)


def test_a_record_being_written_stops_the_reader_until_it_is_committed() -> None:
    ring = _Producer()
    reader = RingReader(ring.fd, SIZE)
    try:
        ring.put(b"first")
        at = ring.pos
        ring.put(b"second", BUSY)
        ring.put(b"third")
        assert reader.read() == [b"first"]
        assert reader.read() == []  # (still busy)
        ring.commit(at, len(b"second"))
        assert reader.read() == [b"second", b"third"]
    finally:
        reader.close()
        ring.map.close()
        os.close(ring.fd)
