"""The datapath flow cache changes nothing but speed: differential tests.

Two labs of the same cloud (``conftest.py``: three hosts, a router, security
groups, conntrack) get the same frames; one has the flow cache on every
host's forwarder. Every frame must leave the same VMs' ports with the same
bytes in both, and the same drops must be counted — through connection setup,
established traffic (served by the cache), teardown and what follows it.
"""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from agent.conftest import ADDRESSES, Cloud, Lab, make_lab
from netvirt.dataplane.fastpath import FlowCache


@pytest.fixture
def labs(cloud: Cloud) -> tuple[Lab, Lab]:
    plain, cached = make_lab(cloud), make_lab(cloud)
    for agent in cached.agents.values():
        agent.local.flow_cache = FlowCache()
    return plain, cached


def hits(lab: Lab) -> int:
    return sum(a.local.flow_cache.counters.hits for a in lab.agents.values() if a.local.flow_cache)


def drops(lab: Lab) -> dict[str, dict[object, int]]:
    return {h: dict(a.local.drops) for h, a in lab.agents.items()}


def send_both(labs: tuple[Lab, Lab], vm: str, frame: bytes) -> list[tuple[str, list[bytes]]]:
    """Send ``frame`` from ``vm`` in both labs; assert equal outputs; return them."""
    results = []
    for lab in labs:
        lab.send(vm, frame)
        results.append(sorted((name, tap.take()) for name, tap in lab.taps.items()))
    assert results[0] == results[1]
    assert drops(labs[0]) == drops(labs[1])
    return [r for r in results[0] if r[1]]


def tcp(lab: Lab, src: str, dst: str, sport: int, dport: int, flags: str, seq: int) -> bytes:
    c = lab.cloud
    dst_mac = c.mac(_gateway(src)) if _routed(src, dst) else c.mac(dst)
    packet = (
        Ether(src=c.mac(src), dst=dst_mac)
        / IP(src=ADDRESSES[src], dst=ADDRESSES[dst], id=seq & 0xFFFF)
        / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=seq + 7)
        / (b"d" * (seq % 50))
    )
    return bytes(packet)


def _routed(src: str, dst: str) -> bool:
    return (src == "vm3") != (dst == "vm3")  # vm3 is on net2, the others on net1


def _gateway(src: str) -> str:
    return "r1-net2" if src == "vm3" else "r1-net1"


def test_a_connection_through_security_groups_is_identical_with_the_cache(
    labs: tuple[Lab, Lab],
) -> None:
    plain = labs[0]

    def both(src: str, dst: str, sport: int, dport: int, flags: str, seq: int) -> list[object]:
        return send_both(labs, src, tcp(plain, src, dst, sport, dport, flags, seq))

    assert both("vm1", "web", 4000, 80, "S", 1)  # allowed in by web's group
    assert both("web", "vm1", 80, 4000, "SA", 2)  # the reply, by vm1's conntrack
    for seq in range(3, 40):
        assert both("vm1", "web", 4000, 80, "A" if seq % 3 else "PA", seq)
        assert both("web", "vm1", 80, 4000, "A", seq)
    assert hits(labs[1]) > 40  # established traffic was served by the cache
    assert both("vm1", "web", 4000, 80, "FA", 50)
    for seq in range(51, 55):  # after the FIN: conntrack sees these again
        both("web", "vm1", 80, 4000, "A", seq)
        both("vm1", "web", 4000, 80, "A", seq)
    both("web", "vm1", 80, 4000, "RA", 60)
    for seq in range(61, 64):  # after the reset: whatever conntrack says, both agree
        both("vm1", "web", 4000, 80, "A", seq)
    assert not both("vm1", "web", 4001, 22, "S", 1)  # not allowed in: dropped, both
    assert not both("vm1", "web", 4001, 22, "A", 2)


def test_routed_echo_and_udp_are_identical_with_the_cache(labs: tuple[Lab, Lab]) -> None:
    c = labs[0].cloud
    for seq in range(20):
        request = (
            Ether(src=c.mac("vm1"), dst=c.mac("r1-net1"))
            / IP(src=ADDRESSES["vm1"], dst=ADDRESSES["vm3"], id=seq)
            / ICMP(type=8, id=77, seq=seq)
            / b"ping"
        )
        assert send_both(labs, "vm1", bytes(request))
        reply = (
            Ether(src=c.mac("vm3"), dst=c.mac("r1-net2"))
            / IP(src=ADDRESSES["vm3"], dst=ADDRESSES["vm1"], id=seq)
            / ICMP(type=0, id=77, seq=seq)
            / b"ping"
        )
        assert send_both(labs, "vm3", bytes(reply))
        datagram = (
            Ether(src=c.mac("vm1"), dst=c.mac("vm2"))
            / IP(src=ADDRESSES["vm1"], dst=ADDRESSES["vm2"])
            / UDP(sport=5000, dport=6000)
            / (b"u" * seq)
        )
        send_both(labs, "vm1", bytes(datagram))
    ttl_one = (
        Ether(src=c.mac("vm1"), dst=c.mac("r1-net1"))
        / IP(src=ADDRESSES["vm1"], dst=ADDRESSES["vm3"], ttl=1)
        / ICMP(type=8, id=77, seq=99)
    )
    assert send_both(labs, "vm1", bytes(ttl_one))  # an ICMP time exceeded, never cached
    assert hits(labs[1]) >= 30


def test_random_traffic_is_identical_with_the_cache(labs: tuple[Lab, Lab]) -> None:
    """Flags, ports, directions and TTLs at random over a few flows (seeded: reproducible)."""
    rng = random.Random(20261121)
    plain = labs[0]
    pairs = [("vm1", "web"), ("web", "vm1"), ("vm1", "vm2"), ("vm2", "vm1"), ("vm1", "vm3")]
    pairs += [("vm3", "vm1")]
    for step in range(400):
        src, dst = rng.choice(pairs)
        ports = rng.choice([(4000, 80), (80, 4000), (5000, 22), (22, 5000)])
        flags = rng.choice(["S", "SA", "A", "A", "A", "PA", "FA", "RA", "R"])
        frame = bytearray(tcp(plain, src, dst, *ports, flags, step))
        if rng.random() < 0.1:
            frame[22] = rng.choice([0, 1, 2])  # TTL: expiry and the last hop
        send_both(labs, src, bytes(frame))
    assert hits(labs[1]) > 0
