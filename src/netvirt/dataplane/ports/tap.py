"""TAP device port with virtio-net headers and checksum/segmentation offload.

How: ``/dev/net/tun`` opened non-blocking, ``TUNSETIFF`` with
``IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`` creates (or attaches to) the device in
the calling thread's network namespace, ``TUNSETVNETHDRSZ`` fixes the header
size (12 bytes, the virtio 1.x layout with ``num_buffers``), and
``TUNSETOFFLOAD`` with ``TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`` tells the
kernel that this reader copes with seeded checksums and TCP super-frames, so
the interface advertises TSO and checksum offload to the stack behind it
(the "VM"). Measured on this kind of VM, that took TCP through a Python
forwarder from ~1 to ~12.7 Gbit/s (ARCHITECTURE.md).

Every read returns one frame preceded by its ``virtio_net_hdr``; every write
must carry one (zeros for an ordinary frame) and goes out as one ``writev`` so
a 64 KB super-frame is not copied to prepend 12 bytes. Writing super-frames
needs no offload flag: the kernel takes any well-formed GSO frame from us.

The device lives as long as the fd (it is not made persistent), so closing
the port removes the interface. It can be moved to another namespace with
``ip link set NAME netns NS`` after creation; the fd keeps working.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterable

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.ports import offload
from netvirt.dataplane.ports.base import (
    VNET_HDR_LEN,
    VNET_HDR_MRG_LEN,
    Frame,
    PortCounters,
    VnetHdr,
    as_frame,
)

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
IFNAMSIZ = 16
MAX_FRAME = 65535 + 14 + 8  # a 64 KB IP packet behind Ethernet and two VLAN tags

_IFREQ = struct.Struct(f"{IFNAMSIZ}sH22x")
_RETRY_LATER = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


class TapPort:
    """A TAP device; ``offload=True`` (with ``vnet_hdr``) keeps super-frames whole.

    With ``vnet_hdr=False`` the device carries plain frames: the port then
    completes checksums and segments super-frames it is asked to send.
    """

    def __init__(
        self,
        name: str,
        *,
        vnet_hdr: bool = True,
        offload: bool = True,
        hdr_size: int = VNET_HDR_MRG_LEN,
    ) -> None:
        if len(name.encode()) >= IFNAMSIZ:
            raise ValueError(f"interface name too long: {name!r}")
        if hdr_size not in (VNET_HDR_LEN, VNET_HDR_MRG_LEN):
            raise ValueError("virtio-net header size must be 10 or 12")
        self.counters = PortCounters()
        self.vnet_hdr = vnet_hdr
        self.offload = vnet_hdr and offload
        self.hdr_size = hdr_size if vnet_hdr else 0
        self._zero_hdr = VnetHdr().pack(self.hdr_size) if vnet_hdr else b""
        self._fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.name = self._attach(name)
        except BaseException:
            os.close(self._fd)
            raise

    def _attach(self, name: str) -> str:
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if self.vnet_hdr else 0)
        answer = fcntl.ioctl(self._fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
        if self.vnet_hdr:
            fcntl.ioctl(self._fd, TUNSETVNETHDRSZ, struct.pack("i", self.hdr_size))
        features = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 if self.offload else 0
        fcntl.ioctl(self._fd, TUNSETOFFLOAD, features)
        raw_name: bytes = _IFREQ.unpack(answer)[0]
        return raw_name.rstrip(b"\x00").decode()

    def fileno(self) -> int:
        """The tun fd, readable when frames wait."""
        return self._fd

    def recv_batch(self, max_frames: int = 64) -> list[Frame]:
        """Read up to ``max_frames`` frames without blocking."""
        frames: list[Frame] = []
        while len(frames) < max_frames:
            try:
                raw = os.read(self._fd, MAX_FRAME + self.hdr_size)
            except BlockingIOError:
                break
            frame = self._decode(raw)
            if frame is not None:
                frames.append(frame)
        return frames

    def _decode(self, raw: bytes) -> Frame | None:
        if not self.vnet_hdr:
            self._count_rx(len(raw))
            return Frame(raw)
        if len(raw) < self.hdr_size + 14:
            self.counters.drop_rx(DropReason.TRUNCATED_ETHERNET)
            return None
        hdr = VnetHdr.unpack(raw)
        data = raw[self.hdr_size :]
        self._count_rx(len(data))
        return Frame(data, None if hdr.trivial else hdr)

    def _count_rx(self, size: int) -> None:
        self.counters.rx_packets += 1
        self.counters.rx_bytes += size

    def send_batch(self, frames: Iterable[Frame | bytes]) -> int:
        """Write frames; super-frames pass whole when offload is on. Returns frames written."""
        sent = 0
        for item in frames:
            try:
                wire = offload.prepare(as_frame(item), offload=self.offload)
            except ParseError as exc:
                self.counters.drop_tx(exc.reason)
                continue
            sent += sum(self._write(frame) for frame in wire)
        return sent

    def _write(self, frame: Frame) -> int:
        parts = [self._header(frame), frame.data] if self.vnet_hdr else [frame.data]
        try:
            os.writev(self._fd, parts)
        except OSError as exc:
            reason = DropReason.MTU_EXCEEDED if exc.errno == errno.EMSGSIZE else None
            self.counters.drop_tx(reason, error=exc.errno not in _RETRY_LATER)
            return 0
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(frame.data)
        return 1

    def _header(self, frame: Frame) -> bytes:
        return self._zero_hdr if frame.vnet is None else frame.vnet.pack(self.hdr_size)

    def close(self) -> None:
        """Close the fd, which removes the device."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TapPort:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TapPort({self.name!r}, offload={self.offload})"
