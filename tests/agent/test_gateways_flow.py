"""Scale-out gateways end to end on in-memory hosts: agents, hellos over the underlay,
SNAT and floating-IP traffic through several gateways, failover and scale-out.

The cloud (made through the API)::

    public 203.0.113.0/24 (external): upstream .1 (localnet: every gateway's uplink)
    net1 10.0.0.0/24: vm1 .10 on hv, with a floating IP
    r1: net1 and a gateway on public, SNAT on

Hosts hv, gw1, gw2 (gw3 joins later); each gateway plugs an ``uplink`` port as the
localnet port. NAT state is one shared store, as Redis is in the lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from agent.agent_support import FakePort, FakeSB, Underlay
from conftest import Api
from netvirt.agent import Agent, Plug
from netvirt.compiler.compile import compile_nb
from netvirt.compiler.nb import load
from netvirt.dataplane.drops import DropReason
from netvirt.northbound.db import Database
from netvirt.state.memory import MemoryStore

HOSTS = {"hv": "192.0.2.1", "gw1": "192.0.2.11", "gw2": "192.0.2.12", "gw3": "192.0.2.13"}
SERVER = "198.51.100.7"


@dataclass
class Net:
    """The cloud's ids, MACs and addresses."""

    upstream: dict[str, Any]
    vm1: dict[str, Any]
    fip: str
    router_mac: str  # r1 on net1
    gateway_mac: str  # r1 on public


def make_cloud(admin: Api, alice: Api) -> Net:
    ext = admin.ok(
        "POST", "/v2.0/networks", {"network": {"name": "public", "router:external": True}}
    )
    ext_id = ext["network"]["id"]
    sub = {"network_id": ext_id, "cidr": "203.0.113.0/24", "enable_dhcp": False}
    ext_sub = admin.ok("POST", "/v2.0/subnets", {"subnet": sub})["subnet"]
    upstream = {
        "network_id": ext_id,
        "device_owner": "network:external_gateway",
        "fixed_ips": [{"subnet_id": ext_sub["id"], "ip_address": "203.0.113.1"}],
        "port_security_enabled": False,
    }
    up = admin.ok("POST", "/v2.0/ports", {"port": upstream})["port"]
    net = alice.ok("POST", "/v2.0/networks", {"network": {"name": "net1"}})["network"]
    body = {"network_id": net["id"], "cidr": "10.0.0.0/24"}
    subnet = alice.ok("POST", "/v2.0/subnets", {"subnet": body})["subnet"]
    group = alice.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "web"}})
    rule = {
        "security_group_id": group["security_group"]["id"],
        "direction": "ingress",
        "protocol": "tcp",
    }
    alice.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": rule})
    port = {
        "network_id": net["id"],
        "fixed_ips": [{"ip_address": "10.0.0.10"}],
        "security_groups": [group["security_group"]["id"]],
    }
    vm1 = alice.ok("POST", "/v2.0/ports", {"port": port})["port"]
    admin.ok("PUT", f"/v2.0/ports/{vm1['id']}", {"port": {"binding:host_id": "hv"}})
    info = {"network_id": ext_id, "enable_snat": True}
    router = alice.ok(
        "POST", "/v2.0/routers", {"router": {"name": "r1", "external_gateway_info": info}}
    )
    rid = router["router"]["id"]
    iface = alice.ok(
        "PUT", f"/v2.0/routers/{rid}/add_router_interface", {"subnet_id": subnet["id"]}
    )
    fip = alice.ok(
        "POST",
        "/v2.0/floatingips",
        {"floatingip": {"floating_network_id": ext_id, "port_id": vm1["id"]}},
    )["floatingip"]["floating_ip_address"]
    ports = admin.ok("GET", f"/v2.0/ports?device_id={rid}")["ports"]
    gateway = next(p for p in ports if p["device_owner"] == "network:router_gateway")
    inside = admin.ok("GET", f"/v2.0/ports/{iface['port_id']}")["port"]
    return Net(up, vm1, fip, inside["mac_address"], gateway["mac_address"])


@dataclass
class Clock:
    """Time moves only when the test says so (hellos are due every 0.1 s)."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Lab:
    db: Database
    net: Net
    sb: FakeSB = field(default_factory=FakeSB)
    underlay: Underlay = field(default_factory=Underlay)
    clock: Clock = field(default_factory=Clock)
    store: MemoryStore | None = None
    agents: dict[str, Agent] = field(default_factory=dict)
    ports: dict[str, FakePort] = field(default_factory=dict)  # host -> its VM or uplink port
    alive: set[str] = field(default_factory=set)  # gateways whose datapath runs

    def add(self, host: str) -> None:
        if self.store is None:
            self.store = MemoryStore(self.clock)
        port = FakePort("uplink" if host.startswith("gw") else "tap-vm1")
        owner = self.net.upstream if host.startswith("gw") else self.net.vm1
        agent = Agent(
            host,
            "geneve",
            HOSTS[host],
            self.sb,
            self.store,
            [Plug(port, owner["id"])],
            self.underlay.endpoints(),
            self.clock,
        )
        self.agents[host], self.ports[host] = agent, port
        self.underlay.hosts[HOSTS[host]] = agent
        if host.startswith("gw"):
            self.alive.add(host)
        self.sync()

    def sync(self) -> None:
        for agent in self.agents.values():
            agent.step()  # registrations
        self.sb.publish(compile_nb(load(self.db)))
        for _ in range(6):
            for agent in self.agents.values():
                agent.step()
            if all(self.sb.installed.get(h) == self.sb.generation for h in self.agents):
                return
        raise AssertionError("agents did not converge")

    def hellos(self) -> None:
        """An interval passes: every running gateway says hello."""
        self.clock.now += 0.1
        for host in sorted(self.alive):
            self.agents[host].local.gateway_tick()
        self.underlay.run()

    def out(self, sport: int, flags: str = "S") -> bytes:
        """vm1 to the server outside, through r1."""
        frame = Ether(src=self.net.vm1["mac_address"], dst=self.net.router_mac)
        return bytes(
            frame / IP(src="10.0.0.10", dst=SERVER) / TCP(sport=sport, dport=80, flags=flags)
        )

    def reply(self, sport: int, flags: str) -> bytes:
        """The server's answer, as the upstream router sends it to a gateway."""
        frame = Ether(src=self.net.upstream["mac_address"], dst=self.net.gateway_mac)
        segment = TCP(sport=80, dport=sport, flags=flags)
        return bytes(frame / IP(src=SERVER, dst=self.net.fip) / segment)

    def send_out(self, sport: int, flags: str = "S") -> dict[str, list[bytes]]:
        self.agents["hv"].handle_frame("tap-vm1", self.out(sport, flags))
        self.underlay.run()
        return {h: p.take() for h, p in self.ports.items() if h.startswith("gw") and p.sent}

    def carrier(self, sport: int) -> str:
        got = self.send_out(sport)
        ((gateway, frames),) = got.items()
        assert len(frames) == 1
        return gateway


@pytest.fixture
def lab(db: Database, admin: Api, alice: Api) -> Lab:
    lab = Lab(db, make_cloud(admin, alice))
    for host in ("hv", "gw1", "gw2"):
        lab.add(host)
    lab.hellos()
    return lab


def test_snat_traffic_leaves_through_one_live_gateway_per_flow(lab: Lab) -> None:
    got = lab.send_out(40000)
    ((gateway, frames),) = got.items()
    packet = Ether(frames[0])
    assert (packet[IP].src, packet[IP].dst) == (lab.net.fip, SERVER)
    assert (packet.dst, packet.src) == (lab.net.upstream["mac_address"], lab.net.gateway_mac)
    carriers = {lab.carrier(41000 + i) for i in range(24)}
    assert carriers == {"gw1", "gw2"}  # flows spread over both
    status = lab.agents["hv"].local.gateways.status()
    assert status["alive"] == {lab.net.upstream["id"]: ["gw1", "gw2"]}
    assert status["serving"] == []
    assert lab.agents["gw1"].local.gateways.status()["serving"] == [lab.net.upstream["id"]]
    # the localnet port is never claimed: no host reports it, it is plugged on two
    assert all(port != lab.net.upstream["id"] for port, _c, _u in lab.sb.port_reports)


def test_a_reply_through_another_gateway_finds_the_connection(lab: Lab) -> None:
    sport = next(s for s in range(42000, 42100) if lab.carrier(s) == "gw1")
    lab.agents["gw2"].handle_frame("uplink", lab.reply(sport, "SA"))  # ECMP chose gw2
    lab.underlay.run()
    (delivered,) = lab.ports["hv"].take()
    assert Ether(delivered)[IP].dst == "10.0.0.10"
    assert Ether(delivered)[TCP].dport == sport


def test_a_dead_gateway_is_dropped_within_the_dead_interval(lab: Lab) -> None:
    flows = range(43000, 43032)
    before = {s: lab.carrier(s) for s in flows}
    assert set(before.values()) == {"gw1", "gw2"}
    lab.alive.discard("gw1")  # killed: no goodbye
    lab.hellos()
    lab.hellos()
    on_gw1 = [s for s in flows if before[s] == "gw1"]
    assert {lab.carrier(s) for s in on_gw1} == {"gw1"}  # 200 ms: not dead yet
    lab.hellos()
    lab.hellos()  # 400 ms > 350 ms
    assert {lab.carrier(s) for s in flows} == {"gw2"}
    # a connection that went out through gw1 carries on through gw2, same translation
    sport = on_gw1[0]
    lab.agents["gw2"].handle_frame("uplink", lab.reply(sport, "SA"))
    lab.underlay.run()
    assert Ether(lab.ports["hv"].take()[0])[TCP].flags == "SA"
    (ack,) = lab.send_out(sport, "A")["gw2"]
    assert Ether(ack)[IP].src == lab.net.fip
    assert Ether(ack)[TCP].sport == sport  # the port SNAT kept (the FIP is 1:1)


def test_goodbye_is_immediate_and_no_gateway_drops_with_a_reason(lab: Lab) -> None:
    for host in ("gw1", "gw2"):
        lab.agents[host].local.gateway_goodbye()
        lab.alive.discard(host)
    lab.underlay.run()
    assert lab.send_out(44000) == {}
    assert lab.agents["hv"].local.drops.get(DropReason.NO_GATEWAY) == 1


def test_scale_out_moves_only_the_newcomers_share(lab: Lab) -> None:
    flows = range(45000, 45048)
    before = {s: lab.carrier(s) for s in flows}
    lab.add("gw3")
    assert {s: lab.carrier(s) for s in flows} == before  # not heard yet: nothing moves
    lab.hellos()
    after = {s: lab.carrier(s) for s in flows}
    moved = {s for s in flows if after[s] != before[s]}
    assert moved
    assert all(after[s] == "gw3" for s in moved)
    assert len(moved) < len(flows) * 0.6
