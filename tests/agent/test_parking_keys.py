"""What keeps its order behind parked work: connections for TCP/UDP/SCTP, host pairs
for other IP traffic, nothing for non-IP frames."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from netvirt.agent.parking import Parking, conversation
from netvirt.dataplane.ports.base import Frame

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
ips = st.tuples(st.integers(1, 254), st.integers(1, 254)).map(lambda t: f"10.0.{t[0]}.{t[1]}")
ports = st.integers(1, 65535)


@given(a=ips, b=ips, sport=ports, dport=ports, tcp=st.booleans(), options=st.booleans())
def test_both_directions_of_a_connection_share_one_conversation(
    a: str, b: str, sport: int, dport: int, tcp: bool, options: bool
) -> None:
    l4 = (lambda s, d: TCP(sport=s, dport=d)) if tcp else (lambda s, d: UDP(sport=s, dport=d))
    opts = {"options": [b"\x01\x01\x01\x00"]} if options else {}
    there = bytes(ETH / IP(src=a, dst=b, **opts) / l4(sport, dport))
    back = bytes(ETH / IP(src=b, dst=a, **opts) / l4(dport, sport))
    assert conversation(there) == conversation(back) is not None
    other = bytes(ETH / IP(src=a, dst=b, **opts) / l4(sport ^ 1 or 2, dport))
    assert conversation(other) != conversation(there)


def test_other_ip_traffic_is_ordered_per_host_pair() -> None:
    ping = bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(id=1))
    other_ping = bytes(ETH / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(id=2, type=0))
    assert conversation(ping) == conversation(other_ping) is not None
    fragment = bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2", frag=10) / b"12345678")
    assert conversation(fragment) == conversation(ping)
    six = bytes(ETH / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2))
    six_back = bytes(ETH / IPv6(src="fd00::2", dst="fd00::1") / UDP(sport=2, dport=1))
    assert conversation(six) == conversation(six_back) is not None


def test_non_ip_and_tagged_frames_have_no_conversation() -> None:
    assert conversation(bytes(ETH / ARP())) is None
    assert conversation(bytes(ETH / Dot1Q(vlan=5) / IP() / UDP())) is None
    assert conversation(bytes(ETH / IP())[:30]) is None


def test_release_gives_held_packets_back_in_arrival_order() -> None:
    parking = Parking(limit=3)
    a, b = (b"a", b"b"), (b"c", b"d")
    parking.park([a, b])
    for i, pair in enumerate([a, b, a, b]):
        assert parking.hold(pair, Frame(bytes([i])), iface="x")
    assert [h.frame.data for h in parking.release([b, a])] == [b"\0", b"\1", b"\2", b"\3"]
    assert parking.held == {}
    parking.park([a])
    assert all(parking.hold(a, Frame(b"x")) for _ in range(3))
    assert not parking.hold(a, Frame(b"x"))
    assert parking.status()["overflows"] == 1
