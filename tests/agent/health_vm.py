"""A fake VM for health-check tests, built with Scapy: it answers the checker's frames the
way a Linux guest would, and checks that every frame it gets is well formed.

Knobs: ``ping`` (answers echo requests), ``listening`` (TCP ports with a server; others
answer SYNs with RST), ``blackhole`` (answers nothing at all), ``http_code`` (the status
a server port answers with), ``resolve`` (ARP/ND for the sender's address before the
first reply, as a guest does for an on-link peer it has not talked to yet).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw
from scapy.pton_ntop import inet_pton
from scapy.utils6 import in6_getnsma, in6_getnsmac


def checksums_ok(frame: bytes) -> bool:
    """The IP and L4 checksums Scapy computes equal the ones in the frame."""
    pkt = Ether(frame)
    again = pkt.copy()
    layer = again
    while layer:
        for name in ("chksum", "cksum"):
            if name in layer.fields:
                delattr(layer, name)
        layer = layer.payload
    return bytes(again) == bytes(pkt)


@dataclass
class FakeVM:
    mac: str
    ip: str
    ping: bool = True
    listening: set[int] = field(default_factory=lambda: {80})
    blackhole: bool = False
    http_code: int = 200
    resolve: bool = False
    isn: int = 1000
    neighbors: dict[str, str] = field(default_factory=dict)  # ip → mac
    held: list[Packet] = field(default_factory=list)  # replies waiting for resolution
    conns: dict[int, int] = field(default_factory=dict)  # peer port → next seq we send
    requests: list[bytes] = field(default_factory=list)
    resets: list[int] = field(default_factory=list)  # peer ports that sent RST
    bad_frames: int = 0
    got: int = 0

    @property
    def v6(self) -> bool:
        return ":" in self.ip

    def handle(self, frame: bytes) -> list[bytes]:
        """The frames the VM sends in answer to ``frame``."""
        self.got += 1
        if not checksums_ok(frame):
            self.bad_frames += 1
            return []
        pkt = Ether(frame)
        if self.blackhole:
            return []
        if ARP in pkt:
            return self._arp(pkt)
        if ICMPv6ND_NA in pkt:
            return self._learned(pkt[IPv6].src, pkt[ICMPv6NDOptDstLLAddr].lladdr)
        ip = pkt[IPv6] if IPv6 in pkt else pkt[IP]
        if pkt.dst != self.mac or ip.dst != self.ip:
            return []
        reply = self._answer(pkt, ip)
        if reply is None:
            return []
        return self._send(ip.src, reply)

    # -- neighbor resolution ---------------------------------------------------------------

    def _send(self, dst_ip: str, l3: Packet) -> list[bytes]:
        mac = self.neighbors.get(dst_ip)
        if mac is not None:
            return [bytes(Ether(src=self.mac, dst=mac) / l3)]
        if not self.resolve:
            self.neighbors[dst_ip] = "02:00:00:00:00:fe"  # "via the gateway": any MAC
            return self._send(dst_ip, l3)
        self.held.append(l3)
        return [self.solicit(dst_ip)]

    def solicit(self, target: str) -> bytes:
        if not self.v6:
            arp = ARP(op=1, hwsrc=self.mac, psrc=self.ip, pdst=target)
            return bytes(Ether(src=self.mac, dst="ff:ff:ff:ff:ff:ff") / arp)
        group = socket.inet_ntop(socket.AF_INET6, in6_getnsma(inet_pton(socket.AF_INET6, target)))
        ns = ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=self.mac)
        return bytes(
            Ether(src=self.mac, dst=in6_getnsmac(inet_pton(socket.AF_INET6, group)))
            / IPv6(src=self.ip, dst=group, hlim=255)
            / ns
        )

    def _arp(self, pkt: Packet) -> list[bytes]:
        arp = pkt[ARP]
        if arp.op == 2 and arp.pdst == self.ip:
            return self._learned(arp.psrc, arp.hwsrc)
        return []

    def _learned(self, ip: str, mac: str) -> list[bytes]:
        self.neighbors[ip] = mac
        held, self.held = self.held, []
        return [bytes(Ether(src=self.mac, dst=mac) / l3) for l3 in held]

    # -- services ----------------------------------------------------------------------------

    def _answer(self, pkt: Packet, ip: Packet) -> Packet | None:
        if ICMP in pkt and pkt[ICMP].type == 8:
            if not self.ping:
                return None
            echo = pkt[ICMP]
            return (
                IP(src=self.ip, dst=ip.src)
                / ICMP(type=0, id=echo.id, seq=echo.seq)
                / Raw(bytes(echo.payload))
            )
        if ICMPv6EchoRequest in pkt:
            if not self.ping:
                return None
            echo = pkt[ICMPv6EchoRequest]
            return IPv6(src=self.ip, dst=ip.src) / ICMPv6EchoReply(
                id=echo.id, seq=echo.seq, data=echo.data
            )
        if TCP in pkt:
            return self._tcp(ip, pkt[TCP])
        return None

    def _l3(self, ip: Packet) -> Packet:
        return IPv6(src=self.ip, dst=ip.src) if self.v6 else IP(src=self.ip, dst=ip.src)

    def _tcp(self, ip: Packet, tcp: Packet) -> Packet | None:
        flags = str(tcp.flags)
        if "R" in flags:
            self.resets.append(tcp.sport)
            self.conns.pop(tcp.sport, None)
            return None
        if flags == "S":
            if tcp.dport not in self.listening:
                return self._l3(ip) / TCP(
                    sport=tcp.dport, dport=tcp.sport, flags="RA", seq=0, ack=tcp.seq + 1
                )
            self.conns[tcp.sport] = self.isn + 1
            return self._l3(ip) / TCP(
                sport=tcp.dport, dport=tcp.sport, flags="SA", seq=self.isn, ack=tcp.seq + 1
            )
        data = bytes(tcp.payload)
        if tcp.sport not in self.conns or not data:
            return None
        self.requests.append(data)
        body = b"HTTP/1.0 %d Whatever\r\nContent-Length: 2\r\n\r\nok" % self.http_code
        seq = self.conns.pop(tcp.sport)
        return (
            self._l3(ip)
            / TCP(sport=tcp.dport, dport=tcp.sport, flags="FPA", seq=seq, ack=tcp.seq + len(data))
            / Raw(body)
        )
