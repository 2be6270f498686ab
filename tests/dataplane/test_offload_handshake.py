"""The client's first ACK predicted at the SYN-ACK (``offload/handshake.py``) against the
slow path itself: through the pipeline tests' cloud (SNAT to the outside, routing between
two networks with security groups, switching), the predicted outcome applied to the
real ACK the client then sends (other sequence numbers, options, payload, a FIN) gives
byte for byte the frame the pipeline sends for it, on the same port; the prediction
writes nothing to the real conntrack store, and refuses when the records are not the
handshake's."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from netvirt.compiler.translate import topology
from netvirt.dataplane.fastpath import Entry, frame_key
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.nf.codec import CtState, decode
from netvirt.dataplane.offload.handshake import (
    Handshakes,
    Syn,
    SynMemo,
    ack_half,
    ack_of,
    predict,
    records_of,
)
from netvirt.dataplane.pipeline import Pipeline, Verdict
from netvirt.state.memory import MemoryStore
from pipeline.conftest import OUTSIDE_IP, World, gateway_ip, world  # noqa: F401

# client, its router port (None: switched), server, the server's router port
PATHS = {
    "snat": ("vm3", "r1-db", "outside", "r1-gw"),
    "routed": ("vm1", "r1-web", "vm3", "r1-db"),
    "switched": ("vm1", None, "vm2", None),
}
ACK_FLAGS = ("A", "PA", "FA", "FPA")


class _Run:
    """A pipeline and conntrack of one test, with the world's names."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.ct = Conntrack(MemoryStore())
        self.pipeline = Pipeline(w.classifier, topology(w.sb), FlowKeyConntrack(self.ct))
        self.now = 1.0

    def send(self, port: str, frame: bytes) -> Verdict:
        binding = self.w.binding(port)
        self.now += 0.01
        return self.pipeline.process(frame, binding.datapath, binding.key, self.now)

    def where(self, port: str) -> tuple[int, int]:
        binding = self.w.binding(port)
        return binding.datapath, binding.key

    def iface_of(self, where: tuple[int, int]) -> str | None:
        names = self.w.names()
        for port_id, binding in self.w.sb.ports.items():
            if (binding.datapath, binding.key) == where:
                return names.get(port_id, port_id)
        return None

    def records(self, group: frozenset[Any]) -> list[tuple[int, bytes] | None]:
        found = []
        for zone, orig, _serial in group:
            raw = self.ct.store.get(self.ct.key(zone, orig))
            found.append(None if raw is None else (raw.version, raw.value))
        return found


def _ip_of(w: World, name: str) -> str:
    return OUTSIDE_IP if name == "outside" else w.ip(name)


def _handshake(
    run: _Run, path: str, sport: int, dport: int, options: list[Any]
) -> tuple[bytes, Verdict, Verdict]:
    """SYN and SYN-ACK through the pipeline: the SYN frame and both verdicts."""
    w = run.w
    client, crouter, server, srouter = PATHS[path]
    dst_mac = w.mac(crouter) if crouter else w.mac(server)
    syn = Ether(src=w.mac(client), dst=dst_mac) / IP(src=w.ip(client), dst=_ip_of(w, server))
    syn_frame = bytes(syn / TCP(sport=sport, dport=dport, flags="S", seq=1000, options=options))
    first = run.send(client, syn_frame)
    assert len(first.outputs) == 1, first.drops
    out = Ether(first.outputs[0].frame)
    back_dst = gateway_ip(w) if path == "snat" else w.ip(client)
    back_mac = w.mac(srouter) if srouter else w.mac(client)
    mac = "02:00:00:00:00:50" if server == "outside" else w.mac(server)
    reply = Ether(src=mac, dst=back_mac) / IP(src=_ip_of(w, server), dst=back_dst)
    syn_ack = reply / TCP(sport=dport, dport=out[TCP].sport, flags="SA", seq=5000, ack=1001)
    second = run.send(server, bytes(syn_ack))
    assert len(second.outputs) == 1, second.drops
    return syn_frame, first, second


def _answers(verdict: Verdict, fin: bool) -> list[tuple[object, ...]]:
    """Each conntrack result's bits, direction, tuple and record (state unless ``fin``)."""
    found = []
    for result in verdict.ct:
        entry = getattr(result, "entry", None)
        record = None if entry is None else (entry.zone, entry.orig, entry.serial, entry.mark)
        state = None if entry is None or fin else entry.state
        found.append((result.state, result.reply, result.tuple, record, state))  # type: ignore[attr-defined]
    return found


def _reply_entry(verdict: Verdict) -> Entry:
    group = records_of(verdict.ct)
    return Entry((), (), tuple((dep, 0) for dep in group), 1.0, (True,) * len(group))


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(sorted(PATHS)),
    st.integers(1024, 65535),
    st.sampled_from([22, 80, 443]),
    st.sampled_from(ACK_FLAGS),
    st.booleans(),
)
def test_the_predicted_ack_is_the_slow_paths_outcome(
    world: World,  # noqa: F811
    path: str,
    sport: int,
    dport: int,
    flags: str,
    with_options: bool,
) -> None:
    run = _Run(world)
    options = [("MSS", 1460), ("WScale", 7)] if with_options else []
    syn_frame, first, second = _handshake(run, path, sport, dport, options)
    memo = SynMemo()
    client = PATHS[path][0]
    memo.note(client, syn_frame, False, first)
    reply = _reply_entry(second)
    syn = memo.take(frozenset(dep for dep, _ in reply.deps))
    assert syn is not None  # the SYN-ACK names the SYN's records
    group = frozenset(dep for dep, _ in reply.deps)
    before = run.records(group)
    found = ack_half(syn, reply, run.pipeline, run.ct, run.where(client), run.iface_of, run.now)
    assert found is not None
    assert run.records(group) == before  # nothing written to the real store
    ack = ack_of(syn_frame, False)
    assert ack is not None
    predicted = predict(run.pipeline, run.ct, (ack, *run.where(client), None, run.now), group)
    assert predicted is not None
    (iface, covered, seeded), entry = found  # type: ignore[misc]
    assert (iface, seeded) == (client, False)
    # the real ACK: other sequence numbers and options, maybe data and a FIN
    w = world
    crouter, server = PATHS[path][1], PATHS[path][2]
    eth = Ether(src=w.mac(client), dst=w.mac(crouter) if crouter else w.mac(server))
    tcp = TCP(sport=sport, dport=dport, flags=flags, seq=1001, ack=5001)
    tcp.options = [("NOP", None), ("NOP", None), ("Timestamp", (7, 9))]
    payload = b"GET /" if "P" in flags else b""
    real = bytes(eth / IP(src=w.ip(client), dst=_ip_of(w, server)) / tcp / payload)
    tcp.flags = "A"  # (a FIN has no exact key: its connection's key is the same)
    framed = frame_key(bytes(eth / IP(src=w.ip(client), dst=_ip_of(w, server)) / tcp))
    assert framed is not None
    assert framed[0] is not None
    assert framed[0][:-2] == covered[:-2]  # the same key but for data offset and flags
    third = run.send(client, real)
    assert len(third.outputs) == 1, third.drops
    assert run.iface_of((third.outputs[0].datapath, third.outputs[0].port)) == entry.outputs[0].dest
    assert entry.outputs[0].rewrite.apply(real) == third.outputs[0].frame
    # conntrack's answers, call by call, as the slow path gave them to the real ACK
    assert _answers(predicted, "F" in flags) == _answers(third, "F" in flags)
    for zone, orig, _serial in group:
        raw = run.ct.store.get(run.ct.key(zone, orig))
        assert raw is not None
        state = decode(raw.value, raw.version)[0].state
        assert state in (CtState.ESTABLISHED, CtState.FIN_WAIT)


def test_no_prediction_outside_the_handshake(world: World) -> None:  # noqa: F811
    """After the real ACK the records are ESTABLISHED: nothing is predicted from them."""
    run = _Run(world)
    syn_frame, first, second = _handshake(run, "snat", 40000, 80, [])
    reply = _reply_entry(second)
    group = frozenset(dep for dep, _ in reply.deps)
    ack = ack_of(syn_frame, False)
    assert ack is not None
    item = (ack, *run.where("vm3"), None, run.now)
    assert predict(run.pipeline, run.ct, item, group) is not None  # (the check works)
    assert run.send("vm3", ack).outputs
    assert predict(run.pipeline, run.ct, item, group) is None
    assert predict(run.pipeline, run.ct, item, frozenset()) is None  # no records: none


def test_the_ack_keeps_a_valid_checksum() -> None:
    syn = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S")
    ack = ack_of(bytes(syn), False)
    assert ack is not None
    parsed = Ether(ack)
    assert parsed[TCP].flags == "A"
    want = parsed[TCP].chksum
    del parsed[TCP].chksum
    assert Ether(bytes(parsed))[TCP].chksum == want
    seeded = ack_of(bytes(syn), True)  # a seed covers no flags: left alone
    assert seeded is not None
    assert seeded[50:52] == bytes(syn)[50:52]


def test_only_an_opening_syn_is_remembered(world: World) -> None:  # noqa: F811
    run = _Run(world)
    syn_frame, first, second = _handshake(run, "snat", 40001, 80, [])
    memo = SynMemo()
    memo.note("vm3", syn_frame, False, second)  # a reply-direction verdict
    assert memo.syns == {}
    memo.note("vm3", ack_of(syn_frame, False) or b"", False, first)  # not a SYN
    assert memo.syns == {}
    memo.note("vm3", syn_frame, False, first)
    assert memo.take(records_of(first.ct)) == Syn("vm3", syn_frame, False)


def test_a_failing_prediction_costs_only_the_prediction() -> None:
    """A bug in the prediction is counted; the SYN-ACK's half stays offered (the real ACK
    completes the hand-over as before) and nothing escapes into the batch."""

    class Broken:
        def key(self, *_args: object) -> str:
            raise RuntimeError("boom")

    class Physical:
        local_ports = {"vm3": (1, 2)}
        local: dict[tuple[int, int], str] = {}

    syn = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S")
    dep = (7, "orig", 1)
    reply = Entry((), (), ((dep, 0),), 1.0, (True,))
    shakes = Handshakes(lambda: (None, Broken(), Physical()))  # type: ignore[arg-type,return-value]
    shakes.memo.syns[frozenset([dep])] = Syn("vm3", bytes(syn), False)
    offered: list[object] = []

    def half(key: object, entry: Entry) -> bool:
        offered.append(key)
        return True

    shakes.learned(half, ("k", reply), "vm-x", b"", False, Verdict())
    assert offered == ["k"]
    assert shakes.stats()["errors"] == 1


def test_past_its_limit_the_memo_drops_its_oldest_syns() -> None:
    """SYNs whose SYN-ACK never comes age out oldest first; a retransmitted SYN counts as
    new; the SYNs still waiting for a live server are kept."""
    syn = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S"))

    def verdict(n: int) -> Any:
        entry = SimpleNamespace(zone=1, orig=n, serial=1)
        return SimpleNamespace(outputs=[("vm9", syn)], drops=[], ct=[SimpleNamespace(entry=entry)])

    memo = SynMemo(limit=3)
    memo.note("vm3", syn, False, verdict(0))
    memo.note("vm3", syn, False, verdict(1))
    memo.note("vm3", syn, False, verdict(0))  # retransmitted: now the newest
    memo.note("vm3", syn, False, verdict(2))
    memo.note("vm3", syn, False, verdict(3))  # over the limit: 1, the oldest, goes
    assert sorted(next(iter(group))[1] for group in memo.syns) == [0, 2, 3]
    assert memo.take(records_of(verdict(1).ct)) is None
    assert memo.take(records_of(verdict(0).ct)) == Syn("vm3", syn, False)
