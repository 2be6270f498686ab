"""Pure parts of the benchmark harness: parsing tool output, medians, ratios, the table.

Nothing here touches the machine, so ``tests/bench`` checks it without root.

Vocabulary. A *figure* is one number the report compares across backends,
named ``<topology>/<metric>`` (``l2/tcp1_gbps``) or ``control/<metric>``.
Each backend measures a figure several times (*runs*, after a warm-up that
is thrown away); the report keeps the median. Ratios are netvirt / reference,
where the reference is the best OVN variant (higher or lower, as the metric
wants) and the kernel's Linux-bridge setup.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# ------------------------------------------------------------------------ backends / metrics

KERNEL_VETH = "kernel-veth"
KERNEL = "kernel"
OVN = "ovn"
OVN_TSO = "ovn-tso"
# the netvirt variants: local state with every frame through the user-space datapath
# (--no-offload), Redis state (user space too), and local state with the kernel offload
# (eBPF), which is the datapath's default since session 7
NETVIRT = "netvirt"
NETVIRT_REDIS = "netvirt-redis"
NETVIRT_OFFLOAD = "netvirt-offload"
BACKENDS = (KERNEL_VETH, KERNEL, OVN, OVN_TSO, NETVIRT, NETVIRT_REDIS, NETVIRT_OFFLOAD)
OVN_BACKENDS = (OVN, OVN_TSO)
NETVIRT_BACKENDS = (NETVIRT, NETVIRT_REDIS, NETVIRT_OFFLOAD)
BACKEND_TITLES = {
    KERNEL_VETH: "kernel veth",
    KERNEL: "kernel",
    OVN: "OVN",
    OVN_TSO: "OVN+TSO",
    NETVIRT: "netvirt",
    NETVIRT_REDIS: "netvirt+Redis",
    NETVIRT_OFFLOAD: "netvirt+eBPF",
}


@dataclass(frozen=True)
class Metric:
    """How one metric reads: its unit and whether more is better."""

    name: str
    unit: str
    higher_is_better: bool
    title: str
    compared: bool = True  # False: reported for context (the offered load), no ratio


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("rtt_avg_ms", "ms", False, "ping RTT avg"),
        Metric("rtt_p99_ms", "ms", False, "ping RTT p99"),
        Metric("tcp1_gbps", "Gbit/s", True, "TCP 1 stream"),
        Metric("tcp4_gbps", "Gbit/s", True, "TCP 4 streams"),
        Metric("udp64_kpps", "kpps", True, "UDP 64 B rx rate"),
        Metric("delivered_kpps", "kpps", True, "UDP 64 B at rx interface"),
        Metric("offered_kpps", "kpps", True, "UDP 64 B offered", compared=False),
        Metric("conn_per_s", "conn/s", True, "new TCP conn/s"),
        Metric("compile_install_s", "s", False, "compile+install"),
        Metric("nb_write_s", "s", False, "NB write"),
        Metric("total_s", "s", False, "NB write+compile+install"),
        Metric("port_to_traffic_ms", "ms", False, "port create → traffic"),
        Metric("rss_mb_per_1k_ports", "MB", False, "RSS per 1k ports"),
    )
}

# ------------------------------------------------------------------------ statistics


def median(values: Iterable[float]) -> float | None:
    """The median of the finite values, or None when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else None


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (the value below which ``pct`` % of samples fall)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, None when either is missing or the reference is zero."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def best(values: Iterable[float | None], higher_is_better: bool) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return max(present) if higher_is_better else min(present)


def meets(value: float | None, metric: Metric, reference: float | None, factor: float) -> bool:
    """Whether ``value`` reaches ``factor`` times the reference in the metric's good direction."""
    r = ratio(value, reference)
    if r is None:
        return False
    return r >= factor if metric.higher_is_better else r <= factor


# ------------------------------------------------------------------------ parsing tool output

_PING_TIME = re.compile(r"time[=<]([\d.]+) ms")
_PING_LOSS = re.compile(r"([\d.]+)% packet loss")


def parse_ping(text: str) -> dict[str, float]:
    """RTT avg and p99 (ms) from ``ping`` output with per-reply lines; loss in %."""
    rtts = [float(m.group(1)) for m in _PING_TIME.finditer(text)]
    loss = _PING_LOSS.search(text)
    out: dict[str, float] = {"replies": float(len(rtts))}
    if loss:
        out["loss_pct"] = float(loss.group(1))
    if rtts:
        out["rtt_avg_ms"] = sum(rtts) / len(rtts)
        p99 = percentile(rtts, 99)
        assert p99 is not None
        out["rtt_p99_ms"] = p99
    return out


def _iperf_json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"iperf3 printed no JSON: {text[:200]!r}") from exc
    if not isinstance(data, dict):
        raise ValueError("iperf3 JSON is not an object")
    if data.get("error") and not data.get("end", {}).get("sum_received"):
        raise ValueError(f"iperf3: {data['error']}")
    return data


def parse_iperf_tcp(text: str) -> dict[str, float]:
    """Receiver throughput (Gbit/s) and sender retransmits from ``iperf3 -J``."""
    end = _iperf_json(text)["end"]
    received = end["sum_received"]
    out = {"gbps": float(received["bits_per_second"]) / 1e9}
    retransmits = end.get("sum_sent", {}).get("retransmits")
    if retransmits is not None:
        out["retransmits"] = float(retransmits)
    return out


def parse_iperf_udp(text: str, payload: int) -> dict[str, float]:
    """Packets/s received by the server and offered by the client (``iperf3 -u -J``).

    The receiver's figure is its byte count over the payload size (what reached
    the application); ``packets`` on the receiver side is the highest sequence
    number seen, lost packets included.
    """
    end = _iperf_json(text)["end"]
    received, sent = end["sum_received"], end["sum_sent"]
    rx_seconds = float(received["seconds"]) or 1.0
    tx_seconds = float(sent["seconds"]) or 1.0
    return {
        "rx_kpps": float(received["bytes"]) / payload / rx_seconds / 1e3,
        "offered_kpps": float(sent["packets"]) / tx_seconds / 1e3,
        "lost_pct": float(received.get("lost_percent", 0.0)),
    }


def parse_connrate(text: str) -> dict[str, float]:
    """The connection-rate client's one JSON line (see ``nvb/connrate.py``)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            if not data["connections"]:
                raise ValueError(f"no connection completed ({data['errors']} failed)")
            seconds = float(data["seconds"]) or 1.0
            return {
                "conn_per_s": float(data["connections"]) / seconds,
                "errors": float(data["errors"]),
            }
    raise ValueError(f"connrate printed no result: {text[:200]!r}")


def rx_packets(net_dev: str) -> int:
    """Received packets of every interface but ``lo`` in a ``/proc/<pid>/net/dev`` table."""
    total = 0
    for line in net_dev.splitlines()[2:]:
        name, _, counters = line.partition(":")
        if name.strip() and name.strip() != "lo" and counters.split():
            total += int(counters.split()[1])
    return total


# ------------------------------------------------------------------------ CPU from /proc


def proc_ticks(stat_line: str) -> int:
    """utime + stime (clock ticks) from a ``/proc/<pid>/stat`` line (comm may hold spaces)."""
    rest = stat_line[stat_line.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15
    return int(rest[11]) + int(rest[12])


def cpu_totals(proc_stat: str) -> dict[str, int]:
    """Aggregate ``cpu`` line of /proc/stat: total, idle (idle+iowait) and softirq ticks."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            total = sum(values[:8])  # guest time is already inside user/nice
            return {"total": total, "idle": values[3] + values[4], "softirq": values[6]}
    raise ValueError("no aggregate cpu line in /proc/stat")


def cpu_percent(
    before: Mapping[str, int], after: Mapping[str, int], seconds: float, hz: int
) -> dict[str, float]:
    """Per component, % of one core over ``seconds`` from tick counters before/after."""
    if seconds <= 0:
        return {}
    return {
        name: 100.0 * (after[name] - before.get(name, 0)) / hz / seconds
        for name in after
        if name in before
    }


def host_percent(
    before: Mapping[str, int], after: Mapping[str, int], cores: int
) -> dict[str, float]:
    """Softirq and busy time of the whole machine, in % of one core."""
    total = after["total"] - before["total"]
    if total <= 0:
        return {}
    scale = 100.0 * cores / total
    return {
        "softirq": (after["softirq"] - before["softirq"]) * scale,
        "host_busy": (total - (after["idle"] - before["idle"])) * scale,
    }


# ------------------------------------------------------------------------ results and table


@dataclass
class Series:
    """One backend's runs of one workload on one topology."""

    backend: str
    topology: str
    workload: str
    runs: list[dict[str, float]] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)

    def median(self, key: str) -> float | None:
        return median(run[key] for run in self.runs if key in run)

    def median_cpu(self) -> dict[str, float]:
        keys = sorted({k for sample in self.cpu for k in sample})
        out = {}
        for key in keys:
            m = median(sample[key] for sample in self.cpu if key in sample)
            if m is not None:
                out[key] = m
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "topology": self.topology,
            "workload": self.workload,
            "runs": self.runs,
            "cpu": self.cpu,
            "median": {k: self.median(k) for k in sorted({k for r in self.runs for k in r})},
            "median_cpu": self.median_cpu(),
            "error": self.error,
            "note": self.note,
            "profile": self.profile,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Series:
        return cls(
            backend=data["backend"],
            topology=data["topology"],
            workload=data["workload"],
            runs=list(data.get("runs", [])),
            cpu=list(data.get("cpu", [])),
            error=data.get("error"),
            note=data.get("note"),
            profile=dict(data.get("profile") or {}),
        )


# workload -> metrics it yields (the keys of its runs that are figures)
WORKLOAD_METRICS: dict[str, tuple[str, ...]] = {
    "ping": ("rtt_avg_ms", "rtt_p99_ms"),
    "tcp1": ("tcp1_gbps",),
    "tcp4": ("tcp4_gbps",),
    "udp64": ("udp64_kpps", "delivered_kpps", "offered_kpps"),
    "connrate": ("conn_per_s",),
    "control": ("nb_write_s", "compile_install_s", "total_s", "rss_mb_per_1k_ports"),
    "port_to_traffic": ("port_to_traffic_ms",),
}


def figures(series: Iterable[Series]) -> dict[str, dict[str, float | None]]:
    """``{figure: {backend: median}}``, figures named ``topology/metric``."""
    table: dict[str, dict[str, float | None]] = {}
    for s in series:
        for metric in WORKLOAD_METRICS.get(s.workload, ()):
            if s.runs and any(metric in r for r in s.runs):
                table.setdefault(f"{s.topology}/{metric}", {})[s.backend] = s.median(metric)
            elif s.error is not None:
                table.setdefault(f"{s.topology}/{metric}", {}).setdefault(s.backend, None)
    return table


def metric_of(figure: str) -> Metric:
    return METRICS[figure.rsplit("/", 1)[1]]


@dataclass(frozen=True)
class Ratios:
    """netvirt / reference for one figure, for each netvirt variant."""

    figure: str
    vs_ovn: dict[str, float | None]
    vs_kernel: dict[str, float | None]


def ratios(figure: str, values: Mapping[str, float | None]) -> Ratios:
    metric = metric_of(figure)
    if not metric.compared:
        none: dict[str, float | None] = dict.fromkeys(NETVIRT_BACKENDS)
        return Ratios(figure, none, dict(none))
    ovn_ref = best((values.get(b) for b in OVN_BACKENDS), metric.higher_is_better)
    kernel_ref = values.get(KERNEL)
    return Ratios(
        figure,
        {nv: ratio(values.get(nv), ovn_ref) for nv in NETVIRT_BACKENDS},
        {nv: ratio(values.get(nv), kernel_ref) for nv in NETVIRT_BACKENDS},
    )


MISSING = "\u2013"  # an en dash: no figure (not measured, or failed)


def fmt_value(value: float | None) -> str:
    if value is None:
        return MISSING
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ratio(values: Mapping[str, float | None]) -> str:
    parts = [f"{v:.2f}" if v is not None else MISSING for v in values.values()]
    return " / ".join(parts)


def markdown_table(table: Mapping[str, Mapping[str, float | None]]) -> str:
    """The report's table: medians per backend, then netvirt / OVN and netvirt / kernel.

    Ratio cells read ``local / Redis / eBPF`` (the netvirt variants: local state, Redis
    state, local state with the kernel offload).
    """
    header = ["figure", "unit", *(BACKEND_TITLES[b] for b in BACKENDS)]
    header += ["netvirt/OVN", "netvirt/kernel"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    for figure in sorted(table, key=_figure_order):
        values = table[figure]
        metric = metric_of(figure)
        r = ratios(figure, values)
        arrow = "↑" if metric.higher_is_better else "↓"
        row = [f"{figure.split('/')[0]}: {metric.title} {arrow}", metric.unit]
        row += [fmt_value(values.get(b)) for b in BACKENDS]
        row += [fmt_ratio(r.vs_ovn), fmt_ratio(r.vs_kernel)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


TOPOLOGY_ORDER = ("l2", "l3", "sg", "xhost", "control")


def _figure_order(figure: str) -> tuple[int, int, str, int]:
    """Data-plane topologies in their order, then control-plane scales by size."""
    topology, metric = figure.rsplit("/", 1)
    base = "control" if topology.startswith("control") else topology
    t = TOPOLOGY_ORDER.index(base) if base in TOPOLOGY_ORDER else len(TOPOLOGY_ORDER)
    digits = "".join(c for c in topology if c.isdigit())
    size = int(digits) * (1000 if topology.endswith("k") else 1) if digits else 0
    m = list(METRICS).index(metric) if metric in METRICS else len(METRICS)
    return t, size, topology, m


@dataclass(frozen=True)
class RatioRow:
    """One figure's label and ratios, for the plot."""

    label: str
    metric: Metric
    ratios: Ratios

    def better(self, value: float) -> bool:
        """Whether a ratio of ``value`` means netvirt is better than the reference."""
        return value > 1 if self.metric.higher_is_better else value < 1


def ratio_rows(table: Mapping[str, Mapping[str, float | None]]) -> list[RatioRow]:
    """Figures that have at least one ratio, in report order."""
    rows = []
    for figure in sorted(table, key=_figure_order):
        r = ratios(figure, table[figure])
        if all(v is None for v in (*r.vs_ovn.values(), *r.vs_kernel.values())):
            continue
        metric = metric_of(figure)
        arrow = "↑" if metric.higher_is_better else "↓"
        label = f"{figure.split('/')[0]}: {metric.title} {arrow}"
        rows.append(RatioRow(label, metric, r))
    return rows


def cpu_table(series: Iterable[Series]) -> str:
    """CPU per component (% of one core, medians) for the throughput workloads."""
    lines = [
        "| topology | workload | backend | CPU per component (% of one core) |",
        "|---|---|---|---|",
    ]
    for s in sorted(
        series,
        key=lambda s: (
            _figure_order(f"{s.topology}/rtt_avg_ms"),
            s.workload,
            BACKENDS.index(s.backend) if s.backend in BACKENDS else 99,
        ),
    ):
        if s.workload not in ("tcp1", "udp64", "connrate") or not s.cpu:
            continue
        parts = [f"{k} {v:.0f}" for k, v in s.median_cpu().items() if v >= 0.5 or k == "softirq"]
        title = BACKEND_TITLES.get(s.backend, s.backend)
        lines.append(f"| {s.topology} | {s.workload} | {title} | {', '.join(parts)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ the targets


@dataclass(frozen=True)
class Target:
    """One target of the issue: netvirt's figure against a reference or a bound."""

    text: str
    figure: str
    reference: str  # "ovn", "kernel" or "absolute"
    factor: float


TARGETS = (
    Target("TCP through router + stateful SG + SNAT >= 1.3x OVN", "sg/tcp1_gbps", "ovn", 1.3),
    Target("TCP through router + stateful SG + SNAT >= 0.8x kernel", "sg/tcp1_gbps", "kernel", 0.8),
    Target("64-byte packet rate >= 1.5x OVN (one switch)", "l2/udp64_kpps", "ovn", 1.5),
    Target("64-byte packet rate >= 1.5x OVN (router + SG + SNAT)", "sg/udp64_kpps", "ovn", 1.5),
    Target("RTT <= OVN's (one switch)", "l2/rtt_avg_ms", "ovn", 1.0),
    Target("RTT <= OVN's (across hosts)", "xhost/rtt_avg_ms", "ovn", 1.0),
    Target("new connections/s through stateful ACL + NAT >= OVN's", "sg/conn_per_s", "ovn", 1.0),
    Target(
        "compile + install of 10k ports <= OVN's time", "control10k/compile_install_s", "ovn", 1.0
    ),
    Target(
        "port create to traffic <= 100 ms at 10k ports",
        "control10k/port_to_traffic_ms",
        "absolute",
        100.0,
    ),
)


def check_targets(
    table: Mapping[str, Mapping[str, float | None]], backend: str = NETVIRT
) -> list[tuple[Target, float | None, bool]]:
    """(target, netvirt's ratio or value, met) for each target whose figure was measured."""
    out = []
    for t in TARGETS:
        values = table.get(t.figure)
        if values is None:
            continue
        metric = metric_of(t.figure)
        value = values.get(backend)
        if t.reference == "absolute":
            met = value is not None and value <= t.factor
            out.append((t, value, met))
            continue
        r = ratios(t.figure, values)
        got = (r.vs_ovn if t.reference == "ovn" else r.vs_kernel).get(backend)
        met = got is not None and (got >= t.factor if metric.higher_is_better else got <= t.factor)
        out.append((t, got, met))
    return out


def targets_markdown(table: Mapping[str, Mapping[str, float | None]]) -> str:
    """Each target for netvirt (local state), and for the offload variant where it ran."""
    lines = []
    variants = [NETVIRT]
    if any(values.get(NETVIRT_OFFLOAD) is not None for values in table.values()):
        variants.append(NETVIRT_OFFLOAD)
    for backend in variants:
        title = BACKEND_TITLES[backend]
        for t, got, met in check_targets(table, backend):
            unit = "ms" if t.reference == "absolute" else "x"
            shown = MISSING if got is None else f"{got:.2f} {unit}"
            lines.append(f"- {'met' if met else 'MISSED'}: {t.text} ({title}: {shown})")
    return "\n".join(lines)
