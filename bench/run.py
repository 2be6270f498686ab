"""Side-by-side benchmarks: the kernel, OVN on OVS (userspace datapath) and netvirt.

Not a test. Needs root and the packages of ``bench/setup.sh``. One invocation
runs everything selected, writes a JSON results file and prints a Markdown
table with the ratios netvirt / OVN and netvirt / kernel per figure:

    sudo python3 bench/run.py                      # everything, 3 runs + warm-up, 10 s each
    sudo python3 bench/run.py --quick              # smoke run: 1 run, 2 s, small control plane
    sudo python3 bench/run.py --backends kernel,netvirt --topologies l2,sg --workloads ping,tcp1
    sudo python3 bench/run.py --skip-control --out /tmp/nvb.json

One run at a time (``/tmp/nvb-run.lock``: a second invocation exits with
status 3 naming the first). Every timing run holds /tmp/bench.lock (``flock``);
everything made (namespaces ``nvb*``, labs ``nvb*``, OVS/OVN daemons with
their dirs in /tmp/nvb-*) is torn down on exit, failure or Ctrl-C. See
docs/performance.md, "Side by side".
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
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from nvb import control, kernel, nvlab, ovn, results
from nvb.results import Series
from nvb.system import (
    AlreadyRunning,
    BenchError,
    Machine,
    console_logging,
    raise_on_signals,
    run,
    run_lock,
)
from nvb.workloads import WORKLOADS, Options, Target, measure

log = logging.getLogger("nvb")
TOPOLOGIES = ("l2", "l3", "sg", "xhost")
TOPOLOGY_TITLES = {
    "l2": "one logical switch",
    "l3": "two switches behind a distributed router",
    "sg": "router + stateful security group + SNAT",
    "xhost": "one switch across two hosts (tunnel)",
}


def _csv(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(bad)} (known: {', '.join(allowed)})"
        )
    return items


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default=",".join(results.BACKENDS))
    p.add_argument("--topologies", default=",".join(TOPOLOGIES))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--runs", type=int, default=3, help="timed runs per figure (median)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per throughput run")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 run of 2 s, small scale")
    p.add_argument("--scales", default="1000:100,10000:1000", help="control plane ports:networks")
    p.add_argument("--host-ports", type=int, default=1000, help="control plane: ports on the host")
    p.add_argument("--skip-control", action="store_true", help="no control-plane figures")
    p.add_argument("--skip-data", action="store_true", help="no data-plane figures")
    p.add_argument("--profile", action="store_true", help="py-spy netvirt in an extra run")
    p.add_argument("--out", default="docs/perf/results.json", help="JSON results file")
    p.add_argument("--workdir", default="/tmp/nvb-work", help="logs and daemons' dirs")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 1, 2.0
        if args.scales == p.get_default("scales"):
            args.scales = "200:20"
    try:
        args.backends = _csv(args.backends, results.BACKENDS, "backend")
        args.topologies = _csv(args.topologies, TOPOLOGIES, "topology")
        args.workloads = _csv(args.workloads, WORKLOADS, "workload")
        args.scales = tuple(_scale(s) for s in args.scales.split(",") if s)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        p.error(str(exc))
    return args


def missing_tools(backends: tuple[str, ...]) -> list[str]:
    """Commands the selected backends need that are not installed."""
    needed = ["ip", "ping", "iperf3", "ethtool", "flock"]
    if results.KERNEL in backends:
        needed.append("nft")
    if set(backends) & set(results.OVN_BACKENDS):
        needed += ["ovsdb-server", "ovs-vswitchd", "ovn-northd", "ovn-controller", "ovn-nbctl"]
    if set(backends) & set(results.NETVIRT_BACKENDS):
        needed += ["redis-server", "busybox"]
    return [tool for tool in needed if shutil.which(tool) is None]


def _scale(text: str) -> tuple[int, int]:
    ports, nets = text.split(":")
    return int(ports), int(nets)


def machine_info() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            return run(cmd, check=False, timeout=10).stdout.splitlines()[0].strip()
        except (BenchError, IndexError, OSError):
            return "?"

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": len([x for x in Path("/proc/cpuinfo").read_text().split("\n\n") if x.strip()]),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "ovs": version(["ovs-vswitchd", "--version"]),
        "ovn": version(["ovn-northd", "--version"]),
        "iperf3": version(["iperf3", "--version"]),
        "load_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def data_plane(m: Machine, args: argparse.Namespace, opts: Options) -> list[Series]:
    out: list[Series] = []
    for backend in args.backends:
        for topology in args.topologies:
            if backend == results.KERNEL_VETH and topology != "l2":
                continue
            log.info("== %s / %s (%s)", backend, topology, TOPOLOGY_TITLES[topology])
            try:
                with _setup(m, backend, topology) as target:
                    out += measure(m, target, opts)
            except (BenchError, OSError) as exc:
                log.error("%s/%s: setup failed: %s", backend, topology, exc)
                for workload in opts.workloads:
                    out.append(Series(backend, topology, workload, error=f"setup: {exc}"[:500]))
    return out


def _setup(m: Machine, backend: str, topology: str) -> AbstractContextManager[Target]:
    if backend in (results.KERNEL, results.KERNEL_VETH):
        return kernel.setup(m, backend, topology)
    if backend in results.OVN_BACKENDS:
        return ovn.setup(m, backend, topology)
    return nvlab.setup(m, backend, topology)


def report(data: dict[str, Any]) -> str:
    series = [Series.from_json(s) for s in data["series"]]
    table = results.figures(series)
    lines = [results.markdown_table(table), "", results.cpu_table(series)]
    lines += ["", "Targets (issue 5), netvirt with local state:", results.targets_markdown(table)]
    lines += _profiles(series)
    failures = [s for s in series if s.error]
    if failures:
        lines += ["", "Failures and notes:"]
        lines += [f"- {s.backend}/{s.topology}/{s.workload}: {s.error}" for s in failures]
    lines += [f"- {n}" for n in data.get("notes", [])]
    return "\n".join(lines)


def _profiles(series: list[Series]) -> list[str]:
    lines = []
    for s in series:
        for component, summary in s.profile.items():
            if not isinstance(summary, dict):
                lines.append(f"- profile {s.backend}/{s.topology}/{s.workload}: {summary}")
                continue
            top = ", ".join(f"{name} {pct:.0f}%" for name, pct in summary.get("self", [])[:6])
            lines.append(f"- profile {s.backend}/{s.topology}/{s.workload} {component}: {top}")
    return ["", "Profiles (py-spy, self time, % of samples):", *lines] if lines else []


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    console_logging(log, args.verbose)
    if os.geteuid() != 0:
        print("bench/run.py needs root (namespaces, OVS, netvirt lab)", file=sys.stderr)
        return 2
    if missing := missing_tools(args.backends):
        print(f"missing: {', '.join(missing)}: run `sudo bash bench/setup.sh`", file=sys.stderr)
        return 2
    raise_on_signals()
    try:
        with run_lock():
            return _run(args, argv)
    except AlreadyRunning as exc:
        print(f"bench/run.py: {exc}", file=sys.stderr)
        return 3


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    """One whole run (under the run lock): data plane, control plane, report."""
    opts = Options(
        runs=args.runs, duration=args.duration, workloads=args.workloads, profile=args.profile
    )
    if args.quick:
        opts.pings, opts.warmup = 50, 1.0
    m = Machine(Path(args.workdir))
    data: dict[str, Any] = {
        "command": "python3 bench/run.py " + shlex.join(argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "options": {
            "runs": opts.runs,
            "duration": opts.duration,
            "pings": opts.pings,
            "udp_payload": 64,
            "connrate_concurrency": opts.concurrency,
        },
        "series": [],
        "notes": [],
    }
    try:
        if not args.skip_data:
            data["series"] += [s.as_json() for s in data_plane(m, args, opts)]
        if not args.skip_control:
            series, notes = control.run_all(
                m, args.backends, args.scales, opts.runs, args.host_ports
            )
            data["series"] += [s.as_json() for s in series]
            data["notes"] += notes
    except KeyboardInterrupt:
        log.error("interrupted: tearing down")
        data["notes"].append("interrupted")
    finally:
        m.close()
        data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    text = report(data)
    Path(args.out).with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"\nresults: {args.out} (table: {Path(args.out).with_suffix('.md')})")
    print(f"plot: python3 bench/plot.py {args.out} -o docs/perf/ratios.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
