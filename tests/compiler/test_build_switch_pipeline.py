"""Switch flows end to end: compile an NB snapshot, translate it as an agent does, and
run Scapy-built frames through the reference pipeline, comparing output bytes.

Conntrack here is a small reference model (the real one lives in dataplane/nf):
connections keyed by (zone, 5-tuple), committed by ``ct_commit``/``ct_lb``, a
packet matching a committed tuple is ``est``, its reverse ``est|rpl``.
"""

from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from compiler.conftest import NBBuilder
from netvirt.compiler.compile import compile_nb
from netvirt.compiler.translate import all_rules, topology
from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.classifier import Classifier
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import CT_EST, CT_NEW, CT_RPL, F
from netvirt.dataplane.pipeline import Pipeline, Verdict
from netvirt.southbound.model import SBState

Obj = dict[str, Any]
BROADCAST = "ff:ff:ff:ff:ff:ff"


class RefConntrack:
    """Just enough conntrack for policy tests (no timeouts, no TCP states, no NAT reversal)."""

    def __init__(self) -> None:
        self.committed: set[tuple[int, tuple[int, ...]]] = set()
        self.unnat: dict[tuple[int, tuple[int, ...]], tuple[int, int]] = {}

    @staticmethod
    def _tuple(key: list[int]) -> tuple[int, ...]:
        v6 = key[F("eth.type")] == 0x86DD
        src, dst = (F("ip6.src"), F("ip6.dst")) if v6 else (F("ip4.src"), F("ip4.dst"))
        return (key[src], key[dst], key[F("ip.proto")], key[F("tp.src")], key[F("tp.dst")])

    @staticmethod
    def _reverse(t: tuple[int, ...]) -> tuple[int, ...]:
        return (t[1], t[0], t[2], t[4], t[3])

    def ct_next(self, zone: int, key: list[int], now: float, related: object = None) -> int:
        t = self._tuple(key)
        if (zone, t) in self.committed:
            return CT_EST
        if (zone, self._reverse(t)) in self.committed:
            return CT_EST | CT_RPL
        return CT_NEW

    def ct_commit(self, zone: int, key: list[int], now: float, mark: int | None) -> None:
        self.committed.add((zone, self._tuple(key)))

    def ct_nat(self, zone: int, key: list[int], now: float, action: A.CtDnat | A.CtSnat) -> None:
        """Only the reverse DNAT of load-balanced replies (``ct_dnat;``)."""
        original = self.unnat.get((zone, self._tuple(key)))
        if isinstance(action, A.CtDnat) and action.ip is None and original is not None:
            key[F("ip4.src")], key[F("tp.src")] = original

    def ct_lb(self, zone: int, key: list[int], now: float, action: A.CtLb) -> bool:
        if not action.backends:
            return False
        vip = (key[F("ip4.dst")], key[F("tp.dst")])
        backend = action.backends[0]
        key[F("ip4.dst")] = backend.ip
        if backend.port is not None:
            key[F("tp.dst")] = backend.port
        forward = self._tuple(key)
        self.committed.add((zone, forward))
        self.unnat[(zone, self._reverse(forward))] = vip
        return True


class Net:
    """A compiled snapshot with a pipeline to send frames from its ports."""

    def __init__(self, nbb: NBBuilder) -> None:
        self.nb = nbb.snapshot()
        self.sb: SBState = compile_nb(self.nb)
        classifier = Classifier()
        for rule in all_rules(self.sb):
            classifier.add(rule)
        self.conntrack = RefConntrack()
        self.pipeline = Pipeline(classifier, topology(self.sb), self.conntrack)
        self.names = {p["id"]: p["name"] for p in self.nb.ports}

    def send(self, port: Obj, frame: Any) -> Verdict:
        binding = self.sb.ports[port["id"]]
        return self.pipeline.process(bytes(frame), binding.datapath, binding.key, 0.0, trace=True)

    def entered_router(self, verdict: Verdict) -> bool:
        """Did the packet cross a patch port into a router (which may then drop it)?"""
        routers = {k for k, dp in self.sb.datapaths.items() if dp.kind == "router"}
        return any(e.kind == "enter" and e.datapath in routers for e in verdict.trace or [])

    def delivered(self, verdict: Verdict) -> list[str]:
        return sorted(self.names[e.port_name] for e in verdict.outputs)


@pytest.fixture
def lan(nbb: NBBuilder) -> dict[str, Obj]:
    """vm1 (web: tcp 80 in), vm2 (default group), open (no port security), a router port."""
    net = nbb.network("net1", 101)
    v4 = nbb.subnet(net, "sub4", "10.0.0.0/24", dns_nameservers=["10.0.0.2"])
    v6 = nbb.subnet(net, "sub6", "2001:db8::/64")
    default = nbb.default_group()
    web = nbb.security_group("web")
    nbb.rule(web, "ingress", protocol="tcp", port_range_min=80, port_range_max=80)
    gold = nbb.qos_policy("gold", dscp=46)
    return {
        "net": net,
        "vm1": nbb.port(net, "vm1", [(v4, "10.0.0.5"), (v6, "2001:db8::5")], sgs=[web]),
        "vm2": nbb.port(net, "vm2", [(v4, "10.0.0.6")], sgs=[default], qos_policy_id=gold["id"]),
        "open": nbb.port(net, "open", [(v4, "10.0.0.7")], port_security_enabled=False),
        "gw": nbb.router_interface(nbb.router("r1"), net, v4),
    }


def _eth(src: Obj, dst: Obj | str) -> Ether:
    target = dst if isinstance(dst, str) else dst["mac_address"]
    return Ether(src=src["mac_address"], dst=target)


def _ip(port: Obj) -> str:
    return str(port["fixed_ips"][0]["ip_address"])


def test_arp_request_is_answered_in_place(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    net = Net(nbb)
    vm1, vm2 = lan["vm1"], lan["vm2"]
    request = _eth(vm2, BROADCAST) / ARP(
        op=1, hwsrc=vm2["mac_address"], psrc=_ip(vm2), pdst=_ip(vm1)
    )
    verdict = net.send(vm2, request)
    assert net.delivered(verdict) == ["vm2"]
    reply = _eth(vm1, vm2) / ARP(
        op=2, hwsrc=vm1["mac_address"], psrc=_ip(vm1), hwdst=vm2["mac_address"], pdst=_ip(vm2)
    )
    assert verdict.outputs[0].frame == bytes(reply)


def test_router_port_address_is_answered(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    net = Net(nbb)
    vm2, gw = lan["vm2"], lan["gw"]
    request = _eth(vm2, BROADCAST) / ARP(
        op=1, hwsrc=vm2["mac_address"], psrc=_ip(vm2), pdst=_ip(gw)
    )
    verdict = net.send(vm2, request)
    assert ARP(verdict.outputs[0].frame[14:]).hwsrc == gw["mac_address"]


def test_neighbor_solicitation_is_answered(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    net = Net(nbb)
    vm1, vm2 = lan["vm1"], lan["open"]
    solicit = (
        _eth(vm2, "33:33:ff:00:00:05")
        / IPv6(src="fe80::1", dst="ff02::1:ff00:5", hlim=255)
        / ICMPv6ND_NS(tgt="2001:db8::5")
        / ICMPv6NDOptSrcLLAddr(lladdr=vm2["mac_address"])
    )
    verdict = net.send(vm2, solicit)
    assert net.delivered(verdict) == ["open"]
    advert = Ether(verdict.outputs[0].frame)
    assert advert[ICMPv6ND_NA].tgt == "2001:db8::5"
    assert advert[Ether].src == vm1["mac_address"]


@pytest.mark.parametrize(
    ("frame_of", "reason"),
    [
        (
            lambda vm, other: (
                Ether(src="02:00:00:00:00:99", dst=other["mac_address"])
                / IP(src=_ip(vm), dst=_ip(other))
            ),
            DropReason.PORT_SECURITY_MAC,
        ),
        (
            lambda vm, other: _eth(vm, other) / IP(src="10.0.0.99", dst=_ip(other)),
            DropReason.PORT_SECURITY_IP,
        ),
        (
            lambda vm, other: (
                _eth(vm, BROADCAST)
                / ARP(op=2, hwsrc=vm["mac_address"], psrc=_ip(other), pdst=_ip(other))
            ),
            DropReason.ARP_SPOOF,
        ),
        (
            lambda vm, other: (
                _eth(vm, BROADCAST)
                / ARP(op=1, hwsrc="02:00:00:00:00:99", psrc=_ip(vm), pdst=_ip(other))
            ),
            DropReason.ARP_SPOOF,
        ),
    ],
)
def test_spoofing_is_dropped(
    nbb: NBBuilder, lan: dict[str, Obj], frame_of: Any, reason: DropReason
) -> None:
    net = Net(nbb)
    verdict = net.send(lan["vm2"], frame_of(lan["vm2"], lan["vm1"]))
    assert verdict.outputs == []
    assert verdict.drops == [reason]


def test_port_without_port_security_may_spoof(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    net = Net(nbb)
    frame = Ether(src="02:00:00:00:00:99", dst=lan["gw"]["mac_address"]) / IP(
        src="192.0.2.1", dst="10.0.0.1"
    )
    verdict = net.send(lan["open"], frame)
    assert DropReason.PORT_SECURITY_MAC not in verdict.drops
    assert DropReason.PORT_SECURITY_IP not in verdict.drops


def test_security_group_allows_listed_port_and_its_replies(
    nbb: NBBuilder, lan: dict[str, Obj]
) -> None:
    net = Net(nbb)
    vm1, vm2 = lan["vm1"], lan["vm2"]
    syn = _eth(vm2, vm1) / IP(src=_ip(vm2), dst=_ip(vm1)) / TCP(sport=40000, dport=80, flags="S")
    verdict = net.send(vm2, syn)
    assert net.delivered(verdict) == ["vm1"]
    marked = _eth(vm2, vm1) / IP(src=_ip(vm2), dst=_ip(vm1), tos=46 << 2) / syn[TCP]
    assert verdict.outputs[0].frame == bytes(marked)  # vm2's QoS policy marks DSCP 46
    reply = _eth(vm1, vm2) / IP(src=_ip(vm1), dst=_ip(vm2)) / TCP(sport=80, dport=40000, flags="SA")
    assert net.delivered(net.send(vm1, reply)) == ["vm2"]


def test_security_group_denies_other_ports_and_new_outbound(
    nbb: NBBuilder, lan: dict[str, Obj]
) -> None:
    net = Net(nbb)
    vm1, vm2 = lan["vm1"], lan["vm2"]
    ssh = _eth(vm2, vm1) / IP(src=_ip(vm2), dst=_ip(vm1)) / TCP(sport=40000, dport=22)
    assert net.send(vm2, ssh).drops == [DropReason.ACL_DENY]
    # vm1's only group has no egress rule: it may not open connections
    out = _eth(vm1, vm2) / IP(src=_ip(vm1), dst=_ip(vm2)) / TCP(sport=40001, dport=80)
    assert net.send(vm1, out).drops == [DropReason.ACL_DENY]


def test_unsecured_port_traffic_skips_the_firewall(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    net = Net(nbb)
    frame = _eth(lan["open"], lan["vm2"]) / IP(src="10.0.0.7", dst="10.0.0.6") / UDP(dport=9)
    # vm2's default group admits only its own members: "open" is not one
    assert net.send(lan["open"], frame).drops == [DropReason.ACL_DENY]
    back = _eth(lan["vm2"], lan["open"]) / IP(src="10.0.0.6", dst="10.0.0.7") / UDP(dport=9)
    assert net.delivered(net.send(lan["vm2"], back)) == ["open"]


def test_qos_marks_dscp(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    net = Net(nbb)
    frame = _eth(lan["vm2"], lan["open"]) / IP(src="10.0.0.6", dst="10.0.0.7") / ICMP()
    verdict = net.send(lan["vm2"], frame)
    assert IP(verdict.outputs[0].frame[14:]).tos >> 2 == 46


def test_broadcast_reaches_every_other_port(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    net = Net(nbb)
    frame = _eth(lan["open"], BROADCAST) / ARP(op=1, psrc="10.0.0.7", pdst="10.0.0.200")
    verdict = net.send(lan["open"], frame)
    assert net.delivered(verdict) == ["vm1", "vm2"]
    assert net.entered_router(verdict)


def test_unknown_unicast_reaches_only_unsecured_ports(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    net = Net(nbb)
    frame = Ether(src=lan["vm2"]["mac_address"], dst="02:00:00:00:00:42") / ARP(
        op=2, hwsrc=lan["vm2"]["mac_address"], psrc="10.0.0.6"
    )
    verdict = net.send(lan["vm2"], frame)
    assert net.delivered(verdict) == ["open"]
    assert net.entered_router(verdict)  # router ports have no port security either
    assert verdict.drops.count(DropReason.PORT_SECURITY_MAC) == 1  # vm1


def _discover(port: Obj, kind: str) -> Any:
    mac = bytes.fromhex(port["mac_address"].replace(":", ""))
    return (
        _eth(port, BROADCAST)
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=mac, xid=0x1234)
        / DHCP(options=[("message-type", kind), "end"])
    )


def test_dhcp_discover_gets_an_offer(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    net = Net(nbb)
    verdict = net.send(lan["vm2"], _discover(lan["vm2"], "discover"))
    assert net.delivered(verdict) == ["vm2"]
    offer = Ether(verdict.outputs[0].frame)
    assert offer[BOOTP].yiaddr == "10.0.0.6"
    assert offer[Ether].src == "0a:58:00:00:00:65"
    options = {o[0]: o[1:] for o in offer[DHCP].options if isinstance(o, tuple)}
    assert options["message-type"] == (2,)
    assert options["router"] == ("10.0.0.1",)
    assert options["name_server"] == ("10.0.0.2",)
    assert options["lease_time"] == (43200,)
    assert options["server_id"] == ("10.0.0.1",)


def test_load_balancer_round_trip(nbb: NBBuilder, lan: dict[str, Obj]) -> None:
    """vm2 (default group) → VIP:80 → member "open":8080, and the reply comes from the VIP."""
    subnet = nbb.snapshot().subnets[0]
    balancer = nbb.loadbalancer("lb1", lan["net"], subnet, "10.0.0.100")
    pool = nbb.pool(nbb.listener(balancer, "http", "HTTP", 80), "pool")
    nbb.member(pool, "10.0.0.7", 8080)
    net = Net(nbb)
    vip_mac = next(p for p in net.nb.ports if p["name"] == "vip-lb1")["mac_address"]
    frame = (
        Ether(src=lan["vm2"]["mac_address"], dst=vip_mac)
        / IP(src="10.0.0.6", dst="10.0.0.100")
        / TCP(sport=40000, dport=80)
    )
    verdict = net.send(lan["vm2"], frame)
    assert net.delivered(verdict) == ["open"]
    out = Ether(verdict.outputs[0].frame)
    assert (out[Ether].dst, out[IP].dst, out[TCP].dport) == (
        lan["open"]["mac_address"],
        "10.0.0.7",
        8080,
    )
    reply = (
        _eth(lan["open"], lan["vm2"])
        / IP(src="10.0.0.7", dst="10.0.0.6")
        / TCP(sport=8080, dport=40000, flags="SA")
    )
    back = net.send(lan["open"], reply)
    assert net.delivered(back) == ["vm2"]  # vm2's firewall sees the reply as established
    answer = Ether(back.outputs[0].frame)
    assert (answer[IP].src, answer[TCP].sport) == ("10.0.0.100", 80)
