"""The SB wire format: compiled states and deltas survive JSON unchanged in meaning."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Api
from netvirt.compiler.expr.ast import Cmp
from netvirt.compiler.lflow import LogicalFlow, Provenance
from netvirt.compiler.translate import all_rules
from netvirt.dataplane.actions import SetField
from netvirt.northbound.db import Database
from netvirt.southbound import codec
from netvirt.southbound.diff import apply, diff
from netvirt.southbound.model import (
    Chassis,
    MacBinding,
    SBState,
)
from netvirt.southbound.source import SBDelta
from southbound.topo import compile_db, small_state, tenant


def over_json(data: dict[str, Any]) -> dict[str, Any]:
    """What the peer receives: the document through real JSON text."""
    out: dict[str, Any] = json.loads(json.dumps(data))
    return out


def provenances(sb: SBState) -> list[Provenance]:
    return [f.provenance for f in sb.flows]


def rule_view(sb: SBState) -> list[tuple[object, ...]]:
    return [(r.table, r.priority, r.match, r.actions) for r in all_rules(sb)]


@pytest.fixture
def compiled(db: Database, admin: Api, alice: Api) -> SBState:
    tenant(admin, alice)
    sb = compile_db(db)
    sb.chassis["hv1"] = Chassis("hv1", "geneve", "192.0.2.1")
    sb.chassis["hv2"] = Chassis("hv2", "vxlan", "2001:db8::2")
    vm = next(p for p in sb.ports.values() if p.type == "vif")
    sb.mac_bindings[(vm.name, "10.0.0.99")] = MacBinding(vm.name, "10.0.0.99", 0xFA163E000001)
    return sb


def test_compiled_state_round_trips(compiled: SBState) -> None:
    data = over_json(codec.encode_state(compiled))
    back = codec.decode_state(data)
    assert back == codec.wire_form(compiled)
    assert provenances(back) == provenances(compiled)
    # the text is a fixpoint, and a state without value spellings comes back exactly
    assert codec.encode_state(back) == data
    assert codec.decode_state(over_json(codec.encode_state(back))) == back
    # builders of every kind made it through (the tenant exercises them all)
    assert {f.provenance.builder for f in back.flows} >= {"acl", "l3", "nat", "lb", "dhcp"}


def test_decoded_flows_translate_to_the_same_datapath_rules(compiled: SBState) -> None:
    back = codec.decode_state(over_json(codec.encode_state(compiled)))
    assert rule_view(back) == rule_view(compiled)


def test_port_keys_come_back_with_the_names(compiled: SBState) -> None:
    back = codec.decode_state(over_json(codec.encode_state(compiled)))
    inports = [
        v
        for f in back.flows
        if isinstance(f.match, Cmp) and f.match.symbol == "inport"
        for v in f.match.values
    ]
    assert inports
    for value in inports:
        assert value.text is not None
        assert value.value == back.port_key(value.text) != 0


def test_wire_format_is_compact_text() -> None:
    sb = small_state(key_a=5)
    data = codec.encode_state(sb)
    row = data["flows"]["rows"][0]
    assert row == [
        1,
        "ls_in_l2_lkup",
        50,
        'inport == "a" && eth.dst == fa:16:3e:00:00:02',
        'outport = "b"; output;',
        "l2",
        "port",
        "b",
        "",
    ]
    assert data["flows"]["ports"] == {"1": {"a": 5, "b": 6}}
    assert data["ports"][0]["mac"] == "fa:16:3e:00:00:01"


def test_delta_decodes_removed_flows_with_their_old_keys() -> None:
    """A port whose key changed: the removed flow and its re-added twin print the
    same text; each must decode to the flow the agent holds or will hold."""
    old, new = small_state(key_a=5, generation=1), small_state(key_a=7, generation=2)
    delta = diff(old, new)
    assert len(delta.flows_removed) == len(delta.flows) == 1
    data = over_json(codec.encode_delta(delta, old, new))
    assert data["flows_removed"]["rows"] == data["flows"]["rows"]
    back = codec.decode_delta(data)
    assert back == delta
    assert apply(old, back) == new


def test_compiled_delta_round_trips(db: Database, admin: Api, alice: Api) -> None:
    objs = tenant(admin, alice)
    old = compile_db(db)
    alice.ok("DELETE", f"/v2.0/ports/{objs['vm2']['id']}")
    alice.ok("POST", "/v2.0/ports", {"port": {"network_id": objs["net"]["id"], "name": "vm3"}})
    new = compile_db(db)
    delta = diff(old, new)
    assert delta.flows
    assert delta.flows_removed
    assert delta.ports_removed
    back = codec.decode(over_json(codec.encode_delta(delta, old, new)))
    assert isinstance(back, SBDelta)
    mirror = codec.decode_state(over_json(codec.encode_state(old)))
    moved = apply(mirror, back)
    assert moved == codec.wire_form(new)
    assert provenances(moved) == provenances(new)


def test_action_port_without_a_name_travels_as_its_key() -> None:
    sb = small_state(key_a=5)
    flow = sb.flows[0]
    sb.flows = [
        LogicalFlow(1, flow.stage, 40, flow.match, (SetField("outport", 99),), flow.provenance)
    ]
    data = codec.encode_state(sb)
    assert data["flows"]["rows"][0][4] == "outport = 99;"
    assert codec.decode_state(over_json(data)) == codec.wire_form(sb)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("flows", "rows", 0, 3), "inport == "),
        (("flows", "rows", 0, 1), "no_such_stage"),
        (("flows", "ports", "1"), {"b": 6}),
        (("ports", 0, "mac"), "fa:16:3e"),
        (("ports", 0, "type"), "tunnel"),
        (("datapaths", 0, "kind"), "bridge"),
        (("format",), 99),
    ],
)
def test_bad_documents_raise_codec_errors(path: tuple[Any, ...], value: Any) -> None:
    data = over_json(codec.encode_state(small_state(key_a=5)))
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(codec.CodecError):
        codec.decode_state(data)


def test_missing_fields_raise_codec_errors() -> None:
    data = over_json(codec.encode_state(small_state(key_a=5)))
    del data["ports"][0]["key"]
    with pytest.raises(codec.CodecError, match="malformed"):
        codec.decode_state(data)
    with pytest.raises(codec.CodecError):
        codec.decode_delta({"format": 1, "kind": "delta", "base": 1})
