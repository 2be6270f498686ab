"""The kernel offload in a real lab (root): flows served by eBPF, the same answers, and
nothing served for long once the datapath is gone.

One host, two switches behind a router, security groups on (so offloaded entries
depend on connections), static addresses. Real ping and iperf3 in the VMs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netvirt.dataplane import netns
from system.labrun import LabRun

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

TOPOLOGY = {
    "name": "offload",
    "state": "memory",
    "offload": True,
    "underlay": {"cidr": "10.249.254.0/24"},
    "hosts": [{"name": "hv1", "gateway": True}],
    "external": {"name": "public", "cidr": "10.249.100.0/24", "gateway_ip": "10.249.100.12"},
    "projects": [
        {
            "name": "p",
            "networks": [
                {"name": "n1", "cidr": "10.249.1.0/24", "mtu": 1500},
                {"name": "n2", "cidr": "10.249.2.0/24", "mtu": 1500},
            ],
            "routers": [{"name": "r", "networks": ["n1", "n2"], "gateway": True, "snat": True}],
            "security_groups": [
                {
                    "name": "open",
                    "rules": [
                        {"direction": "ingress", "protocol": "icmp"},
                        {"direction": "ingress", "protocol": "tcp"},
                    ],
                }
            ],
        }
    ],
    "vms": [
        {"name": name, "host": "hv1", "network": net, "ip": ip, "security_groups": ["open"]}
        for name, net, ip in (
            ("oa", "n1", "10.249.1.11"),
            ("ob", "n1", "10.249.1.12"),
            ("oc", "n2", "10.249.2.13"),
        )
    ],
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    root = tmp_path_factory.mktemp("offload")
    run = LabRun(f"o{os.getpid() % 100000}", root / "labs")
    doc = dict(TOPOLOGY, name=run.name)
    path = root / "offload.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        run.ok("up", str(path), "--name", run.name, timeout=150)
        yield run
    finally:
        down = run("down", timeout=60)
        assert down.returncode == 0, down.stderr
        assert run.leftovers() == []


def offload_status(lab: LabRun) -> dict[str, Any]:
    status = json.loads(Path(lab.state().hosts["hv1"].datapath_status_file).read_text())
    found: dict[str, Any] = status["offload"]
    assert "error" not in found, found
    return found


def wait_status(lab: LabRun) -> dict[str, Any]:
    time.sleep(1.2)  # the status file is written once a second
    return offload_status(lab)


def ping(lab: LabRun, src: str, dst: str, count: int) -> str:
    done = lab.sh(src, "ping", "-n", "-q", "-c", str(count), "-i", "0.01", "-W", "2", dst)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_kernel_serves_switched_and_routed_flows_with_the_slow_paths_answers(
    lab: LabRun,
) -> None:
    before = wait_status(lab)
    out = ping(lab, "oa", "10.249.1.12", 200)
    assert "200 received" in out
    assert "duplicates" not in out  # served once: by the kernel or by the datapath
    routed = lab.sh("oa", "ping", "-n", "-c", "3", "-i", "0.2", "10.249.2.13").stdout
    assert "ttl=63" in routed  # the router's TTL decrement, replayed in the kernel too
    assert "duplicates" not in ping(lab, "oa", "10.249.2.13", 200)
    after = wait_status(lab)
    served = after["forwarded_packets"] - before["forwarded_packets"]
    # 400 echo requests and 400 replies; the first of each flow and a revalidation now and
    # then go through the datapath
    assert served >= 600, after
    assert after["entries"] >= 4
    assert after["ports"]["vm-oa"]["rx_packets"] >= 300


def test_tcp_through_the_router_is_served_in_the_kernel(lab: LabRun) -> None:
    lab.sh("oc", "iperf3", "-s", "-D", "-p", "5299")
    time.sleep(0.5)
    before = offload_status(lab)
    try:
        done = lab.sh(
            "oa", "iperf3", "-c", "10.249.2.13", "-p", "5299", "-t", "2", "-J", timeout=30
        )
    finally:
        lab.sh("oc", "pkill", "-f", "iperf3 -s -D -p 5299")
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)["end"]["sum_received"]["bytes"]
    assert sent > 10_000_000
    after = wait_status(lab)
    assert after["forwarded_bytes"] - before["forwarded_bytes"] > sent // 2


def test_tcp_through_snat_is_served_in_the_kernel(lab: LabRun) -> None:
    """Address and port rewritten in the kernel: the L4 checksum update must hold for the
    VM's checksum-offloaded super-frames (a wrong one and the stream would not flow)."""
    lab.sh("ext", "iperf3", "-s", "-D", "-p", "5298")
    time.sleep(0.5)
    before = offload_status(lab)
    try:
        client = ("iperf3", "-c", "10.249.100.12", "-p", "5298", "-t", "2", "-J")
        done = lab.sh("oa", *client, timeout=30)
    finally:
        lab.sh("ext", "pkill", "-f", "iperf3 -s -D -p 5298")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    received = result["end"]["sum_received"]["bytes"]
    assert received > 10_000_000
    after = wait_status(lab)
    assert after["forwarded_bytes"] - before["forwarded_bytes"] > received // 2
    # out through the gateway's uplink (not a VM's port): the SNAT entries were served
    uplink = {
        iface: row["tx_bytes"] - before["ports"].get(iface, {}).get("tx_bytes", 0)
        for iface, row in after["ports"].items()
        if not iface.startswith("vm-")
    }
    assert max(uplink.values(), default=0) > received // 2, after["ports"]


ETH_P_ALL, PACKET_VNET_HDR, VNET_HDR = 0x0003, 15, struct.Struct("=BBHHHH")


def _capture_socket() -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(263, PACKET_VNET_HDR, 1)  # SOL_PACKET: each frame with its offload header
    sock.settimeout(0.2)
    return sock


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _checks(frame: bytes, vnet: tuple[int, ...]) -> bool | None:
    """True if the TCP checksum (or, for a checksum-offloaded frame, its seed) is right
    for the frame's own addresses; None for a frame that is not SNAT'ed TCP to the server."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    if frame[26:30] != bytes([10, 249, 100, 1]) or frame[30:34] != bytes([10, 249, 100, 12]):
        return None
    tcp_length = int.from_bytes(frame[16:18], "big") - 20
    pseudo = sum(int.from_bytes(frame[i : i + 2], "big") for i in range(26, 34, 2))
    pseudo += 6 + tcp_length
    if vnet[0] & 1:  # NEEDS_CSUM: the field holds the pseudo-header sum, not complemented
        return int.from_bytes(frame[50:52], "big") == _fold(pseudo)
    segment = frame[34 : 34 + tcp_length] + (b"\0" if tcp_length % 2 else b"")
    total = pseudo + sum(
        int.from_bytes(segment[i : i + 2], "big") for i in range(0, len(segment), 2)
    )
    return _fold(total) == 0xFFFF


def test_snat_in_the_kernel_leaves_right_checksums(lab: LabRun) -> None:
    """What the server's side receives after SNAT in the kernel: full TCP checksums right,
    and checksum-offloaded super-frames with the seed of their new addresses (a seed left
    at the VM's address passes a veth unnoticed, but a NIC would send a wrong checksum)."""
    state = lab.state()
    ext_ns, vm_ns = state.node_netns("ext"), state.node_netns("oa")
    assert ext_ns is not None
    assert vm_ns is not None
    sock = netns.run_in_netns(ext_ns, _capture_socket)
    lab.sh("ext", "iperf3", "-s", "-D", "-p", "5297")
    time.sleep(0.5)
    client = ["ip", "netns", "exec", vm_ns, "iperf3", "-c", "10.249.100.12", "-p", "5297"]
    proc = subprocess.Popen([*client, "-t", "2"], stdout=subprocess.DEVNULL)
    seen = {True: 0, False: 0}
    offloaded = 0
    try:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            try:
                raw = sock.recv(70000)
            except TimeoutError:
                continue
            vnet = VNET_HDR.unpack_from(raw)
            verdict = _checks(raw[VNET_HDR.size :], vnet)
            if verdict is not None:
                seen[verdict] += 1
                offloaded += vnet[0] & 1
    finally:
        proc.wait(timeout=20)
        sock.close()
        lab.sh("ext", "pkill", "-f", "iperf3 -s -D -p 5297")
    assert seen[False] == 0, seen
    assert seen[True] >= 100, seen
    assert offloaded >= 10, seen  # the super-frames' seeds were checked, not only full sums


def test_a_dead_datapath_stops_being_served_by_the_kernel(lab: LabRun) -> None:
    """The entries outlive a killed datapath by at most their age and the grace."""
    pid = json.loads(Path(lab.state().hosts["hv1"].datapath_status_file).read_text())["pid"]
    assert "received" in ping(lab, "oa", "10.249.1.12", 20)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    stopped = None
    while time.monotonic() - killed < 10:
        done = lab.sh("oa", "ping", "-n", "-c", "1", "-W", "1", "10.249.1.12")
        if done.returncode != 0:
            stopped = time.monotonic() - killed
            break
    assert stopped is not None, "the kernel kept serving a dead datapath's flows"
    assert stopped < 6  # max age (2 s) + grace (2 s), and a ping's own second
