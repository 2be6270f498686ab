"""Store operations per new connection, counted on a model of the stateless-NF lab.

Not a test, no root: ``python3 bench/nvb/nf_ops.py [--conns N] [--no-cache]``.

The connection-rate workload of ``bench/stateless_nf.py`` (``connrate.py``: connect,
the server sends one byte, both sides close) crosses two conntrack zones on two
datapaths: the client port's security group on its host (``ct_next``, then
``ct_commit`` of a new connection) and the router's SNAT on the gateway
(``ct_snat(gw, range)`` out, ``ct_snat`` un-NAT back). This replays its seven
segments through the real :class:`Conntrack`, one datapath = one
``CachedStore`` (as ``agent/datapath.py`` builds it) over one shared counting
memory store, and prints the operations per connection by kind. The lab's
figure (``ops_per_conn`` in ``docs/perf/nf*.json``) also counts races, refreshes
and retransmissions; this one is the protocol's floor.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence

from netvirt.dataplane.nf import Conntrack, CtTuple, NatRequest, Snat
from netvirt.dataplane.nf.codec import stable_record
from netvirt.state import MemoryStore
from netvirt.state.cached import CachedStore
from netvirt.state.store import Op, StateStore

SYN, ACK, FIN, PSH = 0x02, 0x10, 0x01, 0x08
SG_ZONE, ROUTER_ZONE = 1, 2
VM, SERVER, GW = 0x0A000005, 0x0AFD6401, 0x0AFD0001
# (direction: True = client to server, TCP flags) of one connrate connection
SEGMENTS = (
    (True, SYN),
    (False, SYN | ACK),
    (True, ACK),
    (False, PSH | ACK),
    (True, FIN | ACK),
    (False, FIN | ACK),
    (True, ACK),
)


class CountingStore(MemoryStore):
    """Counts operations by kind and round trips (what a Redis store's stats would)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.round_trips = 0

    def get_many(self, keys: Sequence[str]) -> list[object]:  # type: ignore[override]
        self.round_trips += 1
        self.ops["get"] += len(keys)
        return list(super().get_many(keys))

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        self.round_trips += 1
        for op in ops:
            self.ops[type(op).__name__.removesuffix("Op").lower()] += 1
        return super()._execute(ops)


def _host(shared: StateStore, cache: bool) -> Conntrack:
    store: StateStore = CachedStore(shared, 0.5, cacheable=stable_record) if cache else shared
    return Conntrack(store, "ct:")


def connection(sg: Conntrack, gw: Conntrack, sport: int, now: float) -> None:
    """One connrate connection through the security group and the SNAT zone."""
    out = CtTuple(4, 6, VM, SERVER, sport, 5301)
    snat = NatRequest(snat=Snat(GW, (1024, 65535)))
    translated: CtTuple | None = None
    for forward, flags in SEGMENTS:
        if forward:
            r = sg.process(SG_ZONE, out, flags, now)
            if r.state & 0x01 and r.entry is None:  # ct.new: the ACL commits it
                sg.process(SG_ZONE, out, flags, now, commit=True)
            translated = gw.process(ROUTER_ZONE, out, flags, now, nat=snat).tuple
        else:
            assert translated is not None
            back = gw.process(ROUTER_ZONE, translated.reversed(), flags, now, nat=NatRequest())
            sg.process(SG_ZONE, back.tuple, flags, now)
        now += 0.0005


def measure(conns: int, cache: bool) -> dict[str, float]:
    shared = CountingStore()
    sg, gw = _host(shared, cache), _host(shared, cache)
    for i in range(conns):
        connection(sg, gw, 20000 + i, 1000.0 + i * 0.01)
    out = {kind: n / conns for kind, n in sorted(shared.ops.items())}
    out["total"] = sum(shared.ops.values()) / conns
    out["round_trips"] = shared.round_trips / conns
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--conns", type=int, default=200)
    p.add_argument("--no-cache", action="store_true", help="datapaths without the read cache")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.conns, not args.no_cache), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
