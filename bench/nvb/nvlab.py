"""netvirt through ``netvirt lab``: hosts are namespaces running a ``netvirt agent``.

One lab per topology and state variant, named ``nvb<topology>[r]`` (lab names
allow no dash), built from a generated topology file with ``netvirt lab up``,
used with ``netvirt lab exec`` and removed with ``netvirt lab down --lab``.
Tenant addresses are in 10.252.0.0/16, the underlay in 10.252.254.0/24
(MTU 65535, as the lab's default), VM networks MTU 1500 like the other
backends.

* ``l2``: one host, one network, two VMs without port security;
* ``l3``: two networks behind a router (netvirt routes on the sending host);
* ``sg``: the gateway host holds the client VM (security group: egress any,
  ingress ping/iperf3/connection-rate ports, stateful) on a network whose
  router SNATs to the external network; the server is the lab's external
  namespace (no route back, like the Internet);
* ``xhost``: the two VMs on two hosts (Geneve between their agents).

Variants: ``netvirt`` (NF state in each agent's memory, ``offload: false``: every
frame through the user-space datapath), ``netvirt-redis`` (``state: redis``:
conntrack/NAT in a Redis the lab starts; user space too) and ``netvirt-offload``
(local state with the kernel offload, the datapath's default).
CPU components are read from the lab's state file: every process it records
(agents, datapaths, serve, Redis) and their children.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from nvb import results
from nvb.system import BenchError, Machine, descendants, run, wait_for
from nvb.workloads import CONN_PORT, CONN_PORTS, Node, Target

LAB_ROOT = Path("/run/netvirt-lab")
NETVIRT = [sys.executable, "-m", "netvirt.cli.main"]
SERVER_IP = {
    "l2": "10.252.1.12",
    "l3": "10.252.2.12",
    "sg": "10.252.100.12",
    "xhost": "10.252.1.12",
}


def lab_name(topology: str, backend: str) -> str:
    short = {"l2": "l2", "l3": "l3", "sg": "sg", "xhost": "xh", "cp": "cp"}[topology]
    suffix = {results.NETVIRT_REDIS: "r", results.NETVIRT_OFFLOAD: "o"}.get(backend, "")
    return f"nvb{short}{suffix}"


def topology_doc(topology: str, backend: str) -> dict[str, Any]:
    """The lab topology file for one benchmark topology."""
    state = "redis" if backend == results.NETVIRT_REDIS else "memory"
    hosts: list[dict[str, Any]] = [{"name": "hv1"}]
    net1 = {"name": "n1", "cidr": "10.252.1.0/24", "mtu": 1500, "port_security": False}
    net2 = {"name": "n2", "cidr": "10.252.2.0/24", "mtu": 1500, "port_security": False}
    project: dict[str, Any] = {"name": "bench", "networks": [net1]}
    client: dict[str, Any] = {
        "name": "nvbc",
        "host": "hv1",
        "network": "n1",
        "ip": "10.252.1.11",
        "port_security": False,
    }
    server: dict[str, Any] = {
        "name": "nvbs",
        "host": "hv1",
        "network": "n1",
        "ip": "10.252.1.12",
        "port_security": False,
    }
    doc: dict[str, Any] = {
        "name": lab_name(topology, backend),
        "state": state,
        "offload": backend == results.NETVIRT_OFFLOAD,
        "underlay": {"cidr": "10.252.254.0/24", "mtu": 65535},
        "hosts": hosts,
        "projects": [project],
        "vms": [client, server],
    }
    if topology == "cp":  # control-plane runs: one anchor VM to send the first packets to
        client |= {"name": "nvba", "ip": "10.252.1.10"}
        doc["vms"] = [client]
    elif topology == "xhost":
        hosts.append({"name": "hv2"})
        server["host"] = "hv2"
    elif topology == "l3":
        project["networks"].append(net2)
        project["routers"] = [{"name": "r1", "networks": ["n1", "n2"]}]
        server |= {"network": "n2", "ip": "10.252.2.12"}
    elif topology == "sg":
        hosts[0]["gateway"] = True
        net1["port_security"] = True
        project["networks"].append(net2)
        project["routers"] = [
            {"name": "r1", "networks": ["n1", "n2"], "gateway": True, "snat": True}
        ]
        ports = f"{CONN_PORT}-{CONN_PORT + CONN_PORTS - 1}"
        project["security_groups"] = [
            {
                "name": "bench",
                "rules": [
                    {"protocol": "icmp"},
                    {"protocol": "tcp", "port": 5201},
                    {"protocol": "udp", "port": 5201},
                    {"protocol": "tcp", "port": ports},
                ],
            }
        ]
        client |= {"port_security": True, "security_groups": ["bench"]}
        doc["external"] = {
            "name": "public",
            "cidr": "10.252.100.0/24",
            "gateway_ip": SERVER_IP["sg"],
        }
        doc["vms"] = [client]
    return doc


def lab_state(name: str) -> dict[str, Any]:
    data = json.loads((LAB_ROOT / name / "state.json").read_text())
    assert isinstance(data, dict)
    return data


def _records(node: Any) -> Iterator[dict[str, Any]]:
    """Every process record (a dict with role and pid) anywhere in the state."""
    if isinstance(node, dict):
        if "role" in node and "pid" in node:
            yield node
        for value in node.values():
            yield from _records(value)
    elif isinstance(node, list):
        for value in node:
            yield from _records(value)


def component_of(role: str) -> str | None:
    for prefix, name in (
        ("agent", "netvirt agent"),
        ("datapath", "netvirt datapath"),
        ("serve", "netvirt serve"),
        ("redis", "redis"),
    ):
        if role.startswith(prefix):
            return name
    return None


def components(name: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for record in _records(lab_state(name)):
        component = component_of(str(record["role"]))
        if component is not None:
            out.setdefault(component, []).extend(descendants(int(record["pid"])))
    return out


def lab_exec(name: str, node: str) -> Node:
    return Node(node, [*NETVIRT, "lab", "exec", "--lab", name, node, "--"])


@contextmanager
def lab(m: Machine, topology: str, backend: str, keep_db: bool = False) -> Iterator[str]:
    """``netvirt lab up`` a generated file; ``netvirt lab down`` at the end, whatever happens."""
    name = lab_name(topology, backend)
    path = m.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(topology_doc(topology, backend), sort_keys=False))
    run([*NETVIRT, "lab", "down", "--lab", name], check=False, timeout=120)  # leftovers of ours
    try:
        started = time.monotonic()
        # faulthandler: a process of the lab that dies of a fatal signal leaves its stack in its log
        run([*NETVIRT, "lab", "up", str(path)], timeout=300, env={"PYTHONFAULTHANDLER": "1"})
        (m.workdir / f"{name}.up_seconds").write_text(f"{time.monotonic() - started:.1f}\n")
        yield name
    finally:
        keep = m.workdir / f"{name}-logs"
        shutil.rmtree(keep, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.copytree(LAB_ROOT / name / "logs", keep)  # lab down removes the lab dir
        if keep_db:
            with contextlib.suppress(OSError):
                shutil.copy2(LAB_ROOT / name / "netvirt.db", keep / "netvirt.db")
        run([*NETVIRT, "lab", "down", "--lab", name], check=False, timeout=120)


@contextmanager
def setup(m: Machine, backend: str, topology: str) -> Iterator[Target]:
    with lab(m, topology, backend) as name:
        client = lab_exec(name, "nvbc")
        server = lab_exec(name, "ext" if topology == "sg" else "nvbs")
        ip = SERVER_IP[topology]
        _ping_ready(client, ip)
        state = "redis" if backend == results.NETVIRT_REDIS else "memory"
        offload = ", kernel offload" if backend == results.NETVIRT_OFFLOAD else ""
        note = f"lab {name}, state {state}{offload}"
        yield Target(backend, topology, client, server, ip, lambda: components(name), note=note)


def _ping_ready(client: Node, ip: str, timeout: float = 30.0) -> None:
    def ok() -> bool:
        argv = client.argv("ping", "-n", "-c", "1", "-W", "1", ip)
        return run(argv, check=False, timeout=10).returncode == 0

    try:
        wait_for(f"ping {ip} from {client.name}", ok, timeout, 0.2)
    except BenchError as exc:
        raise BenchError(f"netvirt lab: {exc}") from None
