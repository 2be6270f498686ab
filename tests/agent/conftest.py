"""A small cloud made through the real API, compiled, and served to agents on three hosts.

The cloud (alice's project; every VM port has its ``binding:host_id`` set by admin)::

    net1 10.0.0.0/24: vm1 .10 [default] on hostA, vm2 .11 [default] on hostB,
                      web .12 [web: tcp 80 in] on hostB
    net2 10.0.1.0/24: vm3 .20 [default] on hostB
    r1: interfaces on net1 and net2

Each host runs an :class:`~netvirt.agent.Agent` with one :class:`FakePort` per VM
plugged on it (and spare ones for migrations), its own in-memory conntrack
store, and Geneve and VXLAN endpoints on a shared :class:`Underlay` (a host
receives with its own encapsulation; senders use the receiver's). ``lab.sync()``
compiles the NB, publishes it on the fake SB and steps every agent until all
have installed the newest generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.agent_support import FakePort, FakeSB, Underlay
from conftest import Api
from netvirt.agent import Agent, Plug
from netvirt.agent.physical import Encap
from netvirt.compiler.compile import compile_nb
from netvirt.compiler.nb import load
from netvirt.northbound.db import Database
from netvirt.southbound.model import SBState
from netvirt.state.memory import MemoryStore

HOSTS = {"hostA": "192.0.2.1", "hostB": "192.0.2.2", "hostC": "192.0.2.3"}
PLACEMENT = {"vm1": "hostA", "vm2": "hostB", "web": "hostB", "vm3": "hostB"}
ADDRESSES = {"vm1": "10.0.0.10", "vm2": "10.0.0.11", "web": "10.0.0.12", "vm3": "10.0.1.20"}
NETWORK_OF = {"vm1": "net1", "vm2": "net1", "web": "net1", "vm3": "net2"}


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@dataclass
class Cloud:
    """NB objects made through the API, with readable names for their ids."""

    db: Database
    admin: Api
    alice: Api
    ids: dict[str, str] = field(default_factory=dict)

    def port(self, name: str) -> dict[str, Any]:
        return dict(self.admin.ok("GET", f"/v2.0/ports/{self.ids[name]}")["port"])

    def mac(self, name: str) -> str:
        return str(self.port(name)["mac_address"])

    def compile(self) -> SBState:
        return compile_nb(load(self.db))

    def place(self, name: str, host: str) -> None:
        body = {"port": {"binding:host_id": host}}
        self.admin.ok("PUT", f"/v2.0/ports/{self.ids[name]}", body)


def build(cloud: Cloud, ports: dict[str, dict[str, Any]] | None = None) -> None:
    """The cloud of the module docstring; ``ports``: each VM port's security attributes
    instead of the default (``web`` in the group admitting TCP 80, the others in none)."""
    api = cloud.alice
    for net, cidr in (("net1", "10.0.0.0/24"), ("net2", "10.0.1.0/24")):
        n = api.ok("POST", "/v2.0/networks", {"network": {"name": net}})["network"]
        body = {"network_id": n["id"], "cidr": cidr, "name": f"{net}-sub"}
        s = api.ok("POST", "/v2.0/subnets", {"subnet": body})["subnet"]
        cloud.ids[net], cloud.ids[f"{net}-sub"] = n["id"], s["id"]
    group = api.ok("POST", "/v2.0/security-groups", {"security_group": {"name": "web"}})
    web = group["security_group"]["id"]
    rule = {
        "security_group_id": web,
        "direction": "ingress",
        "protocol": "tcp",
        "port_range_min": 80,
        "port_range_max": 80,
    }
    api.ok("POST", "/v2.0/security-group-rules", {"security_group_rule": rule})
    for vm, ip in ADDRESSES.items():
        body = {
            "network_id": cloud.ids[NETWORK_OF[vm]],
            "name": vm,
            "fixed_ips": [{"ip_address": ip}],
        }
        if ports is not None:
            body |= ports[vm]
        elif vm == "web":
            body["security_groups"] = [web]
        cloud.ids[vm] = api.ok("POST", "/v2.0/ports", {"port": body})["port"]["id"]
        cloud.place(vm, PLACEMENT[vm])
    router = api.ok("POST", "/v2.0/routers", {"router": {"name": "r1"}})["router"]
    for net in ("net1", "net2"):
        path = f"/v2.0/routers/{router['id']}/add_router_interface"
        port = api.ok("PUT", path, {"subnet_id": cloud.ids[f"{net}-sub"]})["port_id"]
        cloud.ids[f"r1-{net}"] = port


@dataclass
class Lab:
    """Three hosts with agents, the fake SB and the underlay between them."""

    cloud: Cloud
    sb: FakeSB
    underlay: Underlay
    clock: Clock
    agents: dict[str, Agent] = field(default_factory=dict)
    taps: dict[str, FakePort] = field(default_factory=dict)  # vm name -> its port
    stores: dict[str, MemoryStore] = field(default_factory=dict)

    def add_host(self, host: str, encap: Encap = "geneve") -> Agent:
        plugs = [
            Plug(self.taps[vm], self.cloud.ids[vm]) for vm, h in PLACEMENT.items() if h == host
        ]
        store = self.stores.setdefault(host, MemoryStore(self.clock))
        agent = Agent(
            host,
            encap,
            HOSTS[host],
            self.sb,
            store,
            plugs,
            self.underlay.endpoints(),
            self.clock,
        )
        self.agents[host] = agent
        self.underlay.hosts[HOSTS[host]] = agent
        return agent

    def publish(self) -> int:
        return self.sb.publish(self.cloud.compile())

    def settle(self, rounds: int = 6) -> None:
        """Step every agent until all have installed the SB's newest generation."""
        for _ in range(rounds):
            for agent in self.agents.values():
                agent.step()
            if all(self.sb.installed.get(h) == self.sb.generation for h in self.agents):
                return
        raise AssertionError(f"agents did not converge: {self.sb.installed} @ {self.sb.generation}")

    def sync(self) -> None:
        self.publish()
        self.settle()

    def send(self, vm: str, frame: bytes) -> None:
        """``vm`` sends ``frame``: its host handles it, the underlay delivers the rest."""
        host = self.host_of(vm)
        self.agents[host].handle_frame(self.taps[vm].name, frame)
        self.underlay.run()

    def host_of(self, vm: str) -> str:
        name = self.taps[vm].name
        return next(h for h, a in self.agents.items() if name in a.plugs)


@pytest.fixture
def cloud(db: Database, admin: Api, alice: Api) -> Cloud:
    c = Cloud(db, admin, alice)
    build(c)
    return c


def make_lab(cloud: Cloud, encap: Encap | dict[str, Encap] = "geneve") -> Lab:
    taps = {vm: FakePort(f"tap-{vm}") for vm in PLACEMENT}
    lab = Lab(cloud, FakeSB(), Underlay(), Clock(), taps=taps)
    for host in HOSTS:
        lab.add_host(host, encap if isinstance(encap, str) else encap[host])
    lab.sync()
    return lab


@pytest.fixture
def lab(cloud: Cloud) -> Lab:
    return make_lab(cloud)
