"""The lab's Redis Cluster: shared NF state sharded over several ``redis-server`` s.

``state: redis-cluster`` in a topology (or ``netvirt lab up --state
redis-cluster``) starts, instead of one Redis, ``nodes`` masters (3 by
default) on private loopback ports, joins them into a cluster and gives every
agent ``redis+cluster://127.0.0.1:<p1>,…``. The nodes are configured by
:func:`netvirt.state.cluster_setup.node_argv` like the tests' and the
benchmark's: no persistence, an explicit cluster bus port, and
``cluster-require-full-coverage no`` so that a node that dies takes only its
own slots with it.

Each node is a lab process with role ``redis``: ``lab down`` stops them with
the other servers, after the agents, and finds strays by the lab directory in
their process title, as for the single Redis. Files: ``redis-cluster/``
(each node's ``nodes-<port>.conf``, required by cluster mode, and nothing
else) and ``logs/redis-<port>.log``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from netvirt.lab import build, net
from netvirt.lab.net import System
from netvirt.lab.state import LabState, ProcessRecord
from netvirt.state.cluster_setup import ClusterNode, cluster_url, form_cluster, node_argv

DEFAULT_NODES = 3


def start_cluster(system: System, state: LabState, nodes: int = DEFAULT_NODES) -> str:
    """Start and join ``nodes`` cluster masters; record them and the URL in ``state``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise build.LabError("redis-server is not installed: run scripts/setup.sh as root")
    if nodes < 1:
        raise ValueError(f"a cluster needs at least one node, not {nodes}")
    members = _members(nodes)
    directory = Path(state.dir) / "redis-cluster"
    directory.mkdir(parents=True, exist_ok=True)
    procs = [_start_node(system, state, binary, node, directory) for node in members]
    try:
        form_cluster(members, timeout=build.SERVER_TIMEOUT)
    except (TimeoutError, redis.RedisError) as exc:
        dead = [p for p in procs if not net.is_alive(system, p)]
        logs = "".join(f"\n{p.log}:\n{build.log_tail(p.log)}" for p in dead)
        raise build.LabError(f"redis cluster did not form: {exc}{logs}") from None
    state.state_store = cluster_url(members)
    state.save()
    return state.state_store


def _members(count: int) -> list[ClusterNode]:
    """Client and bus ports for every node, all distinct (free right now, on loopback)."""
    ports: list[int] = []
    while len(ports) < 2 * count:
        port = build.free_port()
        if port not in ports:
            ports.append(port)
    return [ClusterNode("127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i in range(count)]


def _start_node(
    system: System, state: LabState, binary: str, node: ClusterNode, directory: Path
) -> ProcessRecord:
    argv = node_argv(binary, node, directory)
    # the title keeps the lab directory visible after redis-server rewrites its argv
    argv += ["--proc-title-template", f"{{title}} {{listen-addr}} {{server-mode}} {state.dir}/"]
    log = Path(state.dir) / "logs" / f"redis-{node.port}.log"
    proc = net.start_process(system, "redis", argv, log)
    state.processes.append(proc)
    state.save()
    return proc
