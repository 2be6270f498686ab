"""Store round trips per packet batch through a ct_next + ct_commit pipeline.

Not a test and not a timed benchmark: it counts. A hand-built switch pipeline
(ingress: ``ct_next``, then ``ct_commit`` for ``ct.new``, output; egress:
deliver) receives a batch of TCP SYNs of distinct new connections, and the
script prints how many store calls (memory store: each ``get_many`` or batch
is one call, i.e. what would be one round trip) and, when ``redis-server`` is
installed, real Redis round trips the batch cost. It uses
``Pipeline.process_batch`` when the pipeline has it (one conntrack batch per
step for all packets) and one ``process`` per frame otherwise (or with
``--one-by-one``: the "before" numbers).

    python bench/ct_batch_roundtrips.py [--batch 32] [--no-redis] [--one-by-one]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.classifier import Classifier
from netvirt.dataplane.fields import CT_NEW
from netvirt.dataplane.flow import FieldMatch, Rule, exact
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.pipeline import Pipeline, PortInfo, Topology
from netvirt.state import StateStore
from netvirt.state.memory import MemoryStore

DP, VM1, VM2 = 1, 1, 2
INGRESS, COMMIT, EGRESS = 0, 1, 10


def pipeline(store: StateStore) -> Pipeline:
    """One switch, two VIFs; the stateful ACL reduced to its two conntrack actions."""
    classifier = Classifier()
    classifier.add(Rule(INGRESS, 1, (), (A.CtNext(),)))
    new = FieldMatch("ct_state", CT_NEW, CT_NEW)
    out = (A.SetField("outport", VM2), A.Output())
    classifier.add(Rule(COMMIT, 2, (new,), (A.CtCommit(), *out)))
    classifier.add(Rule(COMMIT, 1, (), out))
    classifier.add(Rule(EGRESS, 1, (exact("outport", VM2),), (A.Output(),)))
    topology = Topology(
        kinds={DP: "switch"},
        ports={(DP, p): PortInfo(DP, p, f"vm{p}", "vif") for p in (VM1, VM2)},
        first_table={("switch", "ingress"): INGRESS, ("switch", "egress"): EGRESS},
        next_table={INGRESS: COMMIT}.get,
        pipeline_of=lambda t: "ingress" if t < EGRESS else "egress",
    )
    return Pipeline(classifier, topology, FlowKeyConntrack(Conntrack(store)))


def syns(count: int, base: int) -> list[bytes]:
    eth = Ether(src="fa:16:3e:00:00:01", dst="fa:16:3e:00:00:02")
    ip = IP(src="10.0.0.1", dst="10.0.0.2")
    return [bytes(eth / ip / TCP(sport=base + i, dport=80, flags="S")) for i in range(count)]


ONE_BY_ONE = False


def run_batch(pipe: Pipeline, frames: list[bytes], now: float) -> int:
    """Process one batch; the number of packets delivered."""
    batch = None if ONE_BY_ONE else getattr(pipe, "process_batch", None)
    if batch is not None:
        verdicts = batch([(f, DP, VM1, None, now) for f in frames])
    else:
        verdicts = [pipe.process(f, DP, VM1, now) for f in frames]
    return sum(len(v.outputs) for v in verdicts)


def measure(store: StateStore, batch: int, field: str) -> tuple[int, float]:
    """Store ``field`` (calls or round_trips) per batch of new connections, and µs/packet."""
    pipe = pipeline(store)
    rounds, total, elapsed = 5, 0, 0.0
    for r in range(rounds):
        frames = syns(batch, 10000 + r * batch)
        before = _count(store, field)
        started = time.perf_counter()
        delivered = run_batch(pipe, frames, 100.0 + r)
        elapsed += time.perf_counter() - started
        assert delivered == batch, delivered
        total += _count(store, field) - before
    return total // rounds, elapsed / (rounds * batch) * 1e6


def _count(store: StateStore, field: str) -> int:
    value: Any = store.stats()[field]
    return int(value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--one-by-one", action="store_true", help="one process() per packet")
    args = parser.parse_args()
    global ONE_BY_ONE
    ONE_BY_ONE = args.one_by_one
    calls, us = measure(MemoryStore(), args.batch, "calls")
    what = f"per batch of {args.batch} new TCP connections"
    print(f"memory: {calls} store calls {what} ({us:.0f} µs/packet)")
    binary = shutil.which("redis-server")
    if args.no_redis or binary is None:
        return
    from netvirt.state.redis import RedisStore

    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)
            store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
            run_batch(pipeline(store), syns(1, 5), 1.0)  # load the scripts
            trips, us = measure(store, args.batch, "round_trips")
            print(f"redis:  {trips} round trips {what} ({us:.0f} µs/packet)")
            store.close()
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
