"""Geneve and VXLAN between two host namespaces on a veth underlay, and VMs across them."""

from __future__ import annotations

import select
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from netvirt.dataplane import netns
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.headers.checksum import ones_sum, pseudo_header
from netvirt.dataplane.ports.base import GSO_TCPV4, VNET_F_NEEDS_CSUM, Frame, VnetHdr
from netvirt.dataplane.ports.tap import TapPort
from netvirt.dataplane.tunnels import GeneveTunnel, TunnelPacket, UdpTunnel, VxlanTunnel
from system.netio import Forwarder, tcp_transfer

pytestmark = pytest.mark.system

IP_A, IP_B = "10.9.3.1", "10.9.3.2"
INNER = bytes(
    Ether(src="02:00:00:00:0a:01", dst="02:00:00:00:0b:01")
    / IP(src="10.0.0.1", dst="10.0.0.2")
    / Raw(b"inner" * 10)
)


def underlay(scope: netns.NetnsScope, mtu: int) -> tuple[str, str]:
    """Two host namespaces joined by a veth with ``mtu``, addressed IP_A and IP_B."""
    host_a, host_b = scope.create("hosta"), scope.create("hostb")
    netns.create_veth("ul0", "ul0", netns_a=host_a, netns_b=host_b, mtu=mtu)
    netns.add_address("ul0", f"{IP_A}/24", netns=host_a)
    netns.add_address("ul0", f"{IP_B}/24", netns=host_b)
    return host_a, host_b


@pytest.fixture(params=[GeneveTunnel, VxlanTunnel], ids=["geneve", "vxlan"])
def tunnels(
    request: pytest.FixtureRequest, scope: netns.NetnsScope
) -> Iterator[tuple[str, UdpTunnel, UdpTunnel]]:
    kind: type[UdpTunnel] = request.param
    host_a, host_b = underlay(scope, 1500)
    a = netns.run_in_netns(host_a, kind, IP_A)
    b = netns.run_in_netns(host_b, kind, IP_B)
    try:
        yield host_a, a, b
    finally:
        a.close()
        b.close()


def receive(tunnel: UdpTunnel, count: int, timeout: float = 3.0) -> list[TunnelPacket]:
    got: list[TunnelPacket] = []
    while len(got) < count and select.select([tunnel], [], [], timeout)[0]:
        got += tunnel.recv_batch()
    return got


def test_frame_crosses_the_underlay_decoded(tunnels: tuple[str, UdpTunnel, UdpTunnel]) -> None:
    _host_a, a, b = tunnels
    assert a.send(IP_B, 0xABCDE, INNER, 5, 0x8003) == 1
    [packet] = receive(b, 1)
    assert packet.remote == IP_A
    assert packet.vni == 0xABCDE
    assert packet.frame.data == INNER
    if isinstance(b, GeneveTunnel):
        assert (packet.ingress, packet.egress) == (5, 0x8003)
    else:
        assert (packet.ingress, packet.egress) == (None, None)


def _send_garbage(payloads: list[bytes], port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for payload in payloads:
            sock.sendto(payload, (IP_B, port))


def test_malformed_udp_payloads_are_counted(tunnels: tuple[str, UdpTunnel, UdpTunnel]) -> None:
    host_a, a, b = tunnels
    garbage = [b"", b"\x00" * 3, b"\x00" * 64, b"\x08\x00\x00\x00\x00\x00\x01\x00short"]
    netns.run_in_netns(host_a, _send_garbage, garbage, b.port)
    a.send(IP_B, 1, INNER, 1, 2)  # the tunnel still works after the garbage
    assert len(receive(b, 1)) == 1
    drops = b.counters.drops[DropReason.MALFORMED_TUNNEL]
    assert drops == len(garbage)
    assert b.counters.rx_dropped == drops


def _superframe(payload: int) -> Frame:
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(seq=9) / Raw(b"g" * payload)
    raw = bytearray(bytes(pkt))
    seed = ones_sum(b"", pseudo_header(0x0A000001, 0x0A000002, 6, len(raw) - 34, False))
    struct.pack_into("!H", raw, 50, seed)
    return Frame(bytes(raw), VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16))


@pytest.mark.parametrize(("mtu", "datagrams"), [(1500, 23), (9000, 4), (65535, 1)])
def test_superframe_over_geneve_whole_or_segmented(
    scope: netns.NetnsScope, mtu: int, datagrams: int
) -> None:
    host_a, host_b = underlay(scope, mtu)
    a = netns.run_in_netns(host_a, GeneveTunnel, IP_A, underlay_mtu=mtu)
    b = netns.run_in_netns(host_b, GeneveTunnel, IP_B, underlay_mtu=mtu)
    frame = _superframe(32000)
    try:
        assert a.send(IP_B, 7, frame, 1, 2) == datagrams
        packets = receive(b, datagrams)
        assert len(packets) == datagrams
        if datagrams == 1:
            assert packets[0].frame == frame
        elif mtu == 9000:
            assert all(p.frame.is_super for p in packets)
        else:
            data = b"".join(bytes(Ether(p.frame.data)[TCP].payload) for p in packets)
            assert data == b"g" * 32000
    finally:
        a.close()
        b.close()


def _tap_in(vm: str, name: str, addr: str, mtu: int) -> TapPort:
    tap = TapPort(name)
    netns.move_link(tap.name, vm)
    netns.set_mtu(tap.name, mtu, netns=vm)
    netns.add_address(tap.name, addr, netns=vm)
    netns.link_up(tap.name, netns=vm)
    return tap


def _host_side(
    tap: TapPort, tunnel: UdpTunnel, remote: str, seen: Counter[str] | None = None
) -> Forwarder:
    """A one-port host: everything from the VM goes to the remote host and back."""
    seen = Counter() if seen is None else seen

    def up() -> None:
        for frame in tap.recv_batch():
            tunnel.send(remote, 100, frame, 1, 1)

    def down() -> None:
        frames = [packet.frame for packet in tunnel.recv_batch()]
        seen["super"] += sum(frame.is_super for frame in frames)
        tap.send_batch(frames)

    return Forwarder({tap: up, tunnel: down})


@pytest.mark.parametrize(
    ("kind", "underlay_mtu", "vm_mtu"),
    [(GeneveTunnel, 1500, 1400), (VxlanTunnel, 1500, 1400), (GeneveTunnel, 65535, 1500)],
    ids=["geneve-1500", "vxlan-1500", "geneve-jumbo"],
)
def test_vms_talk_across_hosts(
    scope: netns.NetnsScope,
    ifname: Callable[[str], str],
    kind: type[UdpTunnel],
    underlay_mtu: int,
    vm_mtu: int,
) -> None:
    """Ping and TCP between VMs on two hosts; super-frames segmented or carried whole."""
    host_a, host_b = underlay(scope, underlay_mtu)
    vm1, vm2 = scope.create("vm1"), scope.create("vm2")
    a = netns.run_in_netns(host_a, kind, IP_A, underlay_mtu=underlay_mtu)
    b = netns.run_in_netns(host_b, kind, IP_B, underlay_mtu=underlay_mtu)
    taps: list[TapPort] = []
    try:
        taps.append(_tap_in(vm1, ifname("a"), "10.9.4.1/24", vm_mtu))
        taps.append(_tap_in(vm2, ifname("b"), "10.9.4.2/24", vm_mtu))
        seen: Counter[str] = Counter()
        with _host_side(taps[0], a, IP_B, seen), _host_side(taps[1], b, IP_A, seen):
            ping = netns.exec_in(vm1, ["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.9.4.2"])
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert tcp_transfer(vm2, vm1, "10.9.4.2", 4 << 20) == 4 << 20
        assert a.counters.tx_dropped == 0
        # Super-frames cross whole only where the underlay fits them.
        assert (seen["super"] > 0) == (underlay_mtu > 60000)
    finally:
        for tap in taps:
            tap.close()
        a.close()
        b.close()
