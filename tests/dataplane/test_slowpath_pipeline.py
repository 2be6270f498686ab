"""Differential: the slow path's shortcuts (compiled action programs, the metadata-
partitioned lookup) give exactly the verdicts of the plain walk — every rule's actions
through ``Pipeline._execute``, the full classifier search — on random traffic through the
pipeline tests' cloud (switching, routing, SNAT, floating IPs, a load balancer, ARP, ICMP
errors), one packet at a time (traced: the traces are equal too) and in batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from netvirt.compiler.translate import topology
from netvirt.dataplane import actions as A  # noqa: N812
from netvirt.dataplane.actions import YIELD, Program, compile_program
from netvirt.dataplane.classifier import Classifier, Wildcards
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import FIELDS, F, field
from netvirt.dataplane.flow import Rule
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.packet import parse_packet
from netvirt.dataplane.pipeline import Pipeline, Topology, Verdict, _Ctx
from netvirt.state.memory import MemoryStore
from pipeline.conftest import OUTSIDE_IP, VIP, World, gateway_ip, world  # noqa: F401

SENDERS = ("vm1", "vm2", "www", "vm3", "outside", "bob-vm")
TCP_FLAGS = ("S", "SA", "A", "PA", "FA", "R")


class FullSearch:
    """The classifier seen through ``lookup`` alone, with wildcards recorded: the full
    tuple-space search instead of the key's metadata partition."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def lookup(self, table: int, key: list[int]) -> Rule | None:
        return self.classifier.lookup(table, key, Wildcards())


class PlainPipeline(Pipeline):
    """Every rule's actions through the generic ``_execute``, as before the programs."""

    def _compile(self, rule: Rule, table: int) -> tuple[Rule, int, Program, None]:
        return rule, table, None, None


def pipelines(w: World) -> list[Pipeline]:
    def conntrack() -> FlowKeyConntrack:
        return FlowKeyConntrack(Conntrack(MemoryStore()))

    return [
        Pipeline(w.classifier, topology(w.sb), conntrack()),
        PlainPipeline(FullSearch(w.classifier), topology(w.sb), conntrack()),
    ]


def destinations(w: World) -> list[str]:
    names = ("vm1", "vm2", "www", "vm3", "m1", "outside", "bob-vm", "r1-web", "r1-db")
    return [w.ip(n) for n in names] + [w.fip, VIP, OUTSIDE_IP, gateway_ip(w), "198.51.100.7"]


def frame(w: World, sender: str, draw: Any) -> bytes:
    """A frame from ``sender`` to its router (or a neighbour, or anywhere on L2)."""
    src_ip = w.ip(sender)
    router = {"vm3": "r1-db", "outside": "r1-gw", "bob-vm": "r2-bnet"}.get(sender, "r1-web")
    dst_mac = draw(st.sampled_from([w.mac(router), w.mac("vm2"), "ff:ff:ff:ff:ff:ff"]))
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "arp"]))
    dst_ip = draw(st.sampled_from(destinations(w)))
    eth = Ether(src=w.mac(sender), dst=dst_mac)
    if kind == "arp":
        return bytes(eth / ARP(op=1, hwsrc=w.mac(sender), psrc=src_ip, pdst=dst_ip))
    ip = IP(src=src_ip, dst=dst_ip, ttl=draw(st.sampled_from([64, 1, 2])))
    sport, dport = draw(st.sampled_from([40000, 22, 80])), draw(st.sampled_from([22, 80, 8080]))
    if kind == "tcp":
        flags = draw(st.sampled_from(TCP_FLAGS))
        return bytes(eth / ip / TCP(sport=sport, dport=dport, flags=flags))
    if kind == "udp":
        return bytes(eth / ip / UDP(sport=sport, dport=dport) / b"data")
    return bytes(eth / ip / ICMP(type=draw(st.sampled_from([8, 0])), id=7) / b"ping")


def outcome(verdict: Verdict) -> tuple[object, ...]:
    return (verdict.outputs, verdict.drops, verdict.ct, verdict.cacheable)


def run_all(pipes: Sequence[Pipeline], w: World, items: list[tuple[str, bytes]]) -> None:
    now = 1.0
    for sender, data in items:
        now += 0.01
        binding = w.binding(sender)
        got = [p.process(data, binding.datapath, binding.key, now, trace=True) for p in pipes]
        assert outcome(got[0]) == outcome(got[1]), (sender, data.hex())
        assert got[0].trace == got[1].trace
    batch = [(data, w.binding(s).datapath, w.binding(s).key, None, now + 1) for s, data in items]
    fast, plain = (p.process_batch(batch) for p in pipes)
    assert [outcome(v) for v in fast] == [outcome(v) for v in plain]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_shortcuts_give_the_plain_walks_verdicts(world: World, data: st.DataObject) -> None:  # noqa: F811
    senders = data.draw(st.lists(st.sampled_from(SENDERS), min_size=1, max_size=12))
    items = [(s, frame(world, s, data.draw)) for s in senders]
    run_all(pipelines(world), world, items)


def test_a_connection_through_snat_is_the_same_both_ways(world: World) -> None:  # noqa: F811
    """A complete TCP connection from vm3 (masqueraded) to the outside and back."""
    w, gw = world, gateway_ip(world)
    pipes = pipelines(w)
    out_eth = Ether(src=w.mac("vm3"), dst=w.mac("r1-db"))
    back_eth = Ether(src=w.mac("outside"), dst=w.mac("r1-gw"))
    first = out_eth / IP(src=w.ip("vm3"), dst=OUTSIDE_IP) / TCP(sport=41000, dport=80, flags="S")
    syn = [
        p.process(bytes(first), w.binding("vm3").datapath, w.binding("vm3").key, 1.0) for p in pipes
    ]
    assert outcome(syn[0]) == outcome(syn[1])
    assert [e.port_name for e in syn[0].outputs] == [w.ids["outside"]]
    nat_port = Ether(syn[0].outputs[0].frame)[TCP].sport
    items: list[tuple[str, bytes]] = []
    for flags, sender in (("SA", "outside"), ("A", "vm3"), ("FA", "vm3"), ("FA", "outside")):
        if sender == "vm3":
            pkt = out_eth / IP(src=w.ip("vm3"), dst=OUTSIDE_IP) / TCP(sport=41000, dport=80)
        else:
            pkt = back_eth / IP(src=OUTSIDE_IP, dst=gw) / TCP(sport=80, dport=nat_port)
        pkt[TCP].flags = flags
        items.append((sender, bytes(pkt)))
    run_all(pipes, w, items)


# ---------------------------------------------------------------- programs, action by action

_EXPERIMENTAL_FRAME = bytes(12) + b"\x88\xb5" + bytes(46)  # any frame: the key is made up
_SAME_WIDTH = (
    ("ip4.src", "ip4.dst"),
    ("reg0", "reg1"),
    ("eth.src", "eth.dst"),
    ("tp.src", "tp.dst"),
)


@st.composite
def plain_actions(draw: st.DrawFn) -> object:
    """One action that never waits (what a compiled program runs itself)."""
    kind = draw(st.sampled_from(["set", "masked", "move", "xchg", "ttl", "misc", "end"]))
    pair = draw(st.sampled_from(_SAME_WIDTH))
    name = pair[0]
    width = field(name).full_mask
    if kind == "set":
        return A.SetField(name, draw(st.integers(0, width)))
    if kind == "masked":
        mask = draw(st.integers(0, width))
        return A.SetField(name, draw(st.integers(0, width)) & mask, mask)
    if kind == "move":
        return A.Move(*pair[:: draw(st.sampled_from([1, -1]))])
    if kind == "xchg":
        return A.Exchange(*pair)
    if kind == "ttl":
        return A.DecTTL()
    if kind == "misc":
        return draw(
            st.sampled_from([A.CtClear(), A.PutMacBinding(), A.LookupMacBinding(), A.SelectEcmp(3)])
        )
    return draw(
        st.sampled_from(
            [A.Next(), A.Next(7), A.Drop(DropReason.ACL_DENY), A.SelectEcmp(0), A.Output()]
        )
    )


@settings(max_examples=200, deadline=None)
@given(
    acts=st.lists(plain_actions(), min_size=1, max_size=6),
    ttl=st.integers(0, 3),
    last=st.sampled_from([None, 3]),
    noise=st.integers(0, 2**64 - 1),
)
def test_compiled_programs_do_what_execute_does(
    acts: list[object], ttl: int, last: int | None, noise: int
) -> None:
    """Every plain action, in any order, on any key: the compiled program (a jump, ops run by
    ``_run_plain``, or an ``output`` ending them) leaves the key, the drops, the learned
    bindings and the next table exactly as ``_execute`` does."""
    results = []
    for compiled in (True, False):
        topo = Topology(kinds={1: "switch"}, next_table=lambda t: last)
        pipe = Pipeline(Classifier(), topo, FlowKeyConntrack(Conntrack(MemoryStore())))
        key = [(noise * (f.index + 3) * 0x9E3779B97F4A7C15 >> 9) & f.full_mask for f in FIELDS]
        key[F("metadata")], key[F("ip.ttl")], key[F("eth.type")] = 1, ttl, 0x0806
        verdict = Verdict()
        ctx = _Ctx(parse_packet(_EXPERIMENTAL_FRAME), list(key), verdict, 1.0)
        program = compile_program(acts, 2, topo.next_table) if compiled else None
        if program is None or not compiled:
            walk = pipe._execute(ctx, key, acts, 2)
        elif type(program) is int:
            walk, outcome_table = None, program
        else:
            ops: Any = program
            following = pipe._run_plain(ctx, key, ops, 2)
            if following == YIELD:  # a final output: what _execute does from here on
                walk = pipe._execute(ctx, key, acts[-1:], 2)
            else:
                walk, outcome_table = None, following
        if walk is not None:
            try:
                next(walk)
                raise AssertionError("a plain action waited")
            except StopIteration as stop:
                outcome_table = stop.value
        results.append((key, outcome_table, verdict.drops, verdict.cacheable, topo.mac_bindings))
    assert results[0] == results[1]
