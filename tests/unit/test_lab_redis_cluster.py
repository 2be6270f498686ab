"""The lab's Redis Cluster mode without root: topology, ``--state``, start and teardown.

``start_cluster`` runs for real (three redis-server processes on loopback ports
of 7100-7199, no namespaces needed) and ``net.teardown`` — what ``lab down``
runs — must leave none of them behind.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netvirt.cli.main import app
from netvirt.lab import build, net, redis_cluster
from netvirt.lab.net import Names, RealSystem
from netvirt.lab.state import LabState
from netvirt.lab.topology import Topology, loads
from netvirt.state import open_store
from netvirt.state.cluster import RedisClusterStore
from state.state_support import free_ports, redis_binary

BASE = """
hosts: [{name: hv1}, {name: hv2}]
projects:
  - name: demo
    networks: [{name: net1, cidr: 10.0.0.0/24}]
vms:
  - {name: vm1, host: hv1, network: net1}
"""


def test_redis_cluster_is_a_state_backend_auto_never_picks() -> None:
    assert loads(BASE + "state: redis-cluster\n").state_backend() == "redis-cluster"
    assert loads(BASE).state_backend() == "memory"
    with pytest.raises(ValueError, match="redis-cluster"):
        loads(BASE + "state: cluster\n")


def test_up_state_flag_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    topology = tmp_path / "lab.yaml"
    topology.write_text(BASE + "state: redis\n")
    built: list[Topology] = []

    def fake_up(topo: Topology, *args: object, **kwargs: object) -> LabState:
        built.append(topo)
        raise build.LabError("stopped before building anything")

    monkeypatch.setattr(build, "up", fake_up)
    monkeypatch.setattr("netvirt.cli.lab._need_root", lambda: None)
    runner = CliRunner()
    result = runner.invoke(app, ["lab", "up", str(topology), "--state", "redis-cluster"])
    assert result.exit_code == 1
    assert [t.state_backend() for t in built] == ["redis-cluster"]
    result = runner.invoke(app, ["lab", "up", str(topology), "--state", "etcd"])
    assert result.exit_code == 2
    assert "redis-cluster" in result.output
    assert len(built) == 1  # a bad flag builds nothing


def test_start_cluster_and_teardown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if redis_binary() is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    ports = iter(free_ports(6))
    monkeypatch.setattr(build, "free_port", lambda: next(ports))  # this worker's port range
    lab_dir = tmp_path / "nvcx"
    state = LabState(
        name="nvcx", prefix="nv-nvcx-", dir=str(lab_dir), topology_file="", topology={}
    )
    state.save()
    system = RealSystem()
    try:
        url = redis_cluster.start_cluster(system, state)
        assert url.startswith("redis+cluster://127.0.0.1:")
        assert LabState.load(lab_dir).state_store == url  # type: ignore[union-attr]
        assert [p.role for p in state.processes] == ["redis"] * 3
        assert all(net.is_alive(system, p) for p in state.processes)
        assert len(list((lab_dir / "redis-cluster").glob("nodes-*.conf"))) == 3
        store = open_store(url)
        assert isinstance(store, RedisClusterStore)
        keys = [f"k{i}" for i in range(30)]
        store.put_many([(k, b"v") for k in keys])
        assert len({store.node_of(k) for k in keys}) == 3
        assert all(e is not None for e in store.get_many(keys))
        store.close()
    finally:
        report = net.teardown(system, Names("nvcx"), state, lab_dir, grace=2.0)
    assert report.processes >= 3
    assert not any(net.is_alive(system, p) for p in state.processes)
    assert system.pids_with_arg(f"{lab_dir}/") == []


def test_member_ports_are_distinct(monkeypatch: pytest.MonkeyPatch) -> None:
    """free_port may hand out a port twice (nothing listens yet): members never share one."""
    ports = itertools.cycle([7101, 7101, 7102, 7103, 7104, 7104, 7105, 7106])
    monkeypatch.setattr(build, "free_port", lambda: next(ports))
    members = redis_cluster._members(3)
    used = [p for m in members for p in (m.port, m.bus_port)]
    assert sorted(used) == [7101, 7102, 7103, 7104, 7105, 7106]
