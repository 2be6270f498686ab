"""Scale-out gateways for real (root): streams through several gateway hosts survive a
gateway being killed and more gateways joining (docs/gateways.md).

One lab (``gateways.yaml``: hv1 with ``srv`` and its floating IP, hv2 with ``cl``
behind SNAT, gateways gw1-gw3) serves both tests, in order:

1. scale-out: gw2 and gw3 are stopped, so everything goes through gw1; TCP streams
   run both ways (4 connections from the external namespace to the floating IP, 4
   from ``cl`` out through SNAT) while gw2 and gw3 start again and join the external
   namespace's ECMP route. Every connection must finish without an error, and the
   new gateways must carry some of the traffic afterwards;
2. failover: with the three gateways up, one stream each way runs while the gateway
   carrying the stream into the floating IP is killed (``host stop --hard``). Both
   streams must finish without an error; the interruption (longest stretch with no
   bytes at the receiver, 0.1 s intervals, and the longest gap between replies of a
   ping every 50 ms) is printed.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from netvirt.lab import build
from netvirt.lab.net import RealSystem
from system.labrun import LabRun, wait_reachable

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

TOPOLOGY = Path(__file__).resolve().parent / "gateways.yaml"
GATEWAYS = ("gw1", "gw2", "gw3")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    for tool in ("busybox", "redis-server", "iperf3"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: run scripts/setup.sh")
    run = LabRun(f"nvg{os.getpid() % 100000}", tmp_path_factory.mktemp("labs"))
    try:
        run.ok("up", str(TOPOLOGY), "--name", run.name)
        assert wait_reachable(run, "ext", fip(run)), "no path to the floating IP"
        yield run
    finally:
        down = run("down", timeout=60)
        left = run.leftovers()
    assert down.returncode == 0, down.stderr
    assert left == []


def fip(run: LabRun) -> str:
    address = run.state().vms["srv"].fip
    assert address is not None
    return address


def ext_ip(run: LabRun) -> str:
    ext = run.state().external
    assert ext is not None
    return ext.ip


# ---------------------------------------------------------------------- measuring


@dataclass
class Proc:
    """A command in a lab node, its output in a file (pipes could fill up)."""

    popen: subprocess.Popen[bytes]
    out: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def json(self) -> dict[str, Any]:
        text = self.out.read_text()
        return json.loads(text) if text.strip() else {}


@dataclass
class Traffic:
    run: LabRun
    directory: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, node: str, name: str, *argv: str) -> Proc:
        ns = self.run.state().node_netns(node)
        assert ns is not None
        out = self.directory / f"{name}.out"
        with out.open("wb") as sink:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv], stdout=sink, stderr=subprocess.STDOUT
            )
        proc = Proc(popen, out)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


def iperf_server_argv(port: int) -> list[str]:
    return ["iperf3", "-s", "-1", "-p", str(port), "-i", "0.1", "-J"]


def start_server(traffic: Traffic, node: str, port: int) -> Proc:
    proc = traffic.start(node, f"server-{port}", *iperf_server_argv(port))
    deadline = time.monotonic() + 10
    while f":{port} " not in traffic.run.sh(node, "ss", "-Hltn").stdout:
        assert time.monotonic() < deadline, f"iperf3 server on {node}:{port} not listening"
        time.sleep(0.1)
    return proc


def start_client(
    traffic: Traffic, node: str, target: str, port: int, parallel: int, rate: str, seconds: int
) -> Proc:
    argv = ["iperf3", "-c", target, "-p", str(port), "-P", str(parallel), "-b", rate]
    argv += ["-t", str(seconds), "-J"]
    return traffic.start(node, f"client-{port}", *argv)


def longest_stall(report: dict[str, Any]) -> float:
    """The longest stretch of receiver intervals without a byte, after the first byte."""
    longest = current = 0.0
    started = False
    for interval in report.get("intervals", []):
        total = interval["sum"]
        if total["bytes"] > 0:
            started, current = True, 0.0
        elif started:
            current += total["seconds"]
            longest = max(longest, current)
    return longest


def tail_bytes(report: dict[str, Any], seconds: float = 2.0) -> list[int]:
    """Bytes each connection delivered in the last ``seconds`` of the test (at the receiver)."""
    intervals = report.get("intervals", [])
    end = intervals[-1]["sum"]["end"] if intervals else 0.0
    per_stream: dict[int, int] = {}
    for interval in intervals:
        for stream in interval["streams"]:
            per_stream.setdefault(stream["socket"], 0)
            if stream["end"] > end - seconds:
                per_stream[stream["socket"]] += stream["bytes"]
    return list(per_stream.values())


def ping_gap(output: str) -> float:
    times = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", output, re.M)]
    return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


def link_bytes(run: LabRun) -> dict[str, int]:
    """Bytes through each gateway's link, seen from the external namespace (tx + rx)."""
    out = {}
    for host in GATEWAYS:
        stats = f"/sys/class/net/gw-{host}/statistics"
        done = run.sh("ext", "cat", f"{stats}/tx_bytes", f"{stats}/rx_bytes")
        out[host] = sum(int(v) for v in done.stdout.split())
    return out


def tx_bytes(run: LabRun) -> dict[str, int]:
    """Bytes the external namespace sent into each gateway."""
    out = {}
    for host in GATEWAYS:
        done = run.sh("ext", "cat", f"/sys/class/net/gw-{host}/statistics/tx_bytes")
        out[host] = int(done.stdout.strip())
    return out


def routed(run: LabRun) -> list[str]:
    route = run.sh("ext", "ip", "route", "show", "172.24.4.0/24").stdout
    return sorted(h for h in GATEWAYS if f"gw-{h} " in route + " ")


def gateway_status(run: LabRun, host: str) -> dict[str, Any]:
    path = Path(run.state().hosts[host].datapath_status_file)
    status: dict[str, Any] = json.loads(path.read_text())["counters"]["gateways"]
    return status


def ensure_gateways_up(run: LabRun) -> None:
    for host in GATEWAYS:
        if run.state().hosts[host].datapath is None:
            run.ok("host", "start", host)


# ---------------------------------------------------------------------- 1. scale-out


def test_scale_out_from_one_to_three_gateways_loses_no_connection(
    lab: LabRun, tmp_path: Path
) -> None:
    for host in ("gw2", "gw3"):
        lab.ok("host", "stop", host)
    assert routed(lab) == ["gw1"]
    traffic = Traffic(lab, tmp_path)
    try:
        into = start_server(traffic, "srv", 5201)
        out_of = start_server(traffic, "ext", 5202)
        ping = traffic.start("ext", "ping", "ping", "-n", "-D", "-i", "0.05", fip(lab))
        clients = [
            start_client(traffic, "ext", fip(lab), 5201, 4, "5M", 32),
            start_client(traffic, "cl", ext_ip(lab), 5202, 4, "5M", 32),
        ]
        time.sleep(4)
        before = link_bytes(lab)
        started = time.monotonic()
        for host in ("gw2", "gw3"):
            lab.ok("host", "start", host)
        joined = time.monotonic() - started
        assert routed(lab) == ["gw1", "gw2", "gw3"]
        time.sleep(4)
        after = link_bytes(lab)
        codes = [c.wait(timeout=60) for c in clients]
        ping.stop()
        for server in (into, out_of):
            server.wait(timeout=15)
    finally:
        traffic.close()
        ensure_gateways_up(lab)

    reports = [c.json() for c in clients]
    received = [into.json(), out_of.json()]
    moved = {h: after[h] - before[h] for h in GATEWAYS}
    print(
        f"\nscale-out 1 -> 3 gateways (joined in {joined:.1f}s): bytes per gateway link since "
        f"the first start {moved}; longest receiver stall into the FIP "
        f"{longest_stall(received[0]):.1f}s, out through SNAT {longest_stall(received[1]):.1f}s; "
        f"ping gap {ping_gap(ping.out.read_text()):.2f}s; retransmits "
        f"{[r['end']['sum_sent'].get('retransmits') for r in reports]}"
    )
    for code, report in zip(codes, reports, strict=True):
        assert code == 0, report.get("error")
        assert "error" not in report
    for report in received:
        assert "error" not in report
        tails = tail_bytes(report)
        assert len(tails) == 4
        assert all(b > 0 for b in tails), f"a connection delivered nothing at the end: {tails}"
    # the newcomers took traffic (the ECMP route into them, the hosts' choices out of them)
    assert moved["gw2"] + moved["gw3"] > 200_000, moved
    chosen = gateway_status(lab, "hv2")["sent_via"]
    assert set(chosen) == set(GATEWAYS) or moved["gw2"] + moved["gw3"] > 1_000_000, chosen


# ---------------------------------------------------------------------- 2. failover


def test_killing_the_gateway_under_a_stream_keeps_it_alive(lab: LabRun, tmp_path: Path) -> None:
    ensure_gateways_up(lab)
    assert routed(lab) == list(GATEWAYS)
    traffic = Traffic(lab, tmp_path)
    victim = ""
    try:
        into = start_server(traffic, "srv", 5203)
        out_of = start_server(traffic, "ext", 5204)
        ping = traffic.start("ext", "ping", "ping", "-n", "-D", "-i", "0.05", fip(lab))
        clients = [
            start_client(traffic, "ext", fip(lab), 5203, 1, "20M", 16),
            start_client(traffic, "cl", ext_ip(lab), 5204, 1, "20M", 16),
        ]
        time.sleep(4)
        first = tx_bytes(lab)
        time.sleep(1)
        second = tx_bytes(lab)
        victim = max(GATEWAYS, key=lambda h: second[h] - first[h])  # carries the stream in
        killed_at = time.time()
        build.Lab.open(lab.name, RealSystem(), lab.root).host_stop(victim, hard=True)
        rerouted = time.time() - killed_at
        codes = [c.wait(timeout=60) for c in clients]
        ping.stop()
        for server in (into, out_of):
            server.wait(timeout=15)
    finally:
        traffic.close()
        ensure_gateways_up(lab)

    reports = [c.json() for c in clients]
    received = [into.json(), out_of.json()]
    stalls = [longest_stall(r) for r in received]
    gap = ping_gap(ping.out.read_text())
    print(
        f"\nkilled {victim} (carrying the stream into the FIP; route and link down "
        f"{rerouted:.2f}s after the kill): longest receiver stall into the FIP "
        f"{stalls[0]:.1f}s, out through SNAT {stalls[1]:.1f}s; ping gap {gap:.2f}s; "
        f"retransmits {[r['end']['sum_sent'].get('retransmits') for r in reports]}"
    )
    for code, report in zip(codes, reports, strict=True):
        assert code == 0, report.get("error")
        assert "error" not in report
    for report in received:
        assert "error" not in report
        assert all(b > 0 for b in tail_bytes(report)), "the stream died with the gateway"
    assert max(stalls) < 2.0, f"streams stalled for {max(stalls):.1f}s"
    assert gap < 2.0, f"pings stopped for {gap:.2f}s"
