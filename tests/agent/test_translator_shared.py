"""The translator expands a match object shared by many flows once: same rules as alone.

Flows of different switches holding the very same match object (an address set, as
the decoder and the compiler share them) get their rules from one expansion, each
restricted to its own datapath; the shared expansion is revalidated like the per-flow
cache when a port it resolved gets another key. Rules keep their hash through
pickling to another process (the datapath's): it is made again there.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

from netvirt.agent.physical import FlowTranslator
from netvirt.compiler.expr.ast import Cmp, Value, conj, port
from netvirt.compiler.lflow import LogicalFlow, Provenance
from netvirt.compiler.stages import stage
from netvirt.compiler.translate import all_rules, flow_rules
from netvirt.dataplane.actions import Next
from netvirt.dataplane.flow import Rule, exact
from netvirt.southbound.model import Datapath, PortBinding, SBState

PROV = Provenance("test", "port", "x", "")


def state() -> tuple[SBState, list[LogicalFlow]]:
    ports = {
        "p": PortBinding("p", 3, 1, "vif", 0x0A0000000001, ("10.0.0.5/24",)),
        "q": PortBinding("q", 4, 2, "vif", 0x0A0000000002, ("10.0.0.6/24",)),
    }
    addresses = Cmp("ip4.src", "==", (Value(0x0A000001), Value(0x0A000002), Value(0x0A000003)))
    with_port = conj(Cmp("inport", "==", (port("p"),)), Cmp("ip4.dst", "==", (Value(7),)))
    flows = [
        LogicalFlow(dp, stage(st), 100, match, (Next(),), PROV)
        for dp in (1, 2)
        for st, match in (("ls_out_acl_sets", addresses), ("ls_in_acl", with_port))
    ]
    dps = {dp: Datapath(dp, "switch", f"net{dp}", "proj") for dp in (1, 2)}
    return SBState(1, dps, ports, {}, flows), flows


def alone(sb: SBState, flows: list[LogicalFlow]) -> list[Rule]:
    return list(dict.fromkeys(all_rules(sb, flows)))


def test_shared_match_gives_each_datapath_its_own_rules() -> None:
    sb, flows = state()
    rules = FlowTranslator().rules(flows, sb, [])
    assert rules == alone(sb, flows)
    shared = [r for r in rules if r.table == stage("ls_out_acl_sets").table]
    assert {m.value for r in shared for m in r.match if m.field == "metadata"} == {1, 2}
    assert len(shared) == 6  # three addresses in each of the two switches


def test_shared_expansion_is_revalidated_when_a_port_key_changes() -> None:
    sb, flows = state()
    translator = FlowTranslator()
    before = translator.rules(flows, sb, [])
    sb.ports["p"] = replace(sb.ports["p"], key=9)
    after = translator.rules(flows, sb, [])
    assert after == alone(sb, flows)
    assert after != before
    assert exact("inport", 9) in {m for r in after for m in r.match}


def test_rules_of_a_flow_keep_the_metadata_in_field_order() -> None:
    sb, flows = state()
    for flow in flows:
        for rule in flow_rules(flow, sb):
            assert [m.field for m in rule.match] == sorted(m.field for m in rule.match)


def test_a_rule_is_hashed_again_after_pickling() -> None:
    sb, flows = state()
    rule = flow_rules(flows[0], sb)[0]
    object.__setattr__(rule, "_hash", 12345)  # as if made in a process with other seeds
    back = pickle.loads(pickle.dumps(rule))
    fresh = Rule(rule.table, rule.priority, rule.match, rule.actions)
    assert back == rule
    assert hash(back) == hash(fresh) != 12345
