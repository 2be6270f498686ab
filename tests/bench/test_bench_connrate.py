"""The connection-rate client's fresh 4-tuples: no 4-tuple comes back within the window.

ovs-vswitchd 3.1 aborts when a 4-tuple comes back while its conntrack entry is
still held (see bench/nvb/connrate.py); the bench's client must never do that,
across its separate processes (warm-up, then one process per run) too.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nvb import connrate, results, workloads
from nvb.connrate import LAG_S, SPORT_COUNT, SPORT_LOW, FreshTuples


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


# one step: the clock advances by `dt`, then `calls` connections are asked for,
# by a new client process when `restart` (its own FreshTuples on the same clock)
STEP = st.tuples(
    st.floats(min_value=0.0, max_value=40.0),
    st.integers(min_value=0, max_value=3000),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    ports=st.integers(min_value=1, max_value=3),
    window=st.floats(min_value=2.0, max_value=60.0),
    steps=st.lists(STEP, min_size=1, max_size=25),
)
def test_no_tuple_recurs_within_the_window_across_processes(
    ports: int, window: float, steps: list[tuple[float, int, bool]]
) -> None:
    clock = FakeClock()
    fresh = FreshTuples(ports, window, clock)
    seen: dict[tuple[int, int], float] = {}
    for dt, calls, restart in steps:
        clock.now += dt
        if restart:
            fresh = FreshTuples(ports, window, clock)
        for _ in range(calls):
            picked = fresh.next()
            if picked is None:
                break  # ahead of the clock: the client waits for it
            sport, offset = picked
            assert SPORT_LOW <= sport < SPORT_LOW + SPORT_COUNT
            assert 0 <= offset < ports
            if picked in seen:
                # the bound the docstring promises (float slack for the clock's rounding)
                assert clock.now - seen[picked] >= window - LAG_S - 1e-6
            seen[picked] = clock.now


def test_consecutive_tuples_cover_every_server_port_then_the_next_source_port() -> None:
    clock = FakeClock(0.0)
    fresh = FreshTuples(4, 150.0, clock)  # index 0 is taken as used before it started
    assert fresh.next() is None  # a new process waits one tick of the clock
    clock.now += 0.5
    got = [fresh.next() for _ in range(8)]
    assert got == [(1024, 1), (1024, 2), (1024, 3)] + [(1025, p) for p in range(4)] + [(1026, 0)]


def test_a_client_faster_than_the_clock_is_throttled_and_counted() -> None:
    clock = FakeClock(10.0)
    fresh = FreshTuples(1, 150.0, clock)  # pace 64512 / 150 = 430 tuples/s
    clock.now += 0.5  # half a second: 215 indices
    got = [fresh.next() for _ in range(300)]
    assert 210 <= sum(g is not None for g in got) <= 216
    assert got[-1] is None
    assert fresh.throttled == 300 - sum(g is not None for g in got)
    clock.now += 0.1
    assert fresh.next() is not None


def test_a_slow_client_skips_forward_to_stay_within_the_lag() -> None:
    clock = FakeClock(10.0)
    fresh = FreshTuples(1, 150.0, clock)
    clock.now += 100.0
    fresh.next()
    assert fresh.last >= int((clock.now - LAG_S) * fresh.pace)


def test_a_new_process_starts_past_what_an_earlier_one_used() -> None:
    clock = FakeClock(50.0)
    first = FreshTuples(2, 150.0, clock)
    clock.now += 1.0
    used = {first.next() for _ in range(200)}
    second = FreshTuples(2, 150.0, clock)  # at the same instant
    clock.now += 3.0
    assert not used & {second.next() for _ in range(1000)}


def test_fresh_tuples_refuse_a_window_within_the_allowed_lead() -> None:
    with pytest.raises(ValueError):
        FreshTuples(16, LAG_S)
    with pytest.raises(ValueError):
        FreshTuples(0)


def test_open_binds_the_chosen_source_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            sport = probe.getsockname()[1]
        sock = connrate._open("127.0.0.1", port, sport)
        try:
            assert sock.getsockname()[1] == sport
            conn, peer = listener.accept()
            conn.close()
            assert peer[1] == sport
        finally:
            sock.close()


def test_bench_client_uses_fresh_tuples_with_room_for_its_rates() -> None:
    """Every backend's connrate runs bind fresh tuples; 256 server ports pace > 100k conn/s."""
    target = workloads.Target(
        "ovn", "sg", workloads.Node("c", []), workloads.Node("s", []), "10.0.0.1", dict
    )
    argv = workloads._command(target, "connrate", 5.0, workloads.Options(), False)
    assert "--fresh-tuples" in argv
    assert argv[argv.index("--ports") + 1] == str(workloads.CONN_PORTS)
    assert FreshTuples(workloads.CONN_PORTS).pace > 100_000


def _server(port: int, ports: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, connrate.__file__, "server", "--port", str(port), "--ports", str(ports)]
    server = subprocess.Popen(argv)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port + ports - 1)) == 0:
                return server
        time.sleep(0.05)
    server.kill()
    raise AssertionError("connrate server did not listen")


def test_fresh_tuple_client_back_to_back_runs_on_loopback() -> None:
    """Two client processes one after the other, as the bench runs them: no error.

    One server port: the clock's pace is then 430 tuples/s, so the client is
    throttled here, and still completes connections."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = _server(port, 1)
    try:
        outs = []
        for _ in range(2):
            argv = [sys.executable, connrate.__file__, "client", "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--ports", "1", "--duration", "0.3", "--fresh-tuples"]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
            outs.append(json.loads(proc.stdout))
    finally:
        server.kill()
        server.wait()
    for out in outs:
        assert out["connections"] > 10
        assert out["errors"] == 0
        assert out["throttled"] > 0
        assert "skipped" in out
        assert results.parse_connrate(json.dumps(out))["conn_per_s"] > 0


class ScriptedTuples(FreshTuples):
    """Hands out the given (source port, server port offset) pairs, then None."""

    def __init__(self, picks: list[tuple[int, int]]) -> None:
        super().__init__(1)
        self.picks = picks

    def next(self) -> tuple[int, int] | None:
        return self.picks.pop(0) if self.picks else None


def test_a_source_port_held_elsewhere_is_skipped_not_failed() -> None:
    with socket.socket() as listener, socket.socket() as holder:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        holder.bind(("0.0.0.0", 0))  # no SO_REUSEADDR: nobody else may bind this port
        holder.listen()
        busy = holder.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        fresh = ScriptedTuples([(busy, 0), (free, 0)])
        sock = connrate._open_fresh("127.0.0.1", port, fresh)
        assert sock is not None
        try:
            assert sock.getsockname()[1] == free
            assert fresh.skipped == 1
        finally:
            sock.close()
        assert connrate._open_fresh("127.0.0.1", port, fresh) is None  # the clock says wait
