"""Issue 3 acceptance: the reference pipeline against Scapy, byte for byte.

Each scenario sends a Scapy-built frame into a logical port of the cloud in
``conftest.py`` (made through the real API, compiled, translated as an agent
does, run with the real conntrack on an in-memory store) and compares the
frame that comes out with one Scapy builds from scratch, checksums included.
One conntrack per test: replies find the connections earlier packets opened.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import pairwise

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from netvirt.compiler.build.dhcp import server_mac
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.pipeline import Verdict
from pipeline.conftest import (
    BROADCAST,
    DNS_SERVER,
    LB_PORT,
    MEMBER_PORT,
    OUTSIDE_IP,
    VIP,
    Net,
    World,
    gateway_ip,
    mac_str,
)

Frame = Callable[..., Packet]
MASQUERADE_PORTS = range(1024, 65536)


def tcp(
    eth: tuple[str, str],
    ip: tuple[str, str],
    ports: tuple[int, int],
    flags: str = "S",
    ttl: int = 64,
) -> Packet:
    """A TCP segment with Scapy's defaults (ip.id 1, window 8192): what a test sends and
    what it expects differ only in the arguments given."""
    return (
        Ether(src=eth[0], dst=eth[1])
        / IP(src=ip[0], dst=ip[1], ttl=ttl)
        / TCP(sport=ports[0], dport=ports[1], flags=flags)
    )


def udp(eth: tuple[str, str], ip: tuple[str, str], ports: tuple[int, int], ttl: int = 64) -> Packet:
    return (
        Ether(src=eth[0], dst=eth[1])
        / IP(src=ip[0], dst=ip[1], ttl=ttl)
        / UDP(sport=ports[0], dport=ports[1])
        / b"payload bytes"
    )


def echo(eth: tuple[str, str], ip: tuple[str, str], kind: int = 8, ttl: int = 64) -> Packet:
    return (
        Ether(src=eth[0], dst=eth[1])
        / IP(src=ip[0], dst=ip[1], ttl=ttl)
        / ICMP(type=kind, id=0x1234, seq=7)
        / b"ping data"
    )


def datapaths_visited(verdict: Verdict) -> set[int]:
    assert verdict.trace is not None, "send with trace=True"
    return {event.datapath for event in verdict.trace}


# ---------------------------------------------------------------- 1. same subnet


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_same_subnet_frames_are_delivered_unchanged(world: World, net: Net, proto: str) -> None:
    w = world
    eth, ip = (w.mac("vm1"), w.mac("vm2")), (w.ip("vm1"), w.ip("vm2"))
    back_eth, back_ip = (eth[1], eth[0]), (ip[1], ip[0])
    if proto == "tcp":
        there, back = tcp(eth, ip, (40000, 5000)), tcp(back_eth, back_ip, (5000, 40000), "SA")
    elif proto == "udp":
        there, back = udp(eth, ip, (40000, 53)), udp(back_eth, back_ip, (53, 40000))
    else:
        there, back = echo(eth, ip), echo(back_eth, back_ip, kind=0)
    assert net.only(net.send("vm1", there)) == ("vm2", bytes(there))
    assert net.only(net.send("vm2", back)) == ("vm1", bytes(back))


# ---------------------------------------------------------------- 2. routed


@pytest.mark.parametrize("proto", ["tcp", "udp", "icmp"])
def test_routed_between_subnets_rewrites_macs_and_ttl(world: World, net: Net, proto: str) -> None:
    w = world
    ip, back_ip = (w.ip("vm1"), w.ip("vm3")), (w.ip("vm3"), w.ip("vm1"))
    sent_eth, out_eth = (w.mac("vm1"), w.mac("r1-web")), (w.mac("r1-db"), w.mac("vm3"))
    reply_eth, back_eth = (w.mac("vm3"), w.mac("r1-db")), (w.mac("r1-web"), w.mac("vm1"))
    frames: dict[str, tuple[Frame, tuple[object, ...], tuple[object, ...]]] = {
        "tcp": (tcp, ((40000, 5000),), ((5000, 40000), "SA")),
        "udp": (udp, ((40000, 5000),), ((5000, 40000),)),
        "icmp": (echo, (), (0,)),
    }
    make, there, back = frames[proto]
    sent = make(sent_eth, ip, *there)
    port, out = net.only(net.send("vm1", sent))
    assert (port, out) == ("vm3", bytes(make(out_eth, ip, *there, ttl=63)))
    reply = make(reply_eth, back_ip, *back)
    port, out = net.only(net.send("vm3", reply))
    assert (port, out) == ("vm1", bytes(make(back_eth, back_ip, *back, ttl=63)))


# ---------------------------------------------------------------- 3. tenant isolation


def test_overlapping_address_resolves_to_own_tenant(world: World, net: Net) -> None:
    """10.0.0.10 is alice's vm1 and bob's bob-vm: alice's ARP gets vm1's MAC."""
    w = world
    assert w.ip("vm1") == w.ip("bob-vm")
    ask = Ether(src=w.mac("vm2"), dst=BROADCAST) / ARP(
        op=1, hwsrc=w.mac("vm2"), psrc=w.ip("vm2"), pdst=w.ip("vm1")
    )
    answer = Ether(src=w.mac("vm1"), dst=w.mac("vm2")) / ARP(
        op=2, hwsrc=w.mac("vm1"), psrc=w.ip("vm1"), hwdst=w.mac("vm2"), pdst=w.ip("vm2")
    )
    assert net.only(net.send("vm2", ask)) == ("vm2", bytes(answer))


@pytest.mark.parametrize("sender", ["vm2", "vm3"])
def test_alice_never_reaches_bobs_vm_with_the_same_address(
    world: World, net: Net, sender: str
) -> None:
    w = world
    gateway = {"vm2": w.mac("vm1"), "vm3": w.mac("r1-db")}[sender]
    frame = tcp((w.mac(sender), gateway), (w.ip(sender), "10.0.0.10"), (40000, 22))
    verdict = net.send(sender, frame, trace=True)
    assert net.delivered(verdict) == ["vm1"]
    assert datapaths_visited(verdict) <= w.datapaths_of("alice")


def test_frame_to_bobs_mac_stays_in_alices_topology(world: World, net: Net) -> None:
    """Even addressed to bob's VM's MAC and IP, the frame floods only alice's switch."""
    w = world
    frame = tcp((w.mac("vm2"), w.mac("bob-vm")), (w.ip("vm2"), w.ip("bob-vm")), (40000, 22))
    verdict = net.send("vm2", frame, trace=True)
    assert "bob-vm" not in net.delivered(verdict)
    assert all(e.datapath in w.datapaths_of("alice") for e in verdict.outputs)
    assert datapaths_visited(verdict) <= w.datapaths_of("alice")


def test_bob_never_reaches_alices_vm(world: World, net: Net) -> None:
    w = world
    frame = tcp((w.mac("bob-vm"), w.mac("vm2")), (w.ip("bob-vm"), w.ip("vm2")), (40000, 22))
    verdict = net.send("bob-vm", frame, trace=True)
    assert verdict.outputs == []
    assert datapaths_visited(verdict) <= w.datapaths_of("bob")


# ---------------------------------------------------------------- 4. security groups


def test_security_group_rule_allows(world: World, net: Net) -> None:
    w = world
    syn = tcp((w.mac("vm2"), w.mac("www")), (w.ip("vm2"), w.ip("www")), (40000, 80))
    assert net.only(net.send("vm2", syn)) == ("www", bytes(syn))


def test_security_group_denies_what_no_rule_allows(world: World, net: Net) -> None:
    w = world
    syn = tcp((w.mac("vm2"), w.mac("www")), (w.ip("vm2"), w.ip("www")), (40000, 22))
    verdict = net.send("vm2", syn)
    assert (verdict.outputs, verdict.drops) == ([], [DropReason.ACL_DENY])


def test_stateful_return_passes_without_an_ingress_rule(world: World, net: Net) -> None:
    """vm2's default group admits only its own members; www is not one, yet the reply
    of vm2's connection to www gets through, and a new connection from www does not."""
    w = world
    eth, ip = (w.mac("vm2"), w.mac("www")), (w.ip("vm2"), w.ip("www"))
    back_eth, back_ip = (eth[1], eth[0]), (ip[1], ip[0])
    assert net.delivered(net.send("vm2", tcp(eth, ip, (40000, 80)))) == ["www"]
    reply = tcp(back_eth, back_ip, (80, 40000), "SA")
    assert net.only(net.send("www", reply)) == ("vm2", bytes(reply))
    ack = tcp(eth, ip, (40000, 80), "A")
    assert net.only(net.send("vm2", ack)) == ("www", bytes(ack))
    reverse = tcp(back_eth, back_ip, (40001, 40000))
    verdict = net.send("www", reverse)
    assert (verdict.outputs, verdict.drops) == ([], [DropReason.ACL_DENY])


def test_reply_without_connection_is_not_let_in(world: World, net: Net) -> None:
    """The control of the stateful test: the same SYN-ACK with no connection behind it
    is invalid to conntrack (as in Linux: a SYN-ACK opens nothing) and dropped so."""
    w = world
    reply = tcp((w.mac("www"), w.mac("vm2")), (w.ip("www"), w.ip("vm2")), (80, 40000), "SA")
    verdict = net.send("www", reply)
    assert verdict.outputs == []
    assert verdict.drops == [DropReason.INVALID_CT_STATE]


# ---------------------------------------------------------------- 5. floating IP


def test_floating_ip_inbound_is_dnatted_and_replies_snatted(world: World, net: Net) -> None:
    w = world
    inbound = tcp((w.mac("outside"), w.mac("r1-gw")), (OUTSIDE_IP, w.fip), (50000, 22))
    port, out = net.only(net.send("outside", inbound))
    expected = tcp((w.mac("r1-web"), w.mac("vm1")), (OUTSIDE_IP, w.ip("vm1")), (50000, 22), ttl=63)
    assert (port, out) == ("vm1", bytes(expected))
    reply = tcp((w.mac("vm1"), w.mac("r1-web")), (w.ip("vm1"), OUTSIDE_IP), (22, 50000), "SA")
    port, out = net.only(net.send("vm1", reply))
    expected = tcp(
        (w.mac("r1-gw"), w.mac("outside")), (w.fip, OUTSIDE_IP), (22, 50000), "SA", ttl=63
    )
    assert (port, out) == ("outside", bytes(expected))


def test_floating_ip_outbound_is_snatted_and_replies_return(world: World, net: Net) -> None:
    w = world
    out_frame = tcp((w.mac("vm1"), w.mac("r1-web")), (w.ip("vm1"), OUTSIDE_IP), (41000, 443))
    port, out = net.only(net.send("vm1", out_frame))
    expected = tcp((w.mac("r1-gw"), w.mac("outside")), (w.fip, OUTSIDE_IP), (41000, 443), ttl=63)
    assert (port, out) == ("outside", bytes(expected))
    reply = tcp((w.mac("outside"), w.mac("r1-gw")), (OUTSIDE_IP, w.fip), (443, 41000), "SA")
    port, out = net.only(net.send("outside", reply))
    expected = tcp(
        (w.mac("r1-web"), w.mac("vm1")), (OUTSIDE_IP, w.ip("vm1")), (443, 41000), "SA", ttl=63
    )
    assert (port, out) == ("vm1", bytes(expected))


def test_floating_ip_unsolicited_port_is_still_firewalled(world: World, net: Net) -> None:
    """DNAT does not bypass the VM's security groups: vm1 admits only tcp 22 from outside."""
    w = world
    inbound = tcp((w.mac("outside"), w.mac("r1-gw")), (OUTSIDE_IP, w.fip), (50000, 3306))
    verdict = net.send("outside", inbound)
    assert (verdict.outputs, verdict.drops) == ([], [DropReason.ACL_DENY])


# ---------------------------------------------------------------- 6. masquerade


def test_gateway_snat_masquerades_and_reverses(world: World, net: Net) -> None:
    w = world
    gw = gateway_ip(w)
    sent = udp((w.mac("vm3"), w.mac("r1-db")), (w.ip("vm3"), OUTSIDE_IP), (40000, 53))
    port, out = net.only(net.send("vm3", sent))
    sport = Ether(out)[UDP].sport
    assert sport in MASQUERADE_PORTS
    expected = udp((w.mac("r1-gw"), w.mac("outside")), (gw, OUTSIDE_IP), (sport, 53), ttl=63)
    assert (port, out) == ("outside", bytes(expected))
    reply = udp((w.mac("outside"), w.mac("r1-gw")), (OUTSIDE_IP, gw), (53, sport))
    port, out = net.only(net.send("outside", reply))
    expected = udp((w.mac("r1-db"), w.mac("vm3")), (OUTSIDE_IP, w.ip("vm3")), (53, 40000), ttl=63)
    assert (port, out) == ("vm3", bytes(expected))


def test_masquerade_keeps_two_vms_with_one_source_port_apart(world: World, net: Net) -> None:
    """vm2 and vm3 (no floating IPs) talk to the same server from the same port: they
    need distinct external ports, and each reply goes back to its own VM."""
    w = world
    gw = gateway_ip(w)
    hops = {"vm2": "r1-web", "vm3": "r1-db"}
    external: dict[str, int] = {}
    for vm, hop in hops.items():
        syn = tcp((w.mac(vm), w.mac(hop)), (w.ip(vm), OUTSIDE_IP), (40000, 80))
        port, out = net.only(net.send(vm, syn))
        external[vm] = Ether(out)[TCP].sport
        expected = tcp(
            (w.mac("r1-gw"), w.mac("outside")), (gw, OUTSIDE_IP), (external[vm], 80), ttl=63
        )
        assert (port, out) == ("outside", bytes(expected))
    assert external["vm2"] != external["vm3"]
    assert set(external.values()) <= set(MASQUERADE_PORTS)
    for vm, hop in hops.items():
        reply = tcp((w.mac("outside"), w.mac("r1-gw")), (OUTSIDE_IP, gw), (80, external[vm]), "SA")
        port, out = net.only(net.send("outside", reply))
        back = tcp((w.mac(hop), w.mac(vm)), (OUTSIDE_IP, w.ip(vm)), (80, 40000), "SA", ttl=63)
        assert (port, out) == (vm, bytes(back))


def test_unsolicited_traffic_to_the_gateway_address_is_dropped(world: World, net: Net) -> None:
    w = world
    probe = tcp((w.mac("outside"), w.mac("r1-gw")), (OUTSIDE_IP, gateway_ip(w)), (50000, 22))
    verdict = net.send("outside", probe)
    assert verdict.outputs == []
    assert verdict.drops == [DropReason.EXPLICIT_DROP]


# ---------------------------------------------------------------- 7. load balancer


def test_load_balancer_spreads_connections_and_reverses_replies(world: World, net: Net) -> None:
    w = world
    members = {w.ip("m1"): "m1", w.ip("m2"): "m2"}
    chosen: dict[int, str] = {}
    for sport in range(41000, 41006):
        syn = tcp((w.mac("vm2"), w.mac("vip")), (w.ip("vm2"), VIP), (sport, LB_PORT))
        port, out = net.only(net.send("vm2", syn))
        member = members[Ether(out)[IP].dst]
        expected = tcp(
            (w.mac("vm2"), w.mac(member)), (w.ip("vm2"), w.ip(member)), (sport, MEMBER_PORT)
        )
        assert (port, out) == (member, bytes(expected))
        chosen[sport] = member
    order = [chosen[s] for s in sorted(chosen)]
    assert Counter(order) == {"m1": 3, "m2": 3}
    assert all(a != b for a, b in pairwise(order))  # round robin
    for sport, member in chosen.items():
        reply = tcp(
            (w.mac(member), w.mac("vm2")), (w.ip(member), w.ip("vm2")), (MEMBER_PORT, sport), "SA"
        )
        port, out = net.only(net.send(member, reply))
        expected = tcp((w.mac(member), w.mac("vm2")), (VIP, w.ip("vm2")), (LB_PORT, sport), "SA")
        assert (port, out) == ("vm2", bytes(expected))


def test_load_balancer_keeps_a_connection_on_its_member(world: World, net: Net) -> None:
    w = world
    first = tcp((w.mac("vm2"), w.mac("vip")), (w.ip("vm2"), VIP), (42000, LB_PORT))
    member, _ = net.only(net.send("vm2", first))
    reply = tcp(
        (w.mac(member), w.mac("vm2")), (w.ip(member), w.ip("vm2")), (MEMBER_PORT, 42000), "SA"
    )
    assert net.delivered(net.send(member, reply)) == ["vm2"]
    for _ in range(3):  # the handshake's ACK and data: same member, no new choice
        ack = tcp((w.mac("vm2"), w.mac("vip")), (w.ip("vm2"), VIP), (42000, LB_PORT), "A")
        port, out = net.only(net.send("vm2", ack))
        expected = tcp(
            (w.mac("vm2"), w.mac(member)), (w.ip("vm2"), w.ip(member)), (42000, MEMBER_PORT), "A"
        )
        assert (port, out) == (member, bytes(expected))


# ---------------------------------------------------------------- 8. ARP


@pytest.mark.parametrize(
    ("asker", "target"),
    [("vm2", "vm1"), ("vm2", "r1-web"), ("vm3", "r1-db"), ("vm2", "vip")],
)
def test_arp_request_is_answered_byte_exact(
    world: World, net: Net, asker: str, target: str
) -> None:
    w = world
    ask = Ether(src=w.mac(asker), dst=BROADCAST) / ARP(
        op=1, hwsrc=w.mac(asker), psrc=w.ip(asker), pdst=w.ip(target)
    )
    answer = Ether(src=w.mac(target), dst=w.mac(asker)) / ARP(
        op=2, hwsrc=w.mac(target), psrc=w.ip(target), hwdst=w.mac(asker), pdst=w.ip(asker)
    )
    assert net.only(net.send(asker, ask)) == (asker, bytes(answer))


def test_arp_for_floating_ip_is_answered_with_the_gateway_mac(world: World, net: Net) -> None:
    w = world
    ask = Ether(src=w.mac("outside"), dst=BROADCAST) / ARP(
        op=1, hwsrc=w.mac("outside"), psrc=OUTSIDE_IP, pdst=w.fip
    )
    answer = Ether(src=w.mac("r1-gw"), dst=w.mac("outside")) / ARP(
        op=2, hwsrc=w.mac("r1-gw"), psrc=w.fip, hwdst=w.mac("outside"), pdst=OUTSIDE_IP
    )
    assert net.only(net.send("outside", ask)) == ("outside", bytes(answer))


# ---------------------------------------------------------------- 9. DHCP


def _dhcp_request(world: World, options: list[object]) -> Packet:
    mac = world.mac("vm2")
    return (
        Ether(src=mac, dst=BROADCAST)
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")), xid=0x5EED)
        / DHCP(options=options)
    )


def _dhcp_reply(world: World, kind: str, dst: tuple[str, str], options: list[object]) -> Packet:
    mac = world.mac("vm2")
    server = mac_str(server_mac(world.binding("vm2").datapath))
    yiaddr = world.ip("vm2") if kind != "nak" else "0.0.0.0"
    siaddr = "10.0.0.1" if kind != "nak" else "0.0.0.0"
    return (
        Ether(src=server, dst=dst[0])
        / IP(src="10.0.0.1", dst=dst[1], id=0, flags=0, ttl=64)
        / UDP(sport=67, dport=68)
        / BOOTP(
            op=2,
            chaddr=bytes.fromhex(mac.replace(":", "")),
            xid=0x5EED,
            yiaddr=yiaddr,
            siaddr=siaddr,
        )
        / DHCP(options=[("message-type", kind), *options, "end"])
    )


def _lease_options() -> list[object]:
    """What the subnet says, in the codec's order (RFC 2132 codes 1, 3, 6, 26, 51, 54)."""
    return [
        ("subnet_mask", "255.255.255.0"),
        ("router", "10.0.0.1"),
        ("name_server", DNS_SERVER),
        ("interface-mtu", 1442),
        ("lease_time", 43200),
        ("server_id", "10.0.0.1"),
    ]


def test_dhcp_discover_gets_an_offer(world: World, net: Net) -> None:
    discover = _dhcp_request(world, [("message-type", "discover"), "end"])
    to_client = (world.mac("vm2"), world.ip("vm2"))
    offer = _dhcp_reply(world, "offer", to_client, _lease_options())
    assert net.only(net.send("vm2", discover)) == ("vm2", bytes(offer))


def test_dhcp_request_gets_an_ack(world: World, net: Net) -> None:
    request = _dhcp_request(
        world,
        [
            ("message-type", "request"),
            ("requested_addr", world.ip("vm2")),
            ("server_id", "10.0.0.1"),
            "end",
        ],
    )
    to_client = (world.mac("vm2"), world.ip("vm2"))
    ack = _dhcp_reply(world, "ack", to_client, _lease_options())
    assert net.only(net.send("vm2", request)) == ("vm2", bytes(ack))


def test_dhcp_request_for_another_address_gets_a_nak(world: World, net: Net) -> None:
    request = _dhcp_request(
        world, [("message-type", "request"), ("requested_addr", "10.0.0.99"), "end"]
    )
    nak = _dhcp_reply(world, "nak", (BROADCAST, "255.255.255.255"), [("server_id", "10.0.0.1")])
    assert net.only(net.send("vm2", request)) == ("vm2", bytes(nak))


# ---------------------------------------------------------------- 10. echo to the router


@pytest.mark.parametrize("router_ip", ["10.0.0.1", "10.0.1.1", "gateway"])
def test_echo_to_a_router_address_is_answered(world: World, net: Net, router_ip: str) -> None:
    """Answered with ip.ttl 255, then routed back like any packet (TTL 254 on arrival)."""
    w = world
    target = gateway_ip(w) if router_ip == "gateway" else router_ip
    request = echo((w.mac("vm1"), w.mac("r1-web")), (w.ip("vm1"), target))
    reply = echo((w.mac("r1-web"), w.mac("vm1")), (target, w.ip("vm1")), kind=0, ttl=254)
    assert net.only(net.send("vm1", request)) == ("vm1", bytes(reply))


# ---------------------------------------------------------------- 11. TTL expiry


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ttl_expiry_returns_time_exceeded_quoting_the_packet(
    world: World, net: Net, proto: str
) -> None:
    w = world
    eth, ip = (w.mac("vm1"), w.mac("r1-web")), (w.ip("vm1"), w.ip("vm3"))
    sent = tcp(eth, ip, (40000, 80), ttl=1) if proto == "tcp" else udp(eth, ip, (40000, 53), 1)
    error = (
        Ether(src=w.mac("r1-web"), dst=w.mac("vm1"))
        / IP(src="10.0.0.1", dst=w.ip("vm1"), ttl=255, id=0, flags=0)
        / ICMP(type=11, code=0)
        / IPerror(bytes(sent[IP]))
    )
    verdict = net.send("vm1", sent)
    assert net.only(verdict) == ("vm1", bytes(error))
    assert "vm3" not in net.delivered(verdict)
