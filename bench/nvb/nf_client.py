"""Store client CPU per new connection on the datapath's asynchronous Redis path.

Not a test, no root (needs ``redis-server``):
``python3 bench/nvb/nf_client.py [--batch 32] [--batches 20] [--no-cache] [--profile]``.

The connections of ``nf_ops.py`` (the connrate connection through an SG zone on one
datapath and the SNAT zone on another), but ``--batch`` of them side by side, each
segment of all of them one ``Conntrack.process_steps`` call, driven the way the
datapath drives it: every round trip ``submit``-ted to a ``CachedStore`` over a
``RedisStore`` on a throwaway ``redis-server``, the loop waiting on the socket. Prints
what the lab's "store time per new connection" counts — the client's CPU
(``client_us_sum``) per connection — and the process's whole CPU per connection, with
the garbage collector tuned as ``netvirt datapath`` tunes it. ``--profile`` adds a
cProfile of the run (wall clock, sorted by internal time).

Stores are opened with ``open_store`` as the datapath opens them, so
``NETVIRT_WRITE_BEHIND=0.05`` measures the write-behind mode (``state/writebehind.py``:
the SG zone kept on its host, flushed from the loop's tick, which ``_run`` calls after
every step as the loop does); ``local_us_per_conn`` is then its local work.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if sys.path and sys.path[0] == _HERE:  # bench/nvb/profile.py would shadow the stdlib's
    del sys.path[0]

import argparse  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from netvirt.dataplane.nf import Conntrack, CtRequest, CtResult, CtTuple, NatRequest, Snat  # noqa: E402
from netvirt.dataplane.nf.codec import cacheable_record  # noqa: E402
from netvirt.state import open_store  # noqa: E402
from netvirt.state.cached import CachedStore  # noqa: E402
from netvirt.state.jobs import Steps  # noqa: E402
from netvirt.state.store import StateStore  # noqa: E402

# the bench directory, not bench/nvb: its modules (nf.py, profile.py) would shadow packages
# of the same name for whoever imports after this (the test suite's tests/nf)
_BENCH = str(Path(_HERE).parent)
if _BENCH not in sys.path:
    sys.path.append(_BENCH)
from nvb.nf_ops import GW, SEGMENTS, SERVER, VM  # noqa: E402

# a VM port's zone and a router's (Pipeline._zone: (datapath << 16) | port, router port 0)
SG_ZONE, ROUTER_ZONE, CT_NEW = 0x10001, 0x20000, 0x01


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(store: CachedStore, steps: Steps[list[CtResult]]) -> list[CtResult]:
    """Drive a conntrack batch as the datapath does: submit, wait on the socket, resume."""
    try:
        ops = next(steps)
        while True:
            ticket = store.submit(ops)
            while not ticket.done:
                store.wait(0.05)
            assert ticket.reply is not None
            ops = steps.send(ticket.reply)
    except StopIteration as stop:
        store.handle()  # the loop's store tick after the turn (a write-behind flush)
        return stop.value  # type: ignore[no-any-return]


def _settle(store: CachedStore) -> None:
    """Let the loop tick until nothing waits (write-behind flushes included)."""
    deadline = time.monotonic() + 2.0
    while store.in_flight() and time.monotonic() < deadline:
        store.wait(0.01)
        store.handle()


class Hosts:
    """Two datapaths (SG host, gateway) on one Redis, as the lab has them."""

    def __init__(self, url: str, cache: bool) -> None:
        self.raw: list[StateStore] = [open_store(url) for _ in range(2)]
        age = 0.5 if cache else 0.0
        self.stores = [CachedStore(r, age, cacheable=cacheable_record) for r in self.raw]
        self.sg, self.gw = (Conntrack(s, "ct:") for s in self.stores)

    def batch(self, base: int, size: int, now: float) -> None:
        sg_store, gw_store = self.stores
        outs = [CtTuple(4, 6, VM, SERVER, base + i, 5301) for i in range(size)]
        snat = NatRequest(snat=Snat(GW, (1024, 65535)))
        translated: Sequence[CtTuple] = outs
        for forward, flags in SEGMENTS:
            if forward:
                got = _run(
                    sg_store,
                    self.sg.process_steps([CtRequest(SG_ZONE, t, flags) for t in outs], now),
                )
                new = [outs[i] for i, r in enumerate(got) if r.state & CT_NEW and r.entry is None]
                if new:
                    commits = [CtRequest(SG_ZONE, t, flags, commit=True) for t in new]
                    _run(sg_store, self.sg.process_steps(commits, now))
                requests = [CtRequest(ROUTER_ZONE, t, flags, nat=snat) for t in outs]
                translated = [r.tuple for r in _run(gw_store, self.gw.process_steps(requests, now))]
            else:
                back = [
                    CtRequest(ROUTER_ZONE, t.reversed(), flags, nat=NatRequest())
                    for t in translated
                ]
                got = _run(gw_store, self.gw.process_steps(back, now))
                _run(
                    sg_store,
                    self.sg.process_steps([CtRequest(SG_ZONE, r.tuple, flags) for r in got], now),
                )

    def totals(self) -> dict[str, float]:
        for store in self.stores:
            _settle(store)
        stats = [r.stats() for r in self.raw]
        out = {
            k: sum(float(str(s[k])) for s in stats) for k in ("ops", "round_trips", "client_us_sum")
        }
        behind = [s.get("write_behind") for s in stats]
        out["local_us_sum"] = sum(float(b["local_us_sum"]) for b in behind if isinstance(b, dict))
        out["local_ops"] = sum(float(b["local_ops"]) for b in behind if isinstance(b, dict))
        return out


def measure(url: str, batch: int, batches: int, cache: bool, profile: bool) -> dict[str, float]:
    hosts = Hosts(url, cache)
    hosts.batch(10000, batch, 999.0)  # warm up: connections, scripts, caches
    before = hosts.totals()
    gc.set_threshold(100_000, 50, 100)  # as netvirt datapath (cli/main.py)
    gc.freeze()
    profiler = cProfile.Profile() if profile else None
    cpu = time.thread_time()
    if profiler is not None:
        profiler.enable()
    for k in range(batches):
        hosts.batch(20000 + k * batch, batch, 1000.0 + k)
    if profiler is not None:
        profiler.disable()
    cpu = time.thread_time() - cpu
    after = hosts.totals()
    conns = batch * batches
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    return {
        "connections": conns,
        "client_us_per_conn": (after["client_us_sum"] - before["client_us_sum"]) / conns,
        "cpu_us_per_conn": cpu * 1e6 / conns,
        "ops_per_conn": (after["ops"] - before["ops"]) / conns,
        "round_trips_per_conn": (after["round_trips"] - before["round_trips"]) / conns,
        "local_us_per_conn": (after["local_us_sum"] - before["local_us_sum"]) / conns,
        "local_ops_per_conn": (after["local_ops"] - before["local_ops"]) / conns,
    }


def run(batch: int, batches: int, *, cache: bool = True, profile: bool = False) -> dict[str, float]:
    """:func:`measure` on a throwaway ``redis-server`` (no persistence, a free port)."""
    port = _free_port()
    argv = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        return measure(f"redis://127.0.0.1:{port}/0", batch, batches, cache, profile)
    finally:
        server.terminate()
        server.wait()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--batch", type=int, default=32, help="connections side by side")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--no-cache", action="store_true", help="datapaths without the read cache")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    out = run(args.batch, args.batches, cache=not args.no_cache, profile=args.profile)
    print(json.dumps({k: round(v, 2) for k, v in out.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
