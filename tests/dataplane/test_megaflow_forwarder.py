"""Megaflows change nothing but speed: the agent tests' three hosts (``agent/conftest.py``)
on a cloud whose walks need no conntrack — switching and routing between ports without port
security, and ports with port security but no security group — with and without the flow
cache (exact entries and megaflows). Random frames (every TCP flag combination, UDP, ICMP,
ARP, broadcast, unknown and spoofed addresses, TTL 0/1/2) must leave the same ports with the
same bytes, count the same drops and the same port counters; a rule change must not let a
megaflow learned before it answer after it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from agent.conftest import ADDRESSES, NETWORK_OF, Cloud, Lab, build, make_lab
from conftest import Api
from netvirt.dataplane.fastpath import FlowCache
from netvirt.northbound.db import Database

OPEN = {"port_security_enabled": False, "security_groups": []}
POLICY = {"vm1": OPEN, "vm2": OPEN, "web": {"security_groups": []}, "vm3": OPEN}
ROUTER_OF = {"net1": "r1-net1", "net2": "r1-net2"}
OTHER_IPS = ("10.0.0.1", "10.0.1.1", "10.0.0.99", "192.0.2.50")


@pytest.fixture
def labs(db: Database, admin: Api, alice: Api) -> tuple[Lab, Lab]:
    """(plain, cached): the same cloud, without and with the flow cache."""
    cloud = Cloud(db, admin, alice)
    build(cloud, POLICY)
    plain, cached = make_lab(cloud), make_lab(cloud)
    for agent in cached.agents.values():
        agent.local.flow_cache = FlowCache()
    return plain, cached


def observed(lab: Lab) -> tuple[object, ...]:
    agents = lab.agents.values()
    return (
        {h: dict(a.local.drops) for h, a in lab.agents.items()},
        [
            {i: c.as_dict() for i, c in sorted(a.local.port_counters.items())}
            | {"tunnel": a.local.tunnel_counters.as_dict()}
            for a in agents
        ],
    )


def send_both(labs: tuple[Lab, Lab], vm: str, frame: bytes) -> list[tuple[str, list[bytes]]]:
    results = []
    for lab in labs:
        lab.send(vm, frame)
        results.append(sorted((name, tap.take()) for name, tap in lab.taps.items()))
    assert results[0] == results[1], frame.hex()
    assert observed(labs[0]) == observed(labs[1]), frame.hex()
    return [r for r in results[0] if r[1]]


def megaflow_hits(lab: Lab) -> int:
    return sum(
        a.local.flow_cache.megaflows.counters.hits
        for a in lab.agents.values()
        if a.local.flow_cache is not None and a.local.flow_cache.megaflows is not None
    )


@st.composite
def frames(draw: st.DrawFn, cloud: Cloud) -> tuple[str, bytes]:
    sender = draw(st.sampled_from(sorted(ADDRESSES)))
    own = ROUTER_OF[NETWORK_OF[sender]]
    macs = [cloud.mac(n) for n in (own, "vm1", "vm2", "web", "vm3")]
    dst_mac = draw(st.sampled_from([*macs, "ff:ff:ff:ff:ff:ff", "02:00:00:00:00:99"]))
    src_mac = draw(st.sampled_from([cloud.mac(sender)] * 4 + ["02:00:00:00:00:66"]))
    src_ip = draw(st.sampled_from([ADDRESSES[sender]] * 4 + ["10.0.0.66"]))
    dst_ip = draw(st.sampled_from([*ADDRESSES.values(), *OTHER_IPS]))
    eth = Ether(src=src_mac, dst=dst_mac)
    kind = draw(st.sampled_from(["tcp", "tcp", "tcp", "udp", "icmp", "arp"]))
    if kind == "arp":
        return sender, bytes(eth / ARP(op=draw(st.sampled_from([1, 2])), psrc=src_ip, pdst=dst_ip))
    ttl = draw(st.sampled_from([64, 64, 64, 2, 1, 0]))
    ip = IP(src=src_ip, dst=dst_ip, ttl=ttl, id=draw(st.integers(0, 65535)))
    sport = draw(st.sampled_from([40000, 40001, 40002, 80])) if draw(st.booleans()) else None
    sport = sport if sport is not None else draw(st.integers(1024, 65535))
    dport = draw(st.sampled_from([80, 22, 67, 68, 40000]))
    if kind == "tcp":
        flags = draw(st.integers(0, 63))
        payload = b"p" * draw(st.sampled_from([0, 10]))
        return sender, bytes(eth / ip / TCP(sport=sport, dport=dport, flags=flags) / payload)
    if kind == "udp":
        return sender, bytes(eth / ip / UDP(sport=sport, dport=dport) / b"data")
    return sender, bytes(eth / ip / ICMP(type=draw(st.sampled_from([8, 0])), id=sport) / b"ping")


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.generate],  # the labs keep state: a shrunk replay would not fail the same way
)
@given(data=st.data())
def test_random_frames_are_identical_with_megaflows(labs: tuple[Lab, Lab], data: Any) -> None:
    cloud = labs[0].cloud
    for _ in range(25):
        sender, frame = data.draw(frames(cloud))
        send_both(labs, sender, frame)


def tcp(cloud: Cloud, src: str, dst: str, sport: int, dport: int, flags: str) -> bytes:
    routed = NETWORK_OF[src] != NETWORK_OF[dst]
    dst_mac = cloud.mac(ROUTER_OF[NETWORK_OF[src]]) if routed else cloud.mac(dst)
    ip = IP(src=ADDRESSES[src], dst=ADDRESSES[dst])
    return bytes(
        Ether(src=cloud.mac(src), dst=dst_mac) / ip / TCP(sport=sport, dport=dport, flags=flags)
    )


def connection(labs: tuple[Lab, Lab], src: str, dst: str, sport: int) -> None:
    cloud = labs[0].cloud
    for flags, forward in (("S", True), ("SA", False), ("A", True), ("PA", True), ("FA", True)):
        a, b = (src, dst) if forward else (dst, src)
        ports = (sport, 80) if forward else (80, sport)
        assert send_both(labs, a, tcp(cloud, a, b, *ports, flags))


@pytest.mark.parametrize(("src", "dst"), [("vm2", "web"), ("vm2", "vm3"), ("vm1", "vm3")])
def test_new_connections_are_served_by_megaflows(labs: tuple[Lab, Lab], src: str, dst: str) -> None:
    """Switched (one host), routed (one host), routed to another host: after the first
    connection, the SYNs, FINs and first packets of new connections hit megaflows."""
    connection(labs, src, dst, 30000)
    before = megaflow_hits(labs[1])
    for sport in range(30001, 30011):
        connection(labs, src, dst, sport)
    assert megaflow_hits(labs[1]) - before >= 10 * (5 if src != "vm1" else 3)


def test_a_rule_change_invalidates_megaflows(labs: tuple[Lab, Lab]) -> None:
    """web gets a security group without TCP 80: a SYN that a megaflow forwarded before the
    change is dropped after it, as the slow path drops it."""
    cloud = labs[0].cloud
    connection(labs, "vm2", "web", 31000)
    syn = tcp(cloud, "vm2", "web", 31001, 80, "S")
    assert send_both(labs, "vm2", syn)
    flushes = sum(a.local.flow_cache.megaflows.counters.flushes for a in labs[1].agents.values())
    group = cloud.alice.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "ssh"}})
    rule = {"security_group_id": group["security_group"]["id"], "direction": "ingress"}
    rule |= {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22}
    cloud.alice.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": rule})
    body = {"port": {"security_groups": [group["security_group"]["id"]]}}
    cloud.alice.ok("PUT", f"/v2.0/ports/{cloud.ids['web']}", body)
    for lab in labs:
        lab.sync()
    assert not send_both(labs, "vm2", tcp(cloud, "vm2", "web", 31002, 80, "S"))
    assert not send_both(labs, "vm2", syn)
    after = sum(a.local.flow_cache.megaflows.counters.flushes for a in labs[1].agents.values())
    assert after > flushes
    body = {"port": {"security_groups": []}}
    cloud.alice.ok("PUT", f"/v2.0/ports/{cloud.ids['web']}", body)
    for lab in labs:
        lab.sync()
    assert send_both(labs, "vm2", syn)
