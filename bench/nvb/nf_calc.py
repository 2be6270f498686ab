"""Pure parts of the stateless-NF benchmark: store-counter deltas, costs, gaps, the tables.

Nothing here touches the machine (``tests/bench/test_nf*.py`` check it without root).

Store cost. Every datapath publishes its state store's counters in its status
file (``counters.state``, ``state/stats.py``): round trips, the operations they
carried, ``latency_us_sum`` (the wall time of all round trips), and what the
packet loop paid for them: ``waited_us_sum``, the time it was blocked on
synchronous round trips, and ``client_us_sum``, its own work for asynchronous
ones (encode, send, read, decode: the datapath parks store-bound packets and
goes on, ``state/jobs.py``). The store cost is waited + client time (the
latency sum for counters of builds without them). Sampled before and after a
timed run and summed over the lab's hosts, it gives the amortized store cost:
per new connection (connection-rate run: store µs / connections completed) and
per packet (TCP run: store µs / frames the datapaths received from their ports
and tunnels; TCP super-frames count as one). The memory store makes no round
trips: its cost is in-process CPU, reported as 0 here.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nvb.results import MISSING, fmt_value, median

COUNTERS = (
    "calls",
    "ops",
    "round_trips",
    "round_trip_keys",
    "requests",
    "hits",
    "misses",
    "unavailable",
    "errors",
    "latency_us_sum",
    "waited_us_sum",
    "client_us_sum",
    "async_round_trips",
)
# a write-behind store's own counters (state/writebehind.py), under "write_behind"
BEHIND = ("local_ops", "local_us_sum", "flushes", "flushed", "skipped", "contacts", "refused")


# ------------------------------------------------------------------ store counters


def store_totals(states: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of several stores' ``stats()`` (one per host), histogram included."""
    out: dict[str, Any] = dict.fromkeys(COUNTERS, 0.0)
    hist: list[float] = []
    cache = {"hits": 0.0, "misses": 0.0}
    behind = dict.fromkeys(BEHIND, 0.0)
    for state in states:
        for key in BEHIND:
            behind[key] += float((state.get("write_behind") or {}).get(key, 0) or 0)
        for key in COUNTERS:
            out[key] += float(state.get(key, 0) or 0)
        buckets = state.get("latency_us_log2") or []
        if len(hist) < len(buckets):
            hist += [0.0] * (len(buckets) - len(hist))
        for i, n in enumerate(buckets):
            hist[i] += n
        for key in cache:
            cache[key] += float((state.get("cache") or {}).get(key, 0) or 0)
    out["latency_us_log2"] = hist
    out["cache"] = cache
    out["write_behind"] = behind
    return out


def store_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """``after - before`` of two :func:`store_totals` (counters restart with a process: ≥ 0)."""
    out: dict[str, Any] = {k: max(0.0, after[k] - before.get(k, 0.0)) for k in COUNTERS}
    b, a = before.get("latency_us_log2", []), after.get("latency_us_log2", [])
    out["latency_us_log2"] = [max(0.0, x - (b[i] if i < len(b) else 0.0)) for i, x in enumerate(a)]
    bc, ac = before.get("cache", {}), after.get("cache", {})
    out["cache"] = {k: max(0.0, ac.get(k, 0.0) - bc.get(k, 0.0)) for k in ac}
    bw, aw = before.get("write_behind", {}), after.get("write_behind", {})
    out["write_behind"] = {k: max(0.0, aw.get(k, 0.0) - bw.get(k, 0.0)) for k in aw}
    return out


def host_state(status: Mapping[str, Any]) -> dict[str, Any]:
    """The store counters in one datapath status document (``{}`` when it has none)."""
    state = (status.get("counters") or {}).get("state")
    return dict(state) if isinstance(state, Mapping) else {}


def host_packets(status: Mapping[str, Any]) -> int:
    """Frames a datapath received from its ports and tunnels (``io`` of its status file)."""
    io = status.get("io") or {}
    total = 0
    for group in ("ports", "tunnels"):
        for counters in (io.get(group) or {}).values():
            total += int(counters.get("rx_packets", 0))
    return total


def histogram_percentile(buckets: Sequence[float], pct: float) -> float | None:
    """Upper bound (µs) of the log2 bucket holding the ``pct`` percentile round trip."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = max(1.0, math.ceil(pct / 100.0 * total))
    seen = 0.0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= rank:
            return float(2**i)
    return float(2 ** (len(buckets) - 1))


def costs(
    delta: Mapping[str, Any], *, packets: float = 0, connections: float = 0
) -> dict[str, float]:
    """Store cost figures of one run from its counter delta (see the module docstring)."""
    rts = float(delta.get("round_trips", 0))
    latency_us = float(delta.get("latency_us_sum", 0))
    if "waited_us_sum" in delta:  # what the loop paid: blocked on, or working in, the client
        store_us = float(delta["waited_us_sum"]) + float(delta.get("client_us_sum", 0))
    else:  # counters of a build that only had synchronous round trips
        store_us = latency_us
    out = {"round_trips": rts, "store_us": store_us, "ops": float(delta.get("ops", 0))}
    out["latency_us"] = latency_us
    if rts:
        out["rt_mean_us"] = latency_us / rts
        out["keys_per_rt"] = float(delta.get("round_trip_keys", 0)) / rts
        p99 = histogram_percentile(delta.get("latency_us_log2", []), 99)
        if p99 is not None:
            out["rt_p99_us_le"] = p99
    if packets > 0:
        out["packets"] = float(packets)
        out["store_us_per_packet"] = store_us / packets
        out["rt_per_packet"] = rts / packets
    if connections > 0:
        out["connections"] = float(connections)
        out["store_us_per_conn"] = store_us / connections
        out["rt_per_conn"] = rts / connections
        out["ops_per_conn"] = out["ops"] / connections
        behind = delta.get("write_behind") or {}
        if behind.get("local_ops"):  # the write-behind mode: its local work, reported apart
            out["local_us_per_conn"] = float(behind["local_us_sum"]) / connections
            out["local_ops_per_conn"] = float(behind["local_ops"]) / connections
            out["flushed_per_conn"] = float(behind.get("flushed", 0)) / connections
            out["skipped_per_conn"] = float(behind.get("skipped", 0)) / connections
            out["contacts_per_conn"] = float(behind.get("contacts", 0)) / connections
    return out


# ------------------------------------------------------------------ gaps


_PING_D = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", re.M)


def ping_gap(text: str) -> dict[str, float]:
    """Longest gap (ms) between replies of ``ping -D`` and the replies missing in between."""
    replies = [(float(t), int(seq)) for t, seq in _PING_D.findall(text)]
    out: dict[str, float] = {"replies": float(len(replies))}
    if len(replies) < 2:
        return out
    longest, lost, at = 0.0, 0, replies[0][0]
    for (t0, s0), (t1, s1) in itertools.pairwise(replies):
        if t1 - t0 > longest:
            longest, lost, at = t1 - t0, max(0, s1 - s0 - 1), t0
    out |= {"longest_gap_ms": longest * 1e3, "lost_in_gap": float(lost), "gap_started": at}
    return out


def reset(end: str | None) -> bool:
    """Whether a stream end (``nf_stream.py``) means the connection was killed."""
    return end is not None and end != "eof"


# ------------------------------------------------------------------ summaries


SUMMARY_KEYS = (  # (workload, figure in its runs, name in the summary)
    ("tcp1", "tcp1_gbps", "tcp1_gbps"),
    ("tcp1", "store_us_per_packet", "tcp_store_us_per_packet"),
    ("tcp1", "rt_per_packet", "tcp_rt_per_packet"),
    ("tcp1", "rt_mean_us", "tcp_rt_mean_us"),
    ("connrate", "conn_per_s", "conn_per_s"),
    ("connrate", "store_us_per_conn", "store_us_per_conn"),
    ("connrate", "rt_per_conn", "rt_per_conn"),
    ("connrate", "keys_per_rt", "keys_per_rt"),
    ("connrate", "rt_mean_us", "conn_rt_mean_us"),
    ("connrate", "errors", "conn_errors"),
    ("ping", "rtt_avg_ms", "rtt_avg_ms"),
    ("ping", "rtt_p99_ms", "rtt_p99_ms"),
    ("ping", "store_us_per_echo", "store_us_per_echo"),
)


def summarize_mode(runs: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, float | None]:
    """Medians of one mode's figures: ``runs`` maps a workload to its runs' figure dicts."""
    return {
        label: median(r[key] for r in runs.get(workload, []) if key in r)
        for workload, key, label in SUMMARY_KEYS
    }


def added_rtt(summary: Mapping[str, Mapping[str, float | None]], mode: str) -> dict[str, float]:
    """RTT of ``mode`` minus the memory mode's (avg and p99, µs)."""
    out = {}
    local, ext = summary.get("memory", {}), summary.get(mode, {})
    for key in ("rtt_avg_ms", "rtt_p99_ms"):
        a, b = ext.get(key), local.get(key)
        if a is not None and b is not None:
            out[key.replace("_ms", "_added_us")] = (a - b) * 1e3
    return out


def summarize_failover(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Worst case over a mode's failover runs: interruption (ms), resets, ping gap."""
    gaps = [r["interruption_ms"] for r in runs if r.get("interruption_ms") is not None]
    pings = [r["ping_gap_ms"] for r in runs if r.get("ping_gap_ms") is not None]
    return {
        "runs": len(runs),
        "interruption_ms_max": max(gaps) if gaps else None,
        "interruption_ms_median": median(gaps),
        "resets": sum(int(r.get("resets", 0)) for r in runs),
        "ping_gap_ms_max": max(pings) if pings else None,
        "errors": [r["error"] for r in runs if r.get("error")],
    }


# ------------------------------------------------------------------ tables

ROWS = (
    ("tcp1_gbps", "TCP 1 stream ↑", "Gbit/s"),
    ("conn_per_s", "new TCP conn/s ↑", "conn/s"),
    ("conn_errors", "connections given up (2 s) per connrate run ↓", ""),
    ("rtt_avg_ms", "ping RTT avg ↓", "ms"),
    ("rtt_p99_ms", "ping RTT p99 ↓", "ms"),
    ("rtt_avg_added_us", "added RTT avg (vs memory) ↓", "µs"),
    ("rtt_p99_added_us", "added RTT p99 (vs memory) ↓", "µs"),
    ("store_us_per_echo", "store time per ping (request + reply) ↓", "µs"),
    ("store_us_per_conn", "store time per new connection ↓", "µs"),
    ("rt_per_conn", "store round trips per new connection ↓", ""),
    ("keys_per_rt", "keys per round trip (connrate) ↑", ""),
    ("tcp_store_us_per_packet", "store time per packet (TCP) ↓", "µs"),
    ("tcp_rt_per_packet", "store round trips per packet (TCP) ↓", ""),
    ("tcp_rt_mean_us", "mean store round trip (TCP) ↓", "µs"),
    ("conn_rt_mean_us", "mean store round trip (connrate) ↓", "µs"),
    ("failover_interruption_ms", "failover: longest data gap ↓", "ms"),
    ("failover_ping_gap_ms", "failover: longest 10 ms ping gap ↓", "ms"),
    ("failover_resets", "failover: connections reset ↓", ""),
)


def mode_table(summary: Mapping[str, Mapping[str, float | None]], modes: Sequence[str]) -> str:
    """One row per figure, one column per mode."""
    lines = ["| figure | unit | " + " | ".join(modes) + " |"]
    lines.append("|---|---|" + "---:|" * len(modes))
    for key, title, unit in ROWS:
        values = [summary.get(m, {}).get(key) for m in modes]
        if all(v is None for v in values):
            continue
        cells = [fmt_value(v) for v in values]
        lines.append(f"| {title} | {unit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(
    summary: Mapping[str, Mapping[str, float | None]], modes: Sequence[str]
) -> list[tuple[str, str, str, bool | None]]:
    """(target, mode, what was measured, met) for each external mode; None: not measured."""
    out: list[tuple[str, str, str, bool | None]] = []
    local = summary.get("memory", {}).get("tcp1_gbps")
    for mode in (m for m in modes if m != "memory"):
        s = summary.get(mode, {})
        tcp = s.get("tcp1_gbps")
        r = tcp / local if tcp is not None and local else None
        shown = MISSING if r is None else f"{r:.2f}x local"
        out.append(("throughput >= 0.8x local state", mode, shown, None if r is None else r >= 0.8))
        cost = s.get("store_us_per_conn")
        shown = MISSING if cost is None else f"{cost:.1f} µs"
        out.append(("store access per new connection <= 5 µs", mode, shown, _le(cost, 5.0)))
        resets = s.get("failover_resets")
        shown = MISSING if resets is None else f"{resets:.0f} reset"
        out.append(("failover: zero reset connections", mode, shown, _le(resets, 0.0)))
        gap = s.get("failover_interruption_ms")
        shown = MISSING if gap is None else f"{gap:.0f} ms"
        out.append(("failover: interruption < 1 s", mode, shown, _lt(gap, 1000.0)))
    return out


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _lt(value: float | None, bound: float) -> bool | None:
    return None if value is None else value < bound


def targets_table(rows: Sequence[tuple[str, str, str, bool | None]]) -> str:
    lines = ["| target (issue 6) | mode | measured | |", "|---|---|---:|---|"]
    for text, mode, shown, met in rows:
        verdict = "not measured" if met is None else ("met" if met else "MISSED")
        lines.append(f"| {text} | {mode} | {shown} | {verdict} |")
    return "\n".join(lines)
