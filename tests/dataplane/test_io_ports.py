"""The in-memory port (the Port protocol's twin) and port counters."""

from __future__ import annotations

import select

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.ports import Port
from netvirt.dataplane.ports.base import GSO_TCPV4, VNET_F_NEEDS_CSUM, Frame, VnetHdr
from netvirt.dataplane.ports.memory import MemoryPort, link

FRAME = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / Raw(b"x" * 20))


def readable(port: MemoryPort) -> bool:
    ready, _, _ = select.select([port], [], [], 0)
    return bool(ready)


def test_memory_port_is_a_port_and_batches() -> None:
    port = MemoryPort("m0")
    try:
        assert isinstance(port, Port)
        assert not readable(port)
        for i in range(5):
            assert port.inject(FRAME + bytes([i]))
        assert readable(port)
        first = port.recv_batch(3)
        assert [f.data[-1] for f in first] == [0, 1, 2]
        assert readable(port)
        assert [f.data[-1] for f in port.recv_batch(64)] == [3, 4]
        assert not readable(port)
        assert port.recv_batch() == []
        assert port.counters.rx_packets == 5
    finally:
        port.close()


def test_linked_ports_deliver_and_count() -> None:
    a, b = MemoryPort("a"), MemoryPort("b", capacity=2)
    link(a, b)
    try:
        assert a.send_batch([FRAME, Frame(FRAME), FRAME]) == 2
        assert [f.data for f in b.recv_batch()] == [FRAME, FRAME]
        assert a.counters.tx_packets == 2
        assert a.counters.tx_dropped == 1
        assert b.counters.rx_dropped == 1
    finally:
        a.close()
        b.close()


def test_super_frames_are_segmented_unless_the_port_takes_offloads() -> None:
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP() / Raw(b"p" * 4000)
    hdr = VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16)
    superframe = Frame(bytes(pkt), hdr)
    plain, offloading = MemoryPort("plain", mtu=1500), MemoryPort("tap", offload=True)
    try:
        assert plain.send_batch([superframe]) == 3
        assert all(f.vnet is None and len(f.data) <= 1514 for f in plain.sent)
        assert offloading.send_batch([superframe]) == 1
        assert offloading.sent[0] is superframe
    finally:
        plain.close()
        offloading.close()


def test_unsegmentable_frame_is_dropped_with_a_reason() -> None:
    port = MemoryPort("m")
    try:
        bad = Frame(FRAME, VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 0, 1000, 34, 16))
        assert port.send_batch([bad]) == 0
        assert port.counters.drops[DropReason.MTU_EXCEEDED] == 1
        assert port.counters.as_dict()["drop.mtu_exceeded"] == 1
    finally:
        port.close()
