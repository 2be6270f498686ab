"""The ``netvirt agent`` process: two emulated hosts for real, and its pieces without root.

The system test starts a real ``netvirt serve`` and two ``netvirt agent``
processes, one per host namespace (joined by a veth underlay), with a VM
namespace plugged into each host by a veth. It checks ping and TCP between
the VMs, forwarding through an outage of the API server (and the agents'
resync once it is back), a restart of one agent under a running ping, and
that stopping releases everything. The other tests drive the plug directory,
the offload carry and the queued SB source in-process (no root needed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from netvirt.agent.ifaces import PlugDir, carry_output, valid_ifname
from netvirt.agent.runner import QueuedSB, SBLost, SBPending
from netvirt.dataplane import netns
from netvirt.dataplane.ports.base import GSO_TCPV4, VNET_F_NEEDS_CSUM, Frame, VnetHdr
from netvirt.dataplane.tunnels import GeneveTunnel
from netvirt.northbound import identity
from netvirt.northbound.context import Context
from netvirt.northbound.db import Database
from netvirt.southbound.model import Chassis, SBState
from netvirt.southbound.source import SBDelta
from system.netio import tcp_transfer

IP_A, IP_B = "10.9.8.1", "10.9.8.2"
CIDR = "10.77.0.0/24"
HOSTS = ("hv1", "hv2")


# -- the real thing (root) -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _status(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _fresh_status(path: Path, after: float) -> dict[str, Any]:
    """The first status written after ``after`` (wall clock)."""
    _wait(f"{path.name} to be rewritten", lambda: _status(path).get("updated_at", 0) > after, 5)
    return _status(path)


@dataclass
class Cloud:
    """A ``netvirt serve`` subprocess (admin and host tokens) and the agents it serves."""

    tmp: Path
    url: str = ""
    db_url: str = ""
    admin: str = ""
    host_token: str = ""
    server: subprocess.Popen[bytes] | None = None
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> None:
        self.db_url = f"sqlite:///{self.tmp / 'nb.db'}"
        db = Database(self.db_url)
        with db.write() as session:
            admin = identity.bootstrap(session)
        with db.write(bump=False) as session:
            host = identity.create_token(session, Context.admin(), "admin", "host", "hv")
        db.engine.dispose()
        assert admin is not None
        self.admin, self.host_token = admin["token"], host["token"]
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.serve()

    def serve(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        self.server = self.spawn(["serve", "--db", self.db_url, "--port", port], "serve.log")
        _wait("the API", self._up, 20)

    def spawn(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log, "ab")  # noqa: SIM115 - the child keeps it
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "netvirt.cli.main", *argv], stdout=out, stderr=out
            )
        finally:
            out.close()

    def _up(self) -> bool:
        try:
            return httpx.get(self.url + "/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = httpx.request(
            method, self.url + path, json=body, headers={"X-Auth-Token": self.admin}, timeout=10
        )
        assert resp.status_code < 300, resp.text
        return resp.json() if resp.content else None

    def start_agent(self, name: str, host_ns: str, ip: str) -> subprocess.Popen[bytes]:
        argv = [
            "agent",
            f"--name={name}",
            f"--netns={host_ns}",
            f"--underlay-ip={ip}",
            "--underlay-mtu=65535",
            f"--url={self.url}",
            f"--token={self.host_token}",
            f"--iface-dir={self.tmp / name}",
            f"--status-file={self.status_path(name)}",
        ]
        self.agents[name] = self.spawn(argv, f"{name}.log")
        return self.agents[name]

    def status_path(self, name: str) -> Path:
        return self.tmp / f"{name}.json"

    def status(self, name: str) -> dict[str, Any]:
        return _status(self.status_path(name))

    def in_sync(self, *hosts: str) -> bool:
        """Every host's running agent installed the NB generation and bound its port."""
        nb = self.api("GET", "/v2.0/netvirt/status")["status"]["nb_generation"]
        for host in hosts:
            status = self.status(host)
            if status.get("pid") != self.agents[host].pid:
                return False
            if status.get("installed_generation", -1) < nb or not status.get("bound"):
                return False
        return True

    def stop(self) -> None:
        """Agents first (SIGTERM), then the server, which would otherwise wait for the
        long-polls of the agents that just went away to time out."""
        for procs, grace in ((list(self.agents.values()), 10.0), ([self.server], 2.0)):
            for proc in procs:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                if proc is None:
                    continue
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    lab = Cloud(tmp_path)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


def _vm(scope: netns.NetnsScope, host: str, role: str, port: dict[str, Any]) -> str:
    """A VM namespace wired to ``host`` by a veth (host end named ``role``), set up from the
    NB port: its MAC, its address."""
    vm = scope.create(role)
    netns.create_veth(role, "eth0", netns_a=host, netns_b=vm, up=False)
    netns.ip("link", "set", "dev", "eth0", "address", port["mac_address"], netns=vm)
    netns.add_address("eth0", f"{port['fixed_ips'][0]['ip_address']}/24", netns=vm)
    netns.link_up("eth0", netns=vm)
    netns.link_up(role, netns=host)
    return vm


def _plug(cloud: Cloud, host: str, iface: str, port_id: str) -> None:
    """What the lab does: a file named after the interface, holding the port id (renamed
    into place, so the agent never reads half a file)."""
    plug_dir = cloud.tmp / host
    plug_dir.mkdir(exist_ok=True)
    (plug_dir / f".{iface}.tmp").write_text(port_id)
    (plug_dir / f".{iface}.tmp").rename(plug_dir / iface)


def _ping(vm: str, ip: str, count: int = 3) -> bool:
    done = netns.exec_in(vm, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", ip])
    return done.returncode == 0


@dataclass
class Topo:
    host_a: str
    host_b: str
    vm1: str
    vm2: str
    vm2_ip: str
    ports: list[dict[str, Any]]


def _build(scope: netns.NetnsScope, cloud: Cloud) -> Topo:
    """Two hosts on a veth underlay (MTU 65535), one VM on each, a network with their ports."""
    host_a, host_b = scope.create("hosta"), scope.create("hostb")
    netns.create_veth("ul0", "ul0", netns_a=host_a, netns_b=host_b, mtu=65535)
    netns.add_address("ul0", f"{IP_A}/24", netns=host_a)
    netns.add_address("ul0", f"{IP_B}/24", netns=host_b)
    net = cloud.api("POST", "/v2.0/networks", {"network": {"name": "web"}})["network"]
    subnet = {"network_id": net["id"], "cidr": CIDR, "ip_version": 4}
    cloud.api("POST", "/v2.0/subnets", {"subnet": subnet})
    ports = [
        cloud.api("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "binding:host_id": h}})[
            "port"
        ]
        for h in HOSTS
    ]
    vm1 = _vm(scope, host_a, "vm1", ports[0])
    vm2 = _vm(scope, host_b, "vm2", ports[1])
    _plug(cloud, "hv1", "vm1", ports[0]["id"])
    _plug(cloud, "hv2", "vm2", ports[1]["id"])
    return Topo(host_a, host_b, vm1, vm2, ports[1]["fixed_ips"][0]["ip_address"], ports)


def _server_outage(cloud: Cloud, topo: Topo) -> None:
    """The API server crashes: installed flows keep forwarding, the status says so; once a
    new server runs (it knows no chassis), the agents register again and resync."""
    assert cloud.server is not None
    cloud.server.kill()
    cloud.server.wait(5)
    _wait(
        "agents to see the SB down", lambda: not any(cloud.status(h)["sb_connected"] for h in HOSTS)
    )
    assert _ping(topo.vm1, topo.vm2_ip)
    assert all(cloud.status(h)["last_error"] for h in HOSTS)
    cloud.serve()
    _wait(
        "agents to resync",
        lambda: cloud.in_sync(*HOSTS) and all(cloud.status(h)["sb_connected"] for h in HOSTS),
        30,
    )
    for host in HOSTS:
        assert cloud.status(host)["counters"]["sb"]["registrations"] >= 2
    assert _ping(topo.vm1, topo.vm2_ip)


def _restart_under_ping(cloud: Cloud, topo: Topo) -> tuple[float, int, int]:
    """SIGKILL hv2's agent (nothing cleaned up) while vm1 pings vm2 every 0.2 s, start a new
    one; returns (seconds until it installed again, pings sent, pings lost)."""
    pinger = netns.popen_in(topo.vm1, ["ping", "-i", "0.2", "-W", "1", topo.vm2_ip])
    time.sleep(1.0)
    down = time.monotonic()
    cloud.agents["hv2"].kill()
    cloud.agents["hv2"].wait(5)
    cloud.start_agent("hv2", topo.host_b, IP_B)
    _wait("the restarted agent to install", lambda: cloud.in_sync("hv2"), 30)
    back = time.monotonic() - down
    time.sleep(1.0)
    pinger.send_signal(signal.SIGINT)
    out, _ = pinger.communicate(timeout=10)
    found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert found, out
    return back, int(found[1]), int(found[1]) - int(found[2])


@pytest.mark.system
def test_two_hosts_ping_tcp_outage_restart_and_cleanup(
    scope: netns.NetnsScope, cloud: Cloud, capsys: pytest.CaptureFixture[str]
) -> None:
    topo = _build(scope, cloud)
    started = time.monotonic()
    cloud.start_agent("hv1", topo.host_a, IP_A)
    cloud.start_agent("hv2", topo.host_b, IP_B)
    _wait("both agents to install the NB generation", lambda: cloud.in_sync(*HOSTS), 30)
    ready = time.monotonic() - started

    assert _ping(topo.vm1, topo.vm2_ip)
    began = time.monotonic()
    assert tcp_transfer(topo.vm2, topo.vm1, topo.vm2_ip, 16 << 20) == 16 << 20
    gbits = 2 * (16 << 20) * 8 / (time.monotonic() - began) / 1e9  # echoed: both directions
    status = _fresh_status(cloud.status_path("hv1"), time.time())
    assert status["sb_connected"] is True
    assert status["ports"] == status["bound"] == {"vm1": topo.ports[0]["id"]}
    tunnel = status["counters"]["tunnel"]  # (the VMs' IPv6 chatter may drop at their ports)
    assert tunnel["tx_packets"] > 0
    assert (tunnel["drops"], tunnel["tx_errors"]) == ({}, 0)
    assert status["io"]["tunnels"]["geneve"]["tx_dropped"] == 0
    assert status["tunnels"]["geneve"]["open"] is True
    port = cloud.api("GET", f"/v2.0/ports/{topo.ports[1]['id']}")["port"]
    assert (port["status"], port["binding:host_id"]) == ("ACTIVE", "hv2")

    _server_outage(cloud, topo)
    back, sent, lost = _restart_under_ping(cloud, topo)
    with capsys.disabled():
        print(
            f"\nagents ready in {ready:.2f}s; TCP echo {gbits:.2f} Gbit/s; hv2 restarted and "
            f"installed after {back:.2f}s; ping -i 0.2 lost {lost}/{sent}"
        )
    assert lost <= back / 0.2 + 5  # the outage lasts about as long as the restart
    assert sent - lost >= 5

    # Stop: clean exits, plug files untouched, sockets released.
    for proc in cloud.agents.values():
        proc.send_signal(signal.SIGTERM)
    assert [proc.wait(10) for proc in cloud.agents.values()] == [0, 0]
    assert (cloud.tmp / "hv1" / "vm1").read_text() == topo.ports[0]["id"]
    assert cloud.status("hv1")["running"] is False
    for host, ip in ((topo.host_a, IP_A), (topo.host_b, IP_B)):
        netns.run_in_netns(host, GeneveTunnel, ip).close()  # port 6081 is free again
    assert not _ping(topo.vm1, topo.vm2_ip, count=1)


# -- the pieces, in-process (no root) ----------------------------------------------------------


def test_plug_dir_follows_files_and_rereads_only_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugs = PlugDir(tmp_path / "plugs")
    assert plugs.scan() == {}  # no directory yet: nothing plugged
    path = tmp_path / "plugs"
    path.mkdir()
    (path / "vm1").write_text("port-1\n")
    (path / ".vm2.tmp").write_text("port-2")  # being written: skipped
    (path / "vm3").write_text("")  # not ready: skipped
    assert plugs.scan() == {"vm1": "port-1"}

    reads: list[str] = []
    real_read = PlugDir._read

    def counting_read(self: PlugDir, name: str) -> str | None:
        reads.append(name)
        return real_read(self, name)

    monkeypatch.setattr(PlugDir, "_read", counting_read)
    (path / ".vm2.tmp").rename(path / "vm2")
    assert plugs.scan() == {"vm1": "port-1", "vm2": "port-2"}
    assert reads == ["vm2"]  # vm1 and the empty vm3 are unchanged: not read again
    (path / "vm1").write_text("port-1b")
    os.utime(path / "vm1", ns=(1, 1))
    (path / "vm1").unlink()
    (path / "vm2").write_text("port-9")
    os.utime(path / "vm2", ns=(2, 2))
    (path / "vm3").write_text("port-3")
    assert plugs.scan() == {"vm2": "port-9", "vm3": "port-3"}


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("vm1", True),
        ("a" * 15, True),
        ("a" * 16, False),
        (".x", False),
        ("x.tmp", False),
        ("a b", False),
        ("a/b", False),
        ("", False),
    ],
)
def test_interface_names(name: str, ok: bool) -> None:
    assert valid_ifname(name) is ok


def _tcp(payload: int, *, vlan: bool = False) -> bytes:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if vlan:
        eth = eth / Dot1Q(vlan=7)
    pkt = eth / IP(src="10.0.0.1", dst="10.0.0.2", ttl=64) / TCP(sport=1000, dport=80, seq=1)
    return bytes(pkt / Raw(b"x" * payload))


SEEDED = VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16)


def _completes_to_valid_tcp(frame: Frame) -> bool:
    from netvirt.dataplane.ports import offload

    assert frame.vnet is not None
    done = Ether(offload.complete_checksum(frame.data, frame.vnet))
    given = done[TCP].chksum
    del done[TCP].chksum
    return bool(given == Ether(bytes(done))[TCP].chksum)


def test_carry_keeps_offload_metadata_of_rewrites_only() -> None:
    original = Frame(_tcp(3000), SEEDED)
    assert carry_output(None, b"plain") == b"plain"  # no input being handled: bytes as they are
    assert carry_output(original, original.data) == original
    # TTL decremented (the pipeline's incremental checksum update is wrong for a seed).
    routed = bytearray(original.data)
    routed[22] -= 1
    out = carry_output(original, bytes(routed))
    assert isinstance(out, Frame)
    assert out.vnet == SEEDED
    assert _completes_to_valid_tcp(out)
    # A VLAN tag pushed: offsets move with it.
    tagged = carry_output(original, _tcp(3000, vlan=True))
    assert isinstance(tagged, Frame)
    assert tagged.vnet is not None
    assert tagged.vnet.csum_start == SEEDED.csum_start + 4
    assert _completes_to_valid_tcp(tagged)
    # A generated packet 4 bytes shorter (an ICMP error) is not a rewrite.
    error = Ether() / IP() / ICMP(type=11) / IP(original.data[14:42]) / UDP()
    error = error / Raw(b"\0" * (len(original.data) - 4 - len(error)))
    wrapped = carry_output(original, bytes(error))
    assert isinstance(wrapped, Frame)
    assert wrapped.vnet is None


class ScriptedSB:
    """A remote SB the QueuedSB threads call: states by generation, failures on demand."""

    def __init__(self) -> None:
        self.generation = 1
        self.fail: Exception | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.report_gate = threading.Event()
        self.report_gate.set()
        self.refuse_ports = False

    def _state(self) -> SBState:
        return SBState(generation=self.generation)

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def snapshot(self) -> SBState:
        self._check()
        self.calls.append(("snapshot", self.generation))
        return self._state()

    def changes(self, since: int, timeout: float) -> SBDelta | SBState | None:
        self._check()
        if since == self.generation:
            time.sleep(min(timeout, 0.01))
            return None
        return SBDelta(base=since, generation=self.generation)

    def register_chassis(self, chassis: Chassis) -> None:
        self._check()
        self.calls.append(("chassis", chassis.name))

    def report_port(self, port: str, chassis: str, up: bool) -> None:
        self.report_gate.wait(5)
        self._check()
        if self.refuse_ports:
            from netvirt.southbound.http import SBRejected

            raise SBRejected(404, "PortNotFound", f"Port {port} could not be found.")
        self.calls.append(("port", port, up))

    def report_installed(self, chassis: str, generation: int) -> None:
        self._check()
        self.calls.append(("installed", generation))

    def report_member_health(self, chassis: str, member_id: str, status: str) -> None:
        self._check()
        self.calls.append(("health", member_id, status))

    def report_stats(self, chassis: str, stats: dict[str, Any]) -> None:
        self._check()
        self.calls.append(("stats", chassis))


@pytest.fixture
def queued() -> Iterator[tuple[QueuedSB, ScriptedSB]]:
    remote = ScriptedSB()
    wakes = threading.Semaphore(0)
    sb = QueuedSB(
        remote,
        Chassis("hv1", "geneve", "192.0.2.1"),
        wakes.release,
        poll_timeout=0.05,
        backoff=(0.01, 0.05),
    )
    sb.start()
    try:
        yield sb, remote
    finally:
        sb.stop()


def test_queued_sb_serves_snapshot_then_deltas_without_blocking(
    queued: tuple[QueuedSB, ScriptedSB],
) -> None:
    sb, remote = queued
    _wait("a snapshot", sb.snapshot_ready, 5)
    sb.register_chassis(Chassis("hv1", "geneve", "192.0.2.1"))  # resync: already registered
    assert sb.snapshot().generation == 1
    assert remote.calls[:2] == [("chassis", "hv1"), ("snapshot", 1)]
    started = time.monotonic()
    assert sb.changes(1, timeout=30) is None  # the agent's timeout is not waited for
    assert time.monotonic() - started < 0.5
    remote.generation = 2
    _wait("a delta", sb.pending, 5)
    change = sb.changes(1, 0)
    assert isinstance(change, SBDelta)
    assert (change.base, change.generation) == (1, 2)
    assert sb.connected
    assert ("chassis", "hv1") not in remote.calls[2:]


def test_queued_sb_lost_connection_means_one_resync(queued: tuple[QueuedSB, ScriptedSB]) -> None:
    sb, remote = queued
    _wait("a snapshot", sb.snapshot_ready, 5)
    sb.snapshot()
    remote.fail = ConnectionError("SB unreachable")
    _wait("the loss to show", lambda: sb.pending() and not sb.connected, 5)
    with pytest.raises(SBLost):
        sb.changes(1, 0)
    with pytest.raises(SBPending):
        sb.snapshot()  # still down: nothing to resync from yet
    assert sb.poll_health.failures >= 1
    remote.fail = None
    remote.generation = 5
    _wait("a new snapshot", sb.snapshot_ready, 5)
    assert sb.snapshot().generation == 5
    assert sb.changes(5, 0) is None  # resynced: no second SBLost
    assert remote.calls.count(("chassis", "hv1")) >= 2  # registered again before the snapshot


def test_queued_sb_reports_in_order_retried_and_coalesced(
    queued: tuple[QueuedSB, ScriptedSB],
) -> None:
    sb, remote = queued
    remote.report_gate.clear()  # the reporter blocks in the first report
    sb.report_port("p1", "hv1", True)
    for generation in (3, 4, 5):
        sb.report_installed("hv1", generation)
    remote.fail = ConnectionError("SB unreachable")
    remote.report_gate.set()
    _wait("a failed report", lambda: sb.report_health.failures >= 1, 5)
    assert not sb.connected
    remote.fail = None
    _wait("the reports", lambda: sb.queued_reports == 0 and ("installed", 5) in remote.calls, 5)
    reports = [c for c in remote.calls if c[0] in ("port", "installed")]
    assert reports == [("port", "p1", True), ("installed", 5)]
    remote.refuse_ports = True
    sb.report_port("gone", "hv1", False)
    sb.report_installed("hv1", 6)
    _wait("the installed report", lambda: ("installed", 6) in remote.calls, 5)
    assert "PortNotFound" in (sb.report_health.last_error or "")  # refused, not retried
    assert sb.connected  # a refusal is an answer: the SB is reachable


def test_runner_loop_plugs_forwards_reports_and_survives_failures(tmp_path: Path) -> None:
    """The process's loop in-process: memory ports, a scripted SB, a loopback tunnel."""
    from netvirt.agent.runner import Config, Runner
    from netvirt.dataplane.ports.memory import MemoryPort
    from netvirt.state.memory import MemoryStore

    available = {"vm1": MemoryPort("vm1")}

    def open_port(iface: str) -> MemoryPort:
        if iface not in available:
            raise OSError(19, "No such device")
        return available[iface]

    def open_tunnel(encap: str, ip: str, mtu: int) -> GeneveTunnel:
        if encap == "vxlan":
            raise OSError(98, "Address already in use")
        return GeneveTunnel(ip, 0, underlay_mtu=mtu)

    plugs, status_file = tmp_path / "plugs", tmp_path / "status.json"
    plugs.mkdir()
    (plugs / "vm1").write_text("port-1")
    (plugs / "vm9").write_text("port-9")
    config = Config("hv1", "127.0.0.1", "", "", plugs, status_file=status_file, scan_interval=0.0)
    remote = ScriptedSB()
    runner = Runner(
        config, sb=remote, store=MemoryStore(), open_port=open_port, open_tunnel=open_tunnel
    )
    runner.start()
    try:

        def spin(until: Callable[[], bool]) -> None:
            def turn() -> bool:
                runner.run_once(0.01)
                return until()

            _wait("the loop", turn, 5)

        spin(lambda: runner.agent.mirror.generation == 1)
        available["vm1"].inject(_tcp(10))
        spin(lambda: runner.agent.port_counters["vm1"].rx_packets == 1)
        runner.write_status()
        status = _status(status_file)
        assert status["ports"] == {"vm1": "port-1"}
        assert "vm9" in status["unplugged"]
        assert status["tunnels"]["geneve"] == {"open": True, "error": None}
        assert "Address already in use" in status["tunnels"]["vxlan"]["error"]
        assert status["counters"]["drops"] == {"unknown_port": 1}  # not a port of the SB
        assert (status["sb_connected"], status["sb_generation"], status["running"]) == (
            True,
            1,
            True,
        )

        remote.fail = ConnectionError("SB unreachable")
        spin(lambda: not runner.sb.connected)
        available["vm1"].inject(_tcp(10))  # still forwarding (here: still counting)
        spin(lambda: runner.agent.port_counters["vm1"].rx_packets == 2)
        (plugs / "vm1").unlink()
        spin(lambda: "vm1" not in runner.agent.plugs and not runner.ports.open)
    finally:
        runner.close()
    status = _status(status_file)
    assert status["running"] is False
    assert "SB unreachable" in status["last_error"]
    assert sorted(p.name for p in plugs.iterdir()) == ["vm9"]  # the agent removes nothing
