"""Apply a final flow key to the original frame ("commit" the pipeline's rewrites).

The pipeline only changes key slots; this module turns the differences
between the key extracted from the frame and the final key into byte edits,
updating checksums incrementally (RFC 1624) so the cost does not grow with the
payload: Ethernet addresses, the whole ARP body, IPv4/IPv6 addresses, TTL/hop
limit and DSCP (IPv4 header checksum recomputed: at most 60 bytes), L4 ports
and the L4 checksum (pseudo-header terms for address changes), ICMP type/code.
"""

from __future__ import annotations

from collections.abc import Sequence

from netvirt.dataplane.fields import F
from netvirt.dataplane.headers.checksum import internet_checksum, update16, update32
from netvirt.dataplane.packet import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet

_ETH_SRC, _ETH_DST = F("eth.src"), F("eth.dst")
_ARP = [F(n) for n in ("arp.op", "arp.sha", "arp.spa", "arp.tha", "arp.tpa")]
_TTL, _DSCP, _ECN = F("ip.ttl"), F("ip.dscp"), F("ip.ecn")
_IP4_SRC, _IP4_DST, _IP6_SRC, _IP6_DST = F("ip4.src"), F("ip4.dst"), F("ip6.src"), F("ip6.dst")
_TP_SRC, _TP_DST = F("tp.src"), F("tp.dst")
_ICMP_TYPE, _ICMP_CODE = F("icmp.type"), F("icmp.code")


def _put(buf: bytearray, offset: int, value: int, size: int) -> None:
    buf[offset : offset + size] = value.to_bytes(size, "big")


def _get16(buf: bytearray, offset: int) -> int:
    return int.from_bytes(buf[offset : offset + 2], "big")


def apply(packet: Packet, before: Sequence[int], after: Sequence[int]) -> bytes:
    """The frame of ``packet`` with every change from ``before`` to ``after`` applied."""
    if list(before) == list(after):
        return bytes(packet.frame)
    buf = bytearray(packet.frame)
    if before[_ETH_DST] != after[_ETH_DST]:
        _put(buf, 0, after[_ETH_DST], 6)
    if before[_ETH_SRC] != after[_ETH_SRC]:
        _put(buf, 6, after[_ETH_SRC], 6)
    if packet.arp_op:
        _apply_arp(buf, packet.l3_offset, after)
    elif packet.ip_version == 4:
        _apply_ipv4(buf, packet, before, after)
    elif packet.ip_version == 6:
        _apply_ipv6(buf, packet, before, after)
    return bytes(buf)


def _apply_arp(buf: bytearray, off: int, key: Sequence[int]) -> None:
    op, sha, spa, tha, tpa = (key[i] for i in _ARP)
    _put(buf, off + 6, op, 2)
    _put(buf, off + 8, sha, 6)
    _put(buf, off + 14, spa, 4)
    _put(buf, off + 18, tha, 6)
    _put(buf, off + 24, tpa, 4)


def _l4_checksum_offset(packet: Packet) -> int | None:
    if packet.l4_offset is None or packet.ip_frag & 2:
        return None
    proto = packet.ip_proto
    if proto == IPPROTO_TCP:
        return packet.l4_offset + 16
    if proto == IPPROTO_UDP:
        return packet.l4_offset + 6
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        return packet.l4_offset + 2
    return None


def _update_l4(
    buf: bytearray,
    packet: Packet,
    before: Sequence[int],
    after: Sequence[int],
    addr_fields: tuple[int, int],
    width: int,
) -> None:
    csum_off = _l4_checksum_offset(packet)
    if csum_off is None or csum_off + 2 > len(buf):
        return
    csum = _get16(buf, csum_off)
    udp_zero = packet.ip_proto == IPPROTO_UDP and csum == 0
    pseudo = packet.ip_proto != IPPROTO_ICMP  # ICMPv4 has no pseudo header
    if pseudo:
        for idx in addr_fields:
            old, new = before[idx], after[idx]
            if old != new:
                for shift in range(width - 32, -1, -32):
                    csum = update32(csum, (old >> shift) & 0xFFFFFFFF, (new >> shift) & 0xFFFFFFFF)
    if packet.ip_proto in (IPPROTO_TCP, IPPROTO_UDP):
        for idx, off in ((_TP_SRC, 0), (_TP_DST, 2)):
            if before[idx] != after[idx]:
                _put(
                    buf,
                    packet.l4_offset + off if packet.l4_offset is not None else 0,
                    after[idx],
                    2,
                )
                csum = update16(csum, before[idx], after[idx])
    elif packet.l4_offset is not None:
        if before[_ICMP_TYPE] != after[_ICMP_TYPE] or before[_ICMP_CODE] != after[_ICMP_CODE]:
            old = before[_ICMP_TYPE] << 8 | before[_ICMP_CODE]
            new = after[_ICMP_TYPE] << 8 | after[_ICMP_CODE]
            _put(buf, packet.l4_offset, new, 2)
            csum = update16(csum, old, new)
        if before[_TP_SRC] != after[_TP_SRC]:  # echo identifier (see key.py)
            _put(buf, packet.l4_offset + 4, after[_TP_SRC], 2)
            csum = update16(csum, before[_TP_SRC], after[_TP_SRC])
    if udp_zero:
        return  # IPv4 UDP without checksum stays without one
    if packet.ip_proto == IPPROTO_UDP and csum == 0:
        csum = 0xFFFF
    _put(buf, csum_off, csum, 2)


def _apply_ipv4(
    buf: bytearray, packet: Packet, before: Sequence[int], after: Sequence[int]
) -> None:
    off = packet.l3_offset
    ihl = (buf[off] & 0x0F) * 4
    _put(buf, off + 1, after[_DSCP] << 2 | after[_ECN], 1)
    _put(buf, off + 8, after[_TTL], 1)
    _put(buf, off + 12, after[_IP4_SRC], 4)
    _put(buf, off + 16, after[_IP4_DST], 4)
    _put(buf, off + 10, 0, 2)
    _put(buf, off + 10, internet_checksum(buf[off : off + ihl]), 2)
    _update_l4(buf, packet, before, after, (_IP4_SRC, _IP4_DST), 32)


def _apply_ipv6(
    buf: bytearray, packet: Packet, before: Sequence[int], after: Sequence[int]
) -> None:
    off = packet.l3_offset
    tclass = after[_DSCP] << 2 | after[_ECN]
    first = int.from_bytes(buf[off : off + 4], "big")
    first = (first & 0xF00FFFFF) | (tclass << 20)
    _put(buf, off, first, 4)
    _put(buf, off + 7, after[_TTL], 1)
    _put(buf, off + 8, after[_IP6_SRC], 16)
    _put(buf, off + 24, after[_IP6_DST], 16)
    _update_l4(buf, packet, before, after, (_IP6_SRC, _IP6_DST), 128)
