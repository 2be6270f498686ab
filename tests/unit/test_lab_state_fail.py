"""The lab's ``state_fail:`` reaches every datapath's command line (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netvirt.lab.build import datapath_argv
from netvirt.lab.state import HostRecord, LabState
from netvirt.lab.topology import TopologyError, loads

BASE = """
hosts: [{name: hv1}]
projects: [{name: p, networks: [{name: net, cidr: 10.0.0.0/24}]}]
vms:
  - {name: vm1, host: hv1, network: net}
"""


def one_host_lab(tmp_path: Path) -> tuple[LabState, HostRecord]:
    """A lab's state with one host record (what ``datapath_argv`` reads)."""
    host = HostRecord(
        name="hv1",
        netns="nvf-u-hv1",
        underlay_ip="10.254.0.11",
        encap="geneve",
        gateway=False,
        iface_dir=str(tmp_path / "plug"),
        status_file=str(tmp_path / "status.json"),
    )
    state = LabState(name="u", prefix="nvf-u", dir=str(tmp_path), topology_file="t", topology={})
    return state, host


def _argv(tmp_path: Path, store: str | None, fail: str) -> list[str]:
    state, host = one_host_lab(tmp_path)
    state.state_store = store
    return datapath_argv(state, host, 1500, fail)


def test_state_fail_defaults_to_closed_and_accepts_open() -> None:
    assert loads(BASE).state_fail == "closed"
    assert loads(BASE + "state_fail: open\n").state_fail == "open"
    with pytest.raises(TopologyError, match="state_fail"):
        loads(BASE + "state_fail: ajar\n")


def test_the_policy_goes_to_datapaths_with_a_shared_store(tmp_path: Path) -> None:
    argv = _argv(tmp_path, "redis://127.0.0.1:6379/0", "open")
    at = argv.index("--state-fail")
    assert argv[at + 1] == "open"
    assert argv[argv.index("--state-store") + 1] == "redis://127.0.0.1:6379/0"
    assert "--state-fail" not in _argv(tmp_path, None, "open")  # memory: nothing to reach
