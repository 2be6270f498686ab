"""The stateless-NF benchmark's pure parts: topologies, store costs, gaps, targets (no root)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nvb import nf, nf_calc, nf_stream, nf_topo, results

from netvirt.lab.topology import parse

# ---------------------------------------------------------------------- topologies


@pytest.mark.parametrize("mode", nf_topo.MODES)
def test_sg_labs_are_valid_and_use_the_mode(mode: str) -> None:
    doc = nf_topo.sg_doc(mode)
    topo = parse(doc, "sg.yaml")  # the lab's own validation
    assert topo.name == nf_topo.lab_name("sg", mode)
    assert topo.name.startswith("nvs")
    assert topo.state_backend() == mode
    router = doc["projects"][0]["routers"][0]
    assert router["snat"]
    assert doc["vms"][0]["security_groups"] == ["bench"]


@pytest.mark.parametrize("mode", nf_topo.EXTERNAL_MODES)
@pytest.mark.parametrize("gateways", [2, 3])
def test_failover_labs_have_gateways_and_a_floating_ip(mode: str, gateways: int) -> None:
    doc = nf_topo.failover_doc(mode, gateways)
    topo = parse(doc, "failover.yaml")
    assert topo.state_backend() == mode
    assert sum(1 for h in doc["hosts"] if h.get("gateway")) == gateways
    vms = {vm["name"]: vm for vm in doc["vms"]}
    assert vms[nf_topo.SERVER_VM].get("floating_ip")
    assert {vm["host"] for vm in doc["vms"]} == {"hv1"}  # not a gateway: traffic crosses one


def test_failover_needs_external_state_and_two_or_three_gateways() -> None:
    with pytest.raises(ValueError, match="external state"):
        nf_topo.failover_doc("memory")
    with pytest.raises(ValueError, match="2 or 3"):
        nf_topo.failover_doc("redis", 4)


def test_names_and_addresses_stay_out_of_other_ranges() -> None:
    names = {nf_topo.lab_name(s, m) for s in nf_topo.SHAPES for m in nf_topo.MODES}
    assert len(names) == 6
    assert all(n.startswith("nvs") and len(n) <= 8 for n in names)
    text = json.dumps([nf_topo.sg_doc("redis"), nf_topo.failover_doc("redis")])
    for taken in ("10.251.", "10.252.", "10.254.", "172.24."):
        assert taken not in text


# ---------------------------------------------------------------------- store counters


def _state(rts: int, keys: int, us: float, hist: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "backend": "redis",
        "calls": rts,
        "ops": keys,
        "round_trips": rts,
        "round_trip_keys": keys,
        "requests": rts,
        "hits": 1,
        "misses": 2,
        "unavailable": 0,
        "errors": 0,
        "latency_us_log2": hist,
        "latency_us_sum": us,
    } | extra


def test_store_totals_sum_hosts_and_delta_subtracts() -> None:
    a = _state(10, 30, 1000.0, [0, 0, 10], cache={"hits": 5, "misses": 1})
    b = _state(4, 4, 200.0, [0, 4])
    before = nf_calc.store_totals([a, b])
    assert before["round_trips"] == 14
    assert before["latency_us_log2"] == [0, 4, 10]
    assert before["cache"] == {"hits": 5, "misses": 1}
    after = nf_calc.store_totals(
        [_state(20, 50, 2500.0, [0, 0, 15, 5], cache={"hits": 9, "misses": 1}), b]
    )
    delta = nf_calc.store_delta(before, after)
    assert delta["round_trips"] == 10
    assert delta["round_trip_keys"] == 20
    assert delta["latency_us_sum"] == 1500
    assert delta["latency_us_log2"] == [0, 0, 5, 5]
    assert delta["cache"] == {"hits": 4, "misses": 0}


def test_a_restarted_store_never_gives_negative_deltas() -> None:
    before = nf_calc.store_totals([_state(100, 100, 9e5, [100])])
    after = nf_calc.store_totals([_state(3, 3, 30.0, [3])])
    delta = nf_calc.store_delta(before, after)
    assert delta["round_trips"] == 0
    assert delta["latency_us_log2"] == [0]


def test_host_counters_from_a_status_document() -> None:
    doc = {
        "counters": {"state": _state(1, 1, 5.0, [1])},
        "io": {
            "ports": {"vm-a": {"rx_packets": 7}, "ext-gw": {"rx_packets": 3}},
            "tunnels": {"geneve": {"rx_packets": 5}},
        },
    }
    assert nf_calc.host_state(doc)["round_trips"] == 1
    assert nf_calc.host_packets(doc) == 15
    assert nf_calc.host_state({}) == {}
    assert nf_calc.host_packets({}) == 0


def test_costs_per_connection_and_per_packet() -> None:
    delta = {
        "round_trips": 400.0,
        "round_trip_keys": 1200.0,
        "latency_us_sum": 40000.0,
        "ops": 1200.0,
        "latency_us_log2": [0] * 7 + [396, 4],  # 64-127 µs, four of 128-255 µs
    }
    c = nf_calc.costs(delta, connections=100)
    assert c["store_us_per_conn"] == 400
    assert c["rt_per_conn"] == 4
    assert c["keys_per_rt"] == 3
    assert c["rt_mean_us"] == 100
    assert c["rt_p99_us_le"] == 128  # the 396th of 400 is still in the 64-127 µs bucket
    p = nf_calc.costs(delta, packets=8000)
    assert p["store_us_per_packet"] == 5
    assert "store_us_per_conn" not in p


def test_memory_store_costs_nothing_measurable() -> None:
    c = nf_calc.costs({"round_trips": 0, "latency_us_sum": 0, "ops": 500}, connections=10)
    assert c["store_us_per_conn"] == 0
    assert "rt_mean_us" not in c


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=24), st.floats(1, 100))
def test_histogram_percentile_is_a_bucket_bound_that_covers_pct(
    buckets: list[int], pct: float
) -> None:
    bound = nf_calc.histogram_percentile(buckets, pct)
    if sum(buckets) == 0:
        assert bound is None
        return
    assert bound is not None
    i = int(bound).bit_length() - 1
    assert sum(buckets[: i + 1]) >= pct / 100 * sum(buckets)  # at least pct % at or below
    assert sum(buckets[:i]) < max(1, pct / 100 * sum(buckets))  # and not a lower bucket


# ---------------------------------------------------------------------- gaps

PING = """PING 10.253.100.1 (10.253.100.1) 56(84) bytes of data.
[1000.000100] 64 bytes from 10.253.100.1: icmp_seq=1 ttl=63 time=1.2 ms
[1000.010100] 64 bytes from 10.253.100.1: icmp_seq=2 ttl=63 time=1.1 ms
[1000.420100] 64 bytes from 10.253.100.1: icmp_seq=40 ttl=63 time=1.5 ms
[1000.430100] 64 bytes from 10.253.100.1: icmp_seq=41 ttl=63 time=1.3 ms
"""


def test_ping_gap_finds_the_longest_silence_and_the_lost_replies() -> None:
    gap = nf_calc.ping_gap(PING)
    assert gap["replies"] == 4
    assert gap["longest_gap_ms"] == pytest.approx(410.0)
    assert gap["lost_in_gap"] == 37
    assert gap["gap_started"] == pytest.approx(1000.0101)
    assert "longest_gap_ms" not in nf_calc.ping_gap("[1.0] 64 bytes from x: icmp_seq=1")


def test_gap_tracker_starts_at_the_first_byte() -> None:
    g = nf_stream.GapTracker()
    for t in (10.0, 10.01, 10.02, 10.75, 10.76):
        g.data(t, 100)
    g.data(20.0, 0)  # an empty read is no data
    r = g.report()
    assert r["bytes"] == 500
    assert r["longest_gap_ms"] == pytest.approx(730.0)
    assert r["gap_started"] == 10.02


@pytest.mark.parametrize(
    ("exc", "end"),
    [
        (ConnectionResetError(104, "reset"), "reset"),
        (BrokenPipeError(32, "pipe"), "reset"),
        (TimeoutError(), "timeout"),
        (OSError(113, "no route"), "error: [Errno 113] no route"),
    ],
)
def test_stream_endings(exc: BaseException, end: str) -> None:
    assert nf_stream.ending(exc) == end
    assert nf_calc.reset(end)
    assert not nf_calc.reset("eof")


def test_stream_over_loopback_ends_cleanly_without_gaps() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, nf_stream.__file__, "server", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        out, _ = server.communicate(timeout=10)
    # the probe connection was the one accepted: an empty stream that ended normally
    result = json.loads(out.strip().splitlines()[-1])
    assert result == result | {"end": "eof", "bytes": 0, "longest_gap_ms": 0.0}
    got: list[dict[str, object]] = []
    thread = threading.Thread(target=lambda: got.append(nf_stream.serve(port, 5.0)))
    thread.start()
    time.sleep(0.3)  # listening
    sent = nf_stream.send("127.0.0.1", port, rate_mbit=50, duration=0.5)
    thread.join(10)
    assert len(got) == 1
    assert sent["end"] == "eof"
    assert got[0]["end"] == "eof"
    assert got[0]["bytes"] == sent["bytes"]
    assert isinstance(sent["bytes"], int)
    assert sent["bytes"] > 0
    gap = got[0]["longest_gap_ms"]
    assert isinstance(gap, float)
    assert gap < 200


# ---------------------------------------------------------------------- summaries, targets


def _runs(tcp: float, conn_us: float, rtt: float) -> dict[str, list[dict[str, float]]]:
    return {
        "tcp1": [{"tcp1_gbps": tcp, "store_us_per_packet": 1.0}, {"tcp1_gbps": tcp * 3}],
        "connrate": [{"conn_per_s": 100.0, "store_us_per_conn": conn_us}],
        "ping": [{"rtt_avg_ms": rtt, "rtt_p99_ms": rtt * 2}],
    }


def test_summary_targets_and_tables() -> None:
    data: dict[str, Any] = {
        "sg": {
            "memory": {"runs": _runs(1.0, 0.0, 1.0)},
            "redis": {"runs": _runs(0.9, 4.0, 1.3)},
            "redis-cluster": {"runs": _runs(0.5, 80.0, 2.0)},
        },
        "failover": {
            "redis": [
                {"interruption_ms": 300.0, "resets": 0, "ping_gap_ms": 100.0},
                {"interruption_ms": 700.0, "resets": 0, "ping_gap_ms": 50.0},
            ],
            "redis-cluster": [
                {"interruption_ms": 1500.0, "resets": 1, "ping_gap_ms": 900.0},
                {"error": "setup failed"},
            ],
        },
    }
    modes = nf_topo.MODES
    s = nf.summary(data, modes)
    assert s["memory"]["tcp1_gbps"] == 2.0  # median of 1 and 3
    assert s["redis"]["rtt_avg_added_us"] == pytest.approx(300.0)
    assert s["redis"]["failover_interruption_ms"] == 700.0  # the worst run
    assert s["redis-cluster"]["failover_resets"] == 1
    rows = {(t, m): met for t, m, _, met in nf_calc.targets(s, modes)}
    assert rows[("throughput >= 0.8x local state", "redis")] is True
    assert rows[("throughput >= 0.8x local state", "redis-cluster")] is False
    assert rows[("store access per new connection <= 5 µs", "redis")] is True
    assert rows[("store access per new connection <= 5 µs", "redis-cluster")] is False
    assert rows[("failover: zero reset connections", "redis")] is True
    assert rows[("failover: interruption < 1 s", "redis-cluster")] is False
    assert not any(m == "memory" for _, m in rows)
    table = nf_calc.mode_table(s, modes)
    assert "| TCP 1 stream ↑ | Gbit/s | 2.00 | 1.80 | 1.00 |" in table
    assert f"| failover: longest data gap ↓ | ms | {results.MISSING} | 700 | 1500 |" in table
    text = nf_calc.targets_table(nf_calc.targets(s, modes))
    assert "| failover: interruption < 1 s | redis-cluster | 1500 ms | MISSED |" in text


def test_a_mode_that_failed_is_not_measured_rather_than_met() -> None:
    data: dict[str, Any] = {"sg": {"redis": {"runs": {}}}, "failover": {"redis": [{"error": "x"}]}}
    s = nf.summary(data, ("memory", "redis"))
    verdicts = {t: met for t, m, _, met in nf_calc.targets(s, ("memory", "redis"))}
    assert set(verdicts.values()) == {None}


def test_failover_summary_is_the_worst_case() -> None:
    f = nf_calc.summarize_failover(
        [
            {"interruption_ms": 100.0, "resets": 0, "ping_gap_ms": 40.0},
            {"interruption_ms": 900.0, "resets": 2, "ping_gap_ms": 10.0},
        ]
    )
    assert f["interruption_ms_max"] == 900
    assert f["interruption_ms_median"] == 500
    assert f["resets"] == 2
    assert f["ping_gap_ms_max"] == 40


# ---------------------------------------------------------------------- the entry point


def test_entry_options_and_report() -> None:
    import stateless_nf as entry  # bench/ is on the path (tests/bench/conftest.py)

    args = entry.parse_args(["--quick", "--modes", "memory,redis"])
    o = entry.options(args)
    assert o.modes == ("memory", "redis")
    assert (o.runs, o.failover_runs) == (1, 1)
    with pytest.raises(SystemExit):
        entry.parse_args(["--modes", "memory,etcd"])
    stream = {"longest_gap_ms": 420.0, "server": {"end": "eof"}, "client": {"end": "eof"}}
    run = {
        "victim": "gw1",
        "inbound_carrier": "gw2",
        "datapath_died_s": 0.9,
        "streams": {"out": stream, "in": stream | {"longest_gap_ms": 12.0}},
        "interruption_ms": 420.0,
        "resets": 0,
        "ping_gap_ms": 200.0,
        "ping_lost_in_gap": 18.0,
    }
    data = {
        "options": {"modes": ["memory", "redis"]},
        "sg": {"memory": {"runs": _runs(1.0, 0.0, 1.0), "note": "lab nvssgm"}},
        "failover": {"redis": [run, {"error": "setup: boom"}]},
    }
    text = entry.report(data)
    assert "| failover: interruption < 1 s | redis | 420 ms | met |" in text
    assert "killed gw1" in text
    assert "out via SNAT gap 420 ms (eof/eof)" in text
    assert "run 2: setup: boom" in text
