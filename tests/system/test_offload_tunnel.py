"""The kernel offload across hosts in a real lab (root): Geneve encapsulated and
decapsulated by eBPF, the same answers as the datapath's, counters that show it.

Two hosts, one network, a VM on each, security groups on (entries depend on
connections). Real ping and iperf3 in the VMs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from system.labrun import LabRun

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

TOPOLOGY = {
    "state": "memory",
    "offload": True,
    "underlay": {"cidr": "10.248.254.0/24"},
    "hosts": [{"name": "hv1"}, {"name": "hv2"}],
    "projects": [
        {
            "name": "p",
            "networks": [{"name": "n1", "cidr": "10.248.1.0/24", "mtu": 1500}],
            "security_groups": [
                {
                    "name": "open",
                    "rules": [
                        {"direction": "ingress", "protocol": protocol}
                        for protocol in ("icmp", "tcp", "udp")
                    ],
                }
            ],
        }
    ],
    "vms": [
        {"name": "ta", "host": "hv1", "network": "n1", "ip": "10.248.1.11"},
        {"name": "tb", "host": "hv2", "network": "n1", "ip": "10.248.1.12"},
    ],
}
for _vm in TOPOLOGY["vms"]:  # type: ignore[attr-defined]
    _vm["security_groups"] = ["open"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    root = tmp_path_factory.mktemp("offload-tunnel")
    run = LabRun(f"nvt{os.getpid() % 10000}", root / "labs")
    path = root / "tunnel.yaml"
    path.write_text(yaml.safe_dump(dict(TOPOLOGY, name=run.name)))
    try:
        run.ok("up", str(path), "--name", run.name, timeout=150)
        yield run
    finally:
        down = run("down", timeout=60)
        assert down.returncode == 0, down.stderr
        assert run.leftovers() == []


def tunnel(lab: LabRun, host: str) -> dict[str, Any]:
    """The host's kernel offload counters for the tunnel (``offload.tunnel`` in the status)."""
    status = json.loads(Path(lab.state().hosts[host].datapath_status_file).read_text())
    found: dict[str, Any] = status["offload"]
    assert "error" not in found, found
    assert found["errors"] == 0, found
    return dict(found["tunnel"])


def both(lab: LabRun) -> dict[str, dict[str, Any]]:
    time.sleep(1.2)  # the status file is written once a second
    return {host: tunnel(lab, host) for host in ("hv1", "hv2")}


def grew(before: dict[str, Any], after: dict[str, Any], field: str) -> int:
    return int(after.get(field, 0)) - int(before.get(field, 0))


def test_pings_across_hosts_are_encapsulated_and_decapsulated_in_the_kernel(lab: LabRun) -> None:
    before = both(lab)
    done = lab.sh("ta", "ping", "-n", "-q", "-c", "300", "-i", "0.01", "-W", "2", "10.248.1.12")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "300 received" in done.stdout
    assert "duplicates" not in done.stdout  # each echo served once: kernel or datapath
    after = both(lab)
    # requests: encapsulated by hv1's kernel, decapsulated by hv2's; replies the other way
    # (the first of each flow and one per revalidation go through the datapaths)
    for sender, receiver in (("hv1", "hv2"), ("hv2", "hv1")):
        assert grew(before[sender], after[sender], "tx_packets") >= 200, after
        assert grew(before[receiver], after[receiver], "rx_packets") >= 200, after
    assert after["hv1"]["underlay"] == "ul0"
    assert after["hv1"]["encap_entries"] >= 1
    assert after["hv1"]["decap_entries"] >= 1


def _iperf(lab: LabRun, *extra: str) -> dict[str, Any]:
    lab.sh("tb", "iperf3", "-s", "-D", "-p", "5296")
    time.sleep(0.5)
    try:
        client = ("iperf3", "-c", "10.248.1.12", "-p", "5296", "-t", "2", "-J", *extra)
        done = lab.sh("ta", *client, timeout=30)
    finally:
        lab.sh("tb", "pkill", "-f", "iperf3 -s -D -p 5296")
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_udp_across_hosts_is_served_by_the_kernels(lab: LabRun) -> None:
    """Small UDP datagrams (checksum-offloaded by the VM: a seed crosses the veth underlay
    and the receiver must still deliver them) flow VM to VM through both kernels."""
    before = both(lab)
    result = _iperf(lab, "-u", "-b", "20M", "-l", "256")
    received = result["end"]["sum"]
    assert received["packets"] - received["lost_packets"] > 10_000
    after = both(lab)
    delivered = received["packets"] - received["lost_packets"]
    assert grew(before["hv1"], after["hv1"], "tx_packets") > delivered // 2, after
    assert grew(before["hv2"], after["hv2"], "rx_packets") > delivered // 2, after


def test_tcp_across_hosts_flows_with_its_acks_in_the_kernel(lab: LabRun) -> None:
    """A bulk stream's super-frames stay with the datapaths (offload metadata); its ACKs,
    ordinary frames, come back through both kernels."""
    before = both(lab)
    result = _iperf(lab)
    assert result["end"]["sum_received"]["bytes"] > 20_000_000
    after = both(lab)
    assert grew(before["hv2"], after["hv2"], "tx_packets") > 500, after  # ACKs from tb
    assert grew(before["hv1"], after["hv1"], "rx_packets") > 500, after
