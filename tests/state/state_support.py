"""Helpers shared by the StateStore tests: a fake clock, the harness, redis-server runners."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from netvirt.state import StateStore
from netvirt.state.cluster_setup import ClusterNode, cluster_url, form_cluster, node_argv

REDIS_SERVER = "/usr/bin/redis-server"
CLUSTER_PORTS = range(7100, 7200)  # this worker's loopback range for test clusters


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """A store under test plus the way to let time pass for it."""

    kind: str
    store: StateStore
    advance: Callable[[float], None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (REDIS_SERVER if Path(REDIS_SERVER).exists() else None)


class RedisServer:
    """A throwaway redis-server on loopback: no persistence, files in ``workdir``."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir)]
        args += ["--logfile", str(self.workdir / f"redis-{self.port}.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_up(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def _wait_until_up(self, proc: subprocess.Popen[bytes]) -> None:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.02)
            raise RuntimeError("redis-server did not answer PING within 10 s")
        finally:
            client.close()


def free_ports(count: int, ports: range = CLUSTER_PORTS) -> list[int]:
    """``count`` loopback ports of ``ports`` that nobody listens on, from a random start."""
    start = random.randrange(len(ports))
    found: list[int] = []
    for offset in range(len(ports)):
        port = ports[(start + offset) % len(ports)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"fewer than {count} free loopback ports in {ports}")


class RedisClusterServers:
    """A throwaway Redis Cluster: ``count`` masters on loopback, no persistence."""

    def __init__(self, binary: str, workdir: Path, count: int = 3) -> None:
        self.binary = binary
        self.workdir = workdir
        ports = free_ports(2 * count)
        self.nodes = [
            ClusterNode("127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i in range(count)
        ]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return cluster_url(self.nodes)

    def start(self) -> None:
        for index in range(len(self.nodes)):
            self.start_node(index)
        form_cluster(self.nodes)

    def start_node(self, index: int) -> None:
        """(Re)start one node; a restarted node rejoins from its nodes-<port>.conf, empty."""
        node = self.nodes[index]
        args = node_argv(self.binary, node, self.workdir)
        args += ["--logfile", str(self.workdir / f"redis-{node.port}.log")]
        self.procs[index] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop_node(self, index: int) -> None:
        proc = self.procs.pop(index, None)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)

    def stop(self) -> None:
        for index in list(self.procs):
            self.stop_node(index)

    def client(self, index: int) -> redis.Redis:
        node = self.nodes[index]
        return redis.Redis(host=node.host, port=node.port, socket_timeout=2.0)

    def each(self, command: str) -> list[Any]:
        """Run ``command`` on every master; answers in node order."""
        answers = []
        for index in range(len(self.nodes)):
            client = self.client(index)
            try:
                answers.append(client.execute_command(command))
            finally:
                client.close()
        return answers

    def flush(self) -> None:
        self.each("FLUSHALL")

    def dbsizes(self) -> list[int]:
        return [int(n) for n in self.each("DBSIZE")]
