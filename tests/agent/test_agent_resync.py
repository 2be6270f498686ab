"""Restart, resync and SB failures: forwarding never depends on the SB being reachable."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from agent.conftest import ADDRESSES, HOSTS, PLACEMENT, Lab
from netvirt.agent import Agent, Plug
from netvirt.agent.bindings import bind
from netvirt.agent.physical import compute
from netvirt.agent.reconcile import divergence
from netvirt.dataplane.drops import DropReason


def tcp(lab: Lab, src: str, dst: str, flags: str, sport: int = 40000, dport: int = 80) -> bytes:
    c = lab.cloud
    return bytes(
        Ether(src=c.mac(src), dst=c.mac(dst))
        / IP(src=ADDRESSES[src], dst=ADDRESSES[dst])
        / TCP(sport=sport, dport=dport, flags=flags)
    )


def restart(lab: Lab, host: str) -> Agent:
    """A new agent process on ``host`` that inherits the installed datapath state."""
    old = lab.agents[host]
    plugs = [Plug(lab.taps[vm], lab.cloud.ids[vm]) for vm, h in PLACEMENT.items() if h == host]
    new = Agent(
        host,
        "geneve",
        HOSTS[host],
        lab.sb,
        lab.stores[host],
        plugs,
        lab.underlay.endpoints(),
        lab.clock,
        installed=old.installed,
    )
    lab.agents[host] = new
    lab.underlay.hosts[HOSTS[host]] = new
    return new


def assert_converged(lab: Lab, agent: Agent) -> None:
    sb = lab.sb.current
    plugs = {iface: p.logical_port for iface, p in agent.plugs.items()}
    desired = compute(sb, bind(sb, agent.name, plugs)).rules
    assert not divergence(agent.installed.classifier, desired)


def test_restarted_agent_keeps_forwarding_and_connections_until_resynced(lab: Lab) -> None:
    lab.send("vm1", tcp(lab, "vm1", "web", "S"))
    assert len(lab.taps["web"].take()) == 1
    rules = set(lab.agents["hostA"].installed.classifier.rules())
    lab.sb.fail = True
    host_a = restart(lab, "hostA")
    result = host_a.step()
    assert result.error is not None
    assert result.sb_generation is None
    assert set(host_a.installed.classifier.rules()) == rules  # nothing wiped
    synack = tcp(lab, "web", "vm1", "SA", sport=80, dport=40000)
    lab.send("web", synack)  # vm1's group admits web only as a reply: conntrack survived
    assert lab.taps["vm1"].take() == [synack]
    ack = tcp(lab, "vm1", "web", "A")
    lab.send("vm1", ack)
    assert lab.taps["web"].take() == [ack]
    lab.send("web", tcp(lab, "web", "vm1", "S", sport=80, dport=41000))  # not a reply
    assert lab.taps["vm1"].take() == []
    assert host_a.port_counters["tap-vm1"].drops == {DropReason.ACL_DENY: 1}
    lab.sb.fail = False
    result = host_a.step()
    assert result.resynced
    assert result.error is None
    assert (result.added, result.removed) == (0, 0)  # reconciled against what was installed
    assert lab.sb.installed["hostA"] == lab.sb.generation
    assert_converged(lab, host_a)


def test_fresh_agent_installs_nothing_before_its_first_snapshot(lab: Lab) -> None:
    lab.sb.fail = True
    agent = Agent(
        "hostD",
        "geneve",
        "192.0.2.4",
        lab.sb,
        lab.stores["hostA"],
        [],
        lab.underlay.endpoints(),
        lab.clock,
    )
    assert agent.step().error is not None
    assert len(agent.installed.classifier) == 0
    assert agent.handle_frame("tap-x", b"\x00" * 60) is None
    assert agent.drops == {DropReason.UNKNOWN_PORT: 1}


def test_generation_gap_resyncs_from_a_snapshot(lab: Lab) -> None:
    host_a = lab.agents["hostA"]
    snapshots = host_a.sb_stats["snapshots"]
    lab.sb.mode = "gap"
    lab.cloud.place("web", "hostC")
    lab.publish()
    result = host_a.step()
    assert result.resynced
    stats = host_a.sb_stats
    assert (stats["snapshots"], stats["deltas"], stats["gaps"]) == (snapshots + 1, 1, 1)
    web = lab.sb.current.ports[lab.cloud.ids["web"]]
    remote = host_a.installed.physical.remote[(web.datapath, web.key)]
    assert remote.ip == HOSTS["hostC"]
    assert_converged(lab, host_a)


def test_full_state_answers_replace_the_mirror(lab: Lab) -> None:
    host_a = lab.agents["hostA"]
    lab.sb.mode = "full"
    lab.cloud.place("vm2", "")
    lab.publish()
    host_a.step()
    vm2 = lab.sb.current.ports[lab.cloud.ids["vm2"]]
    assert host_a.installed.physical.topology.ports[(vm2.datapath, vm2.key)].kind == "unbound"
    assert any(lab.cloud.ids["vm2"] in note for note in host_a.installed.physical.notes)
    assert_converged(lab, host_a)
    frame = tcp(lab, "vm1", "vm2", "S", dport=22)
    verdict = host_a.handle_frame("tap-vm1", frame)
    assert verdict is not None
    assert verdict.drops == [DropReason.UNKNOWN_PORT]
    assert (vm2.datapath, vm2.key) not in host_a.installed.physical.remote


def test_errors_mid_run_keep_the_flows_and_resync(lab: Lab) -> None:
    host_b = lab.agents["hostB"]
    before = len(host_b.installed.classifier)
    lab.sb.fail = True
    assert host_b.step().error is not None
    assert host_b.step().error is not None
    assert len(host_b.installed.classifier) == before
    assert host_b.sb_stats["errors"] == 2
    lab.sb.fail = False
    lab.cloud.place("vm1", "hostC")
    lab.publish()
    result = host_b.step()
    assert result.resynced
    assert result.installed_generation == lab.sb.generation
    vm1 = lab.sb.current.ports[lab.cloud.ids["vm1"]]
    assert host_b.installed.physical.remote[(vm1.datapath, vm1.key)].chassis == "hostC"
    # the resync re-reports every claim: the SB may have lost them
    reports = [r for r in lab.sb.port_reports[-3:] if r[1] == "hostB"]
    assert len(reports) == 3


def test_a_service_that_forgot_the_chassis_is_told_again(lab: Lab) -> None:
    host_a = lab.agents["hostA"]
    registrations = host_a.sb_stats["registrations"]
    del lab.sb.chassis["hostA"]  # e.g. a restarted service answering with a full state
    lab.sb.mode = "full"
    lab.publish()
    host_a.step()
    assert host_a.sb_stats["registrations"] == registrations + 1
    assert lab.sb.chassis["hostA"] == host_a.chassis
    lab.settle()
    vm1 = lab.sb.current.ports[lab.cloud.ids["vm1"]]
    assert (
        lab.agents["hostB"].installed.physical.remote[(vm1.datapath, vm1.key)].ip == HOSTS["hostA"]
    )
