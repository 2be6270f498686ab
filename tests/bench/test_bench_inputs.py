"""What the harness generates: lab topology files, OVN NB commands, scale layouts, connrate."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from nvb import connrate, control, nvlab, results

from netvirt.lab.topology import parse


@pytest.mark.parametrize("backend", results.NETVIRT_BACKENDS)
@pytest.mark.parametrize("topology", ["l2", "l3", "sg", "xhost", "cp"])
def test_generated_lab_files_are_valid_topologies(topology: str, backend: str) -> None:
    doc = nvlab.topology_doc(topology, backend)
    topo = parse(doc, f"{topology}.yaml")  # netvirt lab's own validation, cross checks included
    assert topo.name == nvlab.lab_name(topology, backend)
    assert topo.name.startswith("nvb")
    assert topo.state_backend() == ("redis" if backend == results.NETVIRT_REDIS else "memory")


def test_sg_lab_has_snat_and_a_stateful_group_on_the_client() -> None:
    doc = nvlab.topology_doc("sg", results.NETVIRT)
    router = doc["projects"][0]["routers"][0]
    assert router["gateway"]
    assert router["snat"]
    client = doc["vms"][0]
    assert client["port_security"]
    assert client["security_groups"] == ["bench"]
    assert doc["external"]["gateway_ip"] == nvlab.SERVER_IP["sg"]


def test_component_names_from_lab_roles() -> None:
    assert nvlab.component_of("agent:hv1") == "netvirt agent"
    assert nvlab.component_of("datapath:hv2") == "netvirt datapath"
    assert nvlab.component_of("service:web1:http:80") is None


def test_scale_layout_spreads_ports_and_subnets_do_not_overlap() -> None:
    layout = control.ports_of(10_000, 1000)
    per_net: dict[int, int] = {}
    for net, _ in layout:
        per_net[net] = per_net.get(net, 0) + 1
    assert set(per_net.values()) == {10}
    nets = [control.subnet(i, "10.251.0.0/16") for i in range(4096)]
    assert len({n.network_address for n in nets}) == 4096
    assert all(n.subnet_of(control.subnet(0, "10.251.0.0/16").supernet(12)) for n in nets)
    assert control.scale_name(10_000) == "control10k"
    assert control.scale_name(200) == "control200"


def test_ovn_nb_commands_create_every_port_once() -> None:
    cmds = list(control.ovn_nb_commands(250, 25))
    assert len(cmds) == 1 + 1  # one transaction of 25 networks, then the groups
    created = [c[i + 2] for c in cmds[:-1] for i, w in enumerate(c) if w == "lsp-add"]
    assert sorted(created) == sorted(f"nvbp{p}" for p in range(250))
    groups = cmds[-1]
    assert groups.count("pg-add") == 1 + control.GROUPS
    assert sum(w.startswith("nvbp") for w in groups) == 2 * 250  # drop group + one SG each


def test_connrate_client_and_server_on_loopback() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, connrate.__file__, "server", "--port", str(port), "--ports", "1"]
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        out = connrate.client("127.0.0.1", port, 1, 0.3, 4, 2.0)
    finally:
        server.kill()
        server.wait()
    assert out["connections"] > 10
    assert out["errors"] == 0
    assert results.parse_connrate(json.dumps(out))["conn_per_s"] > 0


def test_scale_puts_whole_networks_on_the_host() -> None:
    scale = control.Scale(10_000, 1000, 1000)
    local = scale.local_ports()
    assert len(local) == 1000
    layout = control.ports_of(10_000, 1000)
    local_nets = {layout[p][0] for p in local}
    assert len(local_nets) == 100
    # no network is split between the host and elsewhere
    assert all(scale.local(p) == (layout[p][0] in local_nets) for p in range(10_000))
    assert control.Scale(200, 20, 1000).local_ports() == list(range(200))
