"""Agents against the real in-process SB service (compiler + ``southbound.memory``).

The NB changes through the API; the service compiles, serves snapshots and
deltas, and records claims and installed generations in the NB store, where
the API reads them.
"""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from agent.agent_support import FakePort, Underlay
from agent.conftest import ADDRESSES, HOSTS, PLACEMENT, Clock, Cloud
from netvirt.agent import Agent, Plug
from netvirt.compiler.service import CompilerService
from netvirt.southbound.memory import InMemorySB
from netvirt.state.memory import MemoryStore


def settle(agents: list[Agent], cloud: Cloud, rounds: int = 8) -> None:
    for _ in range(rounds):
        for agent in agents:
            assert agent.step(timeout=0.0).error is None
        generation = cloud.db.generation()
        if all(a.installed.physical.generation == generation for a in agents):
            return
    raise AssertionError("agents did not converge on the service's generation")


def test_agents_forward_and_report_through_the_sb_service(cloud: Cloud) -> None:
    service = InMemorySB(CompilerService(cloud.db), poll=0.01)
    clock, underlay = Clock(), Underlay()
    taps = {vm: FakePort(f"tap-{vm}") for vm in PLACEMENT}
    agents = []
    for host, ip in HOSTS.items():
        plugs = [Plug(taps[vm], cloud.ids[vm]) for vm, h in PLACEMENT.items() if h == host]
        agent = Agent(
            host, "geneve", ip, service, MemoryStore(clock), plugs, underlay.endpoints(), clock
        )
        underlay.hosts[ip] = agent
        agents.append(agent)
    settle(agents, cloud)
    assert set(service.chassis()) == set(HOSTS)
    vm2 = cloud.port("vm2")
    assert (vm2["status"], vm2["binding:host_id"]) == ("ACTIVE", "hostB")
    request = (
        Ether(src=cloud.mac("vm1"), dst=cloud.mac("vm2"))
        / IP(src=ADDRESSES["vm1"], dst=ADDRESSES["vm2"])
        / ICMP(id=7, seq=1)
    )
    agents[0].handle_frame("tap-vm1", bytes(request))
    underlay.run()
    assert taps["vm2"].take() == [bytes(request)]
    # migration through the API: every host follows after its next steps
    cloud.place("vm2", "hostC")
    agents[1].unplug("tap-vm2")
    agents[2].plug(taps["vm2"], cloud.ids["vm2"])
    settle(agents, cloud)
    agents[0].handle_frame("tap-vm1", bytes(request))
    assert [ip for ip, _, _ in underlay.in_flight] == [HOSTS["hostC"]]
    underlay.run()
    assert taps["vm2"].take() == [bytes(request)]
    assert all(a.sb_stats["deltas"] > 0 for a in agents)
