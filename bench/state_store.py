"""Micro-benchmark: µs per key for a batched get+set of N keys, memory vs Redis vs Cluster.

Not a test. Models the datapath's use: one batch of flow misses looks its keys
up and writes them back. Prints, per variant, the median over rounds of the
time for one get+set round divided by the number of keys.

    python bench/state_store.py                 # throwaway redis-server and 3-node cluster
    python bench/state_store.py --redis redis://127.0.0.1:6379/0 --keys 128
    python bench/state_store.py --cluster redis+cluster://127.0.0.1:7000,127.0.0.1:7001
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from netvirt.state import MemoryStore, StateStore
from netvirt.state.cluster import RedisClusterStore
from netvirt.state.cluster_setup import ClusterNode, cluster_url, form_cluster, node_argv
from netvirt.state.redis import RedisStore

Round = Callable[[], object]


def bulk_round(store: StateStore, keys: list[str], value: bytes) -> Round:
    """get_many then put_many: two round trips (MGET, one script call)."""
    items = [(k, value) for k in keys]

    def run() -> object:
        store.get_many(keys)
        return store.put_many(items, ttl=60)

    return run


def batch_round(store: StateStore, keys: list[str], value: bytes) -> Round:
    """One batch alternating get and put per key: one round trip, 2N commands."""

    def run() -> object:
        batch = store.batch()
        for key in keys:
            batch.get(key)
            batch.put(key, value, ttl=60)
        return batch.execute()

    return run


def grouped_batch_round(store: StateStore, keys: list[str], value: bytes) -> Round:
    """One batch of N gets then N puts: one round trip; Redis sends MGET + one script."""

    def run() -> object:
        batch = store.batch()
        for key in keys:
            batch.get(key)
        for key in keys:
            batch.put(key, value, ttl=60)
        return batch.execute()

    return run


def cas_round(store: StateStore, keys: list[str], value: bytes) -> Round:
    """One batch of N create-only compare-and-sets (a new connection's primary/mirror)."""

    def run() -> object:
        batch = store.batch()
        for key in keys:
            batch.cas(key, 0, value, ttl=60)
        return batch.execute()

    return run


def raw_pipeline_round(client: redis.Redis, keys: list[str], value: bytes) -> Round:
    """Baseline without the store: redis-py pipeline of N GET + N SET PX."""

    def run() -> object:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.set(key, value, px=60000)
        return pipe.execute()

    return run


def raw_mget_mset_round(client: redis.Redis, keys: list[str], value: bytes) -> Round:
    """Baseline without the store: MGET + MSET (no TTL, no versions)."""
    mapping = dict.fromkeys(keys, value)

    def run() -> object:
        client.mget(keys)
        return client.mset(mapping)

    return run


def measure(run: Round, keys: int, rounds: int) -> float:
    for _ in range(max(3, rounds // 10)):
        run()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) / keys * 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def throwaway_redis() -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", workdir]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.02)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextmanager
def throwaway_cluster(nodes: int = 3) -> Iterator[str]:
    """A cluster of ``nodes`` masters on free loopback ports, configured as the lab's."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    members = [ClusterNode("127.0.0.1", free_port(), free_port()) for _ in range(nodes)]
    with tempfile.TemporaryDirectory() as workdir:
        procs = [
            subprocess.Popen(node_argv(binary, m, Path(workdir)), stdout=subprocess.DEVNULL)
            for m in members
        ]
        try:
            form_cluster(members)
            yield cluster_url(members)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)


def run_all(url: str, cluster: str, nkeys: int, rounds: int) -> list[tuple[str, float]]:
    keys = [f"ct:10.0.0.{i % 250}:{40000 + i}:tcp" for i in range(nkeys)]
    value = bytes(48)  # about a conntrack record
    memory = MemoryStore()
    store = RedisStore.from_url(url, prefix="bench:")
    sharded = RedisClusterStore.from_url(f"{cluster}?prefix=bench:")
    client = redis.Redis.from_url(url)
    try:
        variants = [
            ("memory   get_many+put_many", bulk_round(memory, keys, value)),
            ("memory   batch, get/put alternating", batch_round(memory, keys, value)),
            ("memory   batch, gets then puts", grouped_batch_round(memory, keys, value)),
            ("memory   batch of create-only CAS", cas_round(memory, keys, value)),
            ("redis    get_many+put_many (2 RTT)", bulk_round(store, keys, value)),
            ("redis    batch, get/put alternating", batch_round(store, keys, value)),
            ("redis    batch, gets then puts", grouped_batch_round(store, keys, value)),
            ("redis    batch of create-only CAS", cas_round(store, keys, value)),
            ("cluster  get_many+put_many (2 RTT)", bulk_round(sharded, keys, value)),
            ("cluster  batch, get/put alternating", batch_round(sharded, keys, value)),
            ("cluster  batch, gets then puts", grouped_batch_round(sharded, keys, value)),
            ("cluster  batch of create-only CAS", cas_round(sharded, keys, value)),
            ("raw      redis-py pipeline GET+SET", raw_pipeline_round(client, keys, value)),
            ("raw      MGET+MSET", raw_mget_mset_round(client, keys, value)),
        ]
        return [(name, measure(run, nkeys, rounds)) for name, run in variants]
    finally:
        store.close()
        sharded.close()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="use this server instead of starting one")
    parser.add_argument("--cluster", help="use this redis+cluster:// URL instead of starting one")
    parser.add_argument("--cluster-nodes", type=int, default=3, help="masters of a started cluster")
    parser.add_argument("--keys", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(throwaway_redis())
        cluster = args.cluster or stack.enter_context(throwaway_cluster(args.cluster_nodes))
        results = run_all(url, cluster, args.keys, args.rounds)
    print(f"batched get+set of {args.keys} keys, median of {args.rounds} rounds")
    for name, micros in results:
        print(f"  {name:38s} {micros:7.2f} µs/key")


if __name__ == "__main__":
    main()
