"""Kernel connections in a real lab (root): short TCP connections through a security group
and SNAT, tracked in the kernel after their handshake, every one completing; an RST and
a half-close tracked there too, and the user-space state right afterwards.

One host (the gateway), a VM behind a router with SNAT and a stateful security group,
the server on the external network: the ``sg`` shape of bench/run.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from system.labrun import LabRun

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

SERVER = "10.248.100.12"
CONNRATE = Path(__file__).resolve().parents[2] / "bench" / "nvb" / "connrate.py"

TOPOLOGY = {
    "state": "memory",
    "offload": True,
    "underlay": {"cidr": "10.248.254.0/24"},
    "hosts": [{"name": "hv1", "gateway": True}],
    "external": {"name": "public", "cidr": "10.248.100.0/24", "gateway_ip": SERVER},
    "projects": [
        {
            "name": "p",
            "networks": [{"name": "n1", "cidr": "10.248.1.0/24", "mtu": 1500}],
            "routers": [{"name": "r", "networks": ["n1"], "gateway": True, "snat": True}],
            "security_groups": [
                {"name": "client", "rules": [{"direction": "ingress", "protocol": "icmp"}]}
            ],
        }
    ],
    "vms": [
        {
            "name": "ka",
            "host": "hv1",
            "network": "n1",
            "ip": "10.248.1.11",
            "security_groups": ["client"],
        }
    ],
}

# both ports send one byte first (the connection is the kernel's from then on); 5401 then
# waits for the client's end (FIN or RST), 5402 reads the request up to the client's FIN
# (half-close), then answers 200,000 bytes and closes
SERVER_SCRIPT = """
import selectors, socket
sel = selectors.DefaultSelector()
for port in (5401, 5402):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(256); sel.register(s, selectors.EVENT_READ, port)
while True:
    for key, _ in sel.select():
        if key.data in (5401, 5402):
            conn, _ = key.fileobj.accept()
            conn.send(b"x")
            sel.register(conn, selectors.EVENT_READ, ("c", key.data))
            continue
        conn = key.fileobj
        try:
            got = conn.recv(65536)
        except OSError:
            got = b""
        if got and key.data[1] == 5402:
            continue
        sel.unregister(conn)
        if key.data[1] == 5402:
            conn.sendall(b"y" * 200000)
        conn.close()
"""

# the client's special cases: RST, then the same 4-tuple again; then a half-close. The RST's
# source ports are above the ephemeral range (32768-60999): a connrate client's TIME_WAIT
# socket (no SO_REUSEADDR) on one of them would make the bind fail
CLIENT_SCRIPT = """
import json, socket, struct, sys, time
server, results = sys.argv[1], {}
def rst_then_again(sport):
    for attempt in range(2):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", sport)); s.settimeout(5)
        s.connect((server, 5401))
        assert s.recv(1) == b"x"
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # an RST
        time.sleep(0.05)
    return True
def half_close():
    s = socket.create_connection((server, 5402), timeout=5)
    assert s.recv(1) == b"x"
    s.sendall(b"request")
    s.shutdown(socket.SHUT_WR)  # our FIN; the server still sends
    got = 0
    while True:
        data = s.recv(65536)
        if not data:
            break
        got += len(data)
    s.close()
    return got
results["rst"] = all(rst_then_again(61000 + i) for i in range(5))
results["half_close"] = [half_close() for _ in range(5)]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    root = tmp_path_factory.mktemp("conns")
    run = LabRun(f"nvk{os.getpid() % 10000}", root / "labs")
    path = root / "conns.yaml"
    path.write_text(yaml.safe_dump(dict(TOPOLOGY, name=run.name)))
    (root / "server.py").write_text(SERVER_SCRIPT)
    server: subprocess.Popen[bytes] | None = None
    connrate: subprocess.Popen[bytes] | None = None
    try:
        run.ok("up", str(path), "--name", run.name, timeout=150)
        ext = run.state().node_netns("ext")
        assert ext is not None
        argv = ["ip", "netns", "exec", ext, sys.executable]
        server = subprocess.Popen([*argv, str(root / "server.py")])
        rate = [str(CONNRATE), "server", "--port", "5301", "--ports", "4"]
        connrate = subprocess.Popen([*argv, *rate])
        time.sleep(0.5)
        yield run
    finally:
        for proc in (server, connrate):
            if proc is not None:
                proc.kill()
                proc.wait()
        down = run("down", timeout=60)
        assert down.returncode == 0, down.stderr
        assert run.leftovers() == []


def status(lab: LabRun) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        Path(lab.state().hosts["hv1"].datapath_status_file).read_text()
    )
    assert "error" not in found["offload"], found["offload"]
    return found


def settled(lab: LabRun) -> dict[str, Any]:
    """The status once the kernel gave every closed connection back (linger + sweep)."""
    deadline = time.monotonic() + 10
    while True:
        time.sleep(1.2)  # the status file is written once a second (it sweeps, too)
        found = status(lab)
        if found["offload"]["conns"]["owned"] == 0 or time.monotonic() > deadline:
            return found


def connrate(lab: LabRun, concurrency: int) -> dict[str, Any]:
    """The connection-rate client in VM ``ka`` for 3 s to the server's 4 ports: its
    result, every connection complete (no client error)."""
    client = [sys.executable, str(CONNRATE), "client", "--host", SERVER, "--port", "5301"]
    client += ["--ports", "4", "--duration", "3", "--concurrency", str(concurrency)]
    done = lab.sh("ka", *client, timeout=30)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == 0, result
    return result


def test_short_connections_through_sg_and_snat_complete_and_stay_in_the_kernel(
    lab: LabRun,
) -> None:
    found = status(lab)
    before, before_shakes = found["offload"]["conns"], found["counters"]["handshakes"]
    assert before["enabled"], before
    result = connrate(lab, 4)
    connections = result["connections"]
    assert connections >= 100, result
    after = settled(lab)
    conns = after["offload"]["conns"]
    made = conns.get("made", 0) - before.get("made", 0)  # (SYN templates on: the kernel's)
    handed = conns["handed_over"] - before["handed_over"] + made
    # every connection whose two directions were learned is the kernel's after its data
    assert handed >= connections * 0.9, conns
    assert conns["owned"] == 0, conns  # all closed, all given back
    assert conns["released"] - before["released"] == handed, conns
    assert conns["record_conflicts"] == 0, conns
    assert conns["lost"] == 0, conns
    # handed over at the SYN-ACK, the client's first ACK predicted (offload/handshake.py)
    shakes = after["counters"]["handshakes"]
    assert shakes["predicted"] - before_shakes["predicted"] + made >= connections * 0.9, shakes
    # the first ACK, the data, ACK, FIN, ACK, FIN, ACK: at least four of them in the kernel
    assert conns["forwarded_packets"] - before["forwarded_packets"] >= 4 * handed, conns
    port = after["counters"]["ports"]["vm-ka"]
    assert port["rx_packets"] >= 4 * connections, port  # the kernel's share folded in


def test_an_rst_and_a_half_close_are_tracked_in_the_kernel(lab: LabRun) -> None:
    """After an RST in the kernel, the same 4-tuple connects again at once (the folded-back
    record is CLOSED: a SYN replaces it; left ESTABLISHED, the SYN would be invalid and
    dropped). A half-closed connection carries the server's answer after the client's
    FIN, in the kernel, to the last byte."""
    before = status(lab)["offload"]["conns"]
    client = ["python3", "-c", CLIENT_SCRIPT, SERVER]
    done = lab.sh("ka", *client, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rst"] is True
    assert result["half_close"] == [200000] * 5, result
    after = settled(lab)["offload"]["conns"]
    made = after.get("made", 0) - before.get("made", 0)  # (SYN templates on: the kernel's)
    assert after["handed_over"] - before["handed_over"] + made >= 10, after
    assert after["owned"] == 0, after
    assert after["record_conflicts"] == 0, after
