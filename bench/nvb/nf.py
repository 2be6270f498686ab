"""Stateless network functions on the lab (issue 6): local vs Redis vs Redis Cluster state.

Per state mode (``memory``, ``redis``, ``redis-cluster``) one ``sg`` lab
(``nf_topo.py``: stateful security group + SNAT, the server outside) measures,
with the side-by-side harness's workloads (``workloads.py``, ``connrate.py``):
ping RTT (avg, p99), TCP 1 stream and new connections/s; around each timed run
the datapaths' store counters are read from their status files, which gives
the amortized store time per packet and per new connection (``nf_calc.py``).

Per external mode one ``failover`` lab (2 or 3 gateways) runs a paced TCP stream
out through SNAT, one into a floating IP (``nf_stream.py``: ms-resolution
receive gaps, reset or not) and a 10 ms ping out, then kills the gateway
carrying the outbound stream (``netvirt lab host stop --hard``); the longest
gap in received data is the interruption.

Every timed section holds /tmp/bench.lock; labs are ``nvs*`` and always go
down (``netvirt lab down --lab`` of our own names only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netvirt.lab.state import LabState, ProcessRecord
from nvb import nf_calc, nf_topo, nvlab, workloads
from nvb.system import BenchError, CpuSampler, Machine, Proc, bench_lock, listening, run, wait_for
from nvb.workloads import Node, Options, Target

log = logging.getLogger("nvb")
STREAM = str(Path(__file__).with_name("nf_stream.py"))
SG_WORKLOADS = ("ping", "tcp1", "connrate")


@dataclass
class NfOptions:
    modes: tuple[str, ...] = nf_topo.MODES
    runs: int = 3
    duration: float = 10.0
    warmup: float = 2.0
    pings: int = 200
    concurrency: int = 32
    sg: bool = True
    failover: bool = True
    failover_runs: int = 2
    failover_seconds: float = 25.0  # the streams' length; the kill comes 4-6 s in
    gateways: int = 2
    stream_rate: float = 20.0  # Mbit/s per failover stream
    notes: list[str] = field(default_factory=list)

    def workload_options(self) -> Options:
        return Options(
            runs=self.runs,
            duration=self.duration,
            warmup=self.warmup,
            pings=self.pings,
            concurrency=self.concurrency,
            workloads=SG_WORKLOADS,
        )


# ---------------------------------------------------------------------- the lab


class NfLab:
    """A lab that is up: its state file, nodes and datapath status files."""

    def __init__(self, name: str) -> None:
        self.name = name

    def state(self) -> LabState:
        state = LabState.load(nvlab.LAB_ROOT / self.name)
        if state is None:
            raise BenchError(f"lab {self.name} has no state file")
        return state

    def node(self, node: str) -> Node:
        ns = self.state().node_netns(node)
        if ns is None:
            raise BenchError(f"lab {self.name} has no node {node}")
        return Node(node, ["ip", "netns", "exec", ns])

    def statuses(self, newer_than: float | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Each running datapath's status document, written after ``newer_than`` (epoch s)."""
        out: dict[str, Any] = {}
        for host, record in self.state().hosts.items():
            if record.datapath is None:
                continue
            path = Path(record.datapath_status_file)
            deadline = time.monotonic() + timeout
            while True:
                fresh = newer_than is None or _mtime(path) > newer_than
                if fresh or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            with contextlib.suppress(OSError, ValueError):
                out[host] = json.loads(path.read_text())
        return out

    def counters(self, newer_than: float | None) -> dict[str, Any]:
        """Store totals and received frames over all datapaths."""
        docs = self.statuses(newer_than)
        totals = nf_calc.store_totals(nf_calc.host_state(d) for d in docs.values())
        totals["packets"] = sum(nf_calc.host_packets(d) for d in docs.values())
        totals["backends"] = sorted(
            {str(nf_calc.host_state(d).get("backend")) for d in docs.values()}
        )
        return totals

    def kill(self, host: str) -> None:
        """``netvirt lab host stop HOST --hard`` in this process (no CLI start-up delay)."""
        from netvirt.lab import build
        from netvirt.lab.net import RealSystem

        build.Lab.open(self.name, RealSystem(), nvlab.LAB_ROOT).host_stop(host, hard=True)

    def cli(self, *args: str, timeout: float = 120) -> None:
        run([*nvlab.NETVIRT, "lab", *args, "--lab", self.name], timeout=timeout)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@contextmanager
def lab(m: Machine, doc: dict[str, Any]) -> Iterator[NfLab]:
    """``netvirt lab up`` a generated file, ``netvirt lab down --lab`` it whatever happens."""
    name = str(doc["name"])
    if not name.startswith("nvs"):
        raise BenchError(f"lab {name!r} lacks the nvs prefix")
    path = m.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    run([*nvlab.NETVIRT, "lab", "down", "--lab", name], check=False, timeout=120)
    try:
        started = time.monotonic()
        run([*nvlab.NETVIRT, "lab", "up", str(path)], timeout=300, env={"PYTHONFAULTHANDLER": "1"})
        log.info("lab %s up in %.1fs", name, time.monotonic() - started)
        yield NfLab(name)
    finally:
        keep = m.workdir / f"{name}-logs"
        shutil.rmtree(keep, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.copytree(nvlab.LAB_ROOT / name / "logs", keep)
        run([*nvlab.NETVIRT, "lab", "down", "--lab", name], check=False, timeout=120)


# ---------------------------------------------------------------------- sg: throughput, cost


def _timed(
    target: Target, workload: str, seconds: float, opts: Options, warm: bool
) -> tuple[dict[str, float], dict[str, float], str]:
    """One run under the lock: (figures, CPU %, raw output)."""
    argv = workloads._command(target, workload, seconds, opts, warm)
    sampler = CpuSampler(target.components())
    with bench_lock():
        before = sampler.sample()
        proc = run(argv, timeout=seconds + 40 if workload != "ping" else 60, check=False)
        after = sampler.sample()
    if proc.returncode != 0 and not proc.stdout.strip():
        raise BenchError(f"{workload} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    try:
        figures = workloads.parse(workload, proc.stdout)
    except (ValueError, KeyError) as exc:
        raise BenchError(f"{workload}: {exc}") from None
    return figures, sampler.percent(before, after), proc.stdout


def _connections(text: str) -> float:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return float(json.loads(line)["connections"])
    return 0.0


def _measured(nf: NfLab, target: Target, workload: str, opts: Options) -> dict[str, Any]:
    """One timed run with the store counters read before and after it."""
    before = nf.counters(newer_than=time.time())
    figures, cpu, text = _timed(target, workload, opts.duration, opts, False)
    after = nf.counters(newer_than=time.time())
    delta = nf_calc.store_delta(before, after)
    packets = max(0, after["packets"] - before["packets"])
    conns = _connections(text) if workload == "connrate" else 0.0
    cost = nf_calc.costs(delta, packets=packets if workload == "tcp1" else 0, connections=conns)
    if workload == "ping" and figures.get("replies"):
        cost["store_us_per_echo"] = cost["store_us"] / figures["replies"]
    return figures | cost | {"cpu": cpu, "store": delta, "backends": after["backends"]}


def sg_mode(m: Machine, mode: str, nf_opts: NfOptions) -> dict[str, Any]:
    """The ``sg`` workloads of one state mode: {workload: [run, ...]} plus notes."""
    opts = nf_opts.workload_options()
    out: dict[str, Any] = {"runs": {w: [] for w in SG_WORKLOADS}, "errors": [], "note": ""}
    with lab(m, nf_topo.sg_doc(mode)) as nf:
        state = nf.state()
        client = nf.node(nf_topo.CLIENT_VM)
        server = nf.node("ext")
        ip = nf_topo.SG_SERVER_IP
        target = Target(
            f"netvirt-{mode}", "sg", client, server, ip, lambda: nvlab.components(nf.name)
        )
        nvlab._ping_ready(client, ip)
        scope = m.scope()
        try:
            seen = workloads.source_seen(scope, target)
            store = state.state_store or "memory://"
            out["note"] = f"lab {nf.name}, store {store}, server sees client as {seen}"
            log.info("%s: %s", mode, out["note"])
            workloads._servers(scope, target)
            for workload in SG_WORKLOADS:
                _sg_workload(nf, target, workload, opts, out)
        finally:
            scope.close()
    return out


def _sg_workload(
    nf: NfLab, target: Target, workload: str, opts: Options, out: dict[str, Any]
) -> None:
    label = f"{target.backend}/{workload}"
    try:
        _timed(target, workload, min(opts.warmup, opts.duration), opts, True)
    except BenchError as exc:
        log.warning("%s: warm-up failed: %s", label, exc)
    for i in range(opts.runs):
        try:
            result = _measured(nf, target, workload, opts)
        except BenchError as exc:
            log.warning("%s run %d failed: %s", label, i + 1, exc)
            out["errors"].append(f"{workload} run {i + 1}: {exc}"[:400])
            continue
        out["runs"][workload].append(result)
        brief = {k: v for k, v in result.items() if isinstance(v, float)}
        log.info("%s run %d: %s", label, i + 1, ", ".join(f"{k}={v:.3g}" for k, v in brief.items()))


# ---------------------------------------------------------------------- failover


def failover_mode(m: Machine, mode: str, nf_opts: NfOptions) -> list[dict[str, Any]]:
    """Kill the gateway under load, ``failover_runs`` times (it starts again in between)."""
    runs: list[dict[str, Any]] = []
    with lab(m, nf_topo.failover_doc(mode, nf_opts.gateways)) as nf:
        state = nf.state()
        assert state.external is not None
        fip = state.vms[nf_topo.SERVER_VM].fip
        if fip is None:
            raise BenchError("the server VM got no floating IP")
        nvlab._ping_ready(nf.node(nf_topo.CLIENT_VM), state.external.ip)
        nvlab._ping_ready(nf.node("ext"), fip)
        for i in range(nf_opts.failover_runs):
            try:
                result = _failover_once(m, nf, fip, nf_opts, i)
            except BenchError as exc:
                log.warning("%s failover run %d failed: %s", mode, i + 1, exc)
                runs.append({"error": str(exc)[:400]})
            else:
                runs.append(result)
                log.info("%s failover run %d: %s", mode, i + 1, _failover_brief(result))
            if i + 1 < nf_opts.failover_runs:
                _ensure_up(nf)
                time.sleep(2)
    return runs


def _failover_brief(r: dict[str, Any]) -> str:
    return (
        f"killed {r['victim']}, interruption {r['interruption_ms']:.0f} ms, "
        f"ping gap {r.get('ping_gap_ms') or 0:.0f} ms, resets {r['resets']}"
    )


def _start_server(scope: Machine, node: Node, port: int, tag: str) -> Proc:
    proc = scope.start(tag, node.argv(sys.executable, STREAM, "server", "--port", str(port)))

    def up() -> bool:
        if not proc.alive():
            raise BenchError(f"{tag} exited: {proc.output()[-300:]}")
        return listening(proc.pid, port)

    wait_for(f"{tag} listening", up, 20)
    return proc


class _DeathWatch:
    """When a process vanished (epoch s), polled every 2 ms in a thread: the kill's moment."""

    def __init__(self, record: ProcessRecord | None) -> None:
        self.died: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if record is not None:
            self._thread = threading.Thread(target=self._poll, args=(record.pid,), daemon=True)
            self._thread.start()

    def _poll(self, pid: int) -> None:
        while not self._stop.is_set():
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                self.died = time.time()
                return
            time.sleep(0.002)

    def result(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
        return self.died


def _zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2 :].startswith("Z")


def _wait_exit(proc: Proc, timeout: float) -> None:
    with contextlib.suppress(BenchError):  # a stuck end is reported by its missing result
        wait_for(f"{proc.name} done", lambda: not proc.alive(), timeout, 0.2)


def _ensure_up(nf: NfLab) -> None:
    """Start every host a failed run left stopped (the next run needs all gateways)."""
    for host, record in nf.state().hosts.items():
        if record.datapath is None:
            nf.cli("host", "start", host, timeout=180)


def _sent_via(nf: NfLab, host: str) -> dict[str, int]:
    doc = nf.statuses(newer_than=time.time()).get(host, {})
    via = ((doc.get("counters") or {}).get("gateways") or {}).get("sent_via") or {}
    return {str(k): int(v) for k, v in via.items()}


def _link_tx(nf: NfLab) -> dict[str, int]:
    """Bytes the external namespace sent into each gateway's link (the inbound carriers)."""
    state = nf.state()
    assert state.external is not None
    ext = nf.node("ext")
    out = {}
    for host, link in state.external.links.items():
        done = run(ext.argv("cat", f"/sys/class/net/{link}/statistics/tx_bytes"), check=False)
        out[host] = int(done.stdout.strip() or 0)
    return out


def _busiest(before: dict[str, int], after: dict[str, int]) -> str | None:
    deltas = {k: v - before.get(k, 0) for k, v in after.items()}
    return max(deltas, key=lambda k: deltas[k]) if deltas and max(deltas.values()) > 0 else None


def _failover_once(m: Machine, nf: NfLab, fip: str, o: NfOptions, i: int) -> dict[str, Any]:
    state = nf.state()
    assert state.external is not None
    ext_ip = state.external.ip
    client, server, ext = nf.node(nf_topo.CLIENT_VM), nf.node(nf_topo.SERVER_VM), nf.node("ext")
    out_port, in_port = nf_topo.STREAM_PORTS
    seconds = o.failover_seconds
    stream = ["--rate", str(o.stream_rate), "--duration", str(seconds)]
    scope = m.scope()
    try:
        srv_out = _start_server(scope, ext, out_port, f"{nf.name}-out-server-{i}")
        srv_in = _start_server(scope, server, in_port, f"{nf.name}-in-server-{i}")
        with bench_lock():
            ping = scope.start(
                f"{nf.name}-ping-{i}",
                client.argv(
                    "ping", "-n", "-D", "-i", "0.01", "-W", "1", "-w", str(int(seconds)), ext_ip
                ),
            )
            cli_out = scope.start(
                f"{nf.name}-out-client-{i}",
                client.argv(
                    sys.executable,
                    STREAM,
                    "client",
                    "--host",
                    ext_ip,
                    "--port",
                    str(out_port),
                    *stream,
                ),
            )
            cli_in = scope.start(
                f"{nf.name}-in-client-{i}",
                ext.argv(
                    sys.executable, STREAM, "client", "--host", fip, "--port", str(in_port), *stream
                ),
            )
            time.sleep(min(3.0, seconds / 4))
            via0, tx0 = _sent_via(nf, "hv1"), _link_tx(nf)
            time.sleep(1.0)
            via1, tx1 = _sent_via(nf, "hv1"), _link_tx(nf)
            victim = _busiest(via0, via1)
            carrier_in = _busiest(tx0, tx1)
            if victim is None:
                raise BenchError(f"hv1 sent nothing through a gateway: {via0} -> {via1}")
            watch = _DeathWatch(state.hosts[victim].datapath)
            killed_at = time.time()
            nf.kill(victim)
            stop_seconds = time.time() - killed_at
            died = watch.result()
            for proc in (cli_out, cli_in, ping, srv_out, srv_in):
                _wait_exit(proc, seconds + 30)
        results = {
            "out": (_json_line(srv_out), _json_line(cli_out)),
            "in": (_json_line(srv_in), _json_line(cli_in)),
        }
        probe = nf_calc.ping_gap(ping.output())
    finally:
        scope.close()
    # gaps are timed from the datapath's death when it was seen, else from the kill command
    moment = died if died is not None else killed_at
    result = _failover_result(results, probe, victim, carrier_in, moment, stop_seconds)
    result["datapath_died_s"] = None if died is None else round(died - killed_at, 3)
    return result


def _failover_result(
    results: dict[str, tuple[dict[str, Any], dict[str, Any]]],
    probe: dict[str, float],
    victim: str,
    carrier_in: str | None,
    killed_at: float,
    stop_seconds: float,
) -> dict[str, Any]:
    streams: dict[str, Any] = {}
    resets = 0
    gaps = []
    for name, (srv, cli) in results.items():
        was_reset = nf_calc.reset(srv.get("end")) or nf_calc.reset(cli.get("end"))
        resets += int(was_reset)
        gap = srv.get("longest_gap_ms")
        started = srv.get("gap_started")
        last = srv.get("last")
        streams[name] = {
            "data_after_kill_s": None if last is None else round(float(last) - killed_at, 3),
            "server": srv,
            "client": cli,
            "reset": was_reset,
            "longest_gap_ms": gap,
            "gap_after_kill_s": None if started is None else round(float(started) - killed_at, 3),
        }
        if gap is not None:
            gaps.append(float(gap))
    streams["in"]["through_victim"] = carrier_in == victim
    late = [n for n, st in streams.items() if (st["data_after_kill_s"] or 0.0) < 1.0]
    out: dict[str, Any] = (
        {"error": f"streams {late} got no data 1 s after the kill"} if late else {}
    )
    return out | {
        "victim": victim,
        "inbound_carrier": carrier_in,
        "kill_command_s": round(stop_seconds, 3),
        "streams": streams,
        "interruption_ms": max(gaps) if gaps else None,
        "resets": resets,
        "ping_gap_ms": probe.get("longest_gap_ms"),
        "ping_lost_in_gap": probe.get("lost_in_gap"),
        "ping_gap_after_kill_s": (
            None if "gap_started" not in probe else round(probe["gap_started"] - killed_at, 3)
        ),
        "ping_replies": probe.get("replies"),
    }


def _json_line(proc: Proc) -> dict[str, Any]:
    for line in reversed(proc.output().strip().splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    return data
    return {"end": f"no result: {proc.output()[-200:]!r}"}


# ---------------------------------------------------------------------- everything


def run_all(m: Machine, o: NfOptions) -> dict[str, Any]:
    """Every selected mode's sg runs and failover runs; a failing mode is recorded."""
    data: dict[str, Any] = {"sg": {}, "failover": {}}
    for mode in o.modes if o.sg else ():
        log.info("== sg / %s", mode)
        try:
            data["sg"][mode] = sg_mode(m, mode, o)
        except (BenchError, OSError) as exc:
            log.error("sg/%s failed: %s", mode, exc)
            data["sg"][mode] = {"runs": {}, "errors": [f"setup: {exc}"[:600]], "note": ""}
    if o.failover:
        for mode in (x for x in o.modes if x in nf_topo.EXTERNAL_MODES):
            log.info("== failover / %s (%d gateways)", mode, o.gateways)
            try:
                data["failover"][mode] = failover_mode(m, mode, o)
            except (BenchError, OSError) as exc:
                log.error("failover/%s failed: %s", mode, exc)
                data["failover"][mode] = [{"error": f"setup: {exc}"[:600]}]
    return data


def summary(data: dict[str, Any], modes: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per mode: medians of the sg figures, added RTT, the failover's worst case."""
    out: dict[str, dict[str, Any]] = {}
    for mode in modes:
        out[mode] = dict(nf_calc.summarize_mode(data["sg"].get(mode, {}).get("runs", {})))
    for mode in modes:
        out[mode] |= nf_calc.added_rtt(out, mode) if mode != "memory" else {}
        runs = data["failover"].get(mode)
        if runs:
            f = nf_calc.summarize_failover([r for r in runs if "error" not in r])
            out[mode] |= {
                "failover_interruption_ms": f["interruption_ms_max"],
                "failover_ping_gap_ms": f["ping_gap_ms_max"],
                "failover_resets": float(f["resets"]) if f["runs"] else None,
            }
    return out
