"""What every datapath port is: the ``Port`` protocol, ``Frame`` and ``VnetHdr``, counters.

A port moves Ethernet frames between the datapath and something real (a TAP,
an AF_PACKET socket on a veth) or a queue (tests). The datapath's loop waits on
``fileno()`` with epoll, then drains up to a batch of frames with
``recv_batch`` and hands each processed batch to ``send_batch``; batching
matters because a wakeup costs far more than a frame (ARCHITECTURE.md,
performance facts).

Offload metadata travels with the frame. A TAP with ``IFF_VNET_HDR`` (or an
AF_PACKET socket with ``PACKET_VNET_HDR``) hands over TCP super-frames of up
to 64 KB and frames whose L4 checksum is only seeded with the pseudo header;
the ``virtio_net_hdr`` that says so is parsed into a :class:`VnetHdr` kept
beside the bytes in a :class:`Frame`. Header offsets in it stay valid while
the pipeline rewrites fields in place, so a super-frame goes through the
pipeline whole and leaves with the same metadata: a port that takes offloads
(``Port.offload``) gets it unchanged, any other port gets what
``offload.prepare`` makes of it (segments with full checksums).

Ports never raise on traffic: a frame that cannot be received or sent is
counted in :class:`PortCounters` (with a :class:`DropReason` where one fits)
and the port carries on. Errors that mean the port itself is gone (its fd
closed) surface as ``OSError`` from ``recv_batch``.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from netvirt.dataplane.drops import DropReason

# virtio_net_hdr (virtio spec 1.x, 5.1.6; include/uapi/linux/virtio_net.h).
VNET_HDR_LEN = 10
VNET_HDR_MRG_LEN = 12  # with num_buffers, the size netvirt's TAPs use
VNET_F_NEEDS_CSUM = 0x01
VNET_F_DATA_VALID = 0x02
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO: IP fragmentation offload, never requested by netvirt
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80  # flag in gso_type: the super-frame has CWR set (RFC 3168)

# Legacy virtio headers are in the host's byte order: tun and AF_PACKET use
# native order unless told otherwise (TUNSETVNETBE), so "=" is right here.
_VNET = struct.Struct("=BBHHHH")
_NUM_BUFFERS = struct.Struct("=H")


@dataclass(frozen=True, slots=True)
class VnetHdr:
    """The offload metadata of one frame, as in ``struct virtio_net_hdr``.

    ``csum_start``/``csum_offset`` (with ``VNET_F_NEEDS_CSUM``) say where the
    L4 checksum starts and where to store it; the field already holds the
    pseudo-header sum. ``gso_size`` is the payload size of each segment a
    super-frame stands for; ``hdr_len`` is advisory (headers up to the payload).
    """

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def needs_csum(self) -> bool:
        """True when the L4 checksum is only seeded and must be completed."""
        return bool(self.flags & VNET_F_NEEDS_CSUM)

    @property
    def gso(self) -> int:
        """The GSO type without the ECN flag; ``GSO_NONE`` for an ordinary frame."""
        return self.gso_type & ~GSO_ECN

    @property
    def trivial(self) -> bool:
        """True when the header asks nothing: the frame is complete as it is."""
        return self.gso == GSO_NONE and not self.needs_csum

    def pack(self, size: int = VNET_HDR_LEN) -> bytes:
        """Encode for a device configured with a header of ``size`` (10 or 12) bytes."""
        raw = _VNET.pack(
            self.flags,
            self.gso_type,
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        )
        return raw + b"\x00" * (size - VNET_HDR_LEN)

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> VnetHdr:
        """Decode the first 10 bytes of ``buf`` (the 12-byte form adds only num_buffers)."""
        return cls(*_VNET.unpack_from(buf, 0))


@dataclass(slots=True)
class Frame:
    """An Ethernet frame and, when it has any, its offload metadata.

    ``vnet`` is None for an ordinary, fully checksummed frame of at most the
    link MTU; ports and tunnels only look at it when it is set.
    """

    data: bytes
    vnet: VnetHdr | None = None

    @property
    def is_super(self) -> bool:
        """True for a GSO super-frame that stands for several wire segments."""
        return self.vnet is not None and self.vnet.gso != GSO_NONE


def memo_vnet(memo: dict[bytes, VnetHdr | None], raw: bytes) -> VnetHdr | None:
    """Decode a received virtio header (None when it asks nothing) and remember it in
    ``memo``, bounded: a flow's frames repeat a few headers, so ports decode each once."""
    hdr = VnetHdr.unpack(raw)
    vnet = None if hdr.trivial else hdr
    if len(memo) < 256:
        memo[raw] = vnet
    return vnet


def as_frame(item: Frame | bytes) -> Frame:
    """Accept plain bytes wherever frames are sent (generated ARP/ICMP replies, tests)."""
    return item if isinstance(item, Frame) else Frame(item)


@dataclass(slots=True)
class PortCounters:
    """Traffic and drop counters of one port; ``drops`` is keyed by reason.

    ``rx_dropped``/``tx_dropped`` count frames lost at this port (each also
    under a reason in ``drops`` when one is known); ``tx_errors`` counts send
    calls the kernel refused (link down, buffer full, too big).
    """

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0
    tx_errors: int = 0
    drops: Counter[DropReason] = field(default_factory=Counter)

    def drop_rx(self, reason: DropReason | None = None) -> None:
        """Count a frame lost on receive."""
        self.rx_dropped += 1
        if reason is not None:
            self.drops[reason] += 1

    def drop_tx(self, reason: DropReason | None = None, *, error: bool = False) -> None:
        """Count a frame lost on transmit; ``error`` when the kernel refused it."""
        self.tx_dropped += 1
        if error:
            self.tx_errors += 1
        if reason is not None:
            self.drops[reason] += 1

    def as_dict(self) -> dict[str, int]:
        """Flat form for the agent and the API: drops appear as ``drop.<reason>``."""
        flat = {
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "rx_dropped": self.rx_dropped,
            "tx_dropped": self.tx_dropped,
            "tx_errors": self.tx_errors,
        }
        flat.update({f"drop.{reason.value}": n for reason, n in self.drops.items()})
        return flat


@runtime_checkable
class Port(Protocol):
    """A datapath port. One thread uses a port at a time.

    ``offload`` is True when ``send_batch`` takes super-frames and partial
    checksums whole; otherwise the port completes/segments them itself.
    ``recv_batch`` never blocks: it returns at most ``max_frames`` frames that
    are ready now, possibly none. ``send_batch`` returns how many wire frames
    it handed to the kernel (a super-frame segmented in software counts each
    segment).
    """

    name: str
    counters: PortCounters
    offload: bool

    def fileno(self) -> int: ...

    def recv_batch(self, max_frames: int = 64) -> list[Frame]: ...

    def send_batch(self, frames: Iterable[Frame | bytes]) -> int: ...

    def close(self) -> None: ...
