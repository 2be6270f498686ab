"""SYN templates in a real lab (root): with ``NETVIRT_SYN_TEMPLATES=1`` the kernel makes
the connections of a connrate client through a security group and SNAT from their SYN
alone (after one connection per server port taught it the template), every connection
completes, and the user-space conntrack records of the kernel's connections are written
and handed back like those of handed-over ones.

The lab of tests/system/test_offload_conns.py (the ``sg`` shape of bench/run.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from system.labrun import LabRun
from system.test_offload_conns import CONNRATE, TOPOLOGY, connrate, settled, status

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    root = tmp_path_factory.mktemp("synk")
    run = LabRun(f"nvk{os.getpid() % 1000}t", root / "labs")
    path = root / "synk.yaml"
    path.write_text(yaml.safe_dump(dict(TOPOLOGY, name=run.name)))
    connrate: subprocess.Popen[bytes] | None = None
    saved = os.environ.get("NETVIRT_SYN_TEMPLATES")
    os.environ["NETVIRT_SYN_TEMPLATES"] = "1"  # (the lab's datapath inherits it)
    try:
        run.ok("up", str(path), "--name", run.name, timeout=150)
        ext = run.state().node_netns("ext")
        assert ext is not None
        argv = ["ip", "netns", "exec", ext, sys.executable]
        rate = [str(CONNRATE), "server", "--port", "5301", "--ports", "4"]
        connrate = subprocess.Popen([*argv, *rate])
        time.sleep(0.5)
        yield run
    finally:
        if saved is None:
            os.environ.pop("NETVIRT_SYN_TEMPLATES", None)
        else:
            os.environ["NETVIRT_SYN_TEMPLATES"] = saved
        if connrate is not None:
            connrate.kill()
            connrate.wait()
        down = run("down", timeout=60)
        assert down.returncode == 0, down.stderr
        assert run.leftovers() == []


def test_the_kernel_makes_connections_from_their_syn(lab: LabRun) -> None:
    found = status(lab)
    tpl = found["offload"]["syn_templates"]
    assert tpl["enabled"], tpl
    result = connrate(lab, 4)
    connections = result["connections"]
    assert connections >= 100, result
    after = settled(lab)
    tpl, conns = after["offload"]["syn_templates"], after["offload"]["conns"]
    assert tpl["templates"] == 4, (tpl, after["counters"]["handshakes"])  # one per server port
    assert tpl["supplies"] == 4, tpl  # each its own SNAT ports (a pool per destination)
    made = tpl["kernel_made"]
    assert made >= connections * 0.95, json.dumps(tpl)  # (the first per template: slow path)
    assert tpl["made"] == made, tpl  # every report drained
    assert tpl["record_conflicts"] == 0, tpl
    # records deferred (nothing on their tuples), written only for what user space needed:
    # two zones each (the VM's, the router's SNAT); the closed ones parked unwritten
    assert tpl["deferred"] == made, tpl
    assert tpl["records_written"] == 2 * tpl["materialized"], tpl
    # each made one is parked or materialized at most once, save that a parked one a late
    # frame came for (faulted in) is then materialized too
    assert tpl["faulted_in"] <= tpl["parked"], tpl
    assert tpl["parked"] + tpl["materialized"] - tpl["faulted_in"] <= made, tpl
    assert tpl["parked"] >= made * 0.95, tpl  # (a connection closes: it is parked)
    assert conns["made"] == made, conns  # the kernel's like handed-over ones
    assert conns["owned"] == 0, conns  # all closed, all given back (records folded)
    assert conns["lost"] == 0, conns
    assert conns["record_conflicts"] == 0, conns
    assert tpl["no_port"] <= connections * 0.05, tpl  # (a burst may empty the block)


def test_a_second_run_reuses_the_ports_and_still_completes(lab: LabRun) -> None:
    """Client ports come round again (their connections' records closed or gone), the
    block refills: every connection completes again."""
    before = status(lab)["offload"]["syn_templates"]
    result = connrate(lab, 8)
    after = settled(lab)["offload"]["syn_templates"]
    assert after["kernel_made"] - before["kernel_made"] >= result["connections"] * 0.9, after
    assert after["record_conflicts"] == 0, after


def test_status_file_has_the_counters(lab: LabRun) -> None:
    found = json.loads(Path(lab.state().hosts["hv1"].datapath_status_file).read_text())
    assert "syn_templates" in found["offload"]
    # both ports (the VM's, the external network's) are veth ends whose other end is in
    # another namespace: served with bpf_redirect_peer (the runs above went through it)
    assert found["offload"]["redirect_peer"] == {"enabled": True, "ports": 2}


def test_only_a_veth_with_its_peer_elsewhere_takes_redirect_peer() -> None:
    """``bpf_redirect_peer`` drops a frame whose peer is in the same namespace: the
    check must tell the cases apart (and say no for anything else)."""
    from netvirt.dataplane.offload.bpf import veth_peer_elsewhere

    ns, a, b, c, d = (f"nvk{os.getpid() % 1000}{x}" for x in "nabcd")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns],
                       check=True)  # fmt: skip
        subprocess.run(["ip", "link", "add", c, "type", "veth", "peer", "name", d], check=True)
        assert veth_peer_elsewhere(a)
        assert not veth_peer_elsewhere(c)  # (its peer is here)
        assert not veth_peer_elsewhere("lo")
        assert not veth_peer_elsewhere(f"nvk{os.getpid() % 1000}z")  # (no such device)
    finally:
        subprocess.run(["ip", "link", "del", a], check=False)
        subprocess.run(["ip", "link", "del", c], check=False)
        subprocess.run(["ip", "netns", "del", ns], check=False)
