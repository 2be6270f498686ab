"""Micro-benchmark: classifier lookups/s for 1k and 10k rules, with and without caches.

Not a test. One table shaped like a busy logical-switch stage: rules spread
over ten subtables (L2 destination, /32, /24 and /16 routes, port/protocol
ACLs, source-prefix ACLs, conntrack-state rules, EtherType rules, port
security and a catch-all), across 50 logical datapaths, priorities mixed so
priority sorting sometimes stops early and sometimes cannot.  Keys are built
from the rules (so most lookups hit) plus 20% random misses.  Prints, per
rule count, the best of several rounds, in lookups per second, for:

* ``classifier``: ``lookup(table, key)``;
* ``classifier+wc``: the same, recording wildcards (one ``Wildcards``, reset per lookup);
* ``megaflow hit``: ``MegaflowCache.lookup`` after one slow-path pass filled it;
* ``emc hit``: ``ExactMatchCache.lookup(tuple(key))`` (tuple conversion included).

    python bench/classifier.py
    python bench/classifier.py --rules 1000 --keys 5000 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

from netvirt.dataplane.cache import ExactMatchCache, MegaflowCache
from netvirt.dataplane.classifier import Classifier, Wildcards
from netvirt.dataplane.fields import CT_EST, CT_NEW, CT_TRK, F, field, new_key
from netvirt.dataplane.flow import FieldMatch, Rule, exact

TABLE = 7
DATAPATHS = 50

Maker = Callable[[random.Random, int], tuple[int, tuple[FieldMatch, ...]]]


def _prefix(name: str, value: int, length: int) -> FieldMatch:
    mask = ((1 << length) - 1) << (32 - length)
    return FieldMatch(name, value & mask, mask)


def _makers() -> list[tuple[str, int, Maker]]:
    """(name, weight, make(rng, datapath) -> (priority, match)) per subtable."""

    def l2(r: random.Random, dp: int) -> tuple[int, tuple[FieldMatch, ...]]:
        return 50, (exact("metadata", dp), exact("eth.dst", r.getrandbits(48)))

    def host(r: random.Random, dp: int) -> tuple[int, tuple[FieldMatch, ...]]:
        return 132, (exact("metadata", dp), exact("ip4.dst", r.getrandbits(32)))

    def net(length: int) -> Maker:
        def make(r: random.Random, dp: int) -> tuple[int, tuple[FieldMatch, ...]]:
            return 100 + length, (
                exact("metadata", dp),
                _prefix("ip4.dst", r.getrandbits(32), length),
            )

        return make

    def acl_port(r: random.Random, dp: int) -> tuple[int, tuple[FieldMatch, ...]]:
        match = (
            exact("metadata", dp),
            exact("ip.proto", 6),
            exact("tp.dst", r.randrange(1, 65536)),
        )
        return r.randrange(1000, 2000), match

    def acl_src(r: random.Random, dp: int) -> tuple[int, tuple[FieldMatch, ...]]:
        src = _prefix("ip4.src", r.getrandbits(32), 24)
        return r.randrange(1000, 2000), (
            exact("metadata", dp),
            src,
            exact("tp.dst", r.choice((22, 80, 443))),
        )

    def ct(r: random.Random, dp: int) -> tuple[int, tuple[FieldMatch, ...]]:
        bits = r.choice((CT_TRK | CT_NEW, CT_TRK | CT_EST))
        return 65535, (
            exact("metadata", dp),
            FieldMatch("ct_state", bits, CT_TRK | CT_NEW | CT_EST),
        )

    def ethertype(r: random.Random, dp: int) -> tuple[int, tuple[FieldMatch, ...]]:
        return 110, (exact("metadata", dp), exact("eth.type", r.choice((0x0800, 0x0806, 0x86DD))))

    def port_sec(r: random.Random, dp: int) -> tuple[int, tuple[FieldMatch, ...]]:
        src = (exact("inport", r.randrange(1, 4096)), exact("eth.src", r.getrandbits(48)))
        return 90, (exact("metadata", dp), *src)

    return [
        ("l2", 30, l2),
        ("host", 15, host),
        ("net24", 10, net(24)),
        ("net16", 5, net(16)),
        ("acl_port", 20, acl_port),
        ("acl_src", 10, acl_src),
        ("ct", 2, ct),
        ("ethertype", 2, ethertype),
        ("port_sec", 6, port_sec),
    ]


def build_rules(count: int, rng: random.Random) -> list[Rule]:
    makers = _makers()
    weights = [w for _, w, _ in makers]
    out: dict[tuple[int, tuple[FieldMatch, ...]], Rule] = {
        (0, ()): Rule(TABLE, 0, (), ("default",))  # the tenth subtable
    }
    while len(out) < count:
        name, _, make = rng.choices(makers, weights)[0]
        priority, match = make(rng, rng.randrange(1, DATAPATHS + 1))
        out.setdefault((priority, match), Rule(TABLE, priority, match, (name, len(out))))
    return list(out.values())


def build_keys(rules: list[Rule], count: int, rng: random.Random) -> list[list[int]]:
    keys = []
    for _ in range(count):
        key = new_key()
        key[F("eth.type")] = 0x0800
        key[F("ip.proto")] = 6
        key[F("metadata")] = rng.randrange(1, DATAPATHS + 1)
        if rng.random() < 0.8:  # hit: satisfy a random rule (others may still outrank it)
            for m in rng.choice(rules).match:
                key[F(m.field)] = m.value | (rng.getrandbits(128) & ~m.mask & _width(m.field))
        else:
            key[F("eth.dst")] = rng.getrandbits(48)
            key[F("ip4.dst")] = rng.getrandbits(32)
        keys.append(key)
    return keys


def _width(name: str) -> int:
    return field(name).full_mask


def rate(run: Callable[[], object], n: int, rounds: int) -> float:
    """Best lookups per second over ``rounds`` timed passes of ``n`` lookups.

    The best pass, as ``timeit`` does: on a shared machine slower passes
    measure the neighbours, not the code.
    """
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        samples.append(n / (time.perf_counter() - start))
    return max(samples)


def bench(rule_count: int, key_count: int, rounds: int, seed: int, verbose: bool) -> None:
    rng = random.Random(seed)
    rules = build_rules(rule_count, rng)
    cls = Classifier()
    cls.apply(add=rules)
    keys = build_keys(rules, key_count, rng)
    lookup = cls.lookup

    def plain() -> None:
        for key in keys:
            lookup(TABLE, key)

    def with_wc() -> None:
        wc = Wildcards()
        for key in keys:
            wc.reset()
            lookup(TABLE, key, wc)

    megaflows = MegaflowCache[object](cls)
    emc = ExactMatchCache[object](cls, capacity=max(8192, key_count))
    for key in keys:
        wc = Wildcards()
        result = lookup(TABLE, key, wc) or "miss"
        megaflows.insert(wc, key, result)
        emc.insert(tuple(key), result)
    mf_lookup, emc_lookup = megaflows.lookup, emc.lookup

    def megaflow_hits() -> None:
        for key in keys:
            mf_lookup(key)

    def emc_hits() -> None:
        for key in keys:
            emc_lookup(tuple(key))

    subtables = cls.subtables(TABLE)
    stats = megaflows.stats()
    print(
        f"{len(cls):>6} rules, {len(subtables)} subtables; {key_count} keys -> "
        f"{stats.entries} megaflows in {stats.masks} masks"
    )
    if verbose:
        for sub in subtables:
            fields = ",".join(sub.signature)
            print(f"      {sub.rules:>6} rules  max priority {sub.max_priority:>5}  {fields}")
    for name, run in (
        ("classifier", plain),
        ("classifier+wc", with_wc),
        ("megaflow hit", megaflow_hits),
        ("emc hit", emc_hits),
    ):
        per_s = rate(run, key_count, rounds)
        print(f"    {name:<14} {per_s / 1e6:6.2f} M lookups/s  ({1e9 / per_s:6.0f} ns/lookup)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="print the subtables")
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs (numbers scale with what is left)")
    for count in args.rules:
        bench(count, args.keys, args.rounds, args.seed, args.verbose)


if __name__ == "__main__":
    main()
