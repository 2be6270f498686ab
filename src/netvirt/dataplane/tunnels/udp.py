"""The UDP socket, batching, MTU and counting shared by Geneve and VXLAN tunnels.

One socket per tunnel type is bound to the host's underlay address and the
well-known port inside the host's network namespace (create the tunnel in
that namespace, see ``netns.run_in_netns``). It is non-blocking; the
datapath waits on ``fileno()`` and drains with ``recv_batch``.

MTU: the socket sets "don't fragment" (``IP_PMTUDISC_DO`` /
``IPV6_DONTFRAG``), so an encapsulated packet is never fragmented in the
underlay. ``underlay_mtu`` (the MTU of the underlay interface or path, given
by the agent's configuration) bounds the outer IP packet; the largest inner
frame is therefore ``underlay_mtu - overhead`` (:attr:`UdpTunnel.max_inner`).
Before encapsulation a frame with offload metadata goes, in order of
preference: whole (when the encapsulation carries the metadata, Geneve, and
the datagram fits), as smaller super-frames of whole segments (when at
least two segments fit, e.g. a 9000-byte underlay), or as wire frames
(segmented to fit, checksums completed). An ordinary frame that does not fit
is dropped and counted as ``MTU_EXCEEDED``: making the inner MTU small
enough (DHCP option 26, router ICMP "fragmentation needed") is the
pipeline's and compiler's job.

Received datagrams are decoded by the subclass; anything malformed is
counted under its ``DropReason`` and never raises. Outer UDP source ports
are the well-known port (no per-flow entropy): receivers accept any.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.ports import offload
from netvirt.dataplane.ports.base import Frame, PortCounters, VnetHdr, as_frame

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_DO = 2
IPV6_DONTFRAG = 62
IPV4_HLEN, IPV6_HLEN, UDP_HLEN = 20, 40, 8
MAX_DATAGRAM = 65535
SOCKET_BUFFER = 4 << 20

_RETRY_LATER = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


@dataclass(slots=True)
class TunnelPacket:
    """A decoded tunnel packet; ``ingress``/``egress`` are None when the encap has none."""

    remote: str
    vni: int
    ingress: int | None
    egress: int | None
    frame: Frame


class UdpTunnel:
    """Base for UDP encapsulations; subclasses supply ``_encap`` and ``_decap``."""

    default_port = 0

    def __init__(self, local_ip: str, port: int | None = None, *, underlay_mtu: int = 1500) -> None:
        self.local_ip = local_ip
        self.port = self.default_port if port is None else port
        self.remote_port = self.port  # where peers listen; the same port on every host
        self.ipv6 = ":" in local_ip
        self.underlay_mtu = underlay_mtu
        self.counters = PortCounters()
        family = socket.AF_INET6 if self.ipv6 else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._configure()
        except BaseException:
            self._sock.close()
            raise

    def _configure(self) -> None:
        sock = self._sock
        if self.ipv6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((self.local_ip, self.port))
        sock.setblocking(False)
        if self.port == 0:  # an ephemeral port (tests): peers must be told it
            self.port = sock.getsockname()[1]
        if self.remote_port == 0:
            self.remote_port = self.port

    @property
    def outer_overhead(self) -> int:
        """Outer IP + UDP bytes in front of the tunnel header."""
        return (IPV6_HLEN if self.ipv6 else IPV4_HLEN) + UDP_HLEN

    @property
    def max_datagram(self) -> int:
        """Largest UDP payload that fits the underlay MTU with DF set."""
        return min(self.underlay_mtu, MAX_DATAGRAM) - self.outer_overhead

    @property
    def max_inner(self) -> int:
        """Largest inner Ethernet frame an ordinary (no offload) packet may carry."""
        return self.max_datagram - self.header_overhead

    @property
    def header_overhead(self) -> int:
        """Bytes of tunnel header in front of an ordinary inner frame."""
        raise NotImplementedError

    def fileno(self) -> int:
        """The socket's fd, readable when datagrams wait."""
        return self._sock.fileno()

    def send(
        self, remote: str, vni: int, item: Frame | bytes, ingress: int = 0, egress: int = 0
    ) -> int:
        """Encapsulate and send one frame to ``remote``; returns datagrams sent."""
        try:
            pieces = self._pieces(as_frame(item))
        except ParseError as exc:
            self.counters.drop_tx(exc.reason)
            return 0
        sent = 0
        for piece in pieces:
            if piece.vnet is None:
                header = self._encap(vni, ingress, egress)
            else:
                header = self._encap_offload(vni, ingress, egress, piece.vnet)
            if len(header) + len(piece.data) > self.max_datagram:
                self.counters.drop_tx(DropReason.MTU_EXCEEDED)
                continue
            sent += self._sendto(remote, header, piece.data)
        return sent

    def _pieces(self, frame: Frame) -> list[Frame]:
        """What to encapsulate: the frame whole, smaller super-frames, or wire frames.

        Offload metadata survives only where the encapsulation carries it
        (``offload_room`` is not None) and the underlay has room for it.
        """
        hdr = frame.vnet
        if hdr is None or hdr.trivial:
            return [Frame(frame.data)]
        room = self.offload_room
        if room is not None:
            if len(frame.data) <= room:
                return [frame]
            if frame.is_super and room >= offload.headers_length(frame.data) + 2 * hdr.gso_size:
                return offload.split(frame, room)
        return offload.prepare(frame, offload=False, max_len=self.max_inner)

    @property
    def offload_room(self) -> int | None:
        """Largest inner frame that may keep its offload metadata; None: the encap cannot."""
        return None

    def send_batch(self, packets: Iterable[tuple[str, int, Frame | bytes, int, int]]) -> int:
        """Send (remote, vni, frame, ingress, egress) tuples; returns datagrams sent."""
        return sum(self.send(*packet) for packet in packets)

    def _encap(self, vni: int, ingress: int, egress: int) -> bytes:
        """The tunnel header for an ordinary inner frame."""
        raise NotImplementedError

    def _encap_offload(self, vni: int, ingress: int, egress: int, hdr: VnetHdr) -> bytes:
        """The tunnel header for a frame that keeps offload metadata (see ``offload_room``)."""
        raise NotImplementedError

    def _sendto(self, remote: str, header: bytes, data: bytes) -> int:
        try:
            self._sock.sendmsg([header, data], [], 0, (remote, self.remote_port))
        except OSError as exc:
            reason = DropReason.MTU_EXCEEDED if exc.errno == errno.EMSGSIZE else None
            self.counters.drop_tx(reason, error=exc.errno not in _RETRY_LATER)
            return 0
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(data)
        return 1

    def recv_batch(self, max_packets: int = 64) -> list[TunnelPacket]:
        """Receive and decode up to ``max_packets`` datagrams without blocking."""
        packets: list[TunnelPacket] = []
        for _ in range(max_packets):
            try:
                payload, address = self._sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # a queued ICMP error report; the next datagram is fine
            packet = self._decode(payload, address[0])
            if packet is not None:
                packets.append(packet)
        return packets

    def _decode(self, payload: bytes, remote: str) -> TunnelPacket | None:
        try:
            packet = self._decap(payload, remote)
        except ParseError as exc:
            self.counters.drop_rx(exc.reason)
            return None
        if len(packet.frame.data) < 14:
            self.counters.drop_rx(DropReason.MALFORMED_TUNNEL)
            return None
        self.counters.rx_packets += 1
        self.counters.rx_bytes += len(packet.frame.data)
        return packet

    def _decap(self, payload: bytes, remote: str) -> TunnelPacket:
        """Decode one datagram; raise ParseError for anything malformed."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> UdpTunnel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.local_ip!r}, {self.port})"
