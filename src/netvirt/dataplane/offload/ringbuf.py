"""A BPF ring buffer read from user space through its memory mapping: no syscall per record.

Why: the kernel reports every connection it makes from a SYN template (``made`` in
``flows.bpf.c``). As a BPF queue, each report cost the datapath one
``bpf_map_lookup_and_delete_elem`` syscall through ctypes: the largest single cost of
the datapath at ~16k connections a second (a fifth of its CPU). A ring buffer
(``BPF_MAP_TYPE_RINGBUF``) is shared memory: user space reads the records the kernel
committed and moves its consumer position on, in Python, without entering the kernel.

The layout is the kernel's (``kernel/bpf/ringbuf.c``): one page whose first 8 bytes
are the consumer position (mapped writable: ours), then one page whose first 8 bytes
are the producer position, then the data area mapped twice in a row (so a record that
wraps is contiguous), all read-only. Each record starts 8-byte aligned with a header:
a 32-bit length whose top bit says "being written" (stop there: a producer on another
CPU has reserved it but not committed it yet) and next bit "discarded" (skip it), and
32 bits the kernel uses; the record follows. Positions only grow; an offset is the
position modulo the data size (a power of two).

Single consumer (the datapath loop); x86's memory order makes plain loads of the
positions and headers acquire-ordered, and the consumer position a plain store.
"""

from __future__ import annotations

import mmap
import struct

_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")
BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8


class RingReader:
    """The consumer side of one BPF ring buffer map (``fd``, data size ``size`` bytes)."""

    def __init__(self, fd: int, size: int) -> None:
        if size <= 0 or size & (size - 1) or size % mmap.PAGESIZE:
            raise ValueError(f"ring size {size}: a power of two, a multiple of the page")
        page = mmap.PAGESIZE
        self.size, self.mask = size, size - 1
        self.consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self.data = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except Exception:
            self.consumer.close()
            raise
        self.page = page

    def read(self, limit: int = 1 << 20) -> list[bytes]:
        """The committed records since the last read (at most ``limit``), in order; the
        space they took is given back to the kernel."""
        out: list[bytes] = []
        data, page, mask = self.data, self.page, self.mask
        pos = _U64.unpack_from(self.consumer, 0)[0]
        end = _U64.unpack_from(data, 0)[0]
        while pos < end and len(out) < limit:
            at = page + (pos & mask)
            word = _U32.unpack_from(data, at)[0]
            if word & BUSY:
                break  # (reserved, not committed yet: the next read takes it)
            length = word & ~(BUSY | DISCARD)
            if not word & DISCARD:
                out.append(data[at + HEADER : at + HEADER + length])
            pos += (length + HEADER + 7) & ~7
        _U64.pack_into(self.consumer, 0, pos)
        return out

    def close(self) -> None:
        self.data.close()
        self.consumer.close()
