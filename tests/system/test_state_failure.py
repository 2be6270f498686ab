"""Redis going away and coming back, for real (root): fail closed, then recover clean.

One lab (two hosts, shared state in the lab's ``redis-server``): ``c1`` on hv1 opens
TCP connections to an echo server on ``s1`` (hv2) through stateful security
groups, so every new connection needs conntrack, i.e. the store.

1. With Redis up, a new connection works.
2. The lab's ``redis-server`` is killed: new connections fail (the default policy
   is ``closed``) and hv1's datapath counts ``state_unavailable`` drops, while
   the loop keeps running (its status file keeps being rewritten).
3. ``redis-server`` starts again on the same port, empty (the lab runs it
   without persistence): within a few seconds new connections work again, and
   every conntrack record in Redis decodes.

A connection established before the outage keeps exchanging lines throughout
it: the datapath flow cache serves flows it already knows without the store
(agent/forwarder.py, docs/stateless-nf.md).

4. Redis hangs (SIGSTOP) instead: the same, and hv1's loop never waits for it
   (its store round trips are asynchronous: docs/stateless-nf.md, "Non-blocking
   store access").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from netvirt.dataplane.nf.codec import decode
from netvirt.lab import net
from netvirt.lab.net import RealSystem
from netvirt.lab.state import ProcessRecord
from system.labrun import LabRun, wait_reachable

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

TOPOLOGY = """
state: redis
hosts: [{name: hv1}, {name: hv2}]
projects:
  - name: demo
    networks: [{name: net, cidr: 10.0.0.0/24}]
    security_groups:
      - name: echo
        rules: [{protocol: tcp, port: 7000}, {protocol: icmp}]
vms:
  - {name: c1, host: hv1, network: net, ip: 10.0.0.10}
  - {name: s1, host: hv2, network: net, ip: 10.0.0.20, security_groups: [echo]}
"""
SERVER, PORT = "10.0.0.20", 7000
RECOVERY = 10.0  # seconds within which new connections must work again
RESTARTED: list[subprocess.Popen[bytes]] = []  # reaped after ``lab down`` stopped them

ECHO_SERVER = f"""
import socketserver
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(("0.0.0.0", {PORT}), Echo).serve_forever()
"""

CONNECT = f"""
import socket, sys
s = socket.create_connection(("{SERVER}", {PORT}), timeout=float(sys.argv[1]))
s.sendall(b"hello\\n")
assert s.makefile().readline() == "hello\\n"
"""

# One connection kept open across the outage: a line every 0.2 s, one output line per
# answer ("ok <t>") or per second without one ("lost <t>"), until stdin closes.
STREAM = f"""
import socket, sys, time, threading
s = socket.create_connection(("{SERVER}", {PORT}), timeout=5)
s.settimeout(1.0)
reader = s.makefile()
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    s.sendall(b"x\\n")
    try:
        reader.readline()
        print("ok", time.time(), flush=True)
    except OSError:
        print("lost", time.time(), flush=True)
        break
    time.sleep(0.2)
"""


@pytest.fixture(scope="module", params=["write-through", "write-behind"])
def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabRun]:
    """The lab, once with every record written through (``NETVIRT_WRITE_BEHIND=0``) and
    once with port zones written behind (the datapath's default since session 11; the
    variable is read by the hosts' datapaths when ``lab up`` starts them): the same
    outage semantics must hold in both."""
    for tool in ("busybox", "redis-server"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: run scripts/setup.sh")
    root = tmp_path_factory.mktemp("labs")
    topology = root / "state-failure.yaml"
    topology.write_text(TOPOLOGY)
    run = LabRun(f"nvf{os.getpid() % 100000}", root)
    try:
        with pytest.MonkeyPatch.context() as env:
            if request.param == "write-behind":
                env.delenv("NETVIRT_WRITE_BEHIND", raising=False)  # (the default)
            else:
                env.setenv("NETVIRT_WRITE_BEHIND", "0")
            run.ok("up", str(topology), "--name", run.name)
        assert wait_reachable(run, "c1", SERVER), "c1 cannot reach s1"
        yield run
    finally:
        down = run("down", timeout=60)
        left = run.leftovers()
        for proc in RESTARTED:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    assert down.returncode == 0, down.stderr
    assert left == []


@pytest.fixture
def echo(lab: LabRun) -> Iterator[None]:
    ns = lab.state().node_netns("s1")
    assert ns is not None
    server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", ECHO_SERVER])
    try:
        deadline = time.monotonic() + 10
        while f":{PORT} " not in lab.sh("s1", "ss", "-Hltn").stdout:
            assert time.monotonic() < deadline, "echo server not listening"
            time.sleep(0.1)
        yield
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def connects(lab: LabRun, timeout: float) -> bool:
    """A new TCP connection from c1 to s1 completes and echoes a line."""
    argv = [sys.executable, "-c", CONNECT, str(timeout)]
    return lab.sh("c1", *argv, timeout=timeout + 10).returncode == 0


def datapath_status(lab: LabRun, host: str) -> dict[str, Any]:
    path = Path(lab.state().hosts[host].datapath_status_file)
    return dict(json.loads(path.read_text()))


def drops(lab: LabRun, host: str) -> int:
    counters = datapath_status(lab, host)["counters"]
    return int(counters["drops"].get("state_unavailable", 0))


def redis_record(lab: LabRun) -> ProcessRecord:
    return next(p for p in lab.state().processes if p.role == "redis")


def restart_redis(lab: LabRun, old: ProcessRecord) -> None:
    """Start redis-server again as the lab did (same argv, so same port), and record it
    in the lab state in place of the dead one so that ``lab down`` stops it."""
    assert old.log is not None
    with Path(old.log).open("ab") as log:
        child = subprocess.Popen(
            old.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    RESTARTED.append(child)
    start_time = RealSystem().start_time(child.pid)
    proc = ProcessRecord(
        role="redis", pid=child.pid, start_time=start_time, argv=old.argv, log=old.log
    )
    state = lab.state()
    state.processes = [proc if p.role == "redis" else p for p in state.processes]
    state.save()


def wait_for(what: str, check: Any, timeout: float) -> float:
    """Poll ``check`` until true; the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def store_client(lab: LabRun) -> redis.Redis:
    url = lab.state().state_store
    assert url is not None
    assert url.startswith("redis://")
    return redis.Redis.from_url(url, socket_timeout=2)


def start_stream(lab: LabRun, out: Path) -> subprocess.Popen[bytes]:
    ns = lab.state().node_netns("c1")
    assert ns is not None
    with out.open("wb") as sink:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", STREAM],
            stdin=subprocess.PIPE,
            stdout=sink,
        )


def stream_report(
    proc: subprocess.Popen[bytes], out: Path, outage: tuple[float, float]
) -> tuple[int, bool]:
    """What the established connection saw: answers during the outage, and whether it
    went a second without an answer (lost)."""
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    lines = [line.split() for line in out.read_text().splitlines()]
    during = sum(1 for kind, at in lines if kind == "ok" and outage[0] <= float(at) <= outage[1])
    return during, any(kind == "lost" for kind, _ in lines)


def test_the_hosts_run_the_store_mode_of_the_lab(
    lab: LabRun, echo: None, request: pytest.FixtureRequest
) -> None:
    """The write-behind lab (the default) really writes behind and the write-through one
    does not: the other tests of this file then cover both modes."""
    assert wait_for("a first connection", lambda: connects(lab, 2.0), 20) >= 0
    for host in ("hv1", "hv2"):
        state = datapath_status(lab, host)["counters"]["state"]
        if request.node.callspec.params["lab"] == "write-behind":
            assert state["write_behind"]["interval"] == pytest.approx(0.05)
        else:
            assert "write_behind" not in state


def test_redis_outage_fails_closed_and_recovers_clean(
    lab: LabRun, echo: None, tmp_path: Path
) -> None:
    assert wait_for("a first connection", lambda: connects(lab, 2.0), 20) >= 0
    before = drops(lab, "hv1")
    stream = start_stream(lab, tmp_path / "stream.out")
    time.sleep(1.0)

    old = redis_record(lab)
    killed = time.time()
    os.kill(old.pid, signal.SIGKILL)
    wait_for("redis-server to die", lambda: not net.is_alive(RealSystem(), old), 5)
    try:
        failed = [not connects(lab, 2.0) for _ in range(3)]
        assert all(failed), "a new connection got through without the state store"
        wait_for("hv1 to count state_unavailable drops", lambda: drops(lab, "hv1") > before, 5)
        status = datapath_status(lab, "hv1")
        assert status["counters"]["state"]["unavailable"] > 0
        updated = status.get("updated_at", 0)
        wait_for(
            "the datapath status to be rewritten",
            lambda: datapath_status(lab, "hv1").get("updated_at", 0) > updated,
            5,
        )
    finally:
        restarted = time.time()
        restart_redis(lab, old)
    # the datapath flow cache keeps serving the connection it already knows
    during, lost = stream_report(stream, tmp_path / "stream.out", (killed, restarted))
    print(f"established connection: {during} answers during the outage, lost: {lost}")
    assert not lost, "the established connection stalled while the store was down"
    assert during >= 3

    took = wait_for("new connections after the restart", lambda: connects(lab, 1.0), RECOVERY)
    print(f"new connections work again {took:.1f} s after redis-server restarted")
    assert connects(lab, 2.0)

    client = store_client(lab)
    try:
        keys = list(client.scan_iter("netvirt:d:ct:*"))
        assert keys, "the new connections left no conntrack record"
        for key in keys:
            blob = client.get(key)
            if blob is None:
                continue  # expired meanwhile
            assert isinstance(blob, bytes)
            entry, _kind = decode(blob[8:], int.from_bytes(blob[:8], "big"))
            assert entry.orig.proto == 6
    finally:
        client.close()


def store_counters(lab: LabRun, host: str) -> dict[str, Any]:
    return dict(datapath_status(lab, host)["counters"]["state"])


def test_a_hung_redis_never_makes_the_datapath_wait(
    lab: LabRun, echo: None, tmp_path: Path
) -> None:
    """Redis stopped (SIGSTOP: connections stay open, nothing answers) while new
    connections keep trying: the established connection keeps its answers, the
    attempts fail closed at the store timeout, and hv1's loop was never blocked on the
    store (its round trips are asynchronous: ``waited_us_sum`` stays flat while
    ``unavailable`` grows). SIGCONT: new connections work again."""
    assert wait_for("a first connection", lambda: connects(lab, 2.0), 20) >= 0
    stream = start_stream(lab, tmp_path / "hung.out")
    time.sleep(1.0)
    before = store_counters(lab, "hv1")
    proc = redis_record(lab)
    stopped = time.time()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        attempts = [connects(lab, 1.0) for _ in range(3)]
        assert not any(attempts), "a new connection got through without the state store"
        time.sleep(1.5)  # a status write after the attempts
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        resumed = time.time()
    during, lost = stream_report(stream, tmp_path / "hung.out", (stopped, resumed))
    assert not lost, "the established connection stalled while the store hung"
    assert during >= 5
    after = store_counters(lab, "hv1")
    assert after["unavailable"] > before["unavailable"]
    assert after["async_round_trips"] > before["async_round_trips"]
    waited_ms = (after["waited_us_sum"] - before["waited_us_sum"]) / 1000
    print(f"hv1 waited {waited_ms:.1f} ms on the store during a {resumed - stopped:.1f} s hang")
    assert waited_ms < 120  # at most one synchronous sweep's timeout, not one per batch
    took = wait_for("new connections after SIGCONT", lambda: connects(lab, 1.0), RECOVERY)
    print(f"new connections work again {took:.1f} s after redis-server resumed")
