"""Stateless network functions (issue 6): local vs Redis vs Redis Cluster state, and failover.

Not a test. Needs root, iperf3, redis-server and busybox (``bench/setup.sh``):

    sudo python3 bench/stateless_nf.py                 # 3 runs of 10 s per figure, 2 failovers
    sudo python3 bench/stateless_nf.py --quick         # 1 run of 3 s, 1 failover per mode
    sudo python3 bench/stateless_nf.py --modes memory,redis --out /tmp/nf.json

Measures, through a stateful security group + SNAT on the lab: TCP 1 stream,
new connections/s, ping RTT (avg, p99) and the store time per new connection
and per packet, per state mode; then, for the external modes, the longest
interruption and any reset when the gateway carrying a stream is killed.
Prints the table with the issue's targets; results go to ``--out`` (JSON) and
the printed report next to it (``.md``). See docs/performance.md, "Stateless
network functions (issue 6)".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from nvb import nf, nf_calc, nf_topo, results
from nvb.system import Machine, console_logging, raise_on_signals, run

log = logging.getLogger("nvb")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default=",".join(nf_topo.MODES), help="memory,redis,redis-cluster")
    p.add_argument("--quick", action="store_true", help="1 run of 3 s, one failover per mode")
    p.add_argument("--runs", type=int, default=3, help="timed runs per figure (median)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--failover-runs", type=int, default=2, help="gateway kills per mode")
    p.add_argument("--gateways", type=int, default=2, choices=(2, 3))
    p.add_argument("--skip-failover", action="store_true")
    p.add_argument("--skip-sg", action="store_true", help="failover only")
    p.add_argument("--out", default="docs/perf/nf.json", help="JSON results file")
    p.add_argument("--workdir", default="/tmp/nvs-work", help="logs of every lab and process")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    modes = tuple(x.strip() for x in args.modes.split(",") if x.strip())
    bad = [x for x in modes if x not in nf_topo.MODES]
    if bad or not modes:
        p.error(f"unknown mode: {', '.join(bad)} (known: {', '.join(nf_topo.MODES)})")
    args.modes = modes
    return args


def options(args: argparse.Namespace) -> nf.NfOptions:
    o = nf.NfOptions(
        modes=args.modes,
        runs=args.runs,
        duration=args.duration,
        failover=not args.skip_failover,
        sg=not args.skip_sg,
        failover_runs=args.failover_runs,
        gateways=args.gateways,
    )
    if args.quick:
        o.runs, o.duration, o.warmup, o.pings = 1, 3.0, 1.0, 100
        o.failover_runs, o.failover_seconds = 1, 16.0
    return o


def report(data: dict[str, Any]) -> str:
    modes = tuple(data["options"]["modes"])
    summary = nf.summary(data, modes)
    lines = [nf_calc.mode_table(summary, modes), ""]
    lines.append(nf_calc.targets_table(nf_calc.targets(summary, modes)))
    details = []
    for mode, runs in data["failover"].items():
        for i, r in enumerate(runs):
            if "streams" not in r:
                details.append(f"- failover {mode} run {i + 1}: {r['error']}")
                continue
            if r.get("error"):
                details.append(f"- failover {mode} run {i + 1} not counted: {r['error']}")
            s = r["streams"]
            died = r.get("datapath_died_s")
            details.append(
                f"- failover {mode} run {i + 1}: killed {r['victim']} (its datapath gone "
                f"{_s(died)} after the hard stop started; inbound carrier "
                f"{r['inbound_carrier']}); out via SNAT gap {_ms(s['out']['longest_gap_ms'])} "
                f"({s['out']['server'].get('end')}/{s['out']['client'].get('end')}), in to FIP "
                f"gap {_ms(s['in']['longest_gap_ms'])} ({s['in']['server'].get('end')}/"
                f"{s['in']['client'].get('end')}), ping gap {_ms(r['ping_gap_ms'])} "
                f"({r['ping_lost_in_gap']} lost)"
            )
    for mode, result in data["sg"].items():
        if result.get("note"):
            details.append(f"- {mode}: {result['note']}")
        details += [f"- {mode}: {e}" for e in result.get("errors", [])]
    details += [f"- {n}" for n in data.get("notes", [])]
    return "\n".join(lines + (["", "Details:", *details] if details else []))


def tree() -> str:
    """The commit measured, and how many source files differed from it (others edit the tree)."""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    head = run([*git, "rev-parse", "--short", "HEAD"], check=False, timeout=10).stdout.strip()
    changed = run([*git, "status", "--short", "src"], check=False, timeout=30).stdout
    return f"{head or '?'} + {len(changed.splitlines())} modified files under src/"


def _s(value: float | None) -> str:
    return results.MISSING if value is None else f"{value:.2f} s"


def _ms(value: float | None) -> str:
    return results.MISSING if value is None else f"{value:.0f} ms"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    console_logging(log, args.verbose)
    if os.geteuid() != 0:
        print("bench/stateless_nf.py needs root (netvirt lab)", file=sys.stderr)
        return 2
    missing = [
        t for t in ("ip", "ping", "iperf3", "redis-server", "busybox") if not shutil.which(t)
    ]
    if missing:
        print(f"missing: {', '.join(missing)}: run `sudo bash bench/setup.sh`", file=sys.stderr)
        return 2
    raise_on_signals()
    o = options(args)
    m = Machine(Path(args.workdir))
    data: dict[str, Any] = {
        "command": "sudo python3 bench/stateless_nf.py " + shlex.join(argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "kernel": platform.release(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "tree": tree(),
        },
        "options": {
            "modes": list(o.modes),
            "runs": o.runs,
            "duration": o.duration,
            "pings": o.pings,
            "connrate_concurrency": o.concurrency,
            "failover_runs": o.failover_runs if o.failover else 0,
            "failover_seconds": o.failover_seconds,
            "gateways": o.gateways,
            "stream_rate_mbit": o.stream_rate,
        },
        "sg": {},
        "failover": {},
        "notes": [],
    }
    try:
        data |= nf.run_all(m, o)
    except KeyboardInterrupt:
        log.error("interrupted: tearing down")
        data["notes"].append("interrupted")
    finally:
        m.close()
        data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        data["load_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        data["summary"] = nf.summary(data, o.modes)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    text = report(data)
    Path(args.out).with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"\nresults: {args.out} (report: {Path(args.out).with_suffix('.md')})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
