"""Segments (megaflows split at conntrack) change nothing but speed, in the forwarders of
the agent tests' three hosts with security groups (``agent/conftest.py``: web admits TCP 80,
the others are in no group; every port has port security, so conntrack runs). Random
frames and new connections across hosts (vm1 on hostA, web on hostB: the sender's
ingress walk and the receiver's egress walk from the tunnel) go through a lab without and
a lab with the flow cache; outputs, drops and port counters must be identical, and the
segments must have served the new connections."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agent.conftest import Cloud, Lab, make_lab
from dataplane.test_megaflow_forwarder import frames, send_both, tcp
from netvirt.dataplane.fastpath import FlowCache


@pytest.fixture
def labs(cloud: Cloud) -> tuple[Lab, Lab]:
    plain, cached = make_lab(cloud), make_lab(cloud)
    for agent in cached.agents.values():
        agent.local.flow_cache = FlowCache()
    return plain, cached


def segment_hits(lab: Lab, host: str) -> int:
    cache = lab.agents[host].local.flow_cache
    assert cache is not None
    assert cache.segments is not None
    return cache.segments.counters.hits


def connection(labs: tuple[Lab, Lab], src: str, dst: str, sport: int, dport: int) -> None:
    cloud = labs[0].cloud
    steps = (("S", True), ("SA", False), ("A", True), ("PA", True), ("FA", True), ("FA", False))
    for flags, forward in (*steps, ("A", True)):
        a, b = (src, dst) if forward else (dst, src)
        ports = (sport, dport) if forward else (dport, sport)
        send_both(labs, a, tcp(cloud, a, b, *ports, flags))


def test_new_connections_through_security_groups_replay_segments(labs: tuple[Lab, Lab]) -> None:
    """vm1 (hostA) → web:80 (hostB): allowed by web's group; web → vm1 replies by
    conntrack. After the first connection, the sender's ingress walks and the receiver's
    egress walks (from the tunnel) replay segments; a port the group does not admit stays
    dropped the same way."""
    connection(labs, "vm1", "web", 30000, 80)
    before = segment_hits(labs[1], "hostA"), segment_hits(labs[1], "hostB")
    for sport in range(30001, 30009):
        connection(labs, "vm1", "web", sport, 80)
        connection(labs, "vm1", "web", sport, 22)  # not admitted: dropped at web's host
    assert segment_hits(labs[1], "hostA") - before[0] >= 8 * 7
    assert segment_hits(labs[1], "hostB") - before[1] >= 8 * 7


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.generate],  # the labs keep state: a shrunk replay would not fail the same way
)
@given(data=st.data())
def test_random_frames_and_connections_are_identical_with_segments(
    labs: tuple[Lab, Lab], data: Any
) -> None:
    cloud = labs[0].cloud
    for _ in range(20):
        if data.draw(st.integers(0, 3)):
            sender, frame = data.draw(frames(cloud))
            send_both(labs, sender, frame)
            continue
        src, dst = data.draw(st.sampled_from([("vm1", "web"), ("vm2", "web"), ("vm1", "vm3")]))
        sport = data.draw(st.integers(30000, 30005))
        connection(labs, src, dst, sport, data.draw(st.sampled_from([80, 22])))
