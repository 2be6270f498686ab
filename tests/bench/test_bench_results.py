"""The harness's pure parts: tool output parsing, statistics, ratios, the table (no root)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nvb import results
from nvb.results import Series

PING = """PING 10.251.1.12 (10.251.1.12) 56(84) bytes of data.
64 bytes from 10.251.1.12: icmp_seq=1 ttl=64 time=0.050 ms
64 bytes from 10.251.1.12: icmp_seq=2 ttl=64 time=0.070 ms
64 bytes from 10.251.1.12: icmp_seq=3 ttl=64 time=0.030 ms
64 bytes from 10.251.1.12: icmp_seq=4 ttl=64 time=1.250 ms

--- 10.251.1.12 ping statistics ---
5 packets transmitted, 4 received, 20% packet loss, time 41ms
rtt min/avg/max/mdev = 0.030/0.350/1.250/0.520 ms
"""


def _iperf(received: dict[str, float], sent: dict[str, float]) -> str:
    return json.dumps({"start": {}, "end": {"sum_received": received, "sum_sent": sent}})


def test_ping_avg_p99_and_loss() -> None:
    out = results.parse_ping(PING)
    assert out["replies"] == 4
    assert out["rtt_avg_ms"] == pytest.approx(0.35)
    assert out["rtt_p99_ms"] == pytest.approx(1.25)  # the slowest of 4 replies
    assert out["loss_pct"] == 20


def test_ping_without_reply_has_no_rtt() -> None:
    out = results.parse_ping("2 packets transmitted, 0 received, 100% packet loss")
    assert "rtt_avg_ms" not in out
    assert out["loss_pct"] == 100


def test_iperf_tcp_receiver_throughput_and_retransmits() -> None:
    text = _iperf({"bits_per_second": 7.5e9}, {"bits_per_second": 7.6e9, "retransmits": 12})
    assert results.parse_iperf_tcp(text) == {"gbps": 7.5, "retransmits": 12.0}


def test_iperf_error_is_reported() -> None:
    with pytest.raises(ValueError, match="unable to connect"):
        results.parse_iperf_tcp(json.dumps({"error": "unable to connect to server"}))
    with pytest.raises(ValueError, match="no JSON"):
        results.parse_iperf_tcp("iperf3: error")


def test_iperf_udp_counts_what_reached_the_receiver() -> None:
    received = {"seconds": 2.0, "bytes": 64 * 100_000, "packets": 150_000, "lost_percent": 33.3}
    sent = {"seconds": 2.0, "bytes": 64 * 150_000, "packets": 150_000}
    out = results.parse_iperf_udp(_iperf(received, sent), 64)
    assert out["rx_kpps"] == pytest.approx(50.0)  # 100k packets in 2 s, not 150k
    assert out["offered_kpps"] == pytest.approx(75.0)
    assert out["lost_pct"] == pytest.approx(33.3)


def test_connrate_line() -> None:
    text = 'noise\n{"connections": 3000, "errors": 2, "seconds": 1.5}\n'
    assert results.parse_connrate(text) == {"conn_per_s": 2000.0, "errors": 2.0}
    with pytest.raises(ValueError):
        results.parse_connrate("Traceback ...")


def test_proc_ticks_survives_odd_command_names() -> None:
    fields = ["S"] + [str(i) for i in range(4, 53)]
    fields[14 - 3], fields[15 - 3] = "700", "300"  # utime, stime (fields 14 and 15)
    line = "1234 (a) b (c) " + " ".join(fields)
    assert results.proc_ticks(line) == 1000


def test_cpu_and_host_percent() -> None:
    before = results.cpu_totals("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3\n")
    after = results.cpu_totals("cpu  200 0 200 1000 0 0 100 0 0 0\n")
    assert before == {"total": 1000, "idle": 800, "softirq": 0}
    host = results.host_percent(before, after, cores=2)
    assert host["softirq"] == pytest.approx(40.0)  # 100 of 500 ticks, on 2 cores
    assert host["host_busy"] == pytest.approx(120.0)
    procs = results.cpu_percent({"a": 10}, {"a": 60, "new": 5}, seconds=1.0, hz=100)
    assert procs == {"a": 50.0}  # a component that appeared meanwhile has no delta


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30))
def test_median_and_percentiles_stay_within_the_samples(values: list[float]) -> None:
    m = results.median(values)
    assert m is not None
    assert min(values) <= m <= max(values)
    assert results.percentile(values, 100) == max(values)
    p99 = results.percentile(values, 99)
    assert p99 is not None
    assert sum(v <= p99 for v in values) >= 0.99 * len(values)


def test_median_ignores_missing_and_nan() -> None:
    assert results.median([]) is None
    assert results.median([math.nan, 3.0, 1.0, 2.0]) == 2.0


def test_ratio_uses_the_best_ovn_variant_per_direction() -> None:
    tput = {"ovn": 0.5, "ovn-tso": 8.0, "kernel": 10.0, "netvirt": 4.0, "netvirt-redis": 2.0}
    tput["netvirt-offload"] = 12.0
    r = results.ratios("sg/tcp1_gbps", tput)
    assert r.vs_ovn == {"netvirt": 0.5, "netvirt-redis": 0.25, "netvirt-offload": 1.5}
    assert r.vs_kernel == {"netvirt": 0.4, "netvirt-redis": 0.2, "netvirt-offload": 1.2}
    rtt = {"ovn": 0.4, "ovn-tso": 0.2, "kernel": 0.05, "netvirt": 0.1}
    r = results.ratios("l2/rtt_avg_ms", rtt)
    assert r.vs_ovn["netvirt"] == pytest.approx(0.5)  # against 0.2, the better OVN
    assert r.vs_ovn["netvirt-redis"] is None
    assert results.ratio(1.0, 0.0) is None


def test_meets_reads_the_metric_direction() -> None:
    tcp = results.METRICS["tcp1_gbps"]
    rtt = results.METRICS["rtt_avg_ms"]
    assert results.meets(1.4, tcp, 1.0, 1.3)
    assert not results.meets(1.2, tcp, 1.0, 1.3)
    assert results.meets(0.9, rtt, 1.0, 1.0)
    assert not results.meets(1.1, rtt, 1.0, 1.0)


def _series() -> list[Series]:
    out = []
    for backend, gbps in (("kernel", 10.0), ("ovn", 1.0), ("ovn-tso", 5.0), ("netvirt", 2.5)):
        s = Series(backend, "l2", "tcp1")
        s.runs = [{"tcp1_gbps": gbps * k} for k in (0.9, 1.0, 1.2)]
        s.cpu = [{"ovs-vswitchd": 50.0, "softirq": 10.0}] * 3
        out.append(s)
    failed = Series("netvirt-redis", "l2", "tcp1", error="setup: lab up failed")
    return [*out, failed]


def test_figures_take_medians_and_keep_failures_visible() -> None:
    table = results.figures(_series())
    assert table == {
        "l2/tcp1_gbps": {
            "kernel": 10.0,
            "ovn": 1.0,
            "ovn-tso": 5.0,
            "netvirt": 2.5,
            "netvirt-redis": None,
        }
    }


def test_markdown_table_row() -> None:
    text = results.markdown_table(results.figures(_series()))
    header, rule, row = text.splitlines()
    assert header.startswith("| figure | unit | kernel veth | kernel | OVN | OVN+TSO | netvirt")
    assert rule.count("|") == header.count("|")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "l2: TCP 1 stream ↑"
    gap = results.MISSING
    assert cells[1:9] == ["Gbit/s", gap, "10.0", "1.00", "5.00", "2.50", gap, gap]
    assert cells[9:] == [f"0.50 / {gap} / {gap}", f"0.25 / {gap} / {gap}"]


def test_series_json_round_trip() -> None:
    for s in _series():
        again = Series.from_json(json.loads(json.dumps(s.as_json())))
        assert again == s
        assert s.as_json()["median"].get("tcp1_gbps") == s.median("tcp1_gbps")


def test_ratio_rows_and_direction() -> None:
    table = {
        "control10k/total_s": {"ovn": 100.0, "netvirt": 50.0},
        "l2/tcp1_gbps": {"ovn": 2.0, "netvirt": 1.0},
        "control1k/total_s": {"ovn": 10.0, "netvirt": 20.0},
        "l3/tcp1_gbps": {"kernel": 1.0},  # no netvirt: no row
    }
    rows = results.ratio_rows(table)
    assert [r.label.split(":")[0] for r in rows] == ["l2", "control1k", "control10k"]
    l2, c1k, c10k = rows
    assert not l2.better(0.5)  # half the throughput
    assert not c1k.better(2.0)  # twice the time
    assert c10k.better(0.5)  # half the time


def test_cpu_table_lists_components() -> None:
    text = results.cpu_table(_series())
    assert "| l2 | tcp1 | OVN | ovs-vswitchd 50, softirq 10 |" in text


def test_rx_packets_skips_loopback() -> None:
    table = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets
    lo:    1000      10    0    0    0     0          0         0     1000      10
  eth0: 6400000  100000    0    0    0     0          0         0      500       5
"""
    assert results.rx_packets(table) == 100_000


def test_offered_load_is_reported_but_not_compared() -> None:
    r = results.ratios("l2/offered_kpps", {"ovn": 100.0, "kernel": 100.0, "netvirt": 50.0})
    assert r.vs_ovn == {"netvirt": None, "netvirt-redis": None, "netvirt-offload": None}
    assert results.ratio_rows({"l2/offered_kpps": {"ovn": 1.0, "netvirt": 2.0}}) == []
