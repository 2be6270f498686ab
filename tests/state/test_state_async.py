"""Asynchronous round trips (``submit``) on a real Redis: same answers as the synchronous
path, several round trips in flight at once, and failures that never hang the caller."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netvirt.state.cached import CachedStore
from netvirt.state.jobs import StoreJobs, Ticket, execute_now, run_steps
from netvirt.state.redis import RedisStore
from netvirt.state.redis_async import pack
from netvirt.state.store import (
    AllocateOp,
    CasOp,
    CasResult,
    DeleteOp,
    Entry,
    ExpireOp,
    GetOp,
    Op,
    PutOp,
    ReleaseOp,
    StateStoreError,
    StateStoreUnavailable,
)
from state.state_support import RedisServer

KEYS = ["a", "b", "c"]


def wait_for(
    store: RedisStore | CachedStore, tickets: Sequence[Ticket], timeout: float = 2.0
) -> None:
    deadline = time.monotonic() + timeout
    while not all(t.done for t in tickets):
        assert time.monotonic() < deadline, "round trips not answered"
        store.wait(0.01)
        store.time_out(time.monotonic())


def answer(store: RedisStore | CachedStore, ops: Sequence[Op]) -> object:
    ticket = store.submit(ops)
    wait_for(store, [ticket])
    return ticket.reply


ops_strategy = st.lists(
    st.one_of(
        st.builds(GetOp, st.sampled_from(KEYS)),
        st.builds(PutOp, st.sampled_from(KEYS), st.binary(max_size=8), st.just(None)),
        st.builds(
            CasOp, st.sampled_from(KEYS), st.integers(0, 6), st.binary(max_size=8), st.just(30.0)
        ),
        st.builds(DeleteOp, st.sampled_from(KEYS)),
        st.builds(ExpireOp, st.sampled_from(KEYS), st.just(30.0)),
        st.builds(
            AllocateOp,
            st.just("pool"),
            st.just(("m1", "m2")),
            st.sampled_from(["x", "y"]),
            st.just(None),
        ),
        st.builds(ReleaseOp, st.just("pool"), st.sampled_from(["m1", "m2"]), st.just("x")),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rounds=st.lists(ops_strategy, min_size=1, max_size=4))
def test_submit_answers_what_a_synchronous_round_trip_answers(
    redis_raw: redis.Redis, redis_url: str, rounds: list[list[Op]]
) -> None:
    """Two stores on one server under their own prefixes (so their own version counters):
    the same rounds give exactly the same results, versions included."""
    redis_raw.flushdb()
    sync = RedisStore.from_url(redis_url, prefix="s:")
    async_ = RedisStore.from_url(redis_url, prefix="a:")
    try:
        for ops in rounds:
            expected = execute_now(sync, ops)
            got = answer(async_, ops)
            assert got == expected
    finally:
        sync.close()
        async_.close()


def test_round_trips_pipeline_and_complete_in_order(redis_store: RedisStore) -> None:
    tickets = [redis_store.submit([PutOp(f"k{i}", b"v%d" % i, None)]) for i in range(5)]
    assert not any(t.done for t in tickets)  # sent, nothing read yet
    assert redis_store.in_flight() == 5 + 1  # the five, after the script load
    order: list[int] = []
    for i, ticket in enumerate(tickets):
        ticket.callback = lambda _reply, i=i: order.append(i)
    wait_for(redis_store, tickets)
    assert order == [0, 1, 2, 3, 4]
    got = answer(redis_store, [GetOp(f"k{i}") for i in range(5)])
    assert isinstance(got, list)
    assert [e.value for e in got if isinstance(e, Entry)] == [b"v%d" % i for i in range(5)]
    stats = redis_store.stats()
    assert stats["round_trips"] == stats["async_round_trips"] == 6
    assert stats["waited_us_sum"] == 0  # nobody was blocked
    client = stats["client_us_sum"]
    assert isinstance(client, float)
    assert 0 < client < float(str(stats["latency_us_sum"])) * 10


def test_a_lost_script_cache_fails_one_round_trip_then_recovers(
    redis_store: RedisStore, redis_raw: redis.Redis
) -> None:
    assert isinstance(answer(redis_store, [PutOp("k", b"1", None)]), list)
    redis_raw.script_flush()
    failed = answer(redis_store, [CasOp("k", 0, b"2", None)])
    assert isinstance(failed, StateStoreUnavailable)
    ok = answer(redis_store, [CasOp("k", 0, b"2", None)])
    assert isinstance(ok, list)
    assert isinstance(ok[0], CasResult)
    assert ok[0].ok is False
    assert ok[0].entry is not None
    assert ok[0].entry.value == b"1"


@pytest.fixture
def own_server(redis_bin: str, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_bin, tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def test_a_hung_server_fails_round_trips_at_the_timeout_and_is_held_down(
    own_server: RedisServer,
) -> None:
    store = RedisStore.from_url(own_server.url + "?socket_timeout=0.05&hold_down=0.3")
    try:
        assert isinstance(answer(store, [GetOp("k")]), list)
        assert own_server.proc is not None
        os.kill(own_server.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        ticket = store.submit([PutOp("k", b"v", None)])
        assert not ticket.done  # the caller is not blocked
        wait_for(store, [ticket], timeout=1.0)
        assert isinstance(ticket.reply, StateStoreUnavailable)
        assert time.monotonic() - started < 0.5
        held = store.submit([GetOp("k")])
        assert held.done
        assert isinstance(held.reply, StateStoreUnavailable)
        os.kill(own_server.proc.pid, signal.SIGCONT)
        time.sleep(0.35)
        assert isinstance(answer(store, [GetOp("k")]), list)
    finally:
        store.close()


def test_a_restarted_server_is_reconnected_with_its_scripts(own_server: RedisServer) -> None:
    store = RedisStore.from_url(own_server.url + "?hold_down=0.1")
    try:
        assert isinstance(answer(store, [PutOp("k", b"1", None)]), list)
        own_server.stop()
        lost = answer(store, [GetOp("k")])
        assert isinstance(lost, StateStoreUnavailable)
        own_server.start()
        time.sleep(0.15)
        again = answer(store, [CasOp("k", 0, b"2", None)])  # the new server has no "k"
        assert isinstance(again, list)
        assert isinstance(again[0], CasResult)
        assert again[0].ok
        assert answer(store, [GetOp("k")]) == [again[0].entry]
    finally:
        store.close()


def test_the_read_cache_answers_cached_reads_without_a_round_trip(redis_store: RedisStore) -> None:
    cached = CachedStore(redis_store, max_age=5.0)
    assert cached.supports_submit
    written = answer(cached, [PutOp("k", b"v", None)])
    assert isinstance(written, list)
    trips = redis_store.stats()["round_trips"]
    ticket = cached.submit([GetOp("k")])
    assert ticket.done
    assert ticket.reply == [Entry(b"v", written[0])]
    assert redis_store.stats()["round_trips"] == trips
    mixed = answer(cached, [GetOp("k"), GetOp("absent")])
    assert mixed == [Entry(b"v", written[0]), None]


def test_jobs_park_on_the_store_and_resume_with_the_replies(redis_store: RedisStore) -> None:
    def steps() -> Iterator[list[Op]]:
        first = yield [PutOp("k", b"1", None)]
        assert isinstance(first, list)
        second = yield [GetOp("k")]
        assert isinstance(second, list)
        return second[0]

    jobs = StoreJobs(redis_store)
    results: list[object] = []
    assert jobs.start(steps(), results.append) is False  # type: ignore[arg-type]
    assert jobs.parked == 1
    assert results == []
    deadline = time.monotonic() + 2
    while not results and time.monotonic() < deadline:
        redis_store.wait(0.01)
    assert len(results) == 1
    assert isinstance(results[0], Entry)
    assert results[0].value == b"1"
    assert jobs.parked == 0
    assert jobs.status()["parked_total"] == 2
    assert run_steps(redis_store, steps()) == Entry(b"1", results[0].version + 1)  # type: ignore[arg-type]


def test_pack_is_resp() -> None:
    assert pack([["SET", "k", b"v\r\n"], ["PEXPIRE", "k", 5]]) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n*3\r\n$7\r\nPEXPIRE\r\n$1\r\nk\r\n$1\r\n5\r\n"
    )


def test_a_failed_round_trip_is_an_error_value_not_an_exception(redis_store: RedisStore) -> None:
    redis_store.hold_down = 0.0
    redis_store._down_until = time.monotonic() + 10
    ticket = redis_store.submit([GetOp("k")])
    assert ticket.done
    assert isinstance(ticket.reply, StateStoreError)


def test_a_reply_larger_than_one_read_is_assembled(redis_store: RedisStore) -> None:
    """A reply spanning several reads of the receive buffer (``READ_SIZE``) completes the
    round trip once, with every result, as the synchronous path reads it."""
    value = bytes(range(256)) * 4
    keys = [f"big{i}" for i in range(600)]  # ~600 KiB of reply: three reads or more
    redis_store.put_many([(k, value) for k in keys])
    got = answer(redis_store, [GetOp(k) for k in keys])
    assert isinstance(got, list)
    assert got == redis_store.get_many(keys)
    assert all(isinstance(e, Entry) and e.value == value for e in got)


def test_round_trips_resumed_work_submits_go_out_in_one_write(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callbacks of completed round trips that submit their next round trip (resumed
    packet batches) are written together once the replies are handled, not one by one."""
    from netvirt.state import redis_async

    assert isinstance(answer(redis_store, [GetOp("warm-up")]), list)
    first = [redis_store.submit([PutOp(f"k{i}", b"v", None)]) for i in range(3)]
    follow: list[Ticket] = []
    for i, ticket in enumerate(first):
        ticket.callback = lambda _r, i=i: follow.append(redis_store.submit([GetOp(f"k{i}")]))
    writes: list[int] = []
    original = redis_async.RedisPipe.on_writable

    def counting(pipe: redis_async.RedisPipe) -> None:
        writes.append(len(pipe._out))
        original(pipe)

    monkeypatch.setattr(redis_async.RedisPipe, "on_writable", counting)
    time.sleep(0.05)  # all three replies are in
    redis_store.on_readable()
    assert all(t.done for t in first)
    assert len(follow) == 3
    assert len([w for w in writes if w]) == 1  # the three follow-ups: one write
    wait_for(redis_store, follow)
    assert [t.reply[0].value for t in follow] == [b"v", b"v", b"v"]  # type: ignore[index,union-attr]
