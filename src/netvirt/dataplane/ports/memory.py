"""In-memory port: the twin of TAP and AF_PACKET ports for tests.

Frames put in with :meth:`MemoryPort.inject` come out of ``recv_batch``;
frames sent are kept in ``sent`` (or delivered to a linked peer, see
:func:`link`). An eventfd stands for "frames waiting", so the port works
with the same epoll loop as a real one. ``offload`` says whether the port
plays a device that takes super-frames; without it, sent super-frames are
segmented to ``mtu`` exactly as a real port would.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterable

from netvirt.dataplane.drops import ParseError
from netvirt.dataplane.ports import offload as offload_mod
from netvirt.dataplane.ports.base import Frame, PortCounters, as_frame


class MemoryPort:
    """A queue-backed port; not thread-safe, like every port."""

    def __init__(
        self, name: str, *, offload: bool = False, mtu: int = 1500, capacity: int = 4096
    ) -> None:
        self.name = name
        self.offload = offload
        self.mtu = mtu
        self.capacity = capacity
        self.counters = PortCounters()
        self.sent: deque[Frame] = deque()
        self.peer: MemoryPort | None = None
        self._inbox: deque[Frame] = deque()
        self._event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def inject(self, item: Frame | bytes) -> bool:
        """Queue a frame for ``recv_batch``; False (counted) when the queue is full."""
        if len(self._inbox) >= self.capacity:
            self.counters.drop_rx()
            return False
        self._inbox.append(as_frame(item))
        if len(self._inbox) == 1:
            os.eventfd_write(self._event, 1)
        return True

    def fileno(self) -> int:
        """An eventfd that is readable while frames wait."""
        return self._event

    def recv_batch(self, max_frames: int = 64) -> list[Frame]:
        """Take up to ``max_frames`` queued frames."""
        count = min(max_frames, len(self._inbox))
        frames = [self._inbox.popleft() for _ in range(count)]
        if not self._inbox:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._event)
        self.counters.rx_packets += count
        self.counters.rx_bytes += sum(len(frame.data) for frame in frames)
        return frames

    def send_batch(self, frames: Iterable[Frame | bytes]) -> int:
        """Record (or deliver to the peer) each frame, segmented unless ``offload``."""
        sent = 0
        for item in frames:
            try:
                wire = offload_mod.prepare(
                    as_frame(item), offload=self.offload, max_len=self.mtu + 14
                )
            except ParseError as exc:
                self.counters.drop_tx(exc.reason)
                continue
            for frame in wire:
                if self.peer is not None and not self.peer.inject(frame):
                    self.counters.drop_tx()
                    continue
                if self.peer is None:
                    self.sent.append(frame)
                self.counters.tx_packets += 1
                self.counters.tx_bytes += len(frame.data)
                sent += 1
        return sent

    def close(self) -> None:
        """Release the eventfd."""
        if self._event >= 0:
            os.close(self._event)
            self._event = -1

    def __repr__(self) -> str:
        return f"MemoryPort({self.name!r})"


def link(a: MemoryPort, b: MemoryPort) -> None:
    """Make frames sent on one port arrive at the other, like a veth pair."""
    a.peer, b.peer = b, a
