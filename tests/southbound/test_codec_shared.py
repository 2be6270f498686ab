"""Decoding a flow block parses each distinct text once: the result must not change.

A match text repeated across datapaths decodes to one shared object (the agent's
translator expands it once); an action text is reused only where every port name
it resolved means the same key in the row's datapath.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netvirt.compiler.expr.actions_text import parse_actions
from netvirt.compiler.expr.parser import parse_match
from netvirt.compiler.lflow import LogicalFlow
from netvirt.compiler.stages import stage
from netvirt.southbound import codec

MATCHES = ("ip4.src == {10.0.0.1, 10.0.0.2}", 'inport == "a"', "ip4 && tcp.dst == 22", "1")
ACTIONS = ('outport = "a"; output;', "next;", 'outport = "b"; output;')


def reference(block: dict[str, Any]) -> list[tuple[object, ...]]:
    """Each row decoded on its own, without any sharing (the codec's meaning)."""
    out = []
    for dp, st_name, prio, match, actions, *_ in block["rows"]:
        names = block["ports"][str(dp)]
        expr = codec._with_keys(parse_match(match), names.__getitem__)
        out.append((dp, stage(st_name), prio, expr, parse_actions(actions, names.__getitem__)))
    return out


def view(flows: list[LogicalFlow]) -> list[tuple[object, ...]]:
    return [(f.datapath, f.stage, f.priority, f.match, f.actions) for f in flows]


rows = st.lists(
    st.tuples(st.sampled_from([1, 2, 3]), st.sampled_from(MATCHES), st.sampled_from(ACTIONS)),
    min_size=1,
    max_size=12,
)
# per datapath, the keys of ports "a" and "b": the same name means different keys
keys = st.lists(st.integers(1, 4), min_size=6, max_size=6)


@settings(max_examples=60, deadline=None)
@given(rows, keys)
def test_shared_decoding_equals_decoding_each_row(
    picked: list[tuple[int, str, str]], k: list[int]
) -> None:
    ports = {str(dp): {"a": k[2 * i], "b": k[2 * i + 1]} for i, dp in enumerate((1, 2, 3))}
    block = {
        "rows": [
            [dp, "ls_in_acl", 100, match, actions, "b", "port", "x", ""]
            for dp, match, actions in picked
        ],
        "ports": ports,
    }
    assert view(codec.decode_flows(block)) == reference(block)


def test_a_repeated_match_without_ports_is_one_object() -> None:
    text = "ip4.src == {10.0.0.1, 10.0.0.2}"
    block = {
        "rows": [[dp, "ls_out_acl", 100, text, "next;", "b", "", "", ""] for dp in (1, 2, 3)],
        "ports": {},
    }
    flows = codec.decode_flows(block)
    assert flows[0].match is flows[1].match is flows[2].match


def test_an_action_text_is_resolved_in_each_datapath() -> None:
    block = {
        "rows": [
            [dp, "ls_in_l2_lkup", 50, "1", 'outport = "a"; output;', "b", "", "", ""]
            for dp in (1, 2)
        ],
        "ports": {"1": {"a": 3}, "2": {"a": 4}},
    }
    first, second = codec.decode_flows(block)
    assert first.actions != second.actions
    assert second.actions == parse_actions('outport = "a"; output;', {"a": 4}.__getitem__)
