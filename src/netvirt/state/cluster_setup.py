"""Form a throwaway Redis Cluster from local ``redis-server`` processes.

Shared by the lab (``state: redis-cluster``), the tests and the benchmark, so
that all three run the cluster the same way. Starting the processes is the
caller's business (the lab records them for ``lab down``, tests own their
``Popen``); this module gives the command line and joins the nodes.

Choices, and why:

* no persistence (``--save ""``, ``--appendonly no``): NF state is
  disposable and a restart must be observable as "empty", as documented;
* the cluster bus port is given explicitly (``--cluster-port``) instead of
  the default ``port + 10000``, so callers choose every port they use;
* ``cluster-require-full-coverage no``: when a master without a replica
  dies, the others keep serving their slots (connections whose state is
  elsewhere carry on) instead of the whole cluster refusing every command;
* masters only, slots split evenly, joined with ``CLUSTER ADDSLOTSRANGE`` and
  ``CLUSTER MEET``: no ``redis-cli`` needed, and no interactive step.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from netvirt.state.slots import SLOTS

NODE_TIMEOUT_MS = 3000


@dataclass(frozen=True)
class ClusterNode:
    """Where one node listens: clients on ``port``, other nodes on ``bus_port``."""

    host: str
    port: int
    bus_port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def node_argv(binary: str, node: ClusterNode, workdir: Path) -> list[str]:
    """The ``redis-server`` command line of one cluster node (files in ``workdir``)."""
    return [
        binary,
        "--port",
        str(node.port),
        "--bind",
        node.host,
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        str(node.bus_port),
        "--cluster-config-file",
        f"nodes-{node.port}.conf",
        "--cluster-node-timeout",
        str(NODE_TIMEOUT_MS),
        "--cluster-require-full-coverage",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]


def cluster_url(nodes: Sequence[ClusterNode], prefix: str | None = None) -> str:
    """``redis+cluster://h:p,h:p,...`` for a store on these nodes."""
    url = "redis+cluster://" + ",".join(n.address for n in nodes)
    return f"{url}?prefix={prefix}" if prefix else url


def slot_ranges(count: int) -> list[tuple[int, int]]:
    """16384 slots split into ``count`` contiguous, nearly equal ranges (inclusive)."""
    bounds = [SLOTS * i // count for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(count)]


def form_cluster(nodes: Sequence[ClusterNode], timeout: float = 20.0) -> None:
    """Give each node its share of the slots, introduce them, wait until all agree.

    The nodes must be running, empty and not yet part of a cluster.
    """
    clients: list[Any] = [redis.Redis(host=n.host, port=n.port, socket_timeout=2.0) for n in nodes]
    deadline = time.monotonic() + timeout
    try:
        for node, client in zip(nodes, clients, strict=True):
            _wait(functools.partial(_pings, client), deadline, f"{node.address} answering PING")
        for client, (lo, hi) in zip(clients, slot_ranges(len(nodes)), strict=True):
            client.execute_command("CLUSTER ADDSLOTSRANGE", lo, hi)
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER MEET", node.host, node.port, node.bus_port)
        for node, client in zip(nodes, clients, strict=True):
            joined = functools.partial(_agrees, client, len(nodes))
            _wait(joined, deadline, f"{node.address} joined")
    finally:
        for client in clients:
            client.close()


def _pings(client: Any) -> bool:
    return bool(client.ping())


def _agrees(client: Any, count: int) -> bool:
    """The node sees a healthy cluster of ``count`` masters covering every slot."""
    info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    if isinstance(info, bytes | str):
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    fields = {str(k): str(v) for k, v in info.items()}
    if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != str(count):
        return False
    ranges = client.execute_command("CLUSTER SLOTS")
    return sum(int(r[1]) - int(r[0]) + 1 for r in ranges) == SLOTS


def _wait(ready: Callable[[], bool], deadline: float, what: str) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except redis.RedisError as exc:  # not up yet, or still handshaking
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"redis cluster: timed out waiting for {what} ({last})")
