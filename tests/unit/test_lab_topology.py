"""The lab without root: topology validation, names, state file, teardown, checks, DHCP script.

Teardown runs against :class:`FakeSystem`, an in-memory machine with
namespaces and processes (pid, start time, namespace, command line), so the
rules that make ``lab down`` exact and repeatable are tested here; the system
test runs them for real.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from netvirt.cli.main import app
from netvirt.lab import build, check, dhcp, net
from netvirt.lab.net import Names
from netvirt.lab.state import HostRecord, LabState, ProcessRecord, VmRecord
from netvirt.lab.topology import Check, TopologyError, load, loads

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE = """
hosts: [{name: hv1}, {name: hv2}]
projects:
  - name: demo
    networks: [{name: net1, cidr: 10.0.0.0/24}]
vms:
  - {name: vm1, host: hv1, network: net1}
"""


def problems(text: str) -> dict[str, str]:
    with pytest.raises(TopologyError) as info:
        loads(text)
    return dict(info.value.problems)


# ---------------------------------------------------------------------- topology


def test_examples_are_valid_and_pick_their_state_store() -> None:
    quick = load(EXAMPLES / "quickstart.yaml")
    minimal = load(EXAMPLES / "minimal.yaml")
    # SNAT, a floating IP and an LB are un-translated on another host: shared state
    assert quick.state_backend() == "redis"
    assert minimal.state_backend() == "memory"
    assert quick.gateway_host() is not None
    assert {p.networks[0].cidr for p in quick.projects} == {"10.0.0.0/24"}
    assert len({vm.host for vm in quick.vms if vm.name in quick.load_balancers[0].members}) == 2
    monitor = quick.load_balancers[0].health_monitor  # the members' hosts check them
    assert monitor is not None
    assert monitor.type == "HTTP"
    assert minimal.checks
    assert len({vm.host for vm in minimal.vms}) == 2


def test_defaults_fill_in_the_single_project_and_default_group() -> None:
    topo = loads(BASE)
    vm = topo.vms[0]
    assert topo.vm_project(vm) == "demo"
    assert vm.security_groups == ["default"]
    assert topo.name == "lab"
    assert topo.underlay.mtu == 65535


def test_explicit_state_overrides_auto() -> None:
    assert loads(BASE + "state: redis\n").state_backend() == "redis"


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        ("vms: [{name: vm1, host: hv9, network: net1}]", "vms[0].host", "unknown host 'hv9'"),
        (
            "vms: [{name: vm1, host: hv1, network: net1, ip: 10.0.0.1}]",
            "vms[0].ip",
            "is the gateway",
        ),
        ("vms: [{name: vm1, host: hv1, network: nope}]", "vms[0].network", "unknown network"),
        ("vms: [{name: VM1, host: hv1, network: net1}]", "vms[0].name", "not a valid node name"),
        ("vms: [{name: hv1, host: hv1, network: net1}]", "vms[0].name", "is taken"),
        ("vms: [{name: ext, host: hv1, network: net1}]", "vms[0].name", "reserved"),
        (
            "vms: [{name: vm1, host: hv1, network: net1, ip: 10.9.0.5}]",
            "vms[0].ip",
            "not in 10.0.0.0/24",
        ),
        (
            "vms: [{name: vm1, host: hv1, network: net1, security_groups: [web]}]",
            "vms[0].security_groups[0]",
            "unknown security group 'web'",
        ),
        (
            "vms: [{name: vm1, host: hv1, network: net1, floating_ip: true}]",
            "vms[0].floating_ip",
            "needs a router with gateway",
        ),
        (
            "vms: [{name: vm1, host: hv1, network: net1, services: [ftp]}]",
            "vms[0].services",
            "unknown service 'ftp'",
        ),
        (
            "vms: [{name: vm1, host: hv1, network: net1, colour: red}]",
            "vms[0].colour",
            "Extra inputs",
        ),
        (
            "checks: [{from: vm1, to: vm7}]",
            "checks[0].to",
            "unknown target 'vm7'",
        ),
        ("checks: [{from: vm1, to: vm1, kind: tcp}]", "checks[0].kind", "tcp:PORT"),
        (
            "load_balancers: [{name: lb, network: net1, members: [vm1, vm5]}]",
            "load_balancers[0].members[1]",
            "unknown VM 'vm5'",
        ),
        ("external: {cidr: 172.24.4.0/24}", "hosts", "gateway: true"),
        ("underlay: {mtu: 100}", "underlay.mtu", "greater than or equal to 1280"),
    ],
)
def test_errors_name_the_field(extra: str, path: str, words: str) -> None:
    text = BASE.replace("vms:\n  - {name: vm1, host: hv1, network: net1}\n", "")
    if not extra.startswith("vms:"):
        text += "vms: [{name: vm1, host: hv1, network: net1}]\n"
    found = problems(text + extra + "\n")
    assert path in found, found
    assert words in found[path]


def test_project_level_errors_are_all_reported_at_once() -> None:
    text = """
hosts: [{name: hv1}]
projects:
  - name: a
    networks:
      - {name: n1, cidr: 10.0.0.0/24}
      - {name: n2, cidr: 10.0.0.0/25}
    routers:
      - {name: r, networks: [n1, n2, n3], gateway: true}
    security_groups:
      - name: s
        rules: [{port: 80}, {protocol: tcp, port: 90-80}, {protocol: tcp, remote_group: x}]
"""
    found = problems(text)
    assert "overlaps" in found["projects[0].routers[0].networks[1]"]
    assert "unknown network 'n3'" in found["projects[0].routers[0].networks[2]"]
    assert "external" in found["projects[0].routers[0].gateway"]
    assert "protocol tcp or udp" in found["projects[0].security_groups[0].rules[0].port"]
    assert "not a range" in found["projects[0].security_groups[0].rules[1].port"]
    assert (
        "unknown security group 'x'"
        in found["projects[0].security_groups[0].rules[2].remote_group"]
    )


def test_several_projects_need_explicit_owners() -> None:
    text = BASE + "  - name: other\n"
    text = text.replace("vms:\n  - {name: vm1, host: hv1, network: net1}\n", "")
    text += "vms: [{name: vm1, host: hv1, network: net1}]\n"
    assert "several projects" in problems(text)["vms[0].project"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("hosts: [{name: hv1]", "not valid YAML"),
        ("", "must be a mapping"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_bad_yaml_is_one_clear_error(text: str, words: str) -> None:
    with pytest.raises(TopologyError, match=words) as info:
        loads(text, "topo.yaml")
    assert str(info.value).startswith("topo.yaml: invalid topology")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read the file"):
        load(tmp_path / "nope.yaml")


def test_cli_refuses_an_invalid_file_before_building(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("host: hv1", "host: hv7"))
    result = CliRunner().invoke(app, ["lab", "up", str(bad)])
    assert result.exit_code == 2
    assert "vms[0].host: unknown host 'hv7'" in result.stderr


# ---------------------------------------------------------------------- names

node_names = st.from_regex(r"[a-z][a-z0-9-]{0,11}", fullmatch=True)
lab_names = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)


@given(lab=lab_names, node=node_names)
def test_interface_names_fit_ifnamsiz(lab: str, node: str) -> None:
    names = Names(lab)
    for ifname in (names.vm_port(node), names.bridge_port(node), net.UPLINK, net.EXT_IFACE):
        assert 0 < len(ifname.encode()) <= net.IFNAMSIZ
    assert names.ns(node).startswith(names.prefix)
    assert names.prefix == f"nvl-{lab}-"


def test_prefixes_of_two_labs_never_overlap() -> None:
    # "nvl-lab-" must not sweep "nvl-lab2-…" namespaces on down
    assert not Names("lab2").ns("hv1").startswith(Names("lab").prefix)


def test_overlong_interface_name_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 15"):
        Names("lab").vm_port("a" * 14)


# ---------------------------------------------------------------------- state file


def sample_state(directory: Path) -> LabState:
    proc = ProcessRecord(role="serve", pid=10, start_time=111, argv=["serve"], log="x.log")
    agent = ProcessRecord(role="agent:hv1", pid=11, start_time=112, argv=["agent"])
    return LabState(
        name="t",
        prefix="nvl-t-",
        dir=str(directory),
        topology_file="t.yaml",
        topology=loads(BASE).model_dump(mode="json", by_alias=True),
        url="http://127.0.0.1:1",
        admin_token="secret",
        namespaces=["nvl-t-ul", "nvl-t-hv1"],
        processes=[proc],
        hosts={
            "hv1": HostRecord(
                name="hv1",
                netns="nvl-t-hv1",
                underlay_ip="10.254.0.11",
                encap="geneve",
                gateway=False,
                iface_dir=str(directory / "i"),
                status_file=str(directory / "s.json"),
                agent=agent,
            )
        },
        vms={
            "vm1": VmRecord(
                name="vm1",
                project="demo",
                host="hv1",
                netns="nvl-t-vm1",
                host_iface="vm-vm1",
                network="net1",
                network_id="n",
                port_id="p",
                mac="fa:16:3e:00:00:01",
                ip="10.0.0.2",
                prefixlen=24,
                gateway="10.0.0.1",
                mtu=1442,
                services=["http:80"],
            )
        },
    )


def test_state_round_trip_is_private(tmp_path: Path) -> None:
    state = sample_state(tmp_path / "t")
    state.save()
    assert LabState.load(tmp_path / "t") == state
    assert (tmp_path / "t" / "state.json").stat().st_mode & 0o777 == 0o600
    assert LabState.load(tmp_path / "other") is None
    assert state.node_netns("vm1") == "nvl-t-vm1"
    assert state.node_netns("underlay") == "nvl-t-ul"
    assert state.node_netns("ext") is None  # this lab has no external network
    # users of the server are stopped before it
    assert [p.role for p in state.all_processes()] == ["agent:hv1", "serve"]


def test_state_of_another_format_is_refused(tmp_path: Path) -> None:
    state = sample_state(tmp_path)
    state.format = 99
    state.save()
    with pytest.raises(ValueError, match="format 99"):
        LabState.load(tmp_path)


def test_topology_survives_the_state_file(tmp_path: Path) -> None:
    state = sample_state(tmp_path)
    state.save()
    reloaded = LabState.load(tmp_path)
    assert reloaded is not None
    assert build.Lab(reloaded, FakeSystem()).topology == loads(BASE)


# ---------------------------------------------------------------------- teardown


@dataclass
class FakeProc:
    start: int
    netns: str | None
    cmdline: str
    stubborn: bool = False  # ignores SIGTERM


class FakeSystem:
    """Namespaces and processes in memory; signals end processes at once."""

    def __init__(self) -> None:
        self.namespaces: set[str] = set()
        self.procs: dict[int, FakeProc] = {}
        self.signals: list[tuple[int, int]] = []
        self.next_pid = 100

    def ip(self, *args: str, netns: str | None = None, check: bool = True) -> str:
        return ""

    def netns_list(self, prefix: str) -> list[str]:
        return sorted(n for n in self.namespaces if n.startswith(prefix))

    def netns_add(self, name: str) -> None:
        self.namespaces.add(name)

    def netns_delete(self, name: str) -> None:
        self.namespaces.discard(name)

    def netns_pids(self, name: str) -> list[int]:
        return [pid for pid, p in self.procs.items() if p.netns == name]

    def pids_with_arg(self, needle: str) -> list[int]:
        return [pid for pid, p in self.procs.items() if needle in p.cmdline]

    def start_time(self, pid: int) -> int | None:
        proc = self.procs.get(pid)
        return None if proc is None else proc.start

    def signal(self, pid: int, sig: int) -> None:
        self.signals.append((pid, sig))
        proc = self.procs.get(pid)
        if proc is not None and (sig == signal.SIGKILL or not proc.stubborn):
            del self.procs[pid]

    def spawn(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int:
        self.next_pid += 1
        netns = argv[3] if list(argv[:3]) == ["ip", "netns", "exec"] else None
        self.procs[self.next_pid] = FakeProc(1000 + self.next_pid, netns, " ".join(argv))
        return self.next_pid


def test_down_removes_what_up_made_and_is_idempotent(tmp_path: Path) -> None:
    system = FakeSystem()
    names = Names("t")
    state = sample_state(tmp_path)
    state.processes = []
    state.hosts["hv1"].agent = None
    state.namespaces = []
    net.build_underlay(system, state, names, 65535)
    net.add_host(system, state, names, "hv1", "10.254.0.11/24", 65535)
    net.add_vm(system, state, names, "vm1", "hv1", "fa:16:3e:00:00:01", 1442)
    serve = net.start_process(system, "serve", [f"serve --db {tmp_path}/db"], tmp_path / "l")
    web = net.start_process(system, "service:vm1", ["http"], tmp_path / "l", "nvl-t-vm1")
    state.processes = [serve, web]
    system.procs[serve.pid].stubborn = True  # needs SIGKILL
    other_lab = system.spawn(["ip", "netns", "exec", "nvl-t2-vm1", "x"], tmp_path / "l")
    system.namespaces.add("nvl-t2-vm1")
    assert state.namespaces == ["nvl-t-ul", "nvl-t-hv1", "nvl-t-vm1"]

    report = net.teardown(system, names, state, tmp_path, grace=0.01)
    assert report.processes == 2
    assert report.namespaces == 3
    assert report.remaining == ()
    assert (serve.pid, signal.SIGKILL) in system.signals
    assert system.namespaces == {"nvl-t2-vm1"}  # another lab's namespace stays
    assert other_lab in system.procs

    again = net.teardown(system, names, state, tmp_path, grace=0.01)
    assert (again.processes, again.namespaces, again.remaining) == (0, 0, ())


def test_down_without_a_state_file_sweeps_by_prefix_and_directory(tmp_path: Path) -> None:
    system = FakeSystem()
    names = Names("t")
    system.namespaces |= {"nvl-t-hv1", "nvl-t-vm1", "nvl-other-hv1"}
    in_ns = system.spawn(["ip", "netns", "exec", "nvl-t-vm1", "http"], tmp_path / "l")
    agent = system.spawn(["agent", "--iface-dir", f"{tmp_path}/hosts/hv1"], tmp_path / "l")
    bystander = system.spawn(["agent", "--iface-dir", "/elsewhere/hosts"], tmp_path / "l")
    report = net.teardown(system, names, None, tmp_path, grace=0.01)
    assert report.processes == 2
    assert in_ns not in system.procs
    assert agent not in system.procs
    assert bystander in system.procs
    assert system.namespaces == {"nvl-other-hv1"}


def test_a_recycled_pid_is_never_killed(tmp_path: Path) -> None:
    system = FakeSystem()
    state = sample_state(tmp_path)
    state.namespaces = []
    stranger = system.spawn(["sshd"], tmp_path / "l")
    # the state remembers pid `stranger` with another start time: a reused pid
    state.processes = [ProcessRecord(role="serve", pid=stranger, start_time=1, argv=["x"])]
    state.hosts["hv1"].agent = None
    net.teardown(system, Names("t"), state, tmp_path, grace=0.01)
    assert stranger in system.procs
    assert system.signals == []


def test_build_down_removes_the_directory_and_repeats(tmp_path: Path) -> None:
    system = FakeSystem()
    state = sample_state(tmp_path / "t")
    state.processes = []
    state.hosts["hv1"].agent = None
    state.save()
    system.namespaces |= set(state.namespaces)
    first = build.down("t", system=system, root=tmp_path)
    assert first.namespaces == 2
    assert not (tmp_path / "t").exists()
    second = build.down("t", system=system, root=tmp_path)
    assert (second.processes, second.namespaces) == (0, 0)


def test_up_refuses_a_lab_that_exists(tmp_path: Path) -> None:
    system = FakeSystem()
    sample_state(tmp_path / "lab").save()
    with pytest.raises(build.LabError, match="exists already"):
        build.up(loads(BASE), "x.yaml", system=system, root=tmp_path)
    system.namespaces.add("nvl-other-ul")
    leftovers = FakeSystem()
    leftovers.namespaces.add("nvl-lab-hv1")
    with pytest.raises(build.LabError, match="lab down"):
        build.up(loads(BASE), "x.yaml", system=leftovers, root=tmp_path / "fresh")


# ---------------------------------------------------------------------- checks


def test_check_targets_resolve(tmp_path: Path) -> None:
    state = sample_state(tmp_path)
    state.vms["vm1"].fip = "172.24.4.7"
    assert check.target_address(state, "vm1") == "10.0.0.2"
    assert check.target_address(state, "vm1:fip") == "172.24.4.7"
    assert check.target_address(state, "192.0.2.9") == "192.0.2.9"
    with pytest.raises(check.CheckError):
        check.target_address(state, "ext")  # no external network in this lab
    with pytest.raises(check.CheckError):
        check.source_netns(state, "nobody")


class Script:
    """A probe runner answering from a list, recording the commands."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> tuple[int, str]:
        self.calls.append(list(argv))
        return self.answers.pop(0)


def test_ping_is_retried_once_and_http_needs_200() -> None:
    runner = Script((1, "1 packets transmitted, 0 received"), (0, "rtt min/avg/max = 1/2.5/3/0"))
    assert check.probe("ns", "ping", "10.0.0.3", runner) == (True, "rtt 2.5 ms")
    assert runner.calls[0][:4] == ["ip", "netns", "exec", "ns"]
    blocked = Script((1, "x packets transmitted"), (1, "x packets transmitted"))
    assert check.probe("ns", "ping", "10.0.0.3", blocked) == (False, "no reply")
    assert check.probe("ns", "http:8080", "a", Script((0, "404 nope")))[0] is False
    runner = Script((0, "200 vm2"))
    assert check.probe("ns", "http:8080", "a", runner) == (True, "200 vm2")
    assert runner.calls[0][-3:-1] == ["a", "8080"]


def test_a_check_passes_when_reality_matches_expectation(tmp_path: Path) -> None:
    state = sample_state(tmp_path)
    blocked = Check.model_validate(
        {"from": "vm1", "to": "vm1", "kind": "tcp:22", "expect": "blocked"}
    )
    [result] = check.run_checks(state, [blocked], Script((1, "timed out")))
    assert result.passed
    assert not result.reached


# ---------------------------------------------------------------------- DHCP


def test_lease_record_parses() -> None:
    lease = dhcp.parse_lease(
        "ip=10.0.0.5\nmask=24\nrouter=10.0.0.1 10.0.0.2\ndns=192.0.2.53 192.0.2.54\n"
        "mtu=1442\nlease=43200\nserverid=10.0.0.1\ndomain=\n"
    )
    assert lease.cidr == "10.0.0.5/24"
    assert lease.router == "10.0.0.1"
    assert lease.dns == ("192.0.2.53", "192.0.2.54")
    assert (lease.mtu, lease.lease_time, lease.domain) == (1442, 43200, None)
    with pytest.raises(dhcp.DhcpError):
        dhcp.parse_lease("mask=24\n")


def test_dhcp_script_is_valid_sh_and_leaves_resolv_conf_alone(tmp_path: Path) -> None:
    path = dhcp.write_script(tmp_path)
    assert os.access(path, os.X_OK)
    assert subprocess.run(["sh", "-n", str(path)], check=False).returncode == 0
    code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not any("resolv.conf" in line for line in code)


def test_script_records_a_lease_with_a_fake_ip(tmp_path: Path) -> None:
    """Run the script as udhcpc would, with `ip` replaced by a recorder."""
    path = dhcp.write_script(tmp_path)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    log = tmp_path / "ip.log"
    (fake_bin / "ip").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (fake_bin / "ip").chmod(0o755)
    env = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "interface": "eth0",
        "ip": "10.0.0.5",
        "mask": "24",
        "router": "10.0.0.1",
        "mtu": "1442",
        "dns": "192.0.2.53",
        dhcp.LEASE_ENV: str(tmp_path / "vm.lease"),
    }
    subprocess.run([str(path), "bound"], env=env, check=True)
    commands = log.read_text().splitlines()
    assert "addr add 10.0.0.5/24 dev eth0" in commands
    assert "link set dev eth0 mtu 1442" in commands
    assert "route replace default via 10.0.0.1 dev eth0" in commands
    assert dhcp.parse_lease((tmp_path / "vm.lease").read_text()).router == "10.0.0.1"
