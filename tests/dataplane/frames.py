"""A corpus of valid frames built with Scapy, shared by the packet and fuzz tests."""

from __future__ import annotations

from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

VM1 = "fa:16:3e:00:00:01"
VM2 = "fa:16:3e:00:00:02"


def _eth(dst: str = VM2) -> Ether:
    return Ether(dst=dst, src=VM1)


def scapy_corpus() -> dict[str, Packet]:
    """Named Scapy packets covering every layer ``parse_packet`` decodes."""
    ip4 = IP(src="10.0.0.1", dst="10.0.0.2", ttl=63, tos=0x10)
    ip6 = IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=62, tc=0x20)
    return {
        "tcp4_vlan": _eth()
        / Dot1Q(vlan=10, prio=2)
        / ip4
        / TCP(sport=40000, dport=443, flags="S", seq=1, options=[("MSS", 1460), ("NOP", None)] * 1)
        / Raw(b"hello"),
        "udp4": _eth() / ip4 / UDP(sport=5353, dport=53) / Raw(b"query"),
        "udp4_short": _eth() / ip4 / UDP(sport=1, dport=2) / Raw(b"x"),
        "icmp4": _eth() / ip4 / ICMP(type=8, id=7, seq=1) / Raw(b"ping" * 4),
        "ip4_options": _eth()
        / IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x94\x04\x00\x00")
        / UDP(sport=9, dport=9),
        "ip4_first_fragment": _eth()
        / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF", id=5)
        / UDP(sport=7, dport=8, len=100)
        / Raw(b"a" * 16),
        "ip4_later_fragment": _eth()
        / IP(src="10.0.0.1", dst="10.0.0.2", frag=3, proto=17)
        / Raw(b"b" * 24),
        "ip4_gre": _eth() / IP(src="10.0.0.1", dst="10.0.0.2", proto=47) / Raw(b"\x00\x00\x65\x58"),
        "arp_request": Ether(dst="ff:ff:ff:ff:ff:ff", src=VM1)
        / ARP(op=1, hwsrc=VM1, psrc="10.0.0.1", pdst="10.0.0.2"),
        "tcp6_ext": _eth()
        / ip6
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / TCP(sport=1234, dport=22, flags="PA")
        / Raw(b"ssh"),
        "udp6_fragment": _eth()
        / ip6
        / IPv6ExtHdrFragment(m=1, id=1)
        / UDP(sport=1, dport=2)
        / Raw(b"c" * 8),
        "ip6_later_fragment": _eth()
        / ip6
        / IPv6ExtHdrFragment(nh=17, offset=2, id=1)
        / Raw(b"d" * 8),
        "echo6": _eth() / ip6 / ICMPv6EchoRequest(id=3, seq=4, data=b"ping6"),
        "ns": Ether(dst="33:33:ff:00:00:02", src=VM1)
        / IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255)
        / ICMPv6ND_NS(tgt="fe80::2")
        / ICMPv6NDOptSrcLLAddr(lladdr=VM1),
        "na": _eth()
        / IPv6(src="fe80::2", dst="fe80::1", hlim=255)
        / ICMPv6ND_NA(tgt="fe80::2", S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=VM2),
        "ra": Ether(dst="33:33:00:00:00:01", src=VM1)
        / IPv6(src="fe80::1", dst="ff02::1", hlim=255)
        / ICMPv6ND_RA()
        / ICMPv6NDOptPrefixInfo(prefix="2001:db8::", prefixlen=64),
        "geneve": _eth()
        / IP(src="192.168.0.1", dst="192.168.0.2")
        / UDP(sport=50000, dport=6081)
        / GENEVE(vni=5, proto=0x6558)
        / _eth()
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / ICMP(),
        "lldp": Ether(dst="01:80:c2:00:00:0e", src=VM1, type=0x88CC)
        / Raw(b"\x02\x07\x04" + bytes(40)),
        "llc": Ether(dst="01:80:c2:00:00:00", src=VM1, type=38) / Raw(bytes(38)),
    }


CORPUS: dict[str, bytes] = {name: bytes(pkt) for name, pkt in scapy_corpus().items()}
# Senders pad frames below 60 bytes; the padding follows the IP packet.
CORPUS["udp4_padded"] = CORPUS["udp4_short"].ljust(60, b"\0")
