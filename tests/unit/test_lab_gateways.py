"""The lab's scale-out gateways without root: several gateway hosts in a topology, the
external namespace's links and ECMP route, and what host stop/start does to them
(against a machine that records every ``ip`` command and signal)."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path

from netvirt.lab import build, net
from netvirt.lab.net import Names
from netvirt.lab.state import ExternalRecord, HostRecord, LabState, ProcessRecord
from netvirt.lab.topology import loads

TOPOLOGY = """
name: g
hosts: [{name: hv1}, {name: gw1, gateway: true}, {name: gw2, gateway: true},
        {name: gw3, gateway: true}]
external: {cidr: 172.24.4.0/24}
projects:
  - name: demo
    networks: [{name: net1, cidr: 10.0.0.0/24}]
    routers: [{name: r1, networks: [net1], gateway: true}]
vms:
  - {name: vm1, host: hv1, network: net1, floating_ip: true}
"""
MAC = "fa:16:3e:00:00:99"


class Machine:
    """Records ``ip`` commands and signals; processes are alive until signalled."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.alive: dict[int, int] = {}  # pid -> start time
        self.next_pid = 500

    def ip(self, *args: str, netns: str | None = None, check: bool = True) -> str:
        self.log.append(f"[{netns or '-'}] {' '.join(args)}")
        return ""

    def netns_list(self, prefix: str) -> list[str]:
        return []

    def netns_add(self, name: str) -> None:
        self.log.append(f"netns add {name}")

    def netns_delete(self, name: str) -> None:
        return None

    def netns_pids(self, name: str) -> list[int]:
        return []

    def pids_with_arg(self, needle: str) -> list[int]:
        return []

    def start_time(self, pid: int) -> int | None:
        return self.alive.get(pid)

    def signal(self, pid: int, sig: int) -> None:
        self.log.append(f"signal {pid} {signal.Signals(sig).name}")
        self.alive.pop(pid, None)

    def spawn(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int:
        self.next_pid += 1
        self.alive[self.next_pid] = 1
        self.log.append(f"spawn {self.next_pid} {argv[4] if len(argv) > 4 else argv[0]}")
        return self.next_pid


def test_several_gateway_hosts_are_valid() -> None:
    topo = loads(TOPOLOGY)
    assert [h.name for h in topo.gateway_hosts()] == ["gw1", "gw2", "gw3"]
    assert topo.gateway_host() is not None


def test_the_external_namespace_gets_a_link_per_gateway_and_an_l4_ecmp_route(
    tmp_path: Path,
) -> None:
    machine, names = Machine(), Names("g")
    state = LabState(
        name="g", prefix=names.prefix, dir=str(tmp_path), topology_file="", topology={}
    )
    ns = net.add_external(machine, state, names, ["gw1", "gw2"], MAC, "172.24.4.1/24", 1500)
    assert ns == "nvl-g-ext"
    text = "\n".join(machine.log)
    assert "sysctl -qw net.ipv4.fib_multipath_hash_policy=1" in text
    assert "sysctl -qw net.ipv4.conf.all.rp_filter=0" in text
    for host in ("gw1", "gw2"):
        assert (
            f"[nvl-g-{host}] link add name ext-gw mtu 1500 type veth peer name gw-{host} "
            f"mtu 1500 address {MAC} netns nvl-g-ext" in text
        )
        assert f"[nvl-g-ext] address add 172.24.4.1/24 dev gw-{host} noprefixroute" in text
    machine.log.clear()
    net.route_external(machine, names, "172.24.4.0/24", ["gw1", "gw2", "gw3"])
    net.route_external(machine, names, "172.24.4.0/24", ["gw2"])
    net.route_external(machine, names, "172.24.4.0/24", [])
    assert machine.log == [
        "[nvl-g-ext] route replace 172.24.4.0/24 nexthop dev gw-gw1 nexthop dev gw-gw2 "
        "nexthop dev gw-gw3",
        "[nvl-g-ext] route replace 172.24.4.0/24 dev gw-gw2",
        "[nvl-g-ext] route del 172.24.4.0/24",
    ]


def lab_state(tmp_path: Path, machine: Machine) -> LabState:
    hosts = {}
    for name in ("hv1", "gw1", "gw2", "gw3"):
        procs = {}
        for role in ("agent", "datapath"):
            pid = machine.spawn([role], tmp_path / "log")
            procs[role] = ProcessRecord(role=f"{role}:{name}", pid=pid, start_time=1, argv=[role])
        hosts[name] = HostRecord(
            name=name,
            netns=f"nvl-g-{name}",
            underlay_ip="10.254.0.11",
            encap="geneve",
            gateway=name != "hv1",
            iface_dir=str(tmp_path / name),
            status_file=str(tmp_path / name / "status.json"),
            agent=procs["agent"],
            datapath=procs["datapath"],
            agent_argv=["agent"],
            datapath_argv=["datapath"],
        )
    external = ExternalRecord(
        netns="nvl-g-ext",
        host="gw1",
        host_iface="ext-gw",
        network_id="n",
        subnet_id="s",
        port_id="upstream",
        mac=MAC,
        ip="172.24.4.1",
        prefixlen=24,
        mtu=1500,
        links={h: f"gw-{h}" for h in ("gw1", "gw2", "gw3")},
        active=["gw1", "gw2", "gw3"],
    )
    return LabState(
        name="g",
        prefix="nvl-g-",
        dir=str(tmp_path),
        topology_file="",
        topology=loads(TOPOLOGY).model_dump(mode="json", by_alias=True),
        hosts=hosts,
        external=external,
    )


def test_a_gentle_stop_drains_the_route_before_the_goodbye(tmp_path: Path) -> None:
    machine = Machine()
    lab = build.Lab(lab_state(tmp_path, machine), machine)
    machine.log.clear()
    lab.host_stop("gw2")
    agent, datapath = (p for p in machine.log if p.startswith("signal"))
    assert machine.log.index(agent) > 0  # the route changed first
    assert machine.log[0] == (
        "[nvl-g-ext] route replace 172.24.4.0/24 nexthop dev gw-gw1 nexthop dev gw-gw3"
    )
    assert agent.endswith("SIGTERM")
    assert datapath.endswith("SIGTERM")
    assert machine.log[-1] == "[nvl-g-ext] link set dev gw-gw2 down"
    assert lab.state.external is not None
    assert lab.state.external.active == ["gw1", "gw3"]


def test_a_kill_is_followed_by_the_route_and_the_link(tmp_path: Path) -> None:
    machine = Machine()
    lab = build.Lab(lab_state(tmp_path, machine), machine)
    machine.log.clear()
    lab.host_stop("gw1", hard=True)
    assert [line.split()[-1] for line in machine.log[:2]] == ["SIGKILL", "SIGKILL"]
    assert machine.log[2:] == [
        "[nvl-g-ext] route replace 172.24.4.0/24 nexthop dev gw-gw2 nexthop dev gw-gw3",
        "[nvl-g-ext] link set dev gw-gw1 down",
    ]


def test_start_brings_the_link_up_first_and_routes_it_once_ready(tmp_path: Path) -> None:
    machine = Machine()
    lab = build.Lab(lab_state(tmp_path, machine), machine)
    lab.host_stop("gw1", hard=True)
    lab.host_stop("gw3")
    machine.log.clear()
    lab.host_start("gw3", wait=False)
    assert machine.log[0] == "[nvl-g-ext] link set dev gw-gw3 up"
    assert machine.log[1].startswith("spawn")
    assert machine.log[-1] == (
        "[nvl-g-ext] route replace 172.24.4.0/24 nexthop dev gw-gw2 nexthop dev gw-gw3"
    )
    assert lab.plugged("gw3") == ["ext-gw"]
    assert lab.plugged("hv1") == []


def test_agent_only_stops_leave_the_gateway_routed(tmp_path: Path) -> None:
    machine = Machine()
    lab = build.Lab(lab_state(tmp_path, machine), machine)
    machine.log.clear()
    lab.host_stop("gw2", agent_only=True)
    assert not any(line.startswith("[nvl-g-ext]") for line in machine.log)
    assert lab.state.external is not None
    assert lab.state.external.active == ["gw1", "gw2", "gw3"]
