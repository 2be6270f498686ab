"""Ports on real interfaces: AF_PACKET on veths, TAPs with virtio-net offloads."""

from __future__ import annotations

import select
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from netvirt.dataplane import netns
from netvirt.dataplane.ports.afpacket import AfPacketPort
from netvirt.dataplane.ports.base import Port
from netvirt.dataplane.ports.tap import TapPort
from system.netio import Forwarder, tcp_transfer

pytestmark = pytest.mark.system

VM_MAC = "02:00:00:00:09:02"
PEER_MAC = "02:00:00:00:09:01"


def wire(a: Port, b: Port, seen: Counter[str] | None = None) -> Callable[[], int]:
    """Move one batch from ``a`` to ``b``, counting super-frames in ``seen``."""

    def move() -> int:
        frames = a.recv_batch(64)
        if seen is not None:
            seen["frames"] += len(frames)
            seen["super"] += sum(frame.is_super for frame in frames)
        return b.send_batch(frames)

    return move


def bridge(a: Port, b: Port, seen: Counter[str] | None = None) -> Forwarder:
    return Forwarder({a: wire(a, b, seen), b: wire(b, a, seen)})


@pytest.fixture
def veth_pair_hosts(
    scope: netns.NetnsScope,
) -> Iterator[tuple[str, str, AfPacketPort, AfPacketPort]]:
    """vm1 and vm2 each wired by a veth to the "host" namespace, AF_PACKET ports on host ends."""
    host, vm1, vm2 = scope.create("host"), scope.create("vm1"), scope.create("vm2")
    for vm, addr in ((vm1, "10.9.0.1/24"), (vm2, "10.9.0.2/24")):
        netns.create_veth("eth0", f"{vm[-3:]}", netns_a=vm, netns_b=host)
        netns.add_address("eth0", addr, netns=vm)
    ports = [netns.run_in_netns(host, AfPacketPort, name) for name in ("vm1", "vm2")]
    try:
        yield vm1, vm2, ports[0], ports[1]
    finally:
        for port in ports:
            port.close()


def test_ping_through_afpacket_forwarder(
    veth_pair_hosts: tuple[str, str, AfPacketPort, AfPacketPort],
) -> None:
    vm1, _vm2, p1, p2 = veth_pair_hosts
    with bridge(p1, p2):
        done = netns.exec_in(vm1, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.9.0.2"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 received" in done.stdout
    assert p1.counters.rx_packets >= 3
    assert p2.counters.tx_packets >= 3


def test_afpacket_ignores_outgoing_frames(
    scope: netns.NetnsScope,
    veth_pair_hosts: tuple[str, str, AfPacketPort, AfPacketPort],
) -> None:
    """Frames the host side transmits on the interface are not read back as input."""
    vm1, _vm2, p1, _p2 = veth_pair_hosts
    host = scope.name("host")
    outgoing = netns.run_in_netns(host, AfPacketPort, "vm1", vnet_hdr=False)
    incoming = netns.run_in_netns(vm1, AfPacketPort, "eth0", vnet_hdr=False)
    probe = Ether(dst="ff:ff:ff:ff:ff:ff", src=PEER_MAC, type=0x88B5)
    try:
        assert outgoing.send_batch([bytes(probe / Raw(b"from-host" * 8))]) == 1
        assert incoming.send_batch([bytes(probe / Raw(b"from-vm" * 8))]) == 1
        time.sleep(0.1)
        payloads = {bytes(Ether(f.data).payload)[:9] for f in p1.recv_batch(256)}
        assert b"from-vmfr" in payloads
        assert b"from-host" not in payloads
    finally:
        outgoing.close()
        incoming.close()


def test_tcp_through_afpacket_forwarder_keeps_super_frames(
    veth_pair_hosts: tuple[str, str, AfPacketPort, AfPacketPort],
) -> None:
    vm1, vm2, p1, p2 = veth_pair_hosts
    seen: Counter[str] = Counter()
    with bridge(p1, p2, seen):
        assert tcp_transfer(vm2, vm1, "10.9.0.2", 4 << 20) == 4 << 20
    assert seen["super"] > 0  # the veth peer used TSO and the frames crossed whole


@pytest.fixture
def tap_vm(scope: netns.NetnsScope, ifname: Callable[[str], str]) -> Iterator[tuple[str, TapPort]]:
    """A TAP made here, then moved into namespace vm with 10.9.1.2/24 and a static neighbor."""
    vm = scope.create("vm")
    tap = TapPort(ifname("t"))
    try:
        netns.move_link(tap.name, vm)
        netns.ip("link", "set", tap.name, "address", VM_MAC, netns=vm)
        netns.add_address(tap.name, "10.9.1.2/24", netns=vm)
        netns.link_up(tap.name, netns=vm)
        netns.ip("neigh", "add", "10.9.1.1", "lladdr", PEER_MAC, "dev", tap.name, netns=vm)
        yield vm, tap
    finally:
        tap.close()


def test_tap_answers_icmp_echo(tap_vm: tuple[str, TapPort]) -> None:
    _vm, tap = tap_vm
    request = (
        Ether(dst=VM_MAC, src=PEER_MAC)
        / IP(src="10.9.1.1", dst="10.9.1.2")
        / ICMP(type=8, id=0x4242, seq=7)
        / Raw(b"netvirt-echo" * 8)
    )
    assert tap.send_batch([bytes(request)]) == 1
    deadline = time.monotonic() + 3
    reply = None
    while reply is None and time.monotonic() < deadline:
        select.select([tap], [], [], 0.2)
        for frame in tap.recv_batch():
            pkt = Ether(frame.data)
            if ICMP in pkt and pkt[ICMP].type == 0:
                reply = pkt
    assert reply is not None, "no echo reply from the kernel behind the TAP"
    assert (reply[IP].src, reply[IP].dst) == ("10.9.1.2", "10.9.1.1")
    assert (reply[ICMP].id, reply[ICMP].seq) == (0x4242, 7)
    assert bytes(reply[ICMP].payload) == b"netvirt-echo" * 8
    assert reply.dst == PEER_MAC
    assert tap.counters.tx_packets == 1


@pytest.mark.parametrize("receiver_offload", [True, False], ids=["gso-whole", "sw-segment"])
def test_tcp_between_taps(
    scope: netns.NetnsScope, ifname: Callable[[str], str], receiver_offload: bool
) -> None:
    """TCP super-frames from vm1's TAP reach vm2 whole, or segmented in software."""
    vm1, vm2 = scope.create("vm1"), scope.create("vm2")
    taps = [TapPort(ifname("a")), TapPort(ifname("b"), vnet_hdr=receiver_offload)]
    try:
        for tap, vm, addr in zip(taps, (vm1, vm2), ("10.9.2.1/24", "10.9.2.2/24"), strict=True):
            netns.move_link(tap.name, vm)
            netns.add_address(tap.name, addr, netns=vm)
            netns.link_up(tap.name, netns=vm)
        seen: Counter[str] = Counter()
        with bridge(taps[0], taps[1], seen):
            assert tcp_transfer(vm2, vm1, "10.9.2.2", 8 << 20) == 8 << 20
        assert seen["super"] > 0
        forwarded, written = taps[0].counters.rx_packets, taps[1].counters.tx_packets
        if receiver_offload:
            assert written == forwarded  # every super-frame handed over whole
        else:
            assert written > forwarded  # super-frames cut into wire segments
    finally:
        for tap in taps:
            tap.close()
