"""The kernel flow map, written in batches: one syscall per commit instead of one per entry.

Why: a ctypes ``bpf_map_update_elem`` per learned entry is ~6 µs of the datapath's
time, and each new connection learns two entries and drops them at its FIN. Writes
are queued and applied with libbpf's ``bpf_map_update_batch`` /
``bpf_map_delete_batch`` (one syscall each, from :data:`BATCH_MIN` elements on);
an entry learned and dropped before the commit never reaches the kernel at all.

When the queue may wait, and when it may not (the validity rule of
``offload/__init__.py``: the kernel never serves an outcome after the user-space
cache stopped serving it):

* an *insert* may wait: until it is committed the datapath serves the flow itself
  (the filter finds no entry and gives it the frames), so waiting only delays
  the offload. The flow cache calls :meth:`commit` at the start of every batch,
  which applies the queue once it is ``delay`` old (0: at once, so the writes of
  one batch go down together at the start of the next) or ``limit`` long. A
  longer delay keeps short connections out of the kernel altogether, but their
  frames then all cost the datapath: measured slower for new connections;
* a *delete of a valid entry* (evicted for room) may wait the same way: the
  entry is still a right answer, only the user-space cache forgot it;
* a delete or change that *invalidates* (a flush, a connection whose state moved,
  a relearned flow whose outcome differs) is applied at once, before the
  datapath handles another frame (:meth:`commit_deletes`; :meth:`commit_now` for a
  changed outcome), with every other queued delete — so a queued eviction never
  outlives an invalidation either.

Thread-safety: none (the datapath loop's).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Iterable
from typing import Any

# Below this many elements single calls are as cheap: measured on this VM (kernel 6.18,
# ctypes), a syscall is ~6 us; a 2-element batch costs about two single calls, 8 elements
# ~2.7 us each, 64 elements ~1.4 us each.
BATCH_MIN = 4


class BatchOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


def bind_batch_calls(lib: Any) -> bool:
    """Declare libbpf's batch calls on ``lib``; False when this libbpf has none."""
    update = getattr(lib, "bpf_map_update_batch", None)
    delete = getattr(lib, "bpf_map_delete_batch", None)
    if update is None or delete is None:
        return False
    if hasattr(update, "argtypes"):  # libbpf itself (tests give a fake)
        vp = ctypes.c_void_p
        update.restype = delete.restype = ctypes.c_int
        update.argtypes = [ctypes.c_int, vp, vp, vp, vp]
        delete.argtypes = [ctypes.c_int, vp, vp, vp]
    return True


def update_elem(lib: Any, fd: int, key: bytes, value: bytes) -> bool:
    """One element written now (create or replace); False when the kernel refused it."""
    kb = ctypes.create_string_buffer(key, len(key))
    vb = ctypes.create_string_buffer(value, len(value))
    return bool(lib.bpf_map_update_elem(fd, kb, vb, 0) == 0)


def delete_elem(lib: Any, fd: int, key: bytes) -> bool:
    """One element deleted now; False when it was not there."""
    return bool(lib.bpf_map_delete_elem(fd, ctypes.create_string_buffer(key, len(key))) == 0)


class BatchedMap:
    """A BPF hash map mirrored in ``live`` and written through a queue (module docstring)."""

    def __init__(
        self,
        lib: Any,
        fd: int,
        *,
        delay: float = 0.0,
        limit: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lib, self.fd = lib, fd
        self.delay, self.limit, self.clock = delay, limit, clock
        self.live: dict[bytes, bytes] = {}  # what the kernel holds (as written)
        self.puts: dict[bytes, bytes] = {}
        self.dels: set[bytes] = set()
        self.since = 0.0  # when the oldest queued write was queued
        self.batched = bind_batch_calls(lib)
        self.written = self.deleted = self.errors = self.syscalls = 0

    @property
    def pending(self) -> int:
        return len(self.puts) + len(self.dels)

    def put(self, key: bytes, value: bytes) -> None:
        """Queue ``key`` → ``value`` (replacing anything queued for ``key``)."""
        self._mark()
        self.dels.discard(key)
        self.puts[key] = value

    def delete(self, key: bytes) -> None:
        """Queue the removal of ``key``; a queued insert of it just leaves the queue."""
        self.puts.pop(key, None)
        if key in self.live:
            self._mark()
            self.dels.add(key)

    def write_known(self, items: list[tuple[bytes, bytes]]) -> set[bytes]:
        """Write ``items`` now, in one syscall, without tracking them (entries the kernel
        consumes itself, e.g. the SNAT ports a template's SYNs take): the keys refused."""
        failed = self._update_all(items)
        self.written += len(items) - len(failed)
        return failed

    def delete_known(self, keys: list[bytes]) -> None:
        """Delete ``keys`` now, in one syscall: entries this map did not write (the
        kernel's own, e.g. the state of a connection it made) and so does not track."""
        self._delete_all(keys)
        self.deleted += len(keys)

    def clear(self) -> None:
        """Everything leaves the kernel now (a flush)."""
        self.puts.clear()
        self.dels.update(self.live)
        self.commit_deletes()

    def commit(self) -> None:
        """Apply the queue if it waited ``delay`` or grew past ``limit`` (once per batch)."""
        if (self.puts or self.dels) and (
            len(self.puts) + len(self.dels) >= self.limit or self.clock() - self.since >= self.delay
        ):
            self.commit_now()

    def commit_now(self) -> None:
        """Apply the queue: deletes first, then inserts (one syscall each)."""
        self.commit_deletes()
        if self.puts:
            items = list(self.puts.items())
            self.puts.clear()
            failed = self._update_all(items)
            for key, value in items:
                if key not in failed:
                    self.live[key] = value
            self.written += len(items) - len(failed)

    def commit_deletes(self) -> None:
        """Apply the queued deletes now (an invalidation); queued inserts may wait on."""
        if self.dels:
            keys = list(self.dels)
            self.dels.clear()
            self._delete_all(keys)
            for key in keys:
                self.live.pop(key, None)
            self.deleted += len(keys)

    def _mark(self) -> None:
        if not (self.puts or self.dels):
            self.since = self.clock()

    # -- syscalls ---------------------------------------------------------------------------
    def _update_all(self, items: list[tuple[bytes, bytes]]) -> set[bytes]:
        """Write ``items``; the keys the kernel refused (counted in ``errors``)."""
        failed: set[bytes] = set()
        if self.batched and len(items) >= BATCH_MIN:
            keys = b"".join(k for k, _ in items)
            values = b"".join(v for _, v in items)
            done = self._batch(self.lib.bpf_map_update_batch, keys, values, len(items))
            if done == len(items):
                return failed
            items = items[done:]  # the first of the rest failed: one by one from there
        for key, value in items:
            kb = ctypes.create_string_buffer(key, len(key))
            vb = ctypes.create_string_buffer(value, len(value))
            self.syscalls += 1
            if self.lib.bpf_map_update_elem(self.fd, kb, vb, 0) != 0:
                self.errors += 1
                failed.add(key)
        return failed

    def _delete_all(self, keys: Iterable[bytes]) -> None:
        rest = list(keys)
        if self.batched and len(rest) >= BATCH_MIN:
            done = self._batch(self.lib.bpf_map_delete_batch, b"".join(rest), None, len(rest))
            rest = rest[done:]
        for key in rest:  # (gone already is fine: the kernel never deletes, but be lenient)
            kb = ctypes.create_string_buffer(key, len(key))
            self.syscalls += 1
            self.lib.bpf_map_delete_elem(self.fd, kb)

    def _batch(self, call: Any, keys: bytes, values: bytes | None, n: int) -> int:
        """One batch syscall; how many elements it applied (the rest go one by one)."""
        kb = ctypes.create_string_buffer(keys, len(keys))
        count = ctypes.c_uint32(n)
        opts = BatchOpts(ctypes.sizeof(BatchOpts), 0, 0)
        self.syscalls += 1
        if values is None:
            rc = call(self.fd, kb, ctypes.byref(count), ctypes.byref(opts))
        else:
            vb = ctypes.create_string_buffer(values, len(values))
            rc = call(self.fd, kb, vb, ctypes.byref(count), ctypes.byref(opts))
        if rc == 0:
            return n
        return min(int(count.value), n)
