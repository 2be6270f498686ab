"""AF_PACKET port with TPACKET_V2 memory-mapped rings: ``AfPacketPort`` without a syscall a frame.

Why: on a veth, ``AfPacketPort`` costs one ``recv``/``sendmsg`` per frame
(~4 µs received, ~6-8 µs sent for 64-byte frames), more than the datapath's
flow cache spends on the packet. With rings the kernel writes received
frames into memory shared with us, and we write frames to send into it, so
receiving costs no syscall at all and sending one ``send`` per batch
(ARCHITECTURE.md: ~290 k frames/s through a Python forwarder). TPACKET_V3 is
avoided on purpose: its block timeout adds ~1.8 ms of latency.

Same interface and behaviour as :class:`~netvirt.dataplane.ports.afpacket.AfPacketPort`
(virtio-net header on by default, ``PACKET_IGNORE_OUTGOING``, never raises on
traffic, counts drops), with these mechanics:

* **Slots are small** (2 KB at MTU 1500: the next power of two above the MTU
  plus headers, at most 16 KB), so a port pins a bounded amount of memory:
  with the default 256 RX and 128 TX slots, 512 KB + 256 KB = 768 KB per port
  (MTU 9000: 6 MB). A 64 KB TCP super-frame does not fit a slot. On receive
  ``PACKET_COPY_THRESH`` makes the kernel queue a full copy on the socket as
  well (slot status ``TP_STATUS_COPY``) and we ``recv`` it, as
  ``AfPacketPort`` would; on send such frames go through a second, plain
  AF_PACKET socket (``sendmsg`` on a socket with a TX ring only ever reads the
  ring), after the ring is flushed, so order is kept. Frames that neither fit
  nor get a copy (socket buffer full) arrive cut short: dropped as
  ``MTU_EXCEEDED``.
* **Receive layout**: slot = ``tpacket2_hdr`` (status, len, snaplen, mac, net,
  time, VLAN) … ``virtio_net_hdr`` right before the MAC header at ``tp_mac``.
  A VLAN tag the device stripped (``TP_STATUS_VLAN_VALID``) is put back into
  the frame, checksum offsets shifted with it. ``TP_STATUS_LOSING`` says the
  ring overflowed: the loss count is read (and reset) from
  ``PACKET_STATISTICS`` into ``rx_dropped``.
* **Send layout**: the frame's bytes start 32 bytes into the slot
  (``TPACKET_ALIGN(sizeof(tpacket2_hdr))``), beginning with the virtio-net
  header; ``tp_len`` covers both. The header's ``hdr_len`` is set to the whole
  frame: the kernel copies ``hdr_len`` bytes and attaches the rest of the slot
  as page fragments, which a local receiver (the veth peer's stack) could
  still hold after the slot is reused, so we have it copy everything (small
  frames, a memcpy). ``PACKET_LOSS`` lets the kernel skip a malformed slot
  instead of stopping the ring there. The ring socket always has the virtio
  header on (``vnet_hdr=False`` only changes what the port exposes and
  accepts, as for ``AfPacketPort``).
* **Ring full**: flush, check again once, then count the remaining frames of
  the batch as dropped. After a flush, slots the kernel left at
  ``TP_STATUS_SEND_REQUEST`` (link down, no buffer) are taken back and counted
  as dropped, and our position rewinds to the kernel's, so both stay in step.

Memory ordering: the kernel publishes a slot by writing its status last and
reads our slots only inside our ``send``; Python has no memory barriers, so
this relies on x86-64's ordered loads for receive (not ported to weakly
ordered CPUs); a slot's status is tested through its first byte (little-endian).

The fd is the ring socket's: epoll reports it readable while a received slot
waits (or a copy is queued), and on a socket error (link down, device gone),
which ``recv_batch`` raises when it finds the ring empty, as ``AfPacketPort``
raises it from ``recv``. Open the port in the interface's namespace
(``netns.run_in_netns``), as for ``AfPacketPort``.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import socket
import struct
from collections.abc import Iterable

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.ports import offload
from netvirt.dataplane.ports.afpacket import (
    ETH_P_ALL,
    MAX_FRAME,
    PACKET_IGNORE_OUTGOING,
    PACKET_VNET_HDR,
    SIOCGIFMTU,
    SOCKET_BUFFER,
    SOL_PACKET,
)
from netvirt.dataplane.ports.base import (
    GSO_NONE,
    VNET_F_NEEDS_CSUM,
    VNET_HDR_LEN,
    Frame,
    PortCounters,
    VnetHdr,
    memo_vnet,
)

PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_COPY_THRESH = 7
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_LOSS = 14
TPACKET_V2 = 1

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 0x1
TP_STATUS_COPY = 0x2
TP_STATUS_LOSING = 0x4
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 0x1
TX_BUSY = 0x7  # SEND_REQUEST | SENDING | WRONG_FORMAT: the slot is not ours
RX_SLOW = TP_STATUS_COPY | TP_STATUS_LOSING | TP_STATUS_VLAN_VALID

TX_DATA = 32  # TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): where a sent frame starts
RX_OVERHEAD = 96  # before the MAC in an RX slot: 76 bytes (headers, alignment, virtio), rounded
VLAN_HLEN = 4
MIN_SLOT = 2048
MAX_SLOT = 16384
DEFAULT_RX_FRAMES = 256
DEFAULT_TX_FRAMES = 128

_RX_HDR = struct.Struct("=IIIH")  # tp_status, tp_len, tp_snaplen, tp_mac
_RX_VLAN = struct.Struct("=HH")  # tp_vlan_tci, tp_vlan_tpid at offset 24
_TX_HDR = struct.Struct("=II")  # tp_status, tp_len
_VNET = struct.Struct("=BBHHHH")
_STATS = struct.Struct("=II")  # struct tpacket_stats: tp_packets, tp_drops
_TAG = struct.Struct("!HH")
_RELEASE = bytes(4)
_RETRY_LATER = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


def slot_size(mtu: int) -> int:
    """Ring slot bytes for ``mtu``: a power of two holding a tagged frame and the headers.

    At most ``MAX_SLOT``: on a link with a bigger MTU (``lo``) the larger
    frames take the copy and side-socket paths, so memory stays bounded.
    """
    size = MIN_SLOT
    while size < mtu + 14 + VLAN_HLEN + RX_OVERHEAD and size < MAX_SLOT:
        size *= 2
    return size


def _ring_request(frames: int, slot: int) -> tuple[bytes, int, list[int]]:
    """``struct tpacket_req`` for ``frames`` slots, the ring's byte size and slot offsets.

    A block is one page or one slot, whichever is larger, so blocks are
    order-0 pages at the usual MTU (always allocatable) and slots tile them.
    """
    block = max(slot, mmap.PAGESIZE)
    per_block = block // slot
    blocks = -(-frames // per_block)
    count = blocks * per_block
    req = struct.pack("=IIII", block, blocks, slot, count)
    return req, block * blocks, [i * slot for i in range(count)]


def _read_mtu(sock: socket.socket, ifname: str) -> int:
    ifreq = struct.pack("16si12x", ifname.encode(), 0)
    answer = fcntl.ioctl(sock.fileno(), SIOCGIFMTU, ifreq)
    mtu: int = struct.unpack("16si12x", answer)[1]
    return mtu


class RingPort:
    """An AF_PACKET port on ``ifname`` with RX and TX rings; see the module docstring."""

    def __init__(
        self,
        ifname: str,
        *,
        vnet_hdr: bool = True,
        name: str | None = None,
        rx_frames: int = DEFAULT_RX_FRAMES,
        tx_frames: int = DEFAULT_TX_FRAMES,
        rcvbuf: int = SOCKET_BUFFER,
    ) -> None:
        self.name = name or ifname
        self.ifname = ifname
        self.vnet_hdr = vnet_hdr
        self.offload = vnet_hdr
        self.counters = PortCounters()
        self._buffer = bytearray(MAX_FRAME + VNET_HDR_LEN)  # big frames: copies and fallback
        self._view = memoryview(self._buffer)
        self._decoded: dict[bytes, VnetHdr | None] = {bytes(VNET_HDR_LEN): None}
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._big = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._mm: mmap.mmap | None = None
        try:
            self._configure(rx_frames, tx_frames, rcvbuf)
        except BaseException:
            self.close()
            raise

    def _configure(self, rx_frames: int, tx_frames: int, rcvbuf: int) -> None:
        sock = self._sock
        for option, value in (
            (PACKET_IGNORE_OUTGOING, 1),
            (PACKET_VNET_HDR, 1),  # before the rings: the kernel refuses it after
            (PACKET_VERSION, TPACKET_V2),
            (PACKET_LOSS, 1),
            (PACKET_COPY_THRESH, 1),
        ):
            sock.setsockopt(SOL_PACKET, option, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.mtu = _read_mtu(sock, self.ifname)
        self.slot = slot_size(self.mtu)
        rx_req, rx_size, rx_offsets = _ring_request(rx_frames, self.slot)
        tx_req, tx_size, tx_offsets = _ring_request(tx_frames, self.slot)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, rx_req)
        sock.setsockopt(SOL_PACKET, PACKET_TX_RING, tx_req)
        self.ring_bytes = rx_size + tx_size
        self._mm = mmap.mmap(
            sock.fileno(), self.ring_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._rx = rx_offsets
        self._rx_head = 0
        self._losses_read = False
        self.resyncs = 0  # times the RX head had to find the kernel's again (_resync)
        self._tx = [rx_size + offset for offset in tx_offsets]
        self._tx_head = 0
        self._tx_room = self.slot - TX_DATA - VNET_HDR_LEN
        self._max_plain = self.mtu + 14 + VLAN_HLEN
        sock.bind((self.ifname, ETH_P_ALL))  # only now: no frame lands before the rings exist
        sock.setblocking(False)
        big = self._big
        big.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        big.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        big.bind((self.ifname, 0))  # protocol 0: it sends, it never receives
        big.setblocking(False)

    def fileno(self) -> int:
        """The ring socket's fd, readable when a received frame waits."""
        return self._sock.fileno()

    # -- receive -------------------------------------------------------------------------

    def recv_batch(self, max_frames: int = 64) -> list[Frame]:
        """Take up to ``max_frames`` frames from the RX ring (no syscall unless one is big)."""
        mm = self._mm
        if mm is None:
            raise OSError(errno.EBADF, "port closed")
        frames: list[Frame] = []
        append = frames.append
        offsets, head, count = self._rx, self._rx_head, len(self._rx)
        unpack, decoded, vnet_on = _RX_HDR.unpack_from, self._decoded, self.vnet_hdr
        received = received_bytes = 0
        self._losses_read = False
        for _ in range(max_frames):
            base = offsets[head]
            status, length, snaplen, mac = unpack(mm, base)
            if not status & TP_STATUS_USER:
                break
            if status & RX_SLOW or snaplen != length or snaplen < 14:
                frame = self._recv_slow(mm, base, status, length, snaplen, mac)
                if frame is not None:
                    append(frame)
                    received += 1
                    received_bytes += len(frame.data)
            else:
                start = base + mac
                if vnet_on:
                    raw = mm[start - VNET_HDR_LEN : start]
                    try:
                        vnet = decoded[raw]
                    except KeyError:
                        vnet = self._decode_hdr(raw)
                    append(Frame(mm[start : start + snaplen], vnet))
                else:
                    append(Frame(mm[start : start + snaplen]))
                received += 1
                received_bytes += snaplen
            mm[base : base + 4] = _RELEASE  # the slot is the kernel's again
            head = head + 1 if head + 1 < count else 0
        if head == self._rx_head and max_frames > 0:
            self._raise_pending_error()  # woken with an empty ring: the link may be gone
            if self._resync(mm, offsets, head):  # or our head lost step with the kernel's
                return self.recv_batch(max_frames)
        self.counters.rx_packets += received
        self.counters.rx_bytes += received_bytes
        self._rx_head = head
        return frames

    def _resync(self, mm: mmap.mmap, offsets: list[int], head: int) -> bool:
        """Find frames the kernel left at other slots than ours (seen under RX overflow
        with big frames mixed in: epoll kept reporting frames while the slot at our head
        stayed the kernel's, and the port stopped receiving). Move to the first one
        after our head; True when there is one. Costs a scan only on empty wakeups."""
        count = len(offsets)
        for step in range(1, count):
            slot = (head + step) % count
            if mm[offsets[slot]] & TP_STATUS_USER:
                self._rx_head = slot
                self.resyncs += 1
                return True
        return False

    def _raise_pending_error(self) -> None:
        """Raise the socket's pending error (link down, device gone), as ``recv`` would.

        A ring is read without syscalls, so the ``ENETDOWN``/``ENODEV`` that
        ``AfPacketPort.recv_batch`` raises (and the datapath reopens the port
        on) would never show; epoll keeps reporting the fd (``EPOLLERR``), so
        an empty ring is where to look, at the cost of one ``getsockopt``.
        """
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))

    def _decode_hdr(self, raw: bytes) -> VnetHdr | None:
        return memo_vnet(self._decoded, raw)

    def _recv_slow(
        self, mm: mmap.mmap, base: int, status: int, length: int, snaplen: int, mac: int
    ) -> Frame | None:
        """A slot with news: losses, a full copy queued on the socket, a stripped VLAN tag."""
        if status & TP_STATUS_LOSING and not self._losses_read:
            # under overload every slot says so: read (and reset) the count once a batch
            self._losses_read = True
            self._collect_losses()
        if status & TP_STATUS_COPY:
            frame = self._recv_copy()
        elif snaplen != length:
            frame = None  # bigger than a slot and no room for a copy
            self.counters.drop_rx(DropReason.MTU_EXCEEDED)
        else:
            start = base + mac
            raw = mm[start - VNET_HDR_LEN : start]
            frame = Frame(mm[start : start + snaplen], VnetHdr.unpack(raw))
        if frame is None:
            return None
        if len(frame.data) < 14:
            self.counters.drop_rx(DropReason.TRUNCATED_ETHERNET)
            return None
        if status & TP_STATUS_VLAN_VALID:
            tci, tpid = _RX_VLAN.unpack_from(mm, base + 24)
            frame = _push_tag(frame, tci, tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100)
        if not self.vnet_hdr or (frame.vnet is not None and frame.vnet.trivial):
            frame.vnet = None
        return frame

    def _recv_copy(self) -> Frame | None:
        """The whole frame the kernel queued on the socket for a slot marked COPY."""
        try:
            n = self._sock.recv_into(self._view)
        except BlockingIOError:
            self.counters.drop_rx(DropReason.MTU_EXCEEDED)
            return None
        except OSError:
            # a pending socket error (ENETDOWN after a link flap) is reported before the
            # queue and cleared; the copy is still queued and must be taken now, or every
            # later COPY slot would get the frame before its own
            try:
                n = self._sock.recv_into(self._view)
            except OSError:
                self.counters.drop_rx(DropReason.MTU_EXCEEDED)
                return None
        if n < VNET_HDR_LEN + 14:
            self.counters.drop_rx(DropReason.TRUNCATED_ETHERNET)
            return None
        hdr = VnetHdr.unpack(self._view[:VNET_HDR_LEN])
        return Frame(bytes(self._view[VNET_HDR_LEN:n]), hdr)

    def _collect_losses(self) -> None:
        """Add the frames the kernel dropped for want of a free slot (reading resets them)."""
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        _packets, drops = _STATS.unpack(raw)
        self.counters.rx_dropped += drops

    # -- send ----------------------------------------------------------------------------

    def send_batch(self, frames: Iterable[Frame | bytes]) -> int:
        """Write frames into the TX ring and flush once; returns how many the kernel took.

        The loop below is the common case, inlined (per-frame Python is what a
        ring leaves to pay for): a frame that fits a slot and a free slot.
        Everything else (software offload, big frames, a full ring, frames
        over the MTU) goes through ``_put``.
        """
        mm = self._mm
        if mm is None:
            for _ in frames:
                self.counters.drop_tx(DropReason.PORT_DOWN)
            return 0
        batch = _Batch()
        tx, room, max_plain, offload_on = self._tx, self._tx_room, self._max_plain, self.offload
        pack_vnet, pack_tx, count = _VNET.pack_into, _TX_HDR.pack_into, len(tx)
        for item in frames:
            if type(item) is bytes:
                data, vnet = item, None
            else:
                assert isinstance(item, Frame)
                data, vnet = item.data, item.vnet
                if vnet is not None and not offload_on:
                    self._put_prepared(item, batch)
                    continue
            length = len(data)
            head = self._tx_head
            base = tx[head]
            if length > max_plain or length > room or batch.full or mm[base] & TX_BUSY:
                self._put(data, vnet, batch)
                continue
            start = base + TX_DATA
            if vnet is None:
                pack_vnet(mm, start, 0, 0, length, 0, 0, 0)
            else:
                pack_vnet(
                    mm, start, vnet.flags, vnet.gso_type, length, vnet.gso_size, vnet.csum_start,
                    vnet.csum_offset,
                )  # fmt: skip
            start += VNET_HDR_LEN
            mm[start : start + length] = data
            pack_tx(mm, base, TP_STATUS_SEND_REQUEST, length + VNET_HDR_LEN)
            batch.slots.append(head)
            batch.bytes += length
            head += 1
            self._tx_head = head if head < count else 0
        if batch.slots:
            self._flush(batch)
        return batch.sent

    def _put_prepared(self, frame: Frame, batch: _Batch) -> None:
        """Complete checksums and segment for a port without offloads, then place each piece."""
        try:
            wire = offload.prepare(frame, offload=False, max_len=self.mtu + 14)
        except ParseError as exc:
            self.counters.drop_tx(exc.reason)
            return
        for piece in wire:
            self._put(piece.data, piece.vnet, batch)

    def _put(self, data: bytes, vnet: VnetHdr | None, batch: _Batch) -> None:
        """Place one wire frame in the ring (or send it aside when it does not fit a slot)."""
        length = len(data)
        if length > self._max_plain and (vnet is None or vnet.gso == GSO_NONE):
            self.counters.drop_tx(DropReason.MTU_EXCEEDED)  # the kernel would not say
            return
        if length > self._tx_room:
            self._send_big(data, vnet, batch)
            return
        if batch.full:
            self.counters.drop_tx()
            return
        mm = self._mm
        assert mm is not None
        base = self._tx[self._tx_head]
        if mm[base] & TX_BUSY:
            self._flush(batch)  # frees slots the kernel has finished with
            base = self._tx[self._tx_head]  # a flush may rewind the head
            if mm[base] & TX_BUSY:
                batch.full = True
                self.counters.drop_tx()
                return
        start = base + TX_DATA
        if vnet is None:
            _VNET.pack_into(mm, start, 0, 0, length, 0, 0, 0)
        else:
            _VNET.pack_into(
                mm, start, vnet.flags, vnet.gso_type, length, vnet.gso_size, vnet.csum_start,
                vnet.csum_offset,
            )  # fmt: skip
        start += VNET_HDR_LEN
        mm[start : start + length] = data
        _TX_HDR.pack_into(mm, base, TP_STATUS_SEND_REQUEST, length + VNET_HDR_LEN)
        batch.slots.append(self._tx_head)
        batch.bytes += length
        self._tx_head = self._tx_head + 1 if self._tx_head + 1 < len(self._tx) else 0

    def _flush(self, batch: _Batch) -> None:
        """One ``send`` for the slots written so far; count what went, reclaim what did not."""
        error: OSError | None = None
        try:
            took = self._sock.send(b"", socket.MSG_DONTWAIT)
        except OSError:
            # once more: a socket error left by a past event (ENETDOWN from a link flap)
            # fails one call and is cleared by it; the ring only needs the retry
            try:
                took = self._sock.send(b"", socket.MSG_DONTWAIT)
            except OSError as exc:
                error, took = exc, -1
        slots, batch.slots = batch.slots, []
        expected, batch.bytes = batch.bytes, 0
        if took == expected:
            batch.sent += len(slots)
            self.counters.tx_packets += len(slots)
            self.counters.tx_bytes += expected
            return
        mm = self._mm
        assert mm is not None
        for index, slot in enumerate(slots):
            base = self._tx[slot]
            if mm[base] & TX_BUSY != TP_STATUS_SEND_REQUEST:
                length = _TX_HDR.unpack_from(mm, base)[1] - VNET_HDR_LEN
                batch.sent += 1
                self.counters.tx_packets += 1
                self.counters.tx_bytes += length
                continue
            # the kernel stopped here: its position is this slot; take the rest back
            refused = error is not None and error.errno not in _RETRY_LATER
            for rest in slots[index:]:
                mm[self._tx[rest] : self._tx[rest] + 4] = _RELEASE
                self.counters.drop_tx(error=refused)
            self._tx_head = slot
            return

    def _send_big(self, data: bytes, vnet: VnetHdr | None, batch: _Batch) -> None:
        """A frame too big for a slot: flush the ring (order), then ``sendmsg`` it aside."""
        if batch.slots:
            self._flush(batch)
        hdr = (vnet or VnetHdr()).pack(VNET_HDR_LEN)
        try:
            self._big.sendmsg([hdr, data])
        except OSError as exc:
            reason = DropReason.MTU_EXCEEDED if exc.errno == errno.EMSGSIZE else None
            self.counters.drop_tx(reason, error=exc.errno not in _RETRY_LATER)
            return
        batch.sent += 1
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(data)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the rings and close both sockets (idempotent)."""
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self._sock.close()
        self._big.close()

    def __enter__(self) -> RingPort:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RingPort({self.ifname!r}, vnet_hdr={self.vnet_hdr}, slot={self.slot})"


class _Batch:
    """Bookkeeping of one ``send_batch``: slots written since the last flush, frames sent."""

    __slots__ = ("bytes", "full", "sent", "slots")

    def __init__(self) -> None:
        self.slots: list[int] = []
        self.bytes = 0
        self.sent = 0
        self.full = False


def _push_tag(frame: Frame, tci: int, tpid: int) -> Frame:
    """Put back the 802.1Q tag the device kept aside; offsets in the header move by 4."""
    data = frame.data[:12] + _TAG.pack(tpid, tci) + frame.data[12:]
    hdr = frame.vnet
    if hdr is not None and not hdr.trivial:
        hdr = VnetHdr(
            hdr.flags,
            hdr.gso_type,
            hdr.hdr_len + VLAN_HLEN if hdr.hdr_len else 0,
            hdr.gso_size,
            hdr.csum_start + VLAN_HLEN if hdr.flags & VNET_F_NEEDS_CSUM else hdr.csum_start,
            hdr.csum_offset,
        )
    return Frame(data, hdr)
