"""``netvirt lab`` for real (root): namespaces, agents, DHCP, traffic, and a clean ``down``.

Each test runs the ``netvirt`` command as a subprocess, exactly as a user
would, in a private lab directory (``NETVIRT_LAB_DIR``) under a lab name
unique to this run, so it never meets a user's lab. The finalizer runs
``lab down`` whatever happened, and the tests then assert that nothing with
the lab's prefix is left: namespaces, links, processes.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netvirt.api.client import NetvirtClient
from netvirt.dataplane import netns
from netvirt.lab.build import member_statuses
from system.labrun import LabRun, wait_reachable

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabRun]:
    if shutil.which("busybox") is None:
        pytest.skip("busybox (udhcpc) is not installed: run scripts/setup.sh")
    run = LabRun(f"t{os.getpid() % 100000}", tmp_path / "labs")
    try:
        yield run
    finally:
        down = run("down", timeout=60)
        assert down.returncode == 0, down.stderr
        assert run.leftovers() == []


def curl(run: LabRun, node: str, url: str) -> str:
    """GET ``url`` from ``node`` (never through the environment's proxy)."""
    return run.sh(node, "curl", "-s", "-m", "5", "--noproxy", "*", url).stdout.strip()


def test_minimal_lab_up_traffic_and_clean_down(lab: LabRun) -> None:
    started = time.monotonic()
    lab.ok("up", str(EXAMPLES / "minimal.yaml"), "--name", lab.name)
    state = lab.state()
    assert state.ready
    assert set(state.vms) == {"vm1", "vm2"}
    assert state.vms["vm1"].host != state.vms["vm2"].host
    assert state.state_store is None  # no NAT or LB: each agent keeps its own state

    # a real DHCP client configured each VM from netvirt's answers
    for vm in state.vms.values():
        assert vm.lease is not None
        assert vm.lease["ip"] == vm.ip
        assert vm.lease["router"] == "10.0.0.1"
        assert vm.lease["mtu"] == "1442"
        assert vm.lease["dns"] == "192.0.2.53"
        assert f"inet {vm.ip}/24" in lab.sh(vm.name, "ip", "-4", "addr", "show", "eth0").stdout
        link = lab.sh(vm.name, "ip", "link", "show", "eth0").stdout
        assert "mtu 1442" in link
        assert vm.mac in link
        assert "default via 10.0.0.1" in lab.sh(vm.name, "ip", "route").stdout

    # cross-host ping and TCP (the VMs' web servers), then the topology's matrix
    vm1, vm2 = state.vms["vm1"], state.vms["vm2"]
    assert lab.sh("vm1", "ping", "-n", "-c", "2", "-W", "2", vm2.ip).returncode == 0
    assert curl(lab, "vm2", f"http://{vm1.ip}/") == "vm1"
    assert vm1.ip in lab.ok("exec", "vm1", "--", "ip", "-4", "-br", "addr", "show", "eth0")
    assert lab("exec", "vm1", "--", "false").returncode == 1  # the command's status passes through
    matrix = lab.ok("check")
    assert "5 passed, 0 failed" in matrix

    # the agents see their ports bound; `lab status` summarizes
    status = lab.ok("status")
    assert "vm1" in status
    assert "installed on every host" in status

    # down removes everything, and a second down is fine
    assert "deleted" in lab.ok("down")
    assert lab.leftovers() == []
    assert "nothing to remove" in lab.ok("down")
    assert time.monotonic() - started < 110


@pytest.mark.timeout(240)
def test_quickstart_nat_isolation_and_migration(lab: LabRun) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: run scripts/setup.sh")
    out = lab.ok("up", str(EXAMPLES / "quickstart.yaml"), "--name", lab.name, "--check")
    assert "passed, 0 failed" in out
    state = lab.state()
    assert state.state_store is not None
    assert state.state_store.startswith("redis://127.0.0.1:")
    ext = state.external
    assert ext is not None

    # the floating IP from the external namespace reaches web1 (and only web1 has one)
    web1 = state.vms["web1"]
    assert web1.fip is not None
    assert ipaddress.ip_address(web1.fip) in ipaddress.ip_network(
        f"{ext.ip}/{ext.prefixlen}", False
    )
    assert curl(lab, "ext", f"http://{web1.fip}/") == "web1"

    # SNAT: a server in the external namespace sees the router's address, not 10.0.0.x
    server = netns.popen_in(
        ext.netns,
        [
            sys.executable,
            "-c",
            "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
            "s.bind(('0.0.0.0',8081));s.listen();print('ready',flush=True);"
            "c,a=s.accept();c.sendall(a[0].encode());c.close()",
        ],
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        probe = "import socket,sys;c=socket.create_connection((sys.argv[1],8081),5)"
        probe += ";print(c.recv(64).decode())"
        seen = lab.sh("web2", sys.executable, "-c", probe, ext.ip)
        source = ipaddress.ip_address(seen.stdout.strip())
    finally:
        server.kill()
        server.communicate()
    assert source in ipaddress.ip_network(f"{ext.ip}/{ext.prefixlen}", False)
    assert source != ipaddress.ip_address(state.vms["web2"].ip)

    # isolation: both projects use 10.0.0.10; each client reaches its own project's VM
    assert curl(lab, "blue-cl", "http://10.0.0.10/") == "web1"
    assert curl(lab, "red-cl", "http://10.0.0.10/") == "red1"
    assert lab.sh("red-cl", "ping", "-n", "-c", "1", "-W", "1", "10.0.0.11").returncode != 0

    # the LB VIP spreads new connections over both members
    served = {curl(lab, "blue-cl", "http://10.0.0.100/") for _ in range(8)}
    assert served == {"web1", "web2"}

    # migration: web2 moves to hv3 (a VXLAN host) with its MAC and address; traffic resumes
    lab.ok("migrate", "web2", "hv3")
    assert lab.state().vms["web2"].host == "hv3"
    assert wait_reachable(lab, "blue-cl", "10.0.0.11")
    assert curl(lab, "blue-cl", "http://10.0.0.11/") == "web2"

    # LB health checks on the members' hosts (web2 now on hv3): its web server stops, so it
    # leaves the VIP within max_retries_down x delay + timeout = 3 x 2 + 1 s, and comes back
    _health_checks_follow_the_member(lab)

    # an agent stopped and started again: traffic through its host comes back
    lab.ok("host", "stop", "hv1")
    assert lab.sh("blue-cl", "ping", "-n", "-c", "1", "-W", "1", "10.0.0.10").returncode != 0
    lab.ok("host", "start", "hv1")
    assert wait_reachable(lab, "blue-cl", "10.0.0.10")


def _member_status(lab: LabRun, name: str) -> str:
    state = lab.state()
    with NetvirtClient(state.url, state.admin_token, timeout=10) as admin:
        return member_statuses(admin)[name]


def _wait_status(lab: LabRun, name: str, status: str, within: float) -> float:
    """Until the member has ``status`` in the API and every host installed that change."""
    started = time.monotonic()
    while (seen := _member_status(lab, name)) != status:
        assert time.monotonic() - started < within, f"{name} still {seen} after {within}s"
        time.sleep(0.2)
    took = time.monotonic() - started
    state = lab.state()
    with NetvirtClient(state.url, state.admin_token, timeout=10) as admin:
        while (now := admin.status())["installed_generation"] < now["nb_generation"]:
            assert time.monotonic() - started < within, "the new status was not installed"
            time.sleep(0.1)
    return took


def _health_checks_follow_the_member(lab: LabRun) -> None:
    state = lab.state()
    assert _member_status(lab, "web2") == "ONLINE"
    service = next(p for p in state.processes if p.role.startswith("service:web2:http"))
    os.kill(service.pid, signal.SIGTERM)
    took = _wait_status(lab, "web2", "ERROR", within=12)
    print(f"\nweb2 ERROR {took:.1f}s after its web server stopped (bound: 7 s + install)")
    assert {curl(lab, "blue-cl", "http://10.0.0.100/") for _ in range(6)} == {"web1"}
    root = Path(state.dir) / "www" / "web2"
    argv = [sys.executable, "-m", "http.server", "80", "--bind", "0.0.0.0", "--directory"]
    server = netns.popen_in(state.vms["web2"].netns, [*argv, str(root)])
    try:
        took = _wait_status(lab, "web2", "ONLINE", within=12)
        print(f"web2 ONLINE {took:.1f}s after its web server came back")
        served = {curl(lab, "blue-cl", "http://10.0.0.100/") for _ in range(10)}
        assert served == {"web1", "web2"}
    finally:
        server.kill()
        server.communicate()
