"""Behaviours of a running lab, with real clients in real namespaces (root).

One lab for the whole module (``behaviour.yaml``: two hosts, two subnets
joined by a router, NF state in Redis), brought up once under a name unique
to this run and always brought down, even when a test fails; the module's
last teardown asserts that nothing with the lab's prefix is left.

What is checked here and nowhere else: a VM spoofing its MAC, IP or ARP is
dropped at its own port (the destination's kernel never sees the frame) and
counted under the right reason; Scapy-made malformed and fuzzed frames are
counted under named reasons while the agent stays up and keeps forwarding;
traceroute through the router shows the router hop (TTL expiry answered by
the router); an iperf3 TCP stream survives a restart of a host's agent; the
DHCP lease matches the API's subnet and network where they differ from the
defaults test_lab.py sees; a group admitting only its own members (a remote-group
rule, matched through the ``acl_sets`` address set) lets a member in across the
router and another host, and not a VM outside the group.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw, fuzz

from netvirt.api.client import NetvirtClient
from netvirt.dataplane import netns
from netvirt.dataplane.drops import DropReason
from netvirt.lab.build import agent_status
from netvirt.lab.state import VmRecord
from system.labrun import LabRun, wait_reachable

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

TOPOLOGY = Path(__file__).resolve().parent / "behaviour.yaml"
FOREIGN_MAC = "02:00:5e:10:00:99"
FOREIGN_IP = "10.1.0.99"
UDP_PORT = 47000
IPERF_PORT = 5201
ETH_P_ALL = 0x0003

# Runs inside a VM namespace: the frames arrive as hex lines on stdin and leave
# eth0 exactly as given (Raw: Scapy adds nothing).
SENDP = (
    "import sys\n"
    "from scapy.all import Raw, sendp\n"
    "frames = [Raw(bytes.fromhex(line)) for line in sys.stdin.read().split()]\n"
    "sendp(frames, iface='eth0', verbose=False)\n"
    "print(len(frames))\n"
)


class Lab(LabRun):
    """The shared lab driver plus the VM records and agent status files these tests read."""

    def vm(self, name: str) -> VmRecord:
        return self.state().vms[name]

    def status(self, host: str, newer_than: float = 0.0) -> dict[str, Any]:
        """The agent's status file, once it was written after ``newer_than`` (Unix time)."""
        path = Path(self.state().hosts[host].status_file)
        deadline = time.monotonic() + 10
        while True:
            try:
                status: dict[str, Any] = json.loads(path.read_text())
                if status.get("updated_at", 0) >= newer_than:
                    return status
            except (OSError, ValueError):
                pass
            assert time.monotonic() < deadline, f"no fresh status from {host}'s agent"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for tool in ("busybox", "redis-server"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: run scripts/setup.sh")
    run = Lab(f"b{os.getpid() % 100000}", tmp_path_factory.mktemp("labs"))
    try:
        run.ok("up", str(TOPOLOGY), "--name", run.name)
        for src, dst in (("a1", "a2"), ("a1", "b1"), ("a2", "a1")):
            assert wait_reachable(run, src, run.vm(dst).ip), f"{src} cannot reach {dst}"
        yield run
    finally:
        down = run("down", timeout=60)
        left = run.leftovers()
    assert down.returncode == 0, down.stderr
    assert left == []


# ---------------------------------------------------------------------- frames in and out


def send_frames(lab: Lab, vm: str, frames: list[bytes]) -> None:
    """Send raw frames out of ``vm``'s eth0 with Scapy's ``sendp``, inside its namespace."""
    ns = lab.vm(vm).netns
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SENDP],
        input="\n".join(f.hex() for f in frames),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(frames))


class Sniffer:
    """An AF_PACKET socket on a VM's eth0, opened inside its namespace: what its kernel gets."""

    def __init__(self, lab: Lab, vm: str) -> None:
        def open_socket() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.bind(("eth0", 0))
            sock.settimeout(0.1)
            return sock

        self.sock = netns.run_in_netns(lab.vm(vm).netns, open_socket)
        self.frames: list[bytes] = []

    def collect_until(self, done: Callable[[list[bytes]], bool], timeout: float) -> bool:
        """Read incoming frames until ``done(frames)`` or the timeout; then half a second more
        (anything sent before the last awaited frame has had its chance to arrive)."""
        deadline = time.monotonic() + timeout
        while not done(self.frames):
            if time.monotonic() > deadline:
                return False
            self._read()
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            self._read()
        return True

    def _read(self) -> None:
        try:
            data, address = self.sock.recvfrom(65535)
        except TimeoutError:
            return
        if address[2] != socket.PACKET_OUTGOING:
            self.frames.append(data)

    def seen(self, needle: bytes) -> bool:
        return any(needle in frame for frame in self.frames)

    def close(self) -> None:
        self.sock.close()


def drop_delta(before: dict[str, Any], after: dict[str, Any], iface: str) -> Counter[str]:
    """Drops counted on ``iface`` between two status files of the same agent process."""
    old = before["counters"]["ports"].get(iface, {}).get("drops", {})
    new = after["counters"]["ports"].get(iface, {}).get("drops", {})
    return Counter({k: v - old.get(k, 0) for k, v in new.items() if v != old.get(k, 0)})


def wait_drops(
    lab: Lab, host: str, iface: str, before: dict[str, Any], wanted: Counter[str]
) -> tuple[dict[str, Any], Counter[str]]:
    """The status once ``wanted`` drops (at least) were counted on ``iface`` (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        after = lab.status(host, newer_than=time.time())
        delta = drop_delta(before, after, iface)
        if all(delta[k] >= n for k, n in wanted.items()) or time.monotonic() > deadline:
            return after, delta


# ---------------------------------------------------------------------- 1. spoofing


def test_spoofed_mac_ip_and_arp_are_dropped_at_the_source_port(lab: Lab) -> None:
    a1, a2, b1 = lab.vm("a1"), lab.vm("a2"), lab.vm("b1")
    tag = os.urandom(4).hex()

    def udp(src_mac: str, src_ip: str, marker: str) -> bytes:
        packet = Ether(src=src_mac, dst=a2.mac) / IP(src=src_ip, dst=a2.ip)
        packet = packet / UDP(sport=UDP_PORT, dport=UDP_PORT) / Raw(f"{marker}-{tag}".encode())
        return bytes(packet)

    mac_spoofs = [udp(FOREIGN_MAC, a1.ip, "mac0"), udp(b1.mac, a1.ip, "mac1")]
    ip_spoofs = [udp(a1.mac, FOREIGN_IP, "ip0"), udp(a1.mac, b1.ip, "ip1")]
    # a gratuitous ARP reply from a1 claiming a2's address
    arp = Ether(src=a1.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=2, hwsrc=a1.mac, psrc=a2.ip, hwdst="ff:ff:ff:ff:ff:ff", pdst=a2.ip
    )
    arp_needle = bytes.fromhex(a1.mac.replace(":", "")) + socket.inet_aton(a2.ip)
    legit = udp(a1.mac, a1.ip, "legit")

    before = lab.status("hv1", newer_than=time.time())
    sniffer = Sniffer(lab, "a2")
    try:
        send_frames(lab, "a1", [*mac_spoofs, *ip_spoofs, bytes(arp), legit])
        arrived = f"legit-{tag}".encode()
        for _ in range(3):  # the control frame comes last; resend it if the path was cold
            if sniffer.collect_until(lambda frames: any(arrived in f for f in frames), 5):
                break
            send_frames(lab, "a1", [legit])
        assert sniffer.seen(arrived), "a1's own well-formed frame must reach a2"
        for marker in ("mac0", "mac1", "ip0", "ip1"):
            assert not sniffer.seen(f"{marker}-{tag}".encode()), f"spoofed frame {marker} arrived"
        assert not sniffer.seen(arp_needle), "the spoofed ARP reached a2"
    finally:
        sniffer.close()

    wanted = Counter({"port_security_mac": 2, "port_security_ip": 2, "arp_spoof": 1})
    after, delta = wait_drops(lab, "hv1", a1.host_iface, before, wanted)
    assert after["pid"] == before["pid"]
    for reason, count in wanted.items():
        assert delta[reason] == count, f"{reason}: {dict(delta)}"
    assert after["counters"]["drops"]["port_security_mac"] >= 2  # the agent-wide total too


# ---------------------------------------------------------------------- 2. malformed frames


def malformed_frames(a1: VmRecord, a2: VmRecord) -> tuple[list[bytes], Counter[str]]:
    """Hand-made malformed frames from a1 to a2, and the drop reason each must get."""

    def eth() -> bytes:
        return bytes(Ether(src=a1.mac, dst=a2.mac, type=0x0800))

    ip_udp = bytes(IP(src=a1.ip, dst=a2.ip) / UDP(sport=1, dport=UDP_PORT) / Raw(b"x" * 8))
    made: list[tuple[str, bytes]] = [
        # the IPv4 header cut anywhere inside its 20 bytes
        *(("truncated_ipv4", eth() + ip_udp[:cut]) for cut in range(1, 20)),
        ("bad_ipv4_ihl", eth() + bytes([0x43]) + ip_udp[1:]),  # 12-byte header
        ("bad_ipv4_ihl", eth() + bytes([0x4F]) + ip_udp[1:]),  # 60 bytes: beyond the packet
        ("bad_ipv4_version", eth() + bytes([0x65]) + ip_udp[1:]),
        ("bad_ipv4_total_length", eth() + ip_udp[:2] + struct.pack("!H", 10) + ip_udp[4:]),
        ("bad_ipv4_total_length", eth() + ip_udp[:2] + struct.pack("!H", 999) + ip_udp[4:]),
        ("bad_checksum", eth() + bytes(IP(src=a1.ip, dst=a2.ip, chksum=0x1234) / UDP())),
    ]
    l3 = Ether(src=a1.mac, dst=a2.mac)
    made += [
        ("truncated_udp", bytes(l3 / IP(src=a1.ip, dst=a2.ip, proto=17) / Raw(b"\x0f\xa0"))),
        ("bad_udp_length", bytes(l3 / IP(src=a1.ip, dst=a2.ip) / UDP(len=200) / Raw(b"abc"))),
        ("truncated_tcp", bytes(l3 / IP(src=a1.ip, dst=a2.ip, proto=6) / Raw(b"\0\1\0\2"))),
        ("bad_tcp_offset", bytes(l3 / IP(src=a1.ip, dst=a2.ip) / TCP(dataofs=2))),
        ("truncated_icmp", bytes(l3 / IP(src=a1.ip, dst=a2.ip, proto=1) / Raw(b"\x08"))),
        (
            "truncated_arp",
            bytes(Ether(src=a1.mac, dst="ff:ff:ff:ff:ff:ff", type=0x0806)) + b"\0\1\x08\0",
        ),
    ]
    return [frame for _, frame in made], Counter(reason for reason, _ in made)


def router_mac(lab: Lab, vm: str, gateway: str) -> str:
    """The router port's MAC as the VM's kernel learned it (by ARP)."""
    for _ in range(3):
        out = lab.sh(vm, "ip", "neigh", "show", gateway, "dev", "eth0").stdout
        match = re.search(r"lladdr ([0-9a-f:]{17})", out)
        if match:
            return match.group(1)
        lab.sh(vm, "ping", "-n", "-c", "1", "-W", "1", gateway)
    raise AssertionError(f"{vm} never resolved its gateway {gateway}")


def test_malformed_and_fuzzed_frames_are_counted_and_forwarding_goes_on(lab: Lab) -> None:
    a1, a2, b1 = lab.vm("a1"), lab.vm("a2"), lab.vm("b1")
    assert a1.gateway is not None
    frames, expected = malformed_frames(a1, a2)
    # Scapy's fuzz(): random header fields (the version too) with a1's own addresses, so
    # port security lets them in and the parser and pipeline meet them; half are routed.
    random.seed(0x4E56)
    gw_mac = router_mac(lab, "a1", a1.gateway)
    fuzzed = [
        bytes(Ether(src=a1.mac, dst=a2.mac) / fuzz(IP(src=a1.ip, dst=a2.ip) / UDP()))
        for _ in range(100)
    ]
    fuzzed += [
        bytes(Ether(src=a1.mac, dst=gw_mac) / fuzz(IP(src=a1.ip, dst=b1.ip) / UDP()))
        for _ in range(100)
    ]
    not_v4 = sum(1 for f in fuzzed if f[14] >> 4 != 4)
    assert not_v4 > 150  # 15 of 16 random versions are not 4

    before = lab.status("hv1", newer_than=time.time())
    io_before = before["io"]["ports"][a1.host_iface]
    send_frames(lab, "a1", frames + fuzzed)
    wanted = expected + Counter({"bad_ipv4_version": not_v4})
    after, delta = wait_drops(lab, "hv1", a1.host_iface, before, wanted)

    # every hand-made frame under its own reason; every fuzzed non-IPv4-version one too
    assert {r.value for r in DropReason} >= set(delta), f"unnamed drop reasons: {dict(delta)}"
    for reason, count in expected.items():
        assert delta[reason] >= count, f"{reason}: {delta[reason]} < {count} ({dict(delta)})"
    assert delta["bad_ipv4_version"] == expected["bad_ipv4_version"] + not_v4
    assert sum(delta.values()) >= len(frames) + not_v4
    # the agent read them all and is the same live process, with no loop error
    assert after["io"]["ports"][a1.host_iface]["rx_packets"] - io_before["rx_packets"] >= len(
        frames
    ) + len(fuzzed)
    assert after["pid"] == before["pid"]
    assert after["running"] is True
    assert after["loop"]["errors"] == before["loop"]["errors"]
    os.kill(after["pid"], 0)  # still there
    # and it still forwards, switched and routed, right away
    assert lab.sh("a1", "ping", "-n", "-c", "2", "-W", "2", a2.ip).returncode == 0
    assert lab.sh("a1", "ping", "-n", "-c", "2", "-W", "2", b1.ip).returncode == 0


# ---------------------------------------------------------------------- 3. traceroute


def hops(traceroute_output: str) -> list[str]:
    """The address answering each hop (``*`` when none did)."""
    found = []
    for line in traceroute_output.splitlines()[1:]:
        match = re.match(r"\s*\d+\s+(\S+)", line)
        if match:
            found.append(match.group(1))
    return found


@pytest.mark.parametrize("mode", [["-I"], []], ids=["icmp", "udp"])
def test_traceroute_shows_the_router_hop(lab: Lab, mode: list[str]) -> None:
    if shutil.which("traceroute") is None:
        pytest.skip("traceroute is not installed: run scripts/setup.sh")
    a1, b1 = lab.vm("a1"), lab.vm("b1")
    assert a1.gateway == "10.1.0.254"  # the router's port on neta: not a default address
    wanted = [a1.gateway, b1.ip]
    argv = ["traceroute", "-n", *mode, "-q", "1", "-w", "2", "-m", "5", b1.ip]
    seen: list[str] = []
    for _ in range(3):  # a first probe may be lost while a path warms up
        done = lab.sh("a1", *argv, timeout=30)
        seen = hops(done.stdout)
        if seen == wanted:
            break
    assert seen == wanted, done.stdout + done.stderr

    # the router hop is a TTL expiry: ping with TTL 1 is answered by the router
    expired = lab.sh("a1", "ping", "-n", "-c", "1", "-t", "1", "-W", "2", b1.ip)
    assert f"From {a1.gateway}" in expired.stdout
    assert "Time to live exceeded" in expired.stdout


# ---------------------------------------------------------------------- 4. agent restart


def _listening(lab: Lab, vm: str, port: int) -> bool:
    return f":{port} " in lab.sh(vm, "ss", "-Hltn").stdout


def _reply_times(ping_output: str) -> list[float]:
    return [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", ping_output, re.M)]


def test_iperf3_stream_survives_an_agent_restart(lab: Lab) -> None:
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed: run scripts/setup.sh")
    a1, a2 = lab.vm("a1"), lab.vm("a2")
    assert (a1.host, a2.host) == ("hv1", "hv2")
    server = netns.popen_in(a2.netns, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)])
    pinger: subprocess.Popen[str] | None = None
    client: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 10
        while not _listening(lab, "a2", IPERF_PORT):
            assert time.monotonic() < deadline, "iperf3 server not listening"
            time.sleep(0.1)
        # a ping every 0.1 s measures the gap; the stream is paced to stay gentle on 2 cores
        pinger = netns.popen_in(a1.netns, ["ping", "-n", "-D", "-i", "0.1", a2.ip])
        started = time.time()
        client = netns.popen_in(
            a1.netns,
            # 30 s: a loaded machine has taken 10 s for the stop and start alone
            ["iperf3", "-c", a2.ip, "-p", str(IPERF_PORT), "-t", "30", "-b", "50M", "-J"],
        )
        time.sleep(3)
        datapath_pid = _datapath_pid(lab, "hv2")
        stop_at = time.time()
        lab.ok("host", "stop", "hv2", "--agent-only")
        stopped = time.time()
        time.sleep(1)  # the datapath forwards alone meanwhile
        lab.ok("host", "start", "hv2")
        restarted = time.time()
        out, err = client.communicate(timeout=70)
        time.sleep(max(0.0, restarted + 1.5 - time.time()))  # pings after the restart too
        pinger.send_signal(signal.SIGINT)
        pings, _ = pinger.communicate(timeout=10)
    finally:
        for proc in (server, pinger, client):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()  # also closes its pipes
        if lab.state().hosts["hv2"].agent is None:  # failed half-way: leave hv2 running
            lab("host", "start", "hv2")

    report = json.loads(out) if out.strip() else {}
    assert client is not None
    assert client.returncode == 0, f"iperf3 failed: {report.get('error')} {err}"
    assert "error" not in report
    end = report["end"]
    assert end["sum_received"]["bytes"] > 0
    times = _reply_times(pings)
    gaps = [(b - a, a) for a, b in itertools.pairwise(times)]
    gap, gap_from = max(gaps)
    print(
        f"\nagent restart on hv2: stop {stopped - stop_at:.1f}s, start {restarted - stopped:.1f}s;"
        f" ping gap {gap:.2f}s from t+{gap_from - started:.1f}s;"
        f" iperf3 sent {end['sum_sent']['bytes']} B, received {end['sum_received']['bytes']} B,"
        f" {end['sum_sent'].get('retransmits', '?')} retransmits"
    )
    # the datapath process never stopped, and forwarded without a gap while the agent was away
    assert _datapath_pid(lab, "hv2") == datapath_pid
    assert gap < 1.0, f"forwarding stopped for {gap:.2f}s during the agent restart"
    assert max(times) > restarted
    # the new agent found the flows installed: it re-read them and changed nothing
    flows = agent_status(lab.state().hosts["hv2"])["counters"]["flows"]
    assert (flows["repairs"], flows["added"], flows["removed"]) == (0, 0, 0), flows


def _datapath_pid(lab: Lab, host: str) -> int:
    proc = lab.state().hosts[host].datapath
    assert proc is not None
    return proc.pid


# ---------------------------------------------------------------------- 5. DHCP


def test_dhcp_lease_matches_the_subnet_and_network(lab: Lab) -> None:
    state = lab.state()
    with NetvirtClient(state.url, state.admin_token, timeout=10) as admin:
        subnets = {s["network_id"]: s for s in admin.list_subnets()}
        networks = {n["id"]: n for n in admin.list_networks()}
    seen_mtus = set()
    for vm in state.vms.values():
        subnet, network = subnets[vm.network_id], networks[vm.network_id]
        lease = vm.lease
        assert lease is not None
        assert lease["ip"] == vm.ip
        assert lease["mask"] == subnet["cidr"].split("/")[1]
        assert lease["router"] == subnet["gateway_ip"]
        assert lease["dns"].split() == subnet["dns_nameservers"]
        assert int(lease["mtu"]) == network["mtu"]
        assert f"mtu {network['mtu']} " in lab.sh(vm.name, "ip", "link", "show", "eth0").stdout
        seen_mtus.add(network["mtu"])
    # the topology's non-defaults came through: gateway .254, two DNS servers, MTU 1400
    assert state.vms["a1"].lease is not None
    assert state.vms["a1"].lease["router"] == "10.1.0.254"
    assert state.vms["a1"].lease["dns"] == "192.0.2.53 192.0.2.54"
    assert seen_mtus == {1400, 1442}


# ---------------------------------------------------------------------- 6. QoS


def _iperf_rate(lab: Lab, client: str, server: str, *, reverse: bool) -> float:
    """Bits/s received by the receiving side of a 4 s iperf3 TCP test."""
    srv = netns.popen_in(lab.vm(server).netns, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT + 1)])
    try:
        deadline = time.monotonic() + 10
        while not _listening(lab, server, IPERF_PORT + 1):
            assert time.monotonic() < deadline, "iperf3 server not listening"
            time.sleep(0.1)
        argv = ["iperf3", "-c", lab.vm(server).ip, "-p", str(IPERF_PORT + 1), "-t", "4", "-J"]
        run = lab.sh(client, *argv, *(["-R"] if reverse else []))
    finally:
        srv.kill()
        srv.communicate()
    report = json.loads(run.stdout)
    assert "error" not in report, report.get("error")
    return float(report["end"]["sum_received"]["bits_per_second"])


def test_qos_bandwidth_limits_police_both_directions(lab: Lab) -> None:
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed: run scripts/setup.sh")
    state = lab.state()
    egress_kbps, ingress_kbps = 20_000, 8_000
    with NetvirtClient(state.url, state.admin_token, timeout=10) as admin:
        port = admin.get_port(lab.vm("a1").port_id)
        policy = admin.create_qos_policy(name="a1-limits", project_id=port["project_id"])
        try:
            for direction, kbps in (("egress", egress_kbps), ("ingress", ingress_kbps)):
                admin.create_bandwidth_limit_rule(
                    policy["id"], max_kbps=kbps, max_burst_kbps=kbps // 10, direction=direction
                )
            admin.update_port(port["id"], qos_policy_id=policy["id"], wait="installed")
            sent = _iperf_rate(lab, "a1", "a2", reverse=False)  # a1's egress
            received = _iperf_rate(lab, "a1", "a2", reverse=True)  # a1's ingress
            counters = lab.status("hv1", newer_than=time.time())["counters"]
        finally:
            admin.update_port(port["id"], qos_policy_id=None, wait="installed")
            admin.delete_qos_policy(policy["id"])
    print(
        f"\nQoS on a1: egress {sent / 1e6:.1f} Mbit/s (limit {egress_kbps / 1000:g}),"
        f" ingress {received / 1e6:.1f} Mbit/s (limit {ingress_kbps / 1000:g})"
    )
    # TCP over a policer stays under the rate (plus the burst) and does not collapse
    assert 0.2 * egress_kbps * 1000 < sent < 1.15 * egress_kbps * 1000
    assert 0.2 * ingress_kbps * 1000 < received < 1.15 * ingress_kbps * 1000
    iface = next(i for i, p in counters["ports"].items() if i.endswith("a1"))
    assert counters["ports"][iface]["drops"].get("qos_policed", 0) > 0
    assert set(counters["qos"][iface]) == {"egress", "ingress"}


# ---------------------------------------------------------------------- remote security groups


def test_a_remote_group_admits_its_members_and_nobody_else(lab: Lab) -> None:
    """p2's group ``peers`` admits TCP only from members of ``peers``: p1 (a member, on the
    other subnet and host) fetches p2's page with curl; a1 (group ``open``) cannot, nor can
    p1 ping p2 (no ICMP rule). The rule names the group, the switch matches the member
    addresses through its ``acl_sets`` flows."""
    url = f"http://{lab.vm('p2').ip}/"
    member = lab.sh("p1", "curl", "-s", "--noproxy", "*", "-m", "5", url, timeout=15)
    assert member.returncode == 0, member.stderr
    assert "p2" in member.stdout
    stranger = lab.sh("a1", "curl", "-s", "--noproxy", "*", "-m", "3", url, timeout=15)
    assert stranger.returncode == 28  # curl: operation timed out (the SYN was dropped)
    ping = lab.sh("p1", "ping", "-c", "2", "-i", "0.2", "-W", "1", lab.vm("p2").ip)
    assert ping.returncode != 0


# ---------------------------------------------------------------------- 8. counters


def _port_row(status: dict[str, Any], iface: str) -> dict[str, Any]:
    row = status["counters"]["ports"].get(iface, {})
    assert isinstance(row, dict)
    return row


def test_port_counters_include_frames_the_kernel_offload_forwarded(lab: Lab) -> None:
    """The kernel offload is on by default: a ping flood between two VMs of one host (a2 →
    b1 across the router, stateful groups) is mostly served in the kernel, and the ports'
    counters (what the agent reports) still count every frame that crossed them."""
    a2, b1 = lab.vm("a2"), lab.vm("b1")
    count = 300
    assert lab.sh("a2", "ping", "-n", "-c", "3", "-W", "2", b1.ip).returncode == 0  # warm
    before = lab.status("hv2", newer_than=time.time())
    done = lab.sh("a2", "ping", "-n", "-q", "-c", str(count), "-i", "0.005", b1.ip, timeout=30)
    assert done.returncode == 0, done.stdout
    assert f"{count} received" in done.stdout
    time.sleep(1.2)  # one more status period
    after = lab.status("hv2", newer_than=time.time())
    assert after["pid"] == before["pid"]
    src0, src1 = _port_row(before, a2.host_iface), _port_row(after, a2.host_iface)
    dst0, dst1 = _port_row(before, b1.host_iface), _port_row(after, b1.host_iface)
    offloaded = src1["offloaded"]["rx_packets"] - src0.get("offloaded", {}).get("rx_packets", 0)
    assert offloaded > count // 2, f"the kernel served only {offloaded} of {count} requests"
    # every request entered at a2's port and left at b1's, every reply the other way
    assert src1["rx_packets"] - src0["rx_packets"] >= count
    assert dst1["tx_packets"] - dst0["tx_packets"] >= count
    assert dst1["rx_packets"] - dst0["rx_packets"] >= count
    assert src1["tx_packets"] - src0["tx_packets"] >= count
