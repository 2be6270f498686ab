"""Router flows end to end: ``netvirt trace`` (the oracle) through switch → router → switch.

Compiled from NB state made through the API, translated as an agent does and
run by the reference pipeline with the real conntrack on an in-memory store.
VM ports have port security off so security groups do not blur what the
router does; one conntrack is shared by the traces of a test, so replies find
the connections earlier traces opened.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pytest

from compiler.test_build_router import EXT_CIDR, Compiled, Lab, Tenant, ip
from compiler.test_build_router_nat import floating_ip
from conftest import Api
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.packet import Packet, parse_packet
from netvirt.northbound.db import Database
from netvirt.state.memory import MemoryStore
from netvirt.trace.run import TraceResult, run_trace

OPEN = {"port_security_enabled": False, "security_groups": []}


@dataclass
class World:
    lab: Lab
    compiled: Compiled
    fip: str
    conntrack: FlowKeyConntrack

    def send(self, port: str, microflow: str) -> TraceResult:
        return run_trace(self.compiled.sb, self.lab.ids[port], microflow, self.conntrack)

    def delivered(self, port: str, microflow: str) -> tuple[str, Packet]:
        result = self.send(port, microflow)
        assert len(result.verdict.outputs) == 1, (result.delivered, result.dropped)
        out = result.verdict.outputs[0]
        names = {v: k for k, v in self.lab.ids.items()}
        return names.get(out.port_name, out.port_name), parse_packet(out.frame)

    def mac(self, port: str) -> int:
        return self.compiled.sb.ports[self.lab.ids[port]].mac


def _open_tenant(lab: Lab, api: Api, ext: str | None) -> Tenant:
    lab.network(api, "web", "10.0.1.0/24")
    lab.network(api, "db", "10.0.2.0/24")
    tenant = Tenant(lab, api)
    tenant.router = lab.router(api, "r1", ext)
    lab.interface(api, "r1", "web")
    lab.interface(api, "r1", "db")
    lab.port(api, lab.ids["web"], "vm1", "10.0.1.10", **OPEN)
    lab.port(api, lab.ids["db"], "vm2", "10.0.2.20", **OPEN)
    return tenant


@pytest.fixture
def world(db: Database, admin: Api, alice: Api) -> World:
    lab = Lab(db, admin)
    ext, _ = lab.external()
    _open_tenant(lab, alice, ext)
    fip = floating_ip(alice, ext, lab.ids["vm1"])["floating_ip_address"]
    lab.port(admin, lab.ids["ext"], "outside", "203.0.113.50", **OPEN)
    return World(lab, lab.compile(), fip, FlowKeyConntrack(Conntrack(MemoryStore())))


def test_ping_router_interface(world: World) -> None:
    port, reply = world.delivered("vm1", "ip4.dst == 10.0.2.1, icmp4")
    assert port == "vm1"
    assert (reply.ip_src, reply.ip_dst, reply.icmp_type) == (ip("10.0.2.1"), ip("10.0.1.10"), 0)
    assert reply.eth_src == world.mac("r1-web")
    assert reply.eth_dst == world.mac("vm1")


def test_routed_between_subnets(world: World) -> None:
    port, pkt = world.delivered("vm1", "ip4.dst == 10.0.2.20, tcp.dst == 80")
    assert port == "vm2"
    assert (pkt.eth_src, pkt.eth_dst) == (world.mac("r1-db"), world.mac("vm2"))
    assert (pkt.ip_src, pkt.ip_ttl) == (ip("10.0.1.10"), 63)


def test_ttl_expiry_returns_time_exceeded(world: World) -> None:
    port, err = world.delivered("vm1", "ip4.dst == 10.0.2.20, tcp.dst == 80, ip.ttl == 1")
    assert port == "vm1"
    assert (err.icmp_type, err.icmp_code) == (11, 0)
    assert (err.ip_src, err.ip_dst) == (ip("10.0.1.1"), ip("10.0.1.10"))


def test_unknown_next_hop_sends_an_arp_request(world: World) -> None:
    result = world.send("vm1", "ip4.dst == 10.0.2.77, tcp.dst == 80")
    (out,) = result.verdict.outputs
    arp = parse_packet(out.frame)
    assert (arp.arp_op, arp.arp_spa, arp.arp_tpa) == (1, ip("10.0.2.1"), ip("10.0.2.77"))
    assert arp.eth_dst == 0xFFFFFFFFFFFF


def test_masquerade_and_its_replies(world: World) -> None:
    port, out = world.delivered("vm2", "ip4.dst == 203.0.113.50, tcp.src == 40000, tcp.dst == 80")
    assert port == "outside"
    assert out.ip_src == ip("203.0.113.2")
    assert 1024 <= out.l4_sport <= 65535
    gw = world.compiled.lrp(world.lab.ids["r1-gw"]).mac
    reply = (
        f"eth.dst == {_mac(gw)}, ip4.dst == 203.0.113.2, tcp.src == 80, "
        f"tcp.dst == {out.l4_sport}, tcp.flags == 18"
    )
    port, back = world.delivered("outside", reply)
    assert port == "vm2"
    assert (back.ip_src, back.ip_dst, back.l4_dport) == (ip("203.0.113.50"), ip("10.0.2.20"), 40000)


def test_floating_ip_both_ways(world: World) -> None:
    port, out = world.delivered("vm1", "ip4.dst == 203.0.113.50, tcp.dst == 80")
    assert (port, out.ip_src) == ("outside", ip(world.fip))
    gw = _mac(world.compiled.lrp(world.lab.ids["r1-gw"]).mac)
    port, inbound = world.delivered(
        "outside", f"eth.dst == {gw}, ip4.dst == {world.fip}, tcp.dst == 22"
    )
    assert port == "vm1"
    assert (inbound.ip_src, inbound.ip_dst) == (ip("203.0.113.50"), ip("10.0.1.10"))


def test_arp_for_floating_ip_answered_by_the_gateway(world: World) -> None:
    port, reply = world.delivered("outside", f"arp, arp.tpa == {world.fip}")
    assert port == "outside"
    assert reply.arp_op == 2
    assert (reply.arp_spa, reply.arp_sha) == (
        ip(world.fip),
        world.compiled.lrp(world.lab.ids["r1-gw"]).mac,
    )


def test_no_route_without_gateway(db: Database, admin: Api, alice: Api) -> None:
    lab = Lab(db, admin)
    _open_tenant(lab, alice, None)
    world = World(lab, lab.compile(), "", FlowKeyConntrack(Conntrack(MemoryStore())))
    port, err = world.delivered("vm1", "ip4.dst == 8.8.8.8, udp.dst == 53")
    assert port == "vm1"
    assert (err.icmp_type, err.icmp_code, err.ip_src) == (3, 0, ip("10.0.1.1"))


def test_tenants_meet_only_through_floating_ips(
    db: Database, admin: Api, alice: Api, bob: Api
) -> None:
    """Same CIDRs on both sides: alice's 10.0.1.20 is her own subnet, never bob's VM;
    bob's VM is reached through his floating IP, from alice's gateway address."""
    lab = Lab(db, admin)
    ext, _ = lab.external()
    _open_tenant(lab, alice, ext)
    lab.network(bob, "bob-net", "10.0.1.0/24")
    lab.router(bob, "r2", ext)
    lab.interface(bob, "r2", "bob-net")
    lab.port(bob, lab.ids["bob-net"], "bob-vm", "10.0.1.20", **OPEN)
    bob_fip = floating_ip(bob, ext, lab.ids["bob-vm"])["floating_ip_address"]
    world = World(lab, lab.compile(), "", FlowKeyConntrack(Conntrack(MemoryStore())))
    local = world.send("vm2", "ip4.dst == 10.0.1.20, tcp.dst == 80")
    assert "bob-vm" not in {_name(lab, n) for n in local.delivered}
    port, pkt = world.delivered("vm2", f"ip4.dst == {bob_fip}, tcp.dst == 80")
    assert port == "bob-vm"
    assert (pkt.ip_src, pkt.ip_dst) == (ip("203.0.113.2"), ip("10.0.1.20"))
    assert ipaddress_in(pkt.ip_src, EXT_CIDR)


def test_router_address_not_answered_is_dropped(world: World) -> None:
    result = world.send("vm1", "ip4.dst == 10.0.2.1, tcp.dst == 22")
    assert result.delivered == []
    assert result.dropped == [DropReason.EXPLICIT_DROP]


def _mac(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def _name(lab: Lab, port_id: str) -> str:
    return {v: k for k, v in lab.ids.items()}.get(port_id, port_id)


def ipaddress_in(address: int, cidr: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(cidr)
