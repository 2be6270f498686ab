"""Pipeline.process_batch: packets advance together, one conntrack batch per step,
and a store that cannot be reached costs the packets that needed it, nothing else."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.classifier import Classifier
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import CT_EST, CT_NEW, CT_TRK
from netvirt.dataplane.flow import FieldMatch, Rule, exact
from netvirt.dataplane.nf import Conntrack, CtRequest, CtResult, FlowKeyConntrack
from netvirt.dataplane.pipeline import BatchItem, Pipeline, PortInfo, Topology, Verdict
from netvirt.state import Entry, MemoryStore, StateStoreUnavailable
from netvirt.state.jobs import Steps
from netvirt.state.store import Op

DP, VM1, VM2 = 1, 1, 2
ACL, COMMIT, EGRESS = 0, 1, 10
SNAT_IP = 0xC0000201  # 192.0.2.1
ETH = Ether(src="fa:16:3e:00:00:01", dst="fa:16:3e:00:00:02")


class FlakyStore(MemoryStore):
    """The memory store, unreachable while ``down`` or from its ``fail_after``-th call on."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.fail_after: int | None = None
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down or (self.fail_after is not None and self.calls > self.fail_after):
            raise StateStoreUnavailable("test: store down")

    def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        self._check()
        return super().get_many(keys)

    def _execute(self, ops: Sequence[Op]) -> list[object]:
        self._check()
        return super()._execute(ops)


class CountingConntrack(Conntrack):
    """Counts conntrack batches (``process_steps`` runs): one per pipeline step of a batch."""

    batches: list[int]

    def process_steps(self, requests: Sequence[CtRequest], now: float) -> Steps[list[CtResult]]:
        self.batches.append(len(requests))
        return super().process_steps(requests, now)


def pipeline(store: MemoryStore, *, first: object = None, fail: str = "closed") -> Pipeline:
    """One switch, two VIFs: ``first`` (ct_next by default) for IP, commit ct.new, deliver.

    ARP skips conntrack, as the compiler's ACL stage does for non-IP."""
    classifier = Classifier()
    classifier.add(Rule(ACL, 2, (exact("eth.type", 0x0806),), (A.Next(COMMIT),)))
    classifier.add(Rule(ACL, 1, (), (first or A.CtNext(),)))
    new = FieldMatch("ct_state", CT_NEW, CT_NEW)
    out = (A.SetField("outport", VM2), A.Output())
    classifier.add(Rule(COMMIT, 2, (new,), (A.CtCommit(mark=5), *out)))
    classifier.add(Rule(COMMIT, 1, (), out))
    classifier.add(Rule(EGRESS, 1, (exact("outport", VM2),), (A.Output(),)))
    topology = Topology(
        kinds={DP: "switch"},
        ports={(DP, p): PortInfo(DP, p, f"vm{p}", "vif") for p in (VM1, VM2)},
        first_table={("switch", "ingress"): ACL, ("switch", "egress"): EGRESS},
        next_table={ACL: COMMIT}.get,
        pipeline_of=lambda t: "ingress" if t < EGRESS else "egress",
    )
    conntrack = CountingConntrack(store)
    conntrack.batches = []
    return Pipeline(classifier, topology, FlowKeyConntrack(conntrack, fail=fail))


def syn(sport: int) -> bytes:
    return bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=80, flags="S"))


def udp(sport: int) -> bytes:
    return bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=sport, dport=53))


def arp() -> bytes:
    return bytes(ETH / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))


def batches(pipe: Pipeline) -> list[int]:
    conntrack = pipe.conntrack
    assert isinstance(conntrack, FlowKeyConntrack)
    assert isinstance(conntrack.conntrack, CountingConntrack)
    return conntrack.conntrack.batches


def summary(verdict: Verdict) -> tuple[object, ...]:
    results = [r.state if isinstance(r, CtResult) else r for r in verdict.ct]
    frames = [(e.port, e.frame) for e in verdict.outputs]
    return frames, verdict.drops, results, verdict.cacheable


# -- batching ---------------------------------------------------------------------------------


def test_a_batch_of_new_connections_costs_one_conntrack_call_per_step() -> None:
    store = MemoryStore()
    pipe = pipeline(store)
    verdicts = pipe.process_batch([(syn(1000 + i), DP, VM1, None, 5.0) for i in range(32)])
    assert [len(v.outputs) for v in verdicts] == [1] * 32
    assert batches(pipe) == [32, 32]  # ct_next of all, then ct_commit of all
    assert store.stats()["calls"] == 3  # one read, then the commit's read and its writes
    assert len(store) == 64  # 32 connections: primary + mirror each
    for verdict in verdicts:
        assert [r.state for r in verdict.ct if isinstance(r, CtResult)] == [
            CT_TRK | CT_NEW,
            CT_TRK | CT_NEW,
        ]


def test_process_and_process_egress_are_batches_of_one() -> None:
    pipe = pipeline(MemoryStore())
    assert len(pipe.process(syn(1), DP, VM1, 1.0).outputs) == 1
    egress = pipe.process_egress(syn(2), DP, VM1, VM2, 1.0)
    assert [e.port for e in egress.outputs] == [VM2]
    assert egress.ct == []  # the egress pipeline of this switch tracks nothing
    assert batches(pipe) == [1, 1]


frames = st.lists(
    st.one_of(
        st.integers(1, 60).map(lambda p: ("syn", p)),
        st.integers(1, 60).map(lambda p: ("udp", p)),
        st.just(("arp", 0)),
        st.integers(1, 60).map(lambda p: ("egress", p)),
    ),
    max_size=12,
)


def _item(kind: str, port: int) -> BatchItem:
    if kind == "egress":
        return (udp(5000 + port), DP, VM1, VM2, 3.0)
    frame = {"syn": syn, "udp": udp}[kind](port) if kind != "arp" else arp()
    return (frame, DP, VM1, None, 3.0)


@settings(max_examples=40, deadline=None)
@given(frames)
def test_a_batch_decides_like_packets_one_by_one(spec: list[tuple[str, int]]) -> None:
    """Distinct connections: the batch gives every packet the verdict it gets alone."""
    spec = list(dict.fromkeys(spec))  # one packet per connection
    items = [_item(kind, port) for kind, port in spec]
    alone = pipeline(MemoryStore())
    expected = [
        alone.process(f, dp, inport, now)
        if outport is None
        else alone.process_egress(f, dp, inport, outport, now)
        for f, dp, inport, outport, now in items
    ]
    got = pipeline(MemoryStore()).process_batch(items)
    assert [summary(v) for v in got] == [summary(v) for v in expected]


def test_packets_of_a_batch_keep_their_own_nat_association() -> None:
    """ct_lb rewrites each packet; the commit after it must reach that packet's connection."""
    store = MemoryStore()
    backends = (A.Backend(0x0A000010, 8080), A.Backend(0x0A000011, 8080))
    pipe = pipeline(store, first=A.CtLb(backends))
    items: list[BatchItem] = [(syn(2000 + i), DP, VM1, None, 7.0) for i in range(4)]
    verdicts = pipe.process_batch(items)
    assert [len(v.outputs) for v in verdicts] == [1] * 4
    # four connections (primary + mirror) and the round-robin counter: no commit started
    # a second connection at a translated tuple
    assert len(store) == 4 * 2 + 1
    assert batches(pipe) == [4, 4]


# -- store failures --------------------------------------------------------------------------


def test_closed_drops_what_needs_the_store_and_forwards_the_rest() -> None:
    store = FlakyStore()
    pipe = pipeline(store)
    store.down = True
    verdicts = pipe.process_batch(
        [(syn(1), DP, VM1, None, 1.0), (arp(), DP, VM1, None, 1.0), (udp(2), DP, VM1, None, 1.0)]
    )
    assert [v.drops for v in verdicts] == [
        [DropReason.STATE_UNAVAILABLE],
        [],
        [DropReason.STATE_UNAVAILABLE],
    ]
    assert [len(v.outputs) for v in verdicts] == [0, 1, 0]
    assert pipe.drop_counts == {DropReason.STATE_UNAVAILABLE: 2}
    assert [v.cacheable for v in verdicts] == [False, True, False]
    failed = verdicts[0].ct[0]
    assert isinstance(failed, CtResult)
    assert failed.unavailable
    store.down = False
    assert len(pipe.process(syn(1), DP, VM1, 2.0).outputs) == 1  # back: the SYN passes


def test_open_lets_new_connections_pass_without_committing() -> None:
    store = FlakyStore()
    pipe = pipeline(store, fail="open")
    store.down = True
    verdicts = pipe.process_batch([(syn(1 + i), DP, VM1, None, 1.0) for i in range(3)])
    assert [len(v.outputs) for v in verdicts] == [1, 1, 1]
    assert all(v.drops == [] and not v.cacheable for v in verdicts)
    result = verdicts[0].ct[0]
    assert isinstance(result, CtResult)
    assert result.state == CT_TRK | CT_EST
    assert result.entry is None
    assert len(store) == 0  # nothing was committed
    store.down = False
    again = pipe.process(syn(1), DP, VM1, 2.0)
    assert len(again.outputs) == 1
    assert again.cacheable
    assert len(store) == 2  # now it is tracked: primary and mirror


def test_open_still_drops_packets_that_need_a_nat_binding() -> None:
    store = FlakyStore()
    pipe = pipeline(store, first=A.CtSnat(SNAT_IP, port_range=(1024, 65535)), fail="open")
    store.down = True
    verdict = pipe.process(syn(1), DP, VM1, 1.0)
    assert verdict.drops == [DropReason.STATE_UNAVAILABLE]
    assert verdict.outputs == []


def test_a_store_lost_between_steps_fails_only_the_waiting_packets() -> None:
    """The lookups succeed, the commit's round trip fails: new connections drop (closed)."""
    store = FlakyStore()
    pipe = pipeline(store)
    store.fail_after = 1  # the ct_next get_many works, the ct_commit step does not
    verdicts = pipe.process_batch([(syn(1), DP, VM1, None, 1.0), (syn(2), DP, VM1, None, 1.0)])
    assert [v.drops for v in verdicts] == [[DropReason.STATE_UNAVAILABLE]] * 2
    assert [len(v.ct) for v in verdicts] == [2, 2]  # ct_next's result, then the failed commit


class RaisingTracker:
    """A conntracker without ct_batch whose store is gone: the one-call path."""

    def ct_next(self, zone: int, key: list[int], now: float, related: object = None) -> int:
        raise StateStoreUnavailable("gone")

    def ct_commit(self, zone: int, key: list[int], now: float, mark: int | None) -> None:
        raise StateStoreUnavailable("gone")

    def ct_nat(self, zone: int, key: list[int], now: float, action: object) -> None:
        raise StateStoreUnavailable("gone")

    def ct_lb(self, zone: int, key: list[int], now: float, action: object) -> bool:
        raise StateStoreUnavailable("gone")


def test_a_one_call_tracker_that_raises_fails_closed() -> None:
    base = pipeline(MemoryStore())
    pipe = Pipeline(base.classifier, base.topology, RaisingTracker())
    verdicts = pipe.process_batch([(syn(1), DP, VM1, None, 1.0), (arp(), DP, VM1, None, 1.0)])
    assert [v.drops for v in verdicts] == [[DropReason.STATE_UNAVAILABLE], []]


@pytest.mark.parametrize("fail", ["sideways", ""])
def test_the_policy_is_closed_or_open(fail: str) -> None:
    with pytest.raises(ValueError, match="closed or open"):
        Conntrack(MemoryStore(), fail=fail)
    with pytest.raises(ValueError, match="closed or open"):
        FlowKeyConntrack(Conntrack(MemoryStore()), fail=fail)
