"""The data-plane workloads, the same for every backend.

A backend hands over a :class:`Target`: a client and a server node (a way to
run a command inside each), the server's address and the processes whose CPU
counts as the backend's components. :func:`measure` starts the servers
(iperf3, the connection-rate server), then per workload runs a warm-up that
is thrown away and ``runs`` timed runs, each holding /tmp/bench.lock with
CPU sampled inside the lock window.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from nvb import profile, results
from nvb.results import Series
from nvb.system import BenchError, CpuSampler, Machine, Proc, bench_lock, listening, run, wait_for

log = logging.getLogger("nvb")
IPERF_PORT = 5201
CONN_PORT = 5301
CONN_PORTS = 256  # the connection-rate server listens on CONN_PORT .. +255: with
# --fresh-tuples no 4-tuple recurs within 150 s up to 110k conn/s (see connrate.py)
UDP_PAYLOAD = 64
CONNRATE = str(Path(__file__).with_name("connrate.py"))
WORKLOADS = ("ping", "tcp1", "tcp4", "udp64", "connrate")


@dataclass
class Node:
    """A place to run commands: ``prefix + argv`` runs ``argv`` inside it."""

    name: str
    prefix: list[str]

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, *args]


@dataclass
class Target:
    backend: str
    topology: str
    client: Node
    server: Node
    server_ip: str
    components: Callable[[], dict[str, list[int]]]
    note: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Options:
    runs: int = 3
    duration: float = 10.0
    warmup: float = 2.0
    pings: int = 200
    ping_interval: float = 0.01
    concurrency: int = 32
    workloads: tuple[str, ...] = WORKLOADS
    profile: bool = False  # py-spy on netvirt's processes during an extra run


PROFILED = ("tcp1", "udp64", "connrate")


def _servers(machine: Machine, target: Target) -> dict[str, Proc]:
    iperf = machine.start(
        f"{target.backend}-{target.topology}-iperf3",
        target.server.argv("iperf3", "-s", "-p", str(IPERF_PORT)),
    )
    conn = machine.start(
        f"{target.backend}-{target.topology}-connrate",
        target.server.argv(
            sys.executable, CONNRATE, "server", "--port", str(CONN_PORT), "--ports", str(CONN_PORTS)
        ),
    )
    # wide source-port range for the connection-rate client (see connrate.py)
    run(target.client.argv("sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"))
    for proc, port in ((iperf, IPERF_PORT), (conn, CONN_PORT)):
        wait_for(f"{proc.name} listening", partial(_up, proc, port), 20)
    return {"iperf": iperf, "conn": conn}


def _up(proc: Proc, port: int) -> bool:
    if not proc.alive():
        raise BenchError(f"{proc.name} exited: {proc.output()[-300:]}")
    return listening(proc.pid, port)


def _command(target: Target, workload: str, seconds: float, opts: Options, warm: bool) -> list[str]:
    ip = target.server_ip
    if workload == "ping":
        count = 5 if warm else opts.pings
        return target.client.argv(
            "ping", "-n", "-c", str(count), "-i", str(opts.ping_interval), "-W", "1", ip
        )
    if workload in ("tcp1", "tcp4", "udp64"):
        argv = ["iperf3", "-c", ip, "-p", str(IPERF_PORT), "-t", str(max(1, round(seconds))), "-J"]
        argv += ["--connect-timeout", "3000"]
        if workload == "tcp4":
            argv += ["-P", "4"]
        if workload == "udp64":
            argv += ["-u", "-l", str(UDP_PAYLOAD), "-b", "0"]
        return target.client.argv(*argv)
    if workload == "connrate":
        argv = [sys.executable, CONNRATE, "client", "--host", ip, "--port", str(CONN_PORT)]
        argv += ["--ports", str(CONN_PORTS), "--duration", str(seconds), "--fresh-tuples"]
        return target.client.argv(*argv, "--concurrency", str(opts.concurrency))
    raise ValueError(workload)


def parse(workload: str, text: str) -> dict[str, float]:
    """The run's figures, keyed as in ``results.METRICS`` (plus details)."""
    if workload == "ping":
        out = results.parse_ping(text)
        if "rtt_avg_ms" not in out:
            raise BenchError(f"no ping reply: {text.strip()[-200:]}")
        return out
    if workload in ("tcp1", "tcp4"):
        tcp = results.parse_iperf_tcp(text)
        return {f"{workload}_gbps": tcp["gbps"], "retransmits": tcp.get("retransmits", 0.0)}
    if workload == "udp64":
        udp = results.parse_iperf_udp(text, UDP_PAYLOAD)
        return {
            "udp64_kpps": udp["rx_kpps"],
            "offered_kpps": udp["offered_kpps"],
            "lost_pct": udp["lost_pct"],
        }
    if workload == "connrate":
        return results.parse_connrate(text)
    raise ValueError(workload)


def _rx_packets(server_pid: int | None) -> int:
    """Packets received by the server namespace's interfaces (read through a process in it)."""
    if server_pid is None:
        return 0
    try:
        return results.rx_packets(Path(f"/proc/{server_pid}/net/dev").read_text())
    except OSError:
        return 0


def _once(
    target: Target,
    workload: str,
    seconds: float,
    opts: Options,
    warm: bool,
    server_pid: int | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    argv = _command(target, workload, seconds, opts, warm)
    sampler = CpuSampler(target.components())
    timeout = seconds + 40 if workload != "ping" else 60
    with bench_lock():
        rx0 = _rx_packets(server_pid)
        before = sampler.sample()
        proc = run(argv, timeout=timeout, check=False)
        after = sampler.sample()
        rx1 = _rx_packets(server_pid)
    text = proc.stdout
    if proc.returncode != 0 and not text.strip():
        raise BenchError(f"{workload} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    try:
        figures = parse(workload, text)
    except (ValueError, KeyError) as exc:
        raise BenchError(f"{workload}: {exc}") from None
    if workload == "udp64" and server_pid is not None:
        # what the backend delivered to the server's interface, before its socket could drop
        figures["delivered_kpps"] = (rx1 - rx0) / (after[0] - before[0]) / 1e3
    return figures, sampler.percent(before, after)


PEER_SERVER = (
    "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
    " s.bind(('0.0.0.0', {port})); s.listen(); c, a = s.accept(); print(a[0], flush=True)"
)
PEER_CLIENT = "import socket; socket.create_connection(('{ip}', {port}), 5).close()"


def source_seen(machine: Machine, target: Target, port: int = CONN_PORT + CONN_PORTS) -> str:
    """The client's address as the server sees it (after any SNAT): a functional check."""
    server = machine.start(
        f"{target.backend}-{target.topology}-peer",
        target.server.argv(sys.executable, "-c", PEER_SERVER.format(port=port)),
    )
    wait_for("peer server listening", partial(_up, server, port), 20)
    run(
        target.client.argv(sys.executable, "-c", PEER_CLIENT.format(ip=target.server_ip, port=port))
    )
    wait_for("peer server done", lambda: not server.alive(), 10)
    return server.output().strip().splitlines()[-1] if server.output().strip() else "?"


def measure(machine: Machine, target: Target, opts: Options) -> list[Series]:
    """All workloads on one target; a failing workload is recorded, the others still run."""
    scope = machine.scope()
    out: list[Series] = []
    try:
        if target.topology == "sg":
            seen = source_seen(scope, target)
            target.note = f"{target.note}; the server sees the client as {seen}".lstrip("; ")
            log.info("%s/sg: the server sees the client as %s", target.backend, seen)
        servers = _servers(scope, target)
        for workload in opts.workloads:
            series = Series(target.backend, target.topology, workload, note=target.note or None)
            out.append(series)
            _series(scope, target, workload, opts, series, servers)
    finally:
        scope.close()
    return out


def _series(
    machine: Machine,
    target: Target,
    workload: str,
    opts: Options,
    series: Series,
    servers: dict[str, Proc],
) -> None:
    label = f"{target.backend}/{target.topology}/{workload}"
    try:
        _once(target, workload, min(opts.warmup, opts.duration), opts, True)
    except BenchError as exc:
        log.warning("%s: warm-up failed: %s", label, exc)
    for i in range(opts.runs):
        try:
            figures, cpu = _once(target, workload, opts.duration, opts, False, servers["iperf"].pid)
        except BenchError as exc:
            log.warning("%s run %d failed: %s", label, i + 1, exc)
            series.error = str(exc)[:500]
            if not servers["iperf"].alive() or not servers["conn"].alive():
                break
            continue
        series.runs.append(figures)
        series.cpu.append(cpu)
        log.info("%s run %d: %s", label, i + 1, _brief(figures))
    if series.runs:
        series.error = None if len(series.runs) == opts.runs else series.error
    if opts.profile and workload in PROFILED and target.backend.startswith("netvirt"):
        _profile(machine, target, workload, opts, series)


def _profile(
    machine: Machine, target: Target, workload: str, opts: Options, series: Series
) -> None:
    """One more run, not counted, with py-spy sampling netvirt's agents and datapaths."""
    if not profile.available():
        series.profile = {"error": "py-spy is not installed (bench/setup.sh)"}
        return
    pids: dict[str, int] = {}
    for component, members in target.components().items():
        if component in ("netvirt agent", "netvirt datapath"):
            for i, pid in enumerate(members[:2]):
                pids[f"{component.split()[1]}{i + 1}"] = pid
    label = f"{target.backend}-{target.topology}-{workload}"

    def load() -> None:
        try:
            _once(target, workload, opts.duration, opts, False)
        except BenchError as exc:
            log.warning("%s: profiled run failed: %s", label, exc)

    series.profile = profile.record(machine, label, pids, opts.duration, load)


def _brief(figures: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in figures.items())


def components_of(named: dict[str, Sequence[int]]) -> Callable[[], dict[str, list[int]]]:
    """A fixed component map (for daemons whose pids do not change)."""
    fixed = {k: list(v) for k, v in named.items()}
    return lambda: fixed
