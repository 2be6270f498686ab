"""Per-frame CPU cost of AF_PACKET ports: ``AfPacketPort`` (a syscall a frame) vs ``RingPort``.

Not a test. In a private namespace (prefix ``nvr``) with one veth pair, each
port class sends batches of 64 frames of 64 bytes from one end and receives
them at the other; ``time.process_time`` around ``send_batch`` and
``recv_batch`` gives the CPU time per frame (user + kernel of this process,
which with veth includes the peer's receive path run in our syscall). Two
variants: plain ``bytes`` and ``Frame`` with a virtio-net header (UDP with a
seeded checksum). The machine is shared, so every figure is the best of
``--repeat`` runs, taken while holding /tmp/bench.lock.

    python bench/io_ring.py [--batches 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from netvirt.dataplane import netns
from netvirt.dataplane.ports.afpacket import AfPacketPort
from netvirt.dataplane.ports.base import VNET_F_NEEDS_CSUM, Frame, Port, VnetHdr
from netvirt.dataplane.ports.ring import RingPort

NS = f"nvr-bench{os.getpid() % 10000}"
BATCH = 64
FRAME = bytes(
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    / IP(src="10.9.0.1", dst="10.9.0.2")
    / UDP(sport=1, dport=2)
    / (b"x" * 22)
)
Results = dict[tuple[str, str], tuple[float, float, int]]
VNET = Frame(FRAME, VnetHdr(flags=VNET_F_NEEDS_CSUM, csum_start=34, csum_offset=6))


@contextmanager
def bench_lock() -> Iterator[None]:
    """Hold /tmp/bench.lock like the bench harness, so timings do not overlap."""
    with open("/tmp/bench.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def measure(tx: Port, rx: Port, item: Frame | bytes, batches: int) -> tuple[float, float, int]:
    """(send µs/frame, recv µs/frame, frames received) over ``batches`` batches."""
    batch = [item] * BATCH
    send = recv = 0.0
    got = 0
    clock = time.process_time
    for _ in range(batches):
        t0 = clock()
        tx.send_batch(batch)
        t1 = clock()
        frames = rx.recv_batch(BATCH)
        t2 = clock()
        send += t1 - t0
        recv += t2 - t1
        got += len(frames)
    return 1e6 * send / (batches * BATCH), 1e6 * recv / max(got, 1), got


def run(openers: dict[str, Callable[[str], Port]], batches: int, repeat: int) -> Results:
    """Best send and recv cost per port class and variant; classes take turns each round."""
    pairs = {
        name: (netns.run_in_netns(NS, opener, "nvrb0"), netns.run_in_netns(NS, opener, "nvrb1"))
        for name, opener in openers.items()
    }
    best: Results = {}
    try:
        for _ in range(repeat):
            for name, (tx, rx) in pairs.items():
                for label, item in (("plain", FRAME), ("vnet", VNET)):
                    send, recv, got = measure(tx, rx, item, batches)
                    old = best.get((name, label), (float("inf"), float("inf"), 0))
                    best[name, label] = (
                        min(old[0], send),
                        min(old[1], recv),
                        old[2] + batches * BATCH - got,
                    )
                    rx.recv_batch(100_000)
    finally:
        for tx, rx in pairs.values():
            tx.close()
            rx.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    netns.delete_netns(NS)
    netns.create_netns(NS)
    try:
        netns.create_veth("nvrb0", "nvrb1", netns_a=NS, netns_b=NS)
        openers: dict[str, Callable[[str], Port]] = {
            "AfPacketPort": AfPacketPort,
            "RingPort": RingPort,
        }
        with bench_lock():
            results = run(openers, args.batches, args.repeat)
    finally:
        netns.delete_netns(NS)
    print(f"{'port':<14}{'variant':<8}{'send us/frame':>15}{'recv us/frame':>15}{'lost':>7}")
    for (name, label), (send, recv, lost) in results.items():
        print(f"{name:<14}{label:<8}{send:>15.2f}{recv:>15.2f}{int(lost):>7}")


if __name__ == "__main__":
    main()
