"""Bindings, relevant datapaths, the per-host topology, claims and tunnel codecs (no API)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

from compiler.conftest import NBBuilder, make_id
from netvirt.agent.bindings import Claims, bind
from netvirt.agent.physical import (
    FlowTranslator,
    Remote,
    compute,
    decapsulate,
    encapsulate,
    relevant_datapaths,
)
from netvirt.compiler.compile import compile_nb
from netvirt.compiler.translate import all_rules
from netvirt.dataplane.classifier import Classifier
from netvirt.dataplane.drops import DropReason, ParseError
from netvirt.dataplane.headers.geneve import GeneveHeader, GeneveOption, netvirt_header
from netvirt.dataplane.nf import Conntrack, FlowKeyConntrack
from netvirt.dataplane.pipeline import Pipeline
from netvirt.southbound.model import Chassis, SBState
from netvirt.state.memory import MemoryStore

CHASSIS = {
    "hostA": Chassis("hostA", "geneve", "192.0.2.1"),
    "hostB": Chassis("hostB", "vxlan", "192.0.2.2"),
}


@pytest.fixture
def sb() -> SBState:
    """net1: a (hostA), b (hostB), u (nowhere), g (unregistered chassis); net2: c (hostB)
    behind router r1; net3: e (hostB) alone; bob's bnet: bob (hostB)."""
    nbb = NBBuilder()
    net1, net2, net3 = nbb.network("net1", 101), nbb.network("net2", 102), nbb.network("net3", 103)
    s1 = nbb.subnet(net1, "s1", "10.0.0.0/24")
    s2 = nbb.subnet(net2, "s2", "10.0.1.0/24")
    s3 = nbb.subnet(net3, "s3", "10.0.2.0/24")
    default = nbb.default_group()

    def on(host: str) -> dict[str, Any]:
        return {"binding:host_id": host}

    for name, host, ip in (("a", "hostA", ".10"), ("b", "hostB", ".11"), ("u", "", ".12")):
        nbb.port(net1, name, [(s1, "10.0.0" + ip)], sgs=[default], **on(host))
    nbb.port(net1, "g", [(s1, "10.0.0.13")], sgs=[default], **on("ghost"))
    nbb.port(net2, "c", [(s2, "10.0.1.10")], sgs=[default], **on("hostB"))
    nbb.port(net3, "e", [(s3, "10.0.2.10")], sgs=[default], **on("hostB"))
    router = nbb.router("r1")
    nbb.router_interface(router, net1, s1)
    nbb.router_interface(router, net2, s2)
    bnet = nbb.network("bnet", 104, project="p2")
    bs = nbb.subnet(bnet, "bs", "10.0.0.0/24")
    nbb.port(bnet, "bob", [(bs, "10.0.0.10")], **on("hostB"))
    state = compile_nb(nbb.snapshot())
    state.chassis = dict(CHASSIS)
    return state


NAMES = {make_id("port", n): n for n in ("a", "b", "u", "g", "c", "e", "bob")}


def pid(sb: SBState, name: str) -> str:
    port_id = make_id("port", name)
    assert port_id in sb.ports
    return port_id


def _name(port_id: str) -> str:
    return NAMES.get(port_id, port_id)


def test_bind_classifies_every_vif(sb: SBState) -> None:
    plugs = {"tap-a": pid(sb, "a"), "tap-b": pid(sb, "b"), "tap-z": "no-such-port"}
    b = bind(sb, "hostA", plugs)
    assert b.local == {pid(sb, "a"): "tap-a"}
    assert {_name(p): c.name for p, c in b.remote.items()} == {
        "b": "hostB",
        "c": "hostB",
        "e": "hostB",
        "bob": "hostB",
    }
    assert {_name(p): why for p, why in b.unbound.items()} == {
        "u": "not bound to any chassis",
        "g": "chassis 'ghost' is not registered",
    }
    assert set(b.ignored) == {"tap-b", "tap-z"}  # b is requested by hostB; z is unknown


def test_relevant_datapaths_follow_patch_ports(sb: SBState) -> None:
    a_only = bind(sb, "hostA", {"tap-a": pid(sb, "a")})
    router = next(k for k, dp in sb.datapaths.items() if dp.kind == "router")
    assert relevant_datapaths(sb, a_only) == {101, 102, router}
    assert relevant_datapaths(sb, bind(sb, "hostA", {})) == frozenset()
    e_host = bind(sb, "hostB", {"tap-e": pid(sb, "e")})
    assert relevant_datapaths(sb, e_host) == {103}


def test_topology_marks_local_remote_and_unbound_ports(sb: SBState) -> None:
    state = compute(sb, bind(sb, "hostA", {"tap-a": pid(sb, "a")}))
    kinds = {
        _name(info.name): info.kind
        for info in state.topology.ports.values()
        if sb.ports[info.name].type == "vif"
    }
    assert kinds == {"a": "vif", "b": "tunnel", "u": "unbound", "g": "unbound", "c": "tunnel"}
    assert set(state.topology.kinds) == state.datapaths
    flood = state.topology.groups[(101, 0x8000)]
    assert sb.ports[pid(sb, "u")].key not in flood
    assert sb.ports[pid(sb, "b")].key in flood
    b = sb.ports[pid(sb, "b")]
    assert state.remote[(101, b.key)] == Remote("hostB", "192.0.2.2", "vxlan")
    a = sb.ports[pid(sb, "a")]
    assert state.local == {(101, a.key): "tap-a"}
    assert state.local_ports == {"tap-a": (101, a.key)}
    assert state.macs == {(101, a.mac): (a.key,)}
    assert state.flood == {101: (a.key,), 102: ()}
    assert sum("not bound to any chassis" in n for n in state.notes) == 1


def test_rules_are_the_translated_flows_of_relevant_datapaths(sb: SBState) -> None:
    state = compute(sb, bind(sb, "hostA", {"tap-a": pid(sb, "a")}))
    flows = [f for f in sb.flows if f.datapath in state.datapaths]
    assert state.rules == list(dict.fromkeys(all_rules(sb, flows)))
    metadata = {m.value for r in state.rules for m in r.match if m.field == "metadata"}
    assert metadata == state.datapaths


def test_translation_cache_is_revalidated_when_a_port_key_changes(sb: SBState) -> None:
    translator = FlowTranslator()
    bindings = bind(sb, "hostA", {"tap-a": pid(sb, "a")})
    first = compute(sb, bindings, translator)
    again = compute(sb, bindings, translator)
    assert again.rules == first.rules
    assert translator.hits == translator.misses
    b = sb.ports[pid(sb, "b")]
    sb.ports[b.name] = replace(b, key=b.key + 1000)
    changed = compute(sb, bindings, translator)
    assert changed.rules == compute(sb, bindings).rules  # a fresh translator agrees
    assert changed.rules != first.rules


def test_sender_skips_egress_of_remote_ports_and_drops_unbound(sb: SBState) -> None:
    state = compute(sb, bind(sb, "hostA", {"tap-a": pid(sb, "a")}))
    classifier = Classifier()
    classifier.apply(add=state.rules)
    ct = FlowKeyConntrack(Conntrack(MemoryStore()))
    pipeline = Pipeline(classifier, state.topology, ct)
    a, b, u = (sb.ports[pid(sb, n)] for n in ("a", "b", "u"))
    frame = bytes(Ether(src=_mac(a.mac), dst=_mac(b.mac)) / IP(src="10.0.0.10", dst="10.0.0.11"))
    verdict = pipeline.process(frame, 101, a.key, 1.0, trace=True)
    assert [(e.port, e.inport, e.frame) for e in verdict.outputs] == [(b.key, a.key, frame)]
    assert verdict.trace is not None
    egress = [e for e in verdict.trace if e.kind == "stage" and e.table is not None]
    assert all(state.topology.pipeline_of(e.table) == "ingress" for e in egress)  # type: ignore[arg-type]
    to_u = bytes(Ether(src=_mac(a.mac), dst=_mac(u.mac)) / IP(src="10.0.0.10", dst="10.0.0.12"))
    verdict = pipeline.process(to_u, 101, a.key, 2.0, trace=True)
    assert verdict.outputs == []
    assert verdict.drops == [DropReason.UNKNOWN_PORT]
    assert verdict.trace is not None
    assert "bound to no known chassis" in verdict.trace[-1].detail


def test_egress_entry_runs_only_the_destination_egress(sb: SBState) -> None:
    state = compute(sb, bind(sb, "hostB", {"tap-b": pid(sb, "b")}))
    classifier = Classifier()
    classifier.apply(add=state.rules)
    pipeline = Pipeline(classifier, state.topology, FlowKeyConntrack(Conntrack(MemoryStore())))
    a, b = sb.ports[pid(sb, "a")], sb.ports[pid(sb, "b")]
    frame = bytes(
        Ether(src=_mac(a.mac), dst=_mac(b.mac)) / IP(src="10.0.0.10", dst="10.0.0.11") / ICMP()
    )
    verdict = pipeline.process_egress(frame, 101, a.key, b.key, 1.0, trace=True)
    assert [(e.port, e.frame) for e in verdict.outputs] == [(b.key, frame)]
    assert verdict.trace is not None
    stages = [e.table for e in verdict.trace if e.kind == "stage" and e.table is not None]
    assert stages
    assert all(state.topology.pipeline_of(t) == "egress" for t in stages)
    wrong_mac = Ether(src=_mac(a.mac), dst="02:00:00:00:00:01")
    spoofed = bytes(wrong_mac / IP(src="10.0.0.10", dst="10.0.0.11") / ICMP())
    verdict = pipeline.process_egress(spoofed, 101, a.key, b.key, 2.0)
    assert verdict.outputs == []
    assert verdict.drops == [DropReason.PORT_SECURITY_MAC]


def _mac(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def test_claims_report_only_changes(sb: SBState) -> None:
    claims = Claims("hostA")
    a = pid(sb, "a")
    local = bind(sb, "hostA", {"tap-a": a})
    assert claims.pending(local, sb) == [(a, True)]
    claims.confirm(a, True)
    assert claims.pending(local, sb) == []
    nothing = bind(sb, "hostA", {})
    assert claims.pending(nothing, sb) == [(a, False)]
    claims.confirm(a, False)
    assert claims.pending(nothing, sb) == []
    claims.confirm(a, True)
    sb.ports[a] = replace(sb.ports[a], requested_chassis="hostB")  # migrated away
    assert claims.pending(nothing, sb) == []  # hostB's claim is the one that counts
    claims.forget()
    plugged = bind(sb, "hostA", {"tap-a": a})
    assert claims.pending(plugged, sb) == []  # plugged, but requested elsewhere: no claim


@pytest.mark.parametrize("encap", ["geneve", "vxlan"])
def test_encapsulation_round_trips(encap: str) -> None:
    frame = bytes(Ether() / IP() / ICMP())
    payload = encapsulate(encap, 0x123456, 7, 9, frame)  # type: ignore[arg-type]
    got = decapsulate(encap, payload)  # type: ignore[arg-type]
    keys = (7, 9) if encap == "geneve" else (None, None)
    assert (got.vni, got.in_key, got.out_key, got.frame) == (0x123456, *keys, frame)


def test_geneve_without_ports_or_with_unknown_critical_option_is_refused() -> None:
    frame = bytes(Ether() / IP())
    bare = GeneveHeader(5).pack() + frame
    with pytest.raises(ParseError) as err:
        decapsulate("geneve", bare)
    assert err.value.reason is DropReason.MALFORMED_TUNNEL
    ours = netvirt_header(5, 1, 2).options
    critical = GeneveHeader(5, options=(*ours, GeneveOption(0xFFFF, 0x81, b"\0" * 4)))
    with pytest.raises(ParseError):
        decapsulate("geneve", critical.pack() + frame)
    optional = GeneveHeader(5, options=(*ours, GeneveOption(0xFFFF, 0x01, b"\0" * 4)))
    assert decapsulate("geneve", optional.pack() + frame).out_key == 2
    with pytest.raises(ParseError):
        decapsulate("geneve", b"\x00\x00")
