"""AF_PACKET port: a raw socket bound to one interface (a veth end, usually).

How: ``socket(AF_PACKET, SOCK_RAW, 0)`` receives nothing until it is bound
to ``(ifname, ETH_P_ALL)``, so no frame of another interface slips in
between. ``PACKET_IGNORE_OUTGOING`` hides the frames this socket (and the
host) transmits on the interface, which a forwarder would otherwise read
back as input. The socket is non-blocking; ``recv_batch`` loops ``recv``
until the queue is empty or the batch is full.

Why ``PACKET_VNET_HDR`` is on by default, although a plain socket looks
simpler: the stack behind a veth uses checksum offload and TSO (veth
advertises both), so a plain AF_PACKET reader receives 64 KB TCP frames with
seeded, not computed, checksums and no way to tell. With the virtio-net
header each frame says so, exactly as on a TAP, and frames sent with it are
accepted whole (the peer's stack takes super-frames). ``vnet_hdr=False``
gives the plain socket for interfaces without offloads; it then completes
checksums and segments super-frames to the interface MTU before sending.

The socket is created in the calling thread's network namespace; use
``netns.run_in_netns`` to open a port on an interface in another namespace.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
from collections.abc import Iterable

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.ports import offload
from netvirt.dataplane.ports.base import (
    VNET_HDR_LEN,
    Frame,
    PortCounters,
    VnetHdr,
    as_frame,
    memo_vnet,
)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SIOCGIFMTU = 0x8921
MAX_FRAME = 65535 + 14 + 8
SOCKET_BUFFER = 4 << 20

_RETRY_LATER = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


class AfPacketPort:
    """A raw socket on ``ifname``; see the module docstring for ``vnet_hdr``."""

    def __init__(self, ifname: str, *, vnet_hdr: bool = True, name: str | None = None) -> None:
        self.name = name or ifname
        self.ifname = ifname
        self.vnet_hdr = vnet_hdr
        self.offload = vnet_hdr
        self.counters = PortCounters()
        self._hdr_size = VNET_HDR_LEN if vnet_hdr else 0
        self._zero_hdr = VnetHdr().pack(VNET_HDR_LEN)
        # per-frame work is what limits a Python datapath: frames are received into one
        # reused buffer, and the few distinct virtio headers a flow uses are decoded and
        # encoded once each (a flow's frames repeat the same header)
        self._buffer = bytearray(MAX_FRAME + self._hdr_size)
        self._view = memoryview(self._buffer)
        self._decoded: dict[bytes, VnetHdr | None] = {bytes(VNET_HDR_LEN): None}
        self._encoded: dict[VnetHdr, bytes] = {}
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._configure()
        except BaseException:
            self._sock.close()
            raise

    def _configure(self) -> None:
        sock = self._sock
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if self.vnet_hdr:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((self.ifname, ETH_P_ALL))
        sock.setblocking(False)
        self.mtu = self._read_mtu()

    def _read_mtu(self) -> int:
        ifreq = struct.pack("16si12x", self.ifname.encode(), 0)
        answer = fcntl.ioctl(self._sock.fileno(), SIOCGIFMTU, ifreq)
        mtu: int = struct.unpack("16si12x", answer)[1]
        return mtu

    def fileno(self) -> int:
        """The socket's fd, readable when frames wait."""
        return self._sock.fileno()

    def recv_batch(self, max_frames: int = 64) -> list[Frame]:
        """Read up to ``max_frames`` frames without blocking."""
        frames: list[Frame] = []
        recv_into, view, size = self._sock.recv_into, self._view, self._hdr_size
        decoded, counters = self._decoded, self.counters
        minimum = size + 14
        while len(frames) < max_frames:
            try:
                n = recv_into(view)
            except (BlockingIOError, InterruptedError):
                break
            if n < minimum:
                counters.drop_rx(DropReason.TRUNCATED_ETHERNET)
                continue
            data = bytes(view[size:n])
            if size:
                raw = bytes(view[:size])
                try:
                    vnet = decoded[raw]
                except KeyError:
                    vnet = self._decode_hdr(raw)
                frames.append(Frame(data, vnet))
            else:
                frames.append(Frame(data))
            counters.rx_packets += 1
            counters.rx_bytes += n - size
        return frames

    def _decode_hdr(self, raw: bytes) -> VnetHdr | None:
        return memo_vnet(self._decoded, raw)

    def send_batch(self, frames: Iterable[Frame | bytes]) -> int:
        """Send frames; returns how many wire frames the kernel took."""
        sent = 0
        max_len = self.mtu + 14
        for item in frames:
            if self.offload and (type(item) is bytes or item.vnet is None):  # type: ignore[union-attr]
                sent += self._send(as_frame(item))  # the common case: nothing to prepare
                continue
            try:
                wire = offload.prepare(as_frame(item), offload=self.offload, max_len=max_len)
            except ParseError as exc:
                self.counters.drop_tx(exc.reason)
                continue
            sent += sum(self._send(frame) for frame in wire)
        return sent

    def _send(self, frame: Frame) -> int:
        try:
            if self.vnet_hdr:
                vnet = frame.vnet
                if vnet is None:
                    hdr = self._zero_hdr
                else:
                    hdr = self._encoded.get(vnet) or self._encode_hdr(vnet)
                self._sock.sendmsg([hdr, frame.data])
            else:
                self._sock.send(frame.data)
        except OSError as exc:
            reason = DropReason.MTU_EXCEEDED if exc.errno == errno.EMSGSIZE else None
            self.counters.drop_tx(reason, error=exc.errno not in _RETRY_LATER)
            return 0
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(frame.data)
        return 1

    def _encode_hdr(self, vnet: VnetHdr) -> bytes:
        raw = vnet.pack(VNET_HDR_LEN)
        if len(self._encoded) < 256:
            self._encoded[vnet] = raw
        return raw

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> AfPacketPort:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AfPacketPort({self.ifname!r}, vnet_hdr={self.vnet_hdr})"
