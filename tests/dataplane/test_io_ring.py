"""AF_PACKET ports on a real veth pair: ``RingPort`` (TPACKET_V2 rings) next to ``AfPacketPort``.

The checks both classes must pass are parametrized over both, so the ring
port is held to the plain port's behaviour; ring-only mechanics (a full TX
ring, RX overflow, slots taken back after a refused send, the mapping) come
after. Each test gets its own namespace ``nvr<pid>-<n>`` with the veth pair
``nvra``/``nvrb`` and IPv6 off, so the kernel sends nothing on the link.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import shutil
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from netvirt.dataplane import netns
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.ports.afpacket import AfPacketPort
from netvirt.dataplane.ports.base import (
    GSO_TCPV4,
    VNET_F_NEEDS_CSUM,
    Frame,
    Port,
    VnetHdr,
)
from netvirt.dataplane.ports.ring import RingPort
from system.netio import Forwarder, tcp_transfer

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, AF_PACKET)"),
]

PREFIX = f"nvr{os.getpid() % 10000}"
_counter = itertools.count(1)
SRC, DST = "02:00:00:00:0a:01", "02:00:00:00:0a:02"
SRC_MAC = bytes.fromhex(SRC.replace(":", ""))
Opener = Callable[..., Port]
CLASSES = pytest.mark.parametrize("cls", [AfPacketPort, RingPort], ids=["afpacket", "ring"])


def udp_frame(index: int, size: int = 64) -> bytes:
    """A UDP frame of ``size`` bytes whose payload says which one it is."""
    head = Ether(src=SRC, dst=DST) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=7, dport=9)
    payload = index.to_bytes(4, "big") + b"u" * (size - 42 - 4)
    return bytes(head / Raw(payload))


def tcp_super_frame(payload: int, gso_size: int = 1448) -> Frame:
    """A TCP super-frame as a TSO-capable stack hands it over: seeded checksum, GSO metadata."""
    pkt = Ether(src=SRC, dst=DST) / IP(src="10.9.0.1", dst="10.9.0.2") / TCP(sport=5, dport=6)
    data = bytearray(bytes(pkt / Raw(bytes(i % 251 for i in range(payload)))))
    data[50:52] = b"\x12\x34"  # the seed; nothing on the way may compute or check it
    return Frame(bytes(data), VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 54, gso_size, 34, 16))


def ours(frames: list[Frame]) -> list[Frame]:
    """Frames this test sent (the kernel's own traffic left out)."""
    return [f for f in frames if f.data[6:12] == SRC_MAC]


def receive(port: Port, want: int, timeout: float = 2.0) -> list[Frame]:
    """Wait (epoll-style, on the fd) until ``want`` of our frames arrived or ``timeout``."""
    got: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        select.select([port], [], [], 0.05)
        got += ours(port.recv_batch(64))
    return got


@pytest.fixture
def link() -> Iterator[Callable[..., Port]]:
    """A namespace with the veth pair nvra/nvrb; yields ``open(cls, ifname, **kw)``."""
    ns = f"{PREFIX}-{next(_counter)}"
    netns.delete_netns(ns)
    netns.create_netns(ns)
    ports: list[Port] = []

    def open_port(cls: Opener, ifname: str, **kwargs: object) -> Port:
        port = netns.run_in_netns(ns, cls, ifname, **kwargs)
        ports.append(port)
        return port

    open_port.ns = ns  # type: ignore[attr-defined]
    try:
        for knob in ("all", "default"):
            netns.exec_in(ns, ["sysctl", "-qw", f"net.ipv6.conf.{knob}.disable_ipv6=1"])
        netns.create_veth("nvra", "nvrb", netns_a=ns, netns_b=ns)
        yield open_port
    finally:
        for port in ports:
            port.close()
        netns.delete_netns(ns)
    assert not netns.netns_exists(ns)


# -- what both port classes do -------------------------------------------------------------


@CLASSES
@pytest.mark.parametrize("vnet_hdr", [True, False], ids=["vnet", "plain"])
def test_frames_cross_both_ways_byte_exact(
    link: Callable[..., Port], cls: Opener, vnet_hdr: bool
) -> None:
    a, b = link(cls, "nvra", vnet_hdr=vnet_hdr), link(cls, "nvrb", vnet_hdr=vnet_hdr)
    assert isinstance(a, Port)
    sizes = [60, 64, 100, 333, 1000, 1514]
    frames = [udp_frame(i, sizes[i % len(sizes)]) for i in range(150)]
    for tx, rx in ((a, b), (b, a)):
        assert tx.send_batch(frames) == len(frames)
        got = receive(rx, len(frames))
        assert [f.data for f in got] == frames
        assert all(f.vnet is None for f in got)
        assert ours(tx.recv_batch(256)) == []  # PACKET_IGNORE_OUTGOING: no read-back
        assert tx.counters.tx_packets == len(frames)
        assert tx.counters.tx_bytes == sum(map(len, frames))
    assert b.counters.rx_packets == len(frames)
    assert (a.counters.tx_dropped, b.counters.rx_dropped) == (0, 0)


@CLASSES
def test_tcp_super_frames_cross_whole_with_their_header(
    link: Callable[..., Port], cls: Opener
) -> None:
    a, b = link(cls, "nvra"), link(cls, "nvrb")
    big, small = tcp_super_frame(20000), tcp_super_frame(1800, gso_size=1000)  # small fits a slot
    assert a.send_batch([big, small, udp_frame(1)]) == 3
    got = receive(b, 3)
    assert [f.data for f in got] == [big.data, small.data, udp_frame(1)]
    for sent, received in zip((big, small), got, strict=False):
        assert received.is_super
        assert received.vnet is not None
        assert sent.vnet is not None
        fields = ("flags", "gso_type", "gso_size", "csum_start", "csum_offset")
        assert [getattr(received.vnet, f) for f in fields] == [
            getattr(sent.vnet, f) for f in fields
        ]
    assert got[2].vnet is None


@CLASSES
def test_plain_port_segments_super_frames(link: Callable[..., Port], cls: Opener) -> None:
    a, b = link(cls, "nvra", vnet_hdr=False), link(cls, "nvrb")
    frame = tcp_super_frame(20000)
    assert a.send_batch([frame]) == 14  # ceil(20000 / 1448) wire segments
    got = receive(b, 14)
    assert len(got) == 14
    assert all(len(f.data) <= 1514 and f.vnet is None for f in got)
    payload = b"".join(bytes(Ether(f.data)[TCP].payload) for f in got)
    assert payload == frame.data[54:]
    for f in got:  # full checksums, as on a wire
        pkt = Ether(f.data)
        sent = pkt[TCP].chksum
        del pkt[TCP].chksum
        assert Ether(bytes(pkt))[TCP].chksum == sent


@CLASSES
def test_frame_over_the_mtu_is_dropped_with_a_reason(
    link: Callable[..., Port], cls: Opener
) -> None:
    a, b = link(cls, "nvra"), link(cls, "nvrb")
    assert a.send_batch([udp_frame(1, 1600), udp_frame(2)]) == 1
    assert a.counters.drops[DropReason.MTU_EXCEEDED] == 1
    assert [f.data for f in receive(b, 1)] == [udp_frame(2)]


@CLASSES
def test_fd_is_readable_only_while_frames_wait(link: Callable[..., Port], cls: Opener) -> None:
    a, b = link(cls, "nvra"), link(cls, "nvrb")
    poller = select.epoll()
    try:
        poller.register(b.fileno(), select.EPOLLIN)
        assert poller.poll(0.05) == []
        assert a.send_batch([udp_frame(i) for i in range(5)]) == 5
        assert poller.poll(1.0) != []
        assert len(b.recv_batch(3)) == 3
        assert poller.poll(0) != []  # two still wait
        assert len(b.recv_batch(64)) == 2
        assert poller.poll(0.05) == []
    finally:
        poller.close()


@CLASSES
def test_tcp_through_a_forwarder_keeps_super_frames(cls: Opener) -> None:
    """vm1 and vm2 wired by veths to a host namespace whose two ports a forwarder bridges."""
    scope = netns.NetnsScope(f"{PREFIX}-{next(_counter)}")
    ports: list[Port] = []
    try:
        host, vm1, vm2 = scope.create("host"), scope.create("vm1"), scope.create("vm2")
        for vm, addr, side in ((vm1, "10.9.0.1/24", "nvrh1"), (vm2, "10.9.0.2/24", "nvrh2")):
            netns.create_veth("eth0", side, netns_a=vm, netns_b=host)
            netns.add_address("eth0", addr, netns=vm)
        ports = [netns.run_in_netns(host, cls, side) for side in ("nvrh1", "nvrh2")]
        supers = 0

        def move(a: Port, b: Port) -> Callable[[], int]:
            def run() -> int:
                nonlocal supers
                frames = a.recv_batch(64)
                supers += sum(f.is_super for f in frames)
                return b.send_batch(frames)

            return run

        p1, p2 = ports
        with Forwarder({p1: move(p1, p2), p2: move(p2, p1)}):
            assert tcp_transfer(vm2, vm1, "10.9.0.2", 4 << 20) == 4 << 20
        assert supers > 0  # the veth peers used TSO and the frames crossed whole
        assert p1.counters.tx_dropped == p2.counters.tx_dropped == 0
    finally:
        for port in ports:
            port.close()
        assert scope.cleanup() == []


@CLASSES
def test_link_going_down_is_raised_once_by_recv(link: Callable[..., Port], cls: Opener) -> None:
    """The datapath reopens a port whose ``recv_batch`` raises; both classes must raise."""
    ns: str = link.ns  # type: ignore[attr-defined]
    b = link(cls, "nvrb")
    assert b.recv_batch() == []
    netns.ip("link", "set", "nvrb", "down", netns=ns)
    assert select.select([b], [], [], 1.0)[0] == [b]
    with pytest.raises(OSError) as raised:
        b.recv_batch()
    assert raised.value.errno == errno.ENETDOWN
    assert b.recv_batch() == []


# -- ring mechanics ---------------------------------------------------------------------


def raw_frame(seed: int, size: int) -> bytes:
    """An Ethernet frame of a local experimental ethertype and ``size`` bytes."""
    body = bytes((seed + i) % 256 for i in range(size - 14))
    return bytes.fromhex(DST.replace(":", "")) + SRC_MAC + b"\x88\xb5" + body


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(st.lists(st.integers(14, 1514), max_size=20), min_size=1, max_size=6))
def test_any_batches_cross_small_rings_in_order(
    link: Callable[..., Port], batches: list[list[int]]
) -> None:
    """Rings of 8 TX and 32 RX slots wrap many times; every frame arrives, in order, intact."""
    ports = getattr(link, "pair", None)
    if ports is None:  # one pair for all examples: positions carry over, as they do in use
        ports = link.pair = (  # type: ignore[attr-defined]
            link(RingPort, "nvra", tx_frames=8),
            link(RingPort, "nvrb", rx_frames=32),
        )
    a, b = ports
    before = a.counters.tx_packets
    for index, sizes in enumerate(batches):
        frames = [raw_frame(index * 31 + i, size) for i, size in enumerate(sizes)]
        assert a.send_batch(frames) == len(frames)
        assert [f.data for f in receive(b, len(frames))] == frames
    assert a.counters.tx_packets - before == sum(map(len, batches))
    assert a.counters.tx_dropped == b.counters.rx_dropped == 0


def test_vlan_tag_the_device_strips_is_put_back(link: Callable[..., Port]) -> None:
    a, b = link(RingPort, "nvra"), link(RingPort, "nvrb")
    tagged = bytes(Ether(src=SRC, dst=DST) / Dot1Q(vlan=42, prio=3) / IP() / UDP() / Raw(b"v" * 30))
    assert a.send_batch([tagged]) == 1
    assert [f.data for f in receive(b, 1)] == [tagged]


@pytest.mark.skipif(shutil.which("tc") is None, reason="needs tc (iproute2)")
def test_full_tx_ring_drops_the_rest_and_recovers(link: Callable[..., Port]) -> None:
    """A qdisc that holds frames keeps their slots busy: the ring fills, the rest is counted."""
    a, b = link(RingPort, "nvra", tx_frames=8), link(RingPort, "nvrb")
    ns: str = link.ns  # type: ignore[attr-defined]
    qdisc = ["qdisc", "add", "dev", "nvra", "root", "tbf"]
    netns.exec_in(ns, ["tc", *qdisc, "rate", "8kbit", "burst", "1600", "limit", "100000"])
    frames = [udp_frame(i, 1000) for i in range(20)]
    sent = a.send_batch(frames)
    # 8 slots written; the 9th frame finds the ring full: flush, one frame passes the bucket
    # and frees its slot (the 9th takes it), seven wait in the qdisc; after that it stays full
    assert sent == 9
    assert a.counters.tx_dropped == 11
    assert a.counters.tx_errors == 0
    assert a.send_batch(frames[:1]) == 0  # still full: dropped at once
    netns.exec_in(ns, ["tc", "qdisc", "del", "dev", "nvra", "root"])  # frees the waiting frames
    later = [udp_frame(100 + i) for i in range(5)]
    assert a.send_batch(later) == 5
    assert [f.data for f in receive(b, 6)] == [frames[0], *later]


def test_refused_send_takes_the_slots_back(link: Callable[..., Port]) -> None:
    """Link down: the kernel leaves the slots; they are counted and the ring stays in step."""
    a, b = link(RingPort, "nvra", tx_frames=8), link(RingPort, "nvrb")
    ns: str = link.ns  # type: ignore[attr-defined]
    netns.ip("link", "set", "nvra", "down", netns=ns)
    assert a.send_batch([udp_frame(i) for i in range(5)]) == 0
    assert (a.counters.tx_dropped, a.counters.tx_errors) == (5, 5)
    netns.link_up("nvra", netns=ns)
    later = [udp_frame(100 + i) for i in range(20)]  # wraps the 8-slot ring twice
    for chunk in (later[:7], later[7:14], later[14:]):
        assert a.send_batch(chunk) == len(chunk)
    assert [f.data for f in receive(b, 20)] == later
    back = [udp_frame(200 + i) for i in range(3)]  # and the flapped port still receives
    assert b.send_batch(back) == 3
    assert [f.data for f in receive(a, 3)] == back


def test_rx_ring_overflow_is_counted(link: Callable[..., Port]) -> None:
    a, b = link(RingPort, "nvra"), link(RingPort, "nvrb", rx_frames=8)
    assert a.send_batch([udp_frame(i) for i in range(20)]) == 20
    assert len(receive(b, 8)) == 8
    assert b.counters.rx_dropped == 0  # not known until a frame after the loss says so
    assert a.send_batch([udp_frame(99)]) == 1
    assert [f.data for f in receive(b, 1)] == [udp_frame(99)]
    assert (b.counters.rx_packets, b.counters.rx_dropped) == (9, 12)


def test_frames_bigger_than_a_slot_without_a_copy_are_dropped(link: Callable[..., Port]) -> None:
    """Super-frames come whole through the socket queue while it has room, else cut and dropped."""
    a, b = link(RingPort, "nvra"), link(RingPort, "nvrb", rcvbuf=4096)
    frames = [tcp_super_frame(20000) for _ in range(3)]
    assert a.send_batch(frames) == 3
    got = receive(b, 1)
    time.sleep(0.1)
    got += ours(b.recv_batch(64))
    assert [f.data for f in got] == [frames[0].data]
    assert b.counters.drops[DropReason.MTU_EXCEEDED] == 2
    assert b.counters.rx_dropped == 2


def test_jumbo_link_gets_bigger_slots(link: Callable[..., Port]) -> None:
    ns: str = link.ns  # type: ignore[attr-defined]
    for ifname in ("nvra", "nvrb"):
        netns.set_mtu(ifname, 9000, netns=ns)
    a, b = link(RingPort, "nvra"), link(RingPort, "nvrb")
    assert isinstance(a, RingPort)
    assert a.slot == 16384  # 256 + 128 slots: 6 MB a port
    frames = [udp_frame(i, size) for i, size in enumerate((64, 4000, 9014, 9018, 9019))]
    assert a.send_batch(frames) == 4  # room for a VLAN tag, as the kernel allows, no more
    assert a.counters.drops[DropReason.MTU_EXCEEDED] == 1
    assert [f.data for f in receive(b, 4)] == frames[:4]


def test_close_releases_the_mapping(link: Callable[..., Port]) -> None:
    port = link(RingPort, "nvra")
    assert isinstance(port, RingPort)
    inode = os.fstat(port.fileno()).st_ino

    def mapped() -> bool:
        with open("/proc/self/maps") as maps:
            return any(f"socket:[{inode}]" in line or f" {inode} " in line for line in maps)

    assert mapped()
    assert port.ring_bytes == (256 + 128) * 2048  # MTU 1500: 2 KB slots, 768 KB a port
    port.close()
    assert not mapped()
    assert port.fileno() == -1
    port.close()  # idempotent
    assert port.send_batch([udp_frame(1)]) == 0
    assert port.counters.drops[DropReason.PORT_DOWN] == 1
    with pytest.raises(OSError):
        port.recv_batch()


def test_a_head_out_of_step_with_the_kernel_finds_its_frames_again(
    link: Callable[..., Port],
) -> None:
    """Seen in a lab under RX overflow with super-frames mixed in: the kernel's slot and
    ours differed, epoll kept reporting frames and the port received nothing more."""
    a, b = link(RingPort, "nvra"), link(RingPort, "nvrb", rx_frames=8)
    assert isinstance(b, RingPort)
    assert a.send_batch([udp_frame(1)]) == 1
    assert [f.data for f in receive(b, 1)] == [udp_frame(1)]
    b._rx_head = (b._rx_head + 5) % 8  # out of step on purpose
    assert a.send_batch([udp_frame(2), udp_frame(3)]) == 2
    assert [f.data for f in receive(b, 2)] == [udp_frame(2), udp_frame(3)]
    assert b.resyncs == 1
