"""A directory watch for the datapath's wait set: Linux inotify through ctypes.

Why. A plug file written into the plug directory is the moment a VM's port
should start forwarding. The datapath loop sleeps up to its tick (100 ms) when
no packet arrives, and a VM being plugged sends nothing the datapath can see
until its port is open, so without a wake-up the plug waited for the next
tick: tens of milliseconds of the "port create → traffic" latency. An inotify
descriptor in the loop's epoll set wakes it the moment a file is created,
renamed into place, changed or removed; the loop then rescans as before (the
scan, not the event, stays the source of truth: events only say "look now").

If inotify is unavailable (no libc symbol, the instance limit reached), the
watch reports :attr:`DirWatch.fd` ``None`` and the loop keeps its periodic
check: slower, never wrong.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCHED = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_READ_SIZE = 65_536


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


class DirWatch:
    """Wakes a poll loop when anything in one directory changes (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.events = 0  # readiness notifications consumed
        libc = _libc()
        if libc is None:
            return
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.warning("inotify unavailable (%s): plug directory polled", _strerror())
            return
        if libc.inotify_add_watch(fd, os.fsencode(path), WATCHED) < 0:
            log.warning("cannot watch %s (%s): plug directory polled", path, _strerror())
            os.close(fd)
            return
        self.fd = fd

    def drain(self) -> bool:
        """Consume pending events; True if there were any (the directory must be rescanned).
        The event records themselves are not parsed: a rescan reads the truth."""
        if self.fd is None:
            return False
        seen = False
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                raise
            if not data:
                break
            seen = True
        if seen:
            self.events += 1
        return seen

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _strerror() -> str:
    return os.strerror(ctypes.get_errno())
