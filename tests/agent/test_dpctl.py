"""The split host: an agent drives a datapath process over its control socket.

The datapath is the real ``DatapathProcess`` loop (in a thread, with memory
ports and a loopback Geneve endpoint); the agent is the real ``Agent`` with a
``RemoteDatapath``. What must hold: the remote datapath ends up with exactly
the rules a local agent installs; a new agent re-reads them and changes
nothing; a restarted datapath gets everything again; bad requests are
answered with errors, never the end of the datapath.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.conftest import HOSTS, PLACEMENT, Lab
from netvirt.agent import Agent
from netvirt.agent.datapath import DatapathConfig, DatapathProcess
from netvirt.agent.dpctl import (
    DatapathError,
    DatapathUnavailable,
    RemoteDatapath,
    recv_message,
    send_message,
)
from netvirt.dataplane.ports.memory import MemoryPort
from netvirt.dataplane.tunnels import GeneveTunnel
from netvirt.state.memory import MemoryStore

HOST = "hostA"


@dataclass
class Served:
    process: DatapathProcess
    thread: threading.Thread

    def stop(self) -> None:
        self.process.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()


def serve(lab: Lab, tmp_path: Path) -> Served:
    plugs = tmp_path / "plugs"
    plugs.mkdir(exist_ok=True)
    for vm, host in PLACEMENT.items():
        if host == HOST:
            (plugs / lab.taps[vm].name).write_text(lab.cloud.ids[vm])
    config = DatapathConfig(
        HOST, "127.0.0.1", plugs, control=tmp_path / "dp.sock", scan_interval=0.0, tick=0.01
    )
    process = DatapathProcess(
        config,
        store=MemoryStore(),
        open_port=MemoryPort,
        open_tunnel=lambda encap, ip, mtu: GeneveTunnel(ip, 0, underlay_mtu=mtu),
    )
    process.start()
    thread = threading.Thread(target=_loop, args=(process,), daemon=True)
    thread.start()
    return Served(process, thread)


def _loop(process: DatapathProcess) -> None:
    try:
        while not process._stopping:
            process.run_once()
    finally:
        process.close()


@pytest.fixture
def served(lab: Lab, tmp_path: Path) -> Iterator[Served]:
    s = serve(lab, tmp_path)
    yield s
    if s.thread.is_alive():
        s.stop()


def remote_agent(lab: Lab, path: Path) -> tuple[Agent, RemoteDatapath]:
    remote = RemoteDatapath(path, timeout=5)
    agent = Agent(HOST, "geneve", HOSTS[HOST], lab.sb, datapath=remote)
    return agent, remote


def converge(agent: Agent, remote: RemoteDatapath, lab: Lab) -> None:
    """Poll and step as the agent process does, until the SB's generation is installed."""
    for _ in range(200):
        if remote.poll():
            agent.plugs_changed()
        agent.step()
        if remote.generation == lab.sb.generation and agent.bindings and agent.bindings.local:
            return
    raise AssertionError(f"not installed: {remote.generation} vs {lab.sb.generation}")


def test_remote_datapath_gets_the_rules_a_local_agent_installs(
    lab: Lab, served: Served, tmp_path: Path
) -> None:
    agent, remote = remote_agent(lab, tmp_path / "dp.sock")
    converge(agent, remote, lab)
    local = set(lab.agents[HOST].installed.classifier.rules())
    assert set(served.process.forwarder.rules()) == local
    assert served.process.forwarder.plugged() == remote.plugged()
    assert served.process.forwarder.generation == lab.sb.generation
    counters = agent.counters()
    assert counters["flows"]["installed"] == len(local)  # type: ignore[index]
    assert "tap-vm1" in counters["ports"]  # type: ignore[operator]
    remote.close()


def test_a_new_agent_rereads_the_rules_and_changes_nothing(
    lab: Lab, served: Served, tmp_path: Path
) -> None:
    first, remote = remote_agent(lab, tmp_path / "dp.sock")
    converge(first, remote, lab)
    remote.close()  # the agent process ends; the datapath keeps its rules
    installs = served.process.forwarder.installs
    second, remote2 = remote_agent(lab, tmp_path / "dp.sock")
    converge(second, remote2, lab)
    stats = second.reconciler.stats
    assert (stats.added, stats.removed, stats.repairs) == (0, 0, 0)
    assert served.process.forwarder.installs == installs + 1  # topology only, no rule change
    remote2.close()


def test_a_restarted_datapath_gets_everything_again(lab: Lab, tmp_path: Path) -> None:
    first = serve(lab, tmp_path)
    agent, remote = remote_agent(lab, tmp_path / "dp.sock")
    try:
        converge(agent, remote, lab)
        rules = len(first.process.forwarder.rules())
        first.stop()
        with pytest.raises(DatapathUnavailable):
            remote.poll()
        second = serve(lab, tmp_path)
        try:
            converge(agent, remote, lab)
            assert len(second.process.forwarder.rules()) == rules
            assert agent.reconciler.stats.repairs == 1  # a new boot id: re-read, then install
            assert agent.reconciler.stats.added == 2 * rules
        finally:
            second.stop()
    finally:
        remote.close()
        if first.thread.is_alive():
            first.stop()


def test_bad_requests_get_errors_and_the_datapath_goes_on(served: Served, tmp_path: Path) -> None:
    remote = RemoteDatapath(tmp_path / "dp.sock", timeout=5)
    remote.poll()
    with pytest.raises(DatapathError, match="KeyError"):
        remote._call("no-such-op")
    with pytest.raises(DatapathError, match="TypeError"):
        remote._call("install", "not a physical state")
    assert remote.poll() is False  # same connection, same answers
    # a message that is not a tuple: an error reply, the connection stays usable
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(5)
    raw.connect(str(tmp_path / "dp.sock"))
    send_message(raw, 42)
    assert recv_message(raw)[0] == "error"
    raw.sendall(b"\xff\xff\xff\xff")  # a length beyond the limit: the server hangs up
    assert raw.recv(1) == b""
    raw.close()
    assert served.thread.is_alive()
    assert served.process.control.stats["errors"] >= 3
    remote.close()
