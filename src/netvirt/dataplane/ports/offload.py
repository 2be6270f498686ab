"""Software fallbacks for checksum and segmentation offload.

Why: a TAP with ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` hands the datapath TCP
super-frames of up to 64 KB whose checksum is only seeded with the pseudo
header (``VNET_F_NEEDS_CSUM``). Moving such a frame whole is what makes TCP
through a userspace switch fast, so the datapath keeps it whole as long as
the destination can take it (another TAP, an AF_PACKET socket with
``PACKET_VNET_HDR``, a Geneve tunnel whose underlay MTU fits it). Everywhere
else the frame must become what a wire carries; this module does that:

* :func:`complete_checksum` sums the L4 segment from ``csum_start`` (the
  field there already holds the pseudo-header sum) and stores the result at
  ``csum_start + csum_offset``, as a NIC would;
* :func:`segment` cuts a TCP (or UDP GSO) super-frame into frames carrying at
  most ``mss`` payload bytes: each gets the headers of the original with its
  own IPv4 total length, incremented IPv4 id, IPv6 payload length, TCP
  sequence number, FIN/PSH only on the last and CWR only on the first segment
  (as Linux's TSO does), and full IP and L4 checksums;
* :func:`refresh_partial` re-seeds the pseudo-header sum after the pipeline
  rewrote an address in a frame that still needs its checksum (NAT): an
  incremental update would go the wrong way, since the field holds a sum, not
  its complement;
* :func:`carry` gives the pipeline's rewritten bytes the input's metadata
  back (re-seeding when headers changed, shifting offsets when a VLAN tag was
  pushed or popped);
* :func:`prepare` picks one of these for a destination, given whether it
  takes offloads and the largest frame it carries.

All functions take and return immutable ``bytes`` and raise only
``ParseError`` (with a ``DropReason``) for frames whose metadata or headers
do not hold together, so callers count and drop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.checksum import internet_checksum, ones_sum, pseudo_header
from netvirt.dataplane.headers.ethernet import ETH_HLEN, VLAN_TPIDS
from netvirt.dataplane.headers.ipv6 import walk_extensions
from netvirt.dataplane.ports.base import (
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    Frame,
    VnetHdr,
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_FIN, TCP_PSH, TCP_CWR = 0x01, 0x08, 0x80
UDP_CSUM_OFFSET = 6

_H = struct.Struct("!H")
_I = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the IP and L4 headers of a frame are; ``end`` is where the IP packet ends."""

    l3: int
    ipv6: bool
    l4: int
    proto: int
    src: int
    dst: int
    end: int


def locate(frame: bytes) -> Layout:
    """Find the IP and L4 headers of an Ethernet frame (VLAN tags allowed)."""
    offset, ethertype = _skip_ethernet(frame)
    if ethertype == ETHERTYPE_IPV4:
        return _locate_v4(frame, offset)
    if ethertype == ETHERTYPE_IPV6:
        return _locate_v6(frame, offset)
    raise ParseError(DropReason.UNKNOWN_ETHERTYPE, "offload needs IPv4 or IPv6")


def _skip_ethernet(frame: bytes) -> tuple[int, int]:
    if len(frame) < ETH_HLEN:
        raise ParseError(DropReason.TRUNCATED_ETHERNET)
    offset, ethertype = ETH_HLEN, _H.unpack_from(frame, 12)[0]
    while ethertype in VLAN_TPIDS:
        if len(frame) < offset + 4:
            raise ParseError(DropReason.TRUNCATED_ETHERNET, "VLAN tag")
        ethertype = _H.unpack_from(frame, offset + 2)[0]
        offset += 4
    return offset, ethertype


def _locate_v4(frame: bytes, l3: int) -> Layout:
    if len(frame) < l3 + 20:
        raise ParseError(DropReason.TRUNCATED_IPV4)
    if frame[l3] >> 4 != 4:
        raise ParseError(DropReason.BAD_IPV4_VERSION)
    ihl = (frame[l3] & 0x0F) * 4
    total = _H.unpack_from(frame, l3 + 2)[0]
    if ihl < 20 or total < ihl or l3 + total > len(frame):
        raise ParseError(DropReason.BAD_IPV4_TOTAL_LENGTH)
    src, dst = _I.unpack_from(frame, l3 + 12)[0], _I.unpack_from(frame, l3 + 16)[0]
    return Layout(l3, False, l3 + ihl, frame[l3 + 9], src, dst, l3 + total)


def _locate_v6(frame: bytes, l3: int) -> Layout:
    if len(frame) < l3 + 40:
        raise ParseError(DropReason.TRUNCATED_IPV6)
    if frame[l3] >> 4 != 6:
        raise ParseError(DropReason.BAD_IPV6_VERSION)
    end = l3 + 40 + _H.unpack_from(frame, l3 + 4)[0]
    if end > len(frame):
        raise ParseError(DropReason.TRUNCATED_IPV6, "payload length")
    walk = walk_extensions(frame[:end], l3 + 40, frame[l3 + 6])
    src = int.from_bytes(frame[l3 + 8 : l3 + 24], "big")
    dst = int.from_bytes(frame[l3 + 24 : l3 + 40], "big")
    return Layout(l3, True, walk.offset, walk.proto, src, dst, end)


def _ip_end(frame: bytes) -> int:
    """End of the IP packet (Ethernet padding excluded); the frame's length for non-IP."""
    try:
        return locate(frame).end
    except ParseError:
        return len(frame)


def _truncated(csum_offset: int) -> DropReason:
    return DropReason.TRUNCATED_UDP if csum_offset == UDP_CSUM_OFFSET else DropReason.TRUNCATED_TCP


def complete_checksum(frame: bytes, hdr: VnetHdr) -> bytes:
    """Fill in the seeded L4 checksum; returns ``frame`` unchanged if it needs none."""
    if not hdr.needs_csum:
        return frame
    start, field = hdr.csum_start, hdr.csum_start + hdr.csum_offset
    end = _ip_end(frame)
    if field + 2 > end or start < ETH_HLEN:
        raise ParseError(_truncated(hdr.csum_offset), "checksum offsets beyond the packet")
    checksum = internet_checksum(memoryview(frame)[start:end])
    if checksum == 0 and hdr.csum_offset == UDP_CSUM_OFFSET:
        checksum = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    return frame[:field] + _H.pack(checksum) + frame[field + 2 :]


def refresh_partial(frame: bytes, hdr: VnetHdr) -> bytes:
    """Re-seed the pseudo-header sum of a frame that needs its checksum (after NAT).

    The sum covers the L4 length of the whole frame, as Linux's TCP stack
    writes it, so the kernel can segment the frame after we hand it back.
    """
    if not hdr.needs_csum:
        return frame
    lay = locate(frame)
    field = hdr.csum_start + hdr.csum_offset
    if hdr.csum_start != lay.l4 or field + 2 > lay.end:
        raise ParseError(_truncated(hdr.csum_offset), "checksum offsets do not match the headers")
    seed = ones_sum(b"", pseudo_header(lay.src, lay.dst, lay.proto, lay.end - lay.l4, lay.ipv6))
    return frame[:field] + _H.pack(seed) + frame[field + 2 :]


def segment(frame: bytes, hdr: VnetHdr, mss: int) -> list[bytes]:
    """Cut a super-frame into wire frames of at most ``mss`` payload bytes each.

    A frame without GSO comes back alone with its checksum completed.
    """
    if hdr.gso == GSO_NONE:
        return [complete_checksum(frame, hdr)]
    return _cut(frame, hdr, mss, per_piece=1, seed=False)


def split(frame: Frame, max_len: int) -> list[Frame]:
    """Cut a super-frame into smaller super-frames of at most ``max_len`` bytes.

    Each piece holds whole segments of ``gso_size`` and keeps a seeded
    checksum, so the receiver's kernel still segments (or accepts) it as
    the original; a piece of one segment becomes an ordinary seeded frame.
    Used where a path takes big but not 64 KB frames (a 9000-byte underlay).
    """
    hdr = frame.vnet
    if hdr is None or hdr.gso == GSO_NONE or hdr.gso_size == 0:
        return [frame]
    headers = headers_length(frame.data)
    per_piece = (max_len - headers) // hdr.gso_size
    if per_piece < 1:
        raise ParseError(DropReason.MTU_EXCEEDED, "not one segment fits")
    pieces = _cut(frame.data, hdr, per_piece * hdr.gso_size, per_piece=per_piece, seed=True)
    lay = locate(frame.data)
    field = 16 if lay.proto == IPPROTO_TCP else UDP_CSUM_OFFSET
    first = replace(hdr, flags=hdr.flags | VNET_F_NEEDS_CSUM, csum_start=lay.l4, csum_offset=field)
    later = replace(first, gso_type=hdr.gso_type & ~GSO_ECN)  # CWR only in the first piece
    single = VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, lay.l4, field)
    out: list[Frame] = []
    for index, piece in enumerate(pieces):
        gso = len(piece) - headers > hdr.gso_size
        out.append(Frame(piece, (later if index else first) if gso else single))
    return out


def _cut(frame: bytes, hdr: VnetHdr, mss: int, *, per_piece: int, seed: bool) -> list[bytes]:
    if mss <= 0:
        raise ParseError(DropReason.MTU_EXCEEDED, "no room for payload")
    lay = locate(frame)
    cut = _Cut(lay, mss, per_piece, seed)
    if hdr.gso in (GSO_TCPV4, GSO_TCPV6) and lay.proto == IPPROTO_TCP:
        return _segment_tcp(frame, cut)
    if hdr.gso == GSO_UDP_L4 and lay.proto == IPPROTO_UDP:
        return _segment_udp(frame, cut)
    raise ParseError(DropReason.MTU_EXCEEDED, f"cannot segment GSO type {hdr.gso_type}")


@dataclass(frozen=True, slots=True)
class _Cut:
    """How to cut: payload per piece, IPv4 ids per piece, seed instead of full checksum."""

    lay: Layout
    mss: int
    per_piece: int
    seed: bool


def _segment_tcp(frame: bytes, cut: _Cut) -> list[bytes]:
    lay, mss = cut.lay, cut.mss
    if lay.end < lay.l4 + 20:
        raise ParseError(DropReason.TRUNCATED_TCP)
    thl = (frame[lay.l4 + 12] >> 4) * 4
    if thl < 20 or lay.l4 + thl > lay.end:
        raise ParseError(DropReason.BAD_TCP_OFFSET)
    body = lay.l4 + thl
    seq, flags = _I.unpack_from(frame, lay.l4 + 4)[0], frame[lay.l4 + 13]
    starts = range(body, lay.end, mss) if lay.end > body else range(body, body + 1)
    out: list[bytes] = []
    for index, start in enumerate(starts):
        payload = frame[start : min(start + mss, lay.end)]
        head = bytearray(frame[:body])
        _fix_ip(head, lay, index * cut.per_piece, body - lay.l3 + len(payload))
        last = start + mss >= lay.end
        head[lay.l4 + 13] = flags & ~(0 if last else TCP_FIN | TCP_PSH) & ~(TCP_CWR if index else 0)
        _I.pack_into(head, lay.l4 + 4, (seq + start - body) & 0xFFFFFFFF)
        _fill_l4(head, lay, payload, lay.l4 + 16, cut.seed)
        out.append(bytes(head) + payload)
    return out


def _segment_udp(frame: bytes, cut: _Cut) -> list[bytes]:
    lay, mss = cut.lay, cut.mss
    body = lay.l4 + 8
    if lay.end < body:
        raise ParseError(DropReason.TRUNCATED_UDP)
    out: list[bytes] = []
    for index, start in enumerate(range(body, max(lay.end, body + 1), mss)):
        payload = frame[start : min(start + mss, lay.end)]
        head = bytearray(frame[:body])
        _fix_ip(head, lay, index * cut.per_piece, body - lay.l3 + len(payload))
        _H.pack_into(head, lay.l4 + 4, 8 + len(payload))
        _fill_l4(head, lay, payload, lay.l4 + 6, cut.seed)
        out.append(bytes(head) + payload)
    return out


def _fix_ip(head: bytearray, lay: Layout, index: int, ip_length: int) -> None:
    """Set this segment's IP length (and, for IPv4, id and header checksum)."""
    if lay.ipv6:
        _H.pack_into(head, lay.l3 + 4, ip_length - 40)
        return
    _H.pack_into(head, lay.l3 + 2, ip_length)
    ident = _H.unpack_from(head, lay.l3 + 4)[0]
    _H.pack_into(head, lay.l3 + 4, (ident + index) & 0xFFFF)
    _H.pack_into(head, lay.l3 + 10, 0)
    _H.pack_into(head, lay.l3 + 10, internet_checksum(memoryview(head)[lay.l3 : lay.l4]))


def _fill_l4(head: bytearray, lay: Layout, payload: bytes, field: int, seed: bool) -> None:
    """Store the full L4 checksum (header lengths are even), or only the pseudo-header seed."""
    _H.pack_into(head, field, 0)
    l4_header = memoryview(head)[lay.l4 :]
    length = len(l4_header) + len(payload)
    pseudo = pseudo_header(lay.src, lay.dst, lay.proto, length, lay.ipv6)
    if seed:
        _H.pack_into(head, field, ones_sum(b"", pseudo))
        return
    partial = ones_sum(l4_header, pseudo)
    checksum = internet_checksum(payload, partial)
    if checksum == 0 and lay.proto == IPPROTO_UDP:
        checksum = 0xFFFF
    _H.pack_into(head, field, checksum)


def headers_length(frame: bytes) -> int:
    """Bytes before the L4 payload of a TCP or UDP frame (what each segment repeats)."""
    lay = locate(frame)
    if lay.proto == IPPROTO_TCP:
        if lay.end < lay.l4 + 20:
            raise ParseError(DropReason.TRUNCATED_TCP)
        return lay.l4 + (frame[lay.l4 + 12] >> 4) * 4
    return lay.l4 + 8


def prepare(frame: Frame, *, offload: bool, max_len: int | None = None) -> list[Frame]:
    """What to hand a destination for ``frame``.

    ``offload``: the destination takes super-frames and seeded checksums whole
    (the frame comes back untouched). Otherwise a super-frame is segmented so
    that no segment exceeds ``max_len`` bytes (the Ethernet frame; None keeps
    the sender's segment size) and a seeded checksum is completed. Frames
    whose header asks nothing lose it.
    """
    hdr = frame.vnet
    if hdr is None:
        return [frame]
    if hdr.trivial:
        return [Frame(frame.data)]
    if offload:
        return [frame]
    if hdr.gso == GSO_NONE:
        return [Frame(complete_checksum(frame.data, hdr))]
    mss = hdr.gso_size
    if max_len is not None:
        mss = min(mss, max_len - headers_length(frame.data))
    return [Frame(data) for data in segment(frame.data, hdr, mss)]


def carry(original: Frame, rewritten: bytes) -> Frame:
    """The pipeline's output for ``original`` as a frame with consistent offload metadata.

    The pipeline works on bytes and updates checksums incrementally as if they
    were complete. A seeded checksum is a sum, not its complement, and does not
    cover the L4 ports, so such updates are wrong for it: when any header
    changed, the seed is recomputed from the rewritten headers. A length change
    (VLAN tag pushed or popped in front) shifts the offsets with it.
    """
    hdr = original.vnet
    if hdr is None or rewritten is original.data:
        return Frame(rewritten, hdr)
    delta = len(rewritten) - len(original.data)
    if delta:
        hdr = replace(hdr, csum_start=hdr.csum_start + delta, hdr_len=max(0, hdr.hdr_len + delta))
    if hdr.needs_csum:
        head = hdr.csum_start + hdr.csum_offset + 2
        if rewritten[ETH_HLEN:head] != original.data[ETH_HLEN - delta : head - delta]:
            rewritten = refresh_partial(rewritten, hdr)
    return Frame(rewritten, hdr)
