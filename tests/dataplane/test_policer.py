"""Token-bucket policers: the envelope bound, conforming streams, per-port updates."""

from __future__ import annotations

from itertools import accumulate

from hypothesis import given, settings
from hypothesis import strategies as st

from netvirt.dataplane.policer import (
    BYTES_PER_KBIT,
    MIN_BURST_BYTES,
    NS,
    Policer,
    PortPolicers,
    Spec,
)
from netvirt.southbound.model import BandwidthLimit, PortBinding, SBState

PROPS = settings(max_examples=150, deadline=None)

specs = st.builds(
    Spec,
    max_kbps=st.integers(1, 200_000),
    burst_kbit=st.integers(1, 2_000),
    min_burst_bytes=st.sampled_from([0, 1514, MIN_BURST_BYTES]),
)
arrivals = st.lists(
    st.tuples(st.integers(0, 50_000_000), st.integers(1, 70_000)), min_size=1, max_size=60
)


def envelope_ok(times: list[int], sizes: list[int], capacity: int, rate: int) -> bool:
    """Bytes in every closed window [t_a, t_b] fit capacity + rate * (t_b - t_a)."""
    points = sorted(set(times))
    per_time = dict.fromkeys(points, 0)
    for t, size in zip(times, sizes, strict=True):
        per_time[t] += size
    total = list(accumulate(per_time[t] for t in points))
    for a, start in enumerate(points):
        before = total[a - 1] if a else 0
        for b in range(a, len(points)):
            if (total[b] - before) * NS > capacity * NS + rate * (points[b] - start):
                return False
    return True


@PROPS
@given(specs, arrivals)
def test_passed_bytes_never_exceed_burst_plus_rate_times_time(
    spec: Spec, stream: list[tuple[int, int]]
) -> None:
    policer = Policer(spec)
    times = list(accumulate(gap for gap, _ in stream))
    passed_t, passed_size = [], []
    for t, (_, size) in zip(times, stream, strict=True):
        if policer.allow(size, t / NS):
            passed_t.append(t)
            passed_size.append(size)
    assert envelope_ok(passed_t, passed_size, policer.capacity, policer.rate)
    assert policer.passed_bytes == sum(passed_size)
    assert policer.passed_bytes + policer.dropped_bytes == sum(size for _, size in stream)


@st.composite
def conforming(draw: st.DrawFn) -> tuple[Spec, list[int], list[int]]:
    """A spec and a stream built to stay within its envelope (each frame at the
    earliest time every window ending with it allows, plus random slack)."""
    spec = draw(specs)
    probe = Policer(spec)
    capacity, rate = probe.capacity, probe.rate
    sizes = draw(st.lists(st.integers(1, min(capacity, 70_000)), min_size=1, max_size=40))
    slack = draw(st.lists(st.integers(0, 20_000_000), min_size=len(sizes), max_size=len(sizes)))
    times: list[int] = []
    for i in range(len(sizes)):
        earliest = times[-1] + slack[i] if times else slack[i]
        for j in range(i):
            excess = sum(sizes[j : i + 1]) * NS - capacity * NS
            if excess > 0:
                earliest = max(earliest, times[j] + -(-excess // rate))
        times.append(earliest)
    return spec, times, sizes


@PROPS
@given(conforming())
def test_a_conforming_stream_is_never_dropped(case: tuple[Spec, list[int], list[int]]) -> None:
    spec, times, sizes = case
    policer = Policer(spec)
    assert envelope_ok(times, sizes, policer.capacity, policer.rate)  # the generator's promise
    assert all(policer.allow(size, t / NS) for t, size in zip(times, sizes, strict=True))


def test_rates_and_bursts_are_in_neutron_units() -> None:
    policer = Policer(Spec(max_kbps=1000, burst_kbit=800))  # 125000 B/s, 100000 B of burst
    assert (policer.rate, policer.capacity) == (125_000, 100_000)
    assert policer.allow(100_000, 10.0)
    assert not policer.allow(1, 10.0)
    assert policer.allow(12_500, 10.1)  # 0.1 s refills 12500 bytes exactly
    assert not policer.allow(1, 10.1)
    assert policer.allow(100_000, 1000.0)  # a long pause refills to the burst, no more
    assert not policer.allow(1, 1000.0)
    assert policer.as_dict()["dropped_packets"] == 3


def test_a_clock_stepping_back_refills_nothing() -> None:
    policer = Policer(Spec(max_kbps=8, burst_kbit=8))  # 1000 B/s, 1000 B
    assert policer.allow(1000, 5.0)
    assert not policer.allow(500, 4.0)
    assert not policer.allow(500, 5.0)
    assert policer.allow(500, 5.5)


def test_the_burst_floor_lets_super_frames_through_at_the_average_rate() -> None:
    spec = Spec(max_kbps=100, burst_kbit=80, min_burst_bytes=MIN_BURST_BYTES)
    policer = Policer(spec)
    assert policer.capacity == MIN_BURST_BYTES
    assert policer.allow(65_000, 0.0)  # a TSO super-frame larger than the 10 kB burst
    assert not policer.allow(65_000, 1.0)  # 12500 B/s: the next one waits ~5.2 s
    assert policer.allow(65_000, 5.3)
    without_floor = Policer(Spec(max_kbps=100, burst_kbit=80))
    assert not without_floor.allow(65_000, 0.0)


def limit(kbps: int, burst: int) -> BandwidthLimit:
    return BandwidthLimit(kbps, burst)


def test_port_policers_keep_unchanged_buckets_and_replace_changed_ones() -> None:
    policers = PortPolicers(min_burst_bytes=0)
    policers.update({"tap1": (limit(8, 8), None), "tap2": (limit(8, 8), limit(16, 16))})
    assert set(policers.rx) == {"tap1", "tap2"}
    assert set(policers.tx) == {"tap2"}
    assert policers.police_rx("tap1", 1000, 1.0)
    assert not policers.police_rx("tap1", 1, 1.0)  # tap1's bucket is empty now
    bucket = policers.rx["tap1"]
    policers.update({"tap1": (limit(8, 8), None), "tap2": (limit(8, 8), limit(32, 16))})
    assert policers.rx["tap1"] is bucket  # same numbers: the same bucket (still empty)
    assert not policers.police_rx("tap1", 1, 1.0)
    assert policers.tx["tap2"].spec.max_kbps == 32  # changed: a new, full bucket
    assert policers.police_tx("tap2", 2000, 1.0)
    policers.update({"tap2": (None, limit(32, 16))})
    assert policers.rx == {}
    assert policers.police_rx("tap1", 10**6, 1.0)  # no policer: everything passes
    assert policers.counters()["tap2"]["ingress"]["passed_bytes"] == 2000


def test_directions_police_separately() -> None:
    policers = PortPolicers(min_burst_bytes=0)
    policers.update({"tap1": (limit(8, 8), limit(80, 80))})  # 1000 B out, 10000 B in
    assert policers.police_tx("tap1", 10_000, 0.0)
    assert policers.police_rx("tap1", 1000, 0.0)
    assert not policers.police_rx("tap1", 1, 0.0)
    assert not policers.police_tx("tap1", 1, 0.0)


def test_limits_come_from_the_sb_bindings_of_local_ports() -> None:
    def vif(name: str, key: int, **limits: BandwidthLimit) -> PortBinding:
        return PortBinding(name, key, 1, "vif", 0xFA163E000000 + key, (), **limits)

    sb = SBState(
        ports={
            "vm1": vif("vm1", 1, egress_limit=limit(1000, 800)),
            "vm2": vif("vm2", 2, ingress_limit=limit(100, 80)),
            "vm3": vif("vm3", 3),
            "far": vif("far", 4, egress_limit=limit(1000, 800)),
        }
    )
    policers = PortPolicers()
    policers.update_from_sb(sb, {"vm1": "tap1", "vm2": "tap2", "vm3": "tap3"})
    assert set(policers.rx) == {"tap1"}
    assert set(policers.tx) == {"tap2"}
    assert policers.rx["tap1"].capacity == 800 * BYTES_PER_KBIT  # 100 kB: above the floor
    assert policers.tx["tap2"].capacity == MIN_BURST_BYTES  # 10 kB: raised to the floor
