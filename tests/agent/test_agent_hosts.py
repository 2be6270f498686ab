"""Agents on three hosts forward real frames between VMs, byte for byte.

The cloud of ``conftest.py`` is made through the API and compiled; each host's
agent computes its own flows from the fake SB, and the underlay carries Geneve
(or VXLAN) payloads between hosts with the real codecs. Scapy builds what a VM
sends and what the other VM must receive.
"""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from agent.conftest import ADDRESSES, HOSTS, PLACEMENT, Cloud, Lab, make_lab
from netvirt.agent.physical import Encap, encapsulate
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.headers.geneve import GeneveHeader, ports


def echo(src: tuple[str, str], dst: tuple[str, str], ttl: int = 64, kind: int = 8) -> Packet:
    return (
        Ether(src=src[0], dst=dst[0])
        / IP(src=src[1], dst=dst[1], ttl=ttl)
        / ICMP(type=kind, id=0x4242, seq=1)
        / b"over the overlay"
    )


def vm(cloud: Cloud, name: str) -> tuple[str, str]:
    return cloud.mac(name), ADDRESSES[name]


def key_of(lab: Lab, name: str) -> tuple[int, int]:
    pb = lab.sb.current.ports[lab.cloud.ids[name]]
    return pb.datapath, pb.key


def tunnel_headers(lab: Lab) -> list[tuple[str, int, tuple[int, int] | None]]:
    """(destination IP, VNI, Geneve ports option) of every payload the underlay carried."""
    out = []
    for ip, _encap, payload in lab.underlay.delivered:
        header, _ = GeneveHeader.parse(payload)
        out.append((ip, header.vni, ports(header)))
    return out


def test_same_subnet_echo_crosses_hosts_byte_exact(lab: Lab) -> None:
    c = lab.cloud
    request = echo(vm(c, "vm1"), vm(c, "vm2"))
    lab.send("vm1", bytes(request))
    assert lab.taps["vm2"].take() == [bytes(request)]
    dp, vm1_key = key_of(lab, "vm1")
    _, vm2_key = key_of(lab, "vm2")
    assert tunnel_headers(lab) == [(HOSTS["hostB"], dp, (vm1_key, vm2_key))]
    reply = echo(vm(c, "vm2"), vm(c, "vm1"), kind=0)
    lab.send("vm2", bytes(reply))
    assert lab.taps["vm1"].take() == [bytes(reply)]
    assert not lab.taps["web"].sent
    assert not lab.taps["vm3"].sent


def test_routed_echo_crosses_hosts_with_router_rewrite(lab: Lab) -> None:
    c = lab.cloud
    gw1, gw2 = c.mac("r1-net1"), c.mac("r1-net2")
    request = echo(vm(c, "vm1"), (gw1, ADDRESSES["vm3"]))
    lab.send("vm1", bytes(request))
    expected = echo((gw2, ADDRESSES["vm1"]), vm(c, "vm3"), ttl=63)
    assert lab.taps["vm3"].take() == [bytes(expected)]
    net2, vm3_key = key_of(lab, "vm3")
    _, router_port = key_of(lab, "r1-net2")
    assert tunnel_headers(lab) == [(HOSTS["hostB"], net2, (router_port, vm3_key))]
    # the reply is routed on hostB, the sending host, and arrives on net1 at hostA
    reply = echo(vm(c, "vm3"), (gw2, ADDRESSES["vm1"]), kind=0)
    lab.send("vm3", bytes(reply))
    back = echo((gw1, ADDRESSES["vm3"]), vm(c, "vm1"), ttl=63, kind=0)
    assert lab.taps["vm1"].take() == [bytes(back)]


def test_migrated_port_is_followed_after_one_step(lab: Lab) -> None:
    c = lab.cloud
    c.place("vm2", "hostC")
    lab.agents["hostC"].plug(lab.taps["vm2"], c.ids["vm2"])
    lab.publish()
    lab.agents["hostA"].step()
    request = echo(vm(c, "vm1"), vm(c, "vm2"))
    lab.agents["hostA"].handle_frame("tap-vm1", bytes(request))
    assert [ip for ip, _, _ in lab.underlay.in_flight] == [HOSTS["hostC"]]
    lab.underlay.in_flight.clear()
    lab.agents["hostB"].unplug("tap-vm2")
    lab.settle()
    lab.send("vm1", bytes(request))
    assert lab.taps["vm2"].take() == [bytes(request)]
    assert (c.ids["vm2"], "hostC", True) in lab.sb.port_reports
    assert (c.ids["vm2"], "hostB", False) not in lab.sb.port_reports  # hostC's claim stands


def test_port_moving_to_the_sending_host_stops_tunnelling(lab: Lab) -> None:
    c = lab.cloud
    c.place("vm2", "hostA")
    lab.agents["hostB"].unplug("tap-vm2")
    lab.agents["hostA"].plug(lab.taps["vm2"], c.ids["vm2"])
    lab.sync()
    request = echo(vm(c, "vm1"), vm(c, "vm2"))
    lab.send("vm1", bytes(request))
    assert lab.taps["vm2"].take() == [bytes(request)]
    assert lab.underlay.delivered == []


def test_security_groups_are_enforced_on_the_receiving_host(lab: Lab) -> None:
    c = lab.cloud
    host_a, host_b = lab.agents["hostA"], lab.agents["hostB"]
    lab.send("vm1", bytes(echo(vm(c, "vm1"), vm(c, "web"))))
    assert lab.taps["web"].take() == []
    assert host_a.tunnel_counters.tx_packets == 1  # the sender let it out ...
    assert host_b.port_counters["tap-web"].drops == {DropReason.ACL_DENY: 1}  # ... B said no
    syn = (
        Ether(src=c.mac("vm1"), dst=c.mac("web"))
        / IP(src=ADDRESSES["vm1"], dst=ADDRESSES["web"])
        / TCP(sport=40000, dport=80, flags="S")
    )
    lab.send("vm1", bytes(syn))
    assert lab.taps["web"].take() == [bytes(syn)]
    synack = (
        Ether(src=c.mac("web"), dst=c.mac("vm1"))
        / IP(src=ADDRESSES["web"], dst=ADDRESSES["vm1"])
        / TCP(sport=80, dport=40000, flags="SA")
    )
    lab.send("web", bytes(synack))
    assert lab.taps["vm1"].take() == [bytes(synack)]  # stateful return on hostA's conntrack


def test_counters_per_port_tunnel_and_drop_reason(lab: Lab) -> None:
    c = lab.cloud
    host_a, host_b = lab.agents["hostA"], lab.agents["hostB"]
    request = bytes(echo(vm(c, "vm1"), vm(c, "vm2")))
    lab.send("vm1", request)
    lab.send("vm1", bytes(echo(("02:00:00:00:00:99", ADDRESSES["vm1"]), vm(c, "vm2"))))
    host_a.handle_frame("tap-nobody", request)
    counters = host_a.counters()
    assert counters["ports"]["tap-vm1"] == {  # type: ignore[index]
        "rx_packets": 2,
        "rx_bytes": 2 * len(request),
        "tx_packets": 0,
        "tx_bytes": 0,
        "tx_errors": 0,
        "drops": {"port_security_mac": 1},
    }
    assert counters["drops"] == {"port_security_mac": 1, "unknown_port": 1}
    tunnel = host_a.tunnel_counters
    assert (tunnel.tx_packets, tunnel.tx_bytes) == (1, len(request))
    rx_b = host_b.tunnel_counters
    assert rx_b.rx_packets == 1
    assert rx_b.rx_bytes > len(request)
    assert host_b.port_counters["tap-vm2"].tx_packets == 1
    assert counters["generation"] == {"sb": lab.sb.generation, "installed": lab.sb.generation}


def test_ports_are_claimed_and_the_installed_generation_reported(lab: Lab) -> None:
    c = lab.cloud
    claimed = {(port, host) for port, host, up in lab.sb.port_reports if up}
    assert claimed == {(c.ids[vm], host) for vm, host in PLACEMENT.items()}
    assert lab.sb.installed == dict.fromkeys(HOSTS, lab.sb.generation)
    assert set(lab.sb.chassis) == set(HOSTS)
    lab.agents["hostB"].unplug("tap-web")
    lab.agents["hostB"].step()
    assert lab.sb.port_reports[-1] == (c.ids["web"], "hostB", False)


def test_vxlan_hosts_find_the_port_by_mac(cloud: Cloud) -> None:
    lab = make_lab(cloud, "vxlan")
    c = lab.cloud
    request = echo(vm(c, "vm1"), vm(c, "vm2"))
    lab.send("vm1", bytes(request))
    assert lab.taps["vm2"].take() == [bytes(request)]
    assert not lab.taps["web"].sent
    routed = echo(vm(c, "vm1"), (c.mac("r1-net1"), ADDRESSES["vm3"]))
    lab.send("vm1", bytes(routed))
    expected = echo((c.mac("r1-net2"), ADDRESSES["vm1"]), vm(c, "vm3"), ttl=63)
    assert lab.taps["vm3"].take() == [bytes(expected)]
    lab.send("vm1", bytes(echo(vm(c, "vm1"), vm(c, "web"))))
    assert lab.agents["hostB"].port_counters["tap-web"].drops == {DropReason.ACL_DENY: 1}


def test_broadcast_reaches_every_remote_port_once(cloud: Cloud) -> None:
    """Geneve sends one copy per remote port; VXLAN one per host, flooded by the receiver."""
    cases: list[tuple[Encap, int]] = [("geneve", 2), ("vxlan", 1)]
    for encap, copies in cases:
        lab = make_lab(cloud, encap)
        c = lab.cloud
        who_has = Ether(src=c.mac("vm1"), dst="ff:ff:ff:ff:ff:ff") / ARP(
            hwsrc=c.mac("vm1"), psrc=ADDRESSES["vm1"], pdst="10.0.0.99"
        )
        lab.send("vm1", bytes(who_has))
        assert len(lab.underlay.delivered) == copies, encap
        assert lab.taps["vm2"].take() == [bytes(who_has)]
        assert lab.taps["web"].take() == [bytes(who_has)]
        assert lab.taps["vm3"].take() == []


def test_unusable_tunnel_packets_are_dropped_and_counted(lab: Lab) -> None:
    c = lab.cloud
    host_b = lab.agents["hostB"]
    frame = bytes(echo(vm(c, "vm1"), vm(c, "vm2")))
    dp, vm1_key = key_of(lab, "vm1")
    _, vm2_key = key_of(lab, "vm2")
    assert host_b.handle_tunnel(b"\x40garbage") == []  # version 1
    assert host_b.handle_tunnel(encapsulate("geneve", 999, vm1_key, vm2_key, frame)) == []
    assert host_b.handle_tunnel(encapsulate("geneve", dp, vm1_key, vm1_key, frame)) == []
    assert host_b.handle_tunnel(encapsulate("vxlan", dp, 0, 0, frame[:10]), "vxlan") == []
    assert host_b.tunnel_counters.drops == {
        DropReason.MALFORMED_TUNNEL: 1,
        DropReason.UNKNOWN_VNI: 1,
        DropReason.UNKNOWN_PORT: 1,  # vm1 does not live on hostB: never re-tunnelled
        DropReason.TRUNCATED_ETHERNET: 1,
    }
    assert lab.underlay.in_flight == []
    assert lab.taps["vm2"].sent == []
    assert len(host_b.handle_tunnel(encapsulate("geneve", dp, vm1_key, vm2_key, frame))) == 1
    assert lab.taps["vm2"].take() == [frame]


def test_senders_use_the_receivers_encapsulation(cloud: Cloud) -> None:
    lab = make_lab(cloud, {"hostA": "geneve", "hostB": "vxlan", "hostC": "geneve"})
    c = lab.cloud
    request = echo(vm(c, "vm1"), vm(c, "vm2"))
    lab.send("vm1", bytes(request))
    assert lab.taps["vm2"].take() == [bytes(request)]
    reply = echo(vm(c, "vm2"), vm(c, "vm1"), kind=0)
    lab.send("vm2", bytes(reply))
    assert lab.taps["vm1"].take() == [bytes(reply)]
    assert [(ip, encap) for ip, encap, _ in lab.underlay.delivered] == [
        (HOSTS["hostB"], "vxlan"),
        (HOSTS["hostA"], "geneve"),
    ]


def test_decoded_tunnel_packets_and_missing_endpoints(lab: Lab) -> None:
    c = lab.cloud
    host_a, host_b = lab.agents["hostA"], lab.agents["hostB"]
    frame = bytes(echo(vm(c, "vm1"), vm(c, "vm2")))
    dp, vm1_key = key_of(lab, "vm1")
    _, vm2_key = key_of(lab, "vm2")
    assert len(host_b.handle_decapsulated(dp, vm1_key, vm2_key, frame)) == 1  # Geneve-decoded
    assert len(host_b.handle_decapsulated(dp, None, None, frame)) == 1  # VXLAN: by MAC
    assert lab.taps["vm2"].take() == [frame, frame]
    del host_a.tunnels["geneve"]
    lab.send("vm1", frame)
    assert host_a.tunnel_counters.tx_errors == 1
    assert lab.taps["vm2"].sent == []
