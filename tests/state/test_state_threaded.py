"""A synchronous store made asynchronous on a worker thread: the same answers, replies
completed in the caller's thread and in order, and the waiting counted as nobody's."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from netvirt.state.cluster import RedisClusterStore
from netvirt.state.jobs import StoreJobs, Ticket, execute_now
from netvirt.state.memory import MemoryStore
from netvirt.state.store import CasOp, Entry, GetOp, Op, PutOp
from netvirt.state.threaded import ThreadedStore
from state.state_support import FakeClock
from state.test_state_async import ops_strategy


def wait_for(store: ThreadedStore, tickets: Sequence[Ticket], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(t.done for t in tickets):
        assert time.monotonic() < deadline, "round trips not answered"
        store.wait(0.01)


@settings(max_examples=30, deadline=None)
@given(rounds=st.lists(ops_strategy, min_size=1, max_size=4))
def test_submit_answers_what_the_wrapped_store_answers(rounds: list[list[Op]]) -> None:
    reference = MemoryStore(FakeClock())
    threaded = ThreadedStore(MemoryStore(FakeClock()))
    try:
        for ops in rounds:
            expected = execute_now(reference, ops)
            ticket = threaded.submit(ops)
            wait_for(threaded, [ticket])
            assert ticket.reply == expected
    finally:
        threaded.close()


def test_replies_complete_in_the_callers_thread_in_order(
    cluster_store: RedisClusterStore,
) -> None:
    store = ThreadedStore(cluster_store)
    try:
        seen: list[tuple[int, threading.Thread]] = []
        tickets = [store.submit([PutOp(f"k{i}", b"v", None), GetOp(f"k{i}")]) for i in range(8)]
        for i, ticket in enumerate(tickets):
            ticket.callback = lambda _r, i=i: seen.append((i, threading.current_thread()))
        time.sleep(0.2)  # the worker is done by now, but nothing completes off the loop
        assert seen == []
        assert not any(t.done for t in tickets)
        wait_for(store, tickets)
        assert [i for i, _ in seen] == list(range(8))
        assert {thread for _, thread in seen} == {threading.main_thread()}
        stats = store.stats()
        trips = stats["async_round_trips"]
        assert isinstance(trips, int)
        assert 1 <= trips <= 8  # what queued up while the worker was busy went together
        assert stats["waited_us_sum"] == 0.0  # the loop waited for none of them
        assert isinstance(stats["client_us_sum"], float)
        assert stats["client_us_sum"] > 0
    finally:
        store.close()


def test_jobs_park_on_a_threaded_cluster(cluster_store: RedisClusterStore) -> None:
    store = ThreadedStore(cluster_store)
    try:

        def steps():  # type: ignore[no-untyped-def]
            created = yield [CasOp("conn", 0, b"syn", 30.0)]
            read = yield [GetOp("conn")]
            return created, read

        jobs = StoreJobs(store)
        out: list[object] = []
        assert jobs.start(steps(), out.append) is False
        deadline = time.monotonic() + 5
        while not out and time.monotonic() < deadline:
            store.wait(0.01)
        ((created, read),) = out  # type: ignore[misc]
        assert created[0].ok
        assert read[0].value == b"syn"
    finally:
        store.close()


@settings(max_examples=30, deadline=None)
@given(rounds=st.lists(ops_strategy, min_size=2, max_size=6))
def test_round_trips_merged_by_the_worker_answer_as_if_sent_one_by_one(
    rounds: list[list[Op]],
) -> None:
    """All submitted before any is read: the worker batches what queued up, each round
    trip's answer is still the one it gets alone, in order."""
    reference = MemoryStore(FakeClock())
    inner = MemoryStore(FakeClock())
    threaded = ThreadedStore(inner)
    try:
        gate = threading.Lock()
        gate.acquire()  # hold the worker until everything is queued
        original, original_get = inner._execute, inner.get_many

        def gated(ops: Sequence[Op]) -> list[object]:
            with gate:
                return original(ops)

        def gated_get(keys: Sequence[str]) -> list[Entry | None]:
            with gate:
                return original_get(keys)

        inner._execute = gated  # type: ignore[method-assign]
        inner.get_many = gated_get  # type: ignore[method-assign]
        expected = [execute_now(reference, ops) for ops in rounds]
        tickets = [threaded.submit(ops) for ops in rounds]
        gate.release()
        wait_for(threaded, tickets)
        assert [t.reply for t in tickets] == expected
        assert threaded.stats()["async_round_trips"] <= 2  # the first, then all the rest
    finally:
        threaded.close()
