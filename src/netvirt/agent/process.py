"""What every long-running host process shares: a wakeable loop and a status file.

Both halves of a host (``datapath.DatapathLoop``, ``controller.AgentProcess``)
run one loop in the main thread until :meth:`LoopProcess.stop`, which signal
handlers and other threads may call: an eventfd in the loop's wait set wakes
it at once. Each writes a JSON status document about once a second,
atomically (temporary file + rename), so readers never see half of one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class LoopProcess:
    """Subclasses provide :meth:`start`, :meth:`run_once`, :meth:`close` and :meth:`status`."""

    status_file: Path | None = None

    def __init__(self) -> None:
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._stopping = False
        self._running = False

    def wake(self) -> None:
        """Interrupt the loop's wait (any thread, signal handlers too)."""
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake_fd, 1)

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stopping = True
        self.wake()

    def run(self) -> int:
        """Run until :meth:`stop`; returns the process exit code."""
        self.start()
        try:
            while not self._stopping:
                self.run_once()
        finally:
            self.close()
        return 0

    @property
    def running(self) -> bool:
        return self._running and not self._stopping

    def drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)

    def close_wake(self) -> None:
        os.close(self._wake_fd)

    def start(self) -> None:
        raise NotImplementedError

    def run_once(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def write_status(self) -> None:
        """Write the status file atomically (no-op without one); never raises for I/O or
        for a status that cannot be gathered right now."""
        path = self.status_file
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.status(), indent=1, sort_keys=True, default=str))
            os.replace(tmp, path)
        except Exception as err:
            log.warning("cannot write status file %s: %s", path, err)
            with contextlib.suppress(OSError):
                tmp.unlink()
