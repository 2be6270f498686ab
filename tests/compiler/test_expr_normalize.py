"""Normalization to classifier matches, checked against the AST evaluator (the oracle)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from compiler.expr_strategies import PORTS, boundary_keys, keys, semantic_exprs
from netvirt.compiler.expr.ast import BoolSym, Cmp, Expr, Value
from netvirt.compiler.expr.normalize import (
    ExpansionError,
    ExprError,
    evaluate,
    prefix_cover,
    to_matches,
)
from netvirt.compiler.expr.parser import parse_match
from netvirt.compiler.expr.symbols import SYMBOLS, lookup, prerequisite_chain
from netvirt.dataplane import fields as fl
from netvirt.dataplane.flow import FieldMatch, exact

IP4 = exact("eth.type", 0x800)
IP6 = exact("eth.type", 0x86DD)
TCP = exact("ip.proto", 6)


def dnf(text: str) -> list[tuple[FieldMatch, ...]]:
    return to_matches(parse_match(text), PORTS.__getitem__)


def matches(conjs: list[tuple[FieldMatch, ...]], key: Sequence[int]) -> bool:
    return any(all(m.matches(key) for m in conj) for conj in conjs)


def key_with(**values: int) -> list[int]:
    key = fl.new_key()
    for name, value in values.items():
        key[fl.F(name.replace("__", "."))] = value
    return key


# ---------------------------------------------------------------- examples


def test_constants() -> None:
    assert dnf("1") == [()]
    assert dnf("0") == []
    assert dnf("!0") == [()]


def test_prerequisites_are_added_once_per_symbol() -> None:
    assert dnf("tcp.src == 1 && tcp.dst == 2") == [
        (IP4, TCP, exact("tp.src", 1), exact("tp.dst", 2)),
        (IP6, TCP, exact("tp.src", 1), exact("tp.dst", 2)),
    ]
    assert dnf("ip4.src == 10.0.0.0/8 && tcp.dst == 22 && ip4") == [
        (IP4, TCP, FieldMatch("ip4.src", 0x0A000000, 0xFF000000), exact("tp.dst", 22))
    ]


def test_contradictions_are_dropped_and_compatible_matches_merged() -> None:
    assert dnf("tcp.dst == 1 && tcp.dst == 2") == []
    assert dnf("tcp && udp") == []
    assert dnf("ip4 && ip6.src == ::1") == []
    assert dnf("reg1 == 0x10/0xf0 && reg1 == 0x1/0xf") == [(FieldMatch("reg1", 0x11, 0xFF),)]


def test_sets_are_disjunctions_and_not_equal_sets_conjunctions() -> None:
    assert dnf('inport == {"a", "b"}') == [(exact("inport", 1),), (exact("inport", 2),)]
    not_ab = dnf('inport != {"a", "b"}')
    for port_key, expected in [(1, False), (2, False), (3, True), (0, True)]:
        assert matches(not_ab, key_with(inport=port_key)) is expected


def test_not_equal_is_single_bit_differences() -> None:
    conjs = dnf("reg1 != 0x5/0x7")
    assert conjs == [
        (FieldMatch("reg1", 0, 1),),
        (FieldMatch("reg1", 2, 2),),
        (FieldMatch("reg1", 0, 4),),
    ]
    assert dnf("reg1 != 0/0") == []


def test_negated_field_keeps_prerequisite_but_negated_predicate_is_exact() -> None:
    arp = key_with(eth__type=0x806)
    assert evaluate(parse_match("!(tcp.dst == 80)"), arp) is False
    assert matches(dnf("!(tcp.dst == 80)"), arp) is False
    assert evaluate(parse_match("!tcp"), arp) is True
    assert matches(dnf("!tcp"), arp) is True
    tcp80 = key_with(eth__type=0x800, ip__proto=6, tp__dst=80)
    assert matches(dnf("!tcp"), tcp80) is False


def test_conntrack_bits_need_tracking() -> None:
    assert dnf("ct.est") == [(FieldMatch("ct_state", fl.CT_TRK | fl.CT_EST, 0x22),)]
    assert dnf("!ct.est") == [(FieldMatch("ct_state", fl.CT_TRK, 0x22),)]
    assert dnf("!ct.trk") == [(FieldMatch("ct_state", 0, fl.CT_TRK),)]
    untracked = key_with(ct_state=0)
    assert evaluate(parse_match("!ct.est"), untracked) is False


def test_flags_and_mac_bits() -> None:
    assert dnf("flags.loopback") == [(FieldMatch("flags", 1, 1),)]
    assert dnf("eth.mcast") == [(FieldMatch("eth.dst", 1 << 40, 1 << 40),)]
    assert dnf("eth.bcast") == [(exact("eth.dst", (1 << 48) - 1),)]


def test_nd_predicates() -> None:
    (conj,) = dnf("nd_ns")
    assert set(conj) == {IP6, exact("ip.proto", 58), exact("icmp.type", 135)} | {
        exact("icmp.code", 0),
        exact("ip.ttl", 255),
    }
    assert len(dnf("nd")) == 2
    assert len(dnf("nd.target == fd00::1")) == 2


def test_port_range_decomposition() -> None:
    conjs = dnf("tcp.dst >= 1024 && tcp.dst <= 65535 && ip4")
    ports = [c[-1] for c in conjs]
    assert ports == [
        FieldMatch("tp.dst", 0x400, 0xFC00),
        FieldMatch("tp.dst", 0x800, 0xF800),
        FieldMatch("tp.dst", 0x1000, 0xF000),
        FieldMatch("tp.dst", 0x2000, 0xE000),
        FieldMatch("tp.dst", 0x4000, 0xC000),
        FieldMatch("tp.dst", 0x8000, 0x8000),
    ]
    assert dnf("tcp.dst < 0") == []
    assert dnf("tcp.dst >= 0 && ip4") == [(IP4, TCP)]


def test_matches_are_in_flow_key_order() -> None:
    (conj,) = dnf('tcp.dst == 80 && ip4.src == 10.0.0.1 && inport == "a"')
    indexes = [fl.F(m.field) for m in conj]
    assert indexes == sorted(indexes)


def test_expansion_cap() -> None:
    with pytest.raises(ExpansionError, match="more than 10 conjunctions"):
        to_matches(parse_match("tcp.dst != 80"), limit=10)
    with pytest.raises(ExpansionError):
        to_matches(parse_match("ip6.src != ::1 && ip6.dst != ::2"))
    assert len(to_matches(parse_match("tcp.dst != 80"), limit=32)) == 32


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (BoolSym("nosuch"), "unknown symbol"),
        (BoolSym("tcp.dst"), "needs a comparison"),
        (Cmp("ip4", "==", (Value(1),)), "predicate"),
        (Cmp("tcp.dst", "==", ()), "no value"),
        (Cmp("tcp.dst", "==", (Value(1 << 16),)), "does not fit"),
        (Cmp("tcp.dst", "<", (Value(1, 1),)), "unmasked"),
        (Cmp("inport", "==", (Value(0, None, "x"),)), "resolver"),
    ],
)
def test_invalid_expressions(expr: Expr, message: str) -> None:
    with pytest.raises(ExprError, match=message):
        to_matches(expr)
    with pytest.raises(ExprError, match=message):
        evaluate(expr, fl.new_key())


def test_every_symbol_normalizes_with_its_prerequisites() -> None:
    for sym in SYMBOLS.values():
        expr = BoolSym(sym.name) if sym.is_boolean else Cmp(sym.name, "==", (Value(1),))
        conjs = to_matches(expr, lambda name: 1)
        assert conjs, sym.name
        chain = prerequisite_chain(sym.name)
        for conj in conjs:
            key = fl.new_key()
            for m in conj:
                key[fl.F(m.field)] = m.value
            assert evaluate(expr, key, lambda name: 1), sym.name
            for prereq in chain:
                assert evaluate(BoolSym(prereq), key), (sym.name, prereq)


def test_prerequisites_are_boolean_and_acyclic() -> None:
    for sym in SYMBOLS.values():
        for name in prerequisite_chain(sym.name):
            assert lookup(name).is_boolean
        if sym.field is not None:
            spec = fl.field(sym.field)
            assert sym.shift + sym.width <= spec.width


# ---------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(semantic_exprs, st.lists(keys(), min_size=1, max_size=3))
def test_dnf_equals_evaluator(expr: Expr, flow_keys: list[list[int]]) -> None:
    try:
        conjs = to_matches(expr, PORTS.__getitem__, limit=512)
    except ExpansionError:
        assume(False)
        return
    for key in boundary_keys(expr, flow_keys):
        assert evaluate(expr, key, PORTS.__getitem__) == matches(conjs, key)
    for conj in conjs:  # every conjunction is satisfiable and implies the expression
        key = fl.new_key()
        for m in conj:
            key[fl.F(m.field)] = m.value
        assert evaluate(expr, key, PORTS.__getitem__)


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int, int, int]:
    width = draw(st.sampled_from([1, 2, 3, 8, 12, 16, 32]))
    top = (1 << width) - 1
    lo = draw(st.integers(0, top))
    hi = draw(st.integers(0, top))
    value = draw(st.one_of(st.integers(0, top), st.sampled_from([lo, hi, lo - 1, hi + 1])))
    return width, lo, hi, value & top


@given(ranges())
def test_prefix_cover_is_exact(r: tuple[int, int, int, int]) -> None:
    width, lo, hi, value = r
    cover = prefix_cover(lo, hi, width)
    hits = [(p, m) for p, m in cover if value & m == p]
    assert bool(hits) == (lo <= value <= hi)
    assert len(hits) <= 1  # the prefixes are disjoint
    assert len(cover) <= max(1, 2 * width - 2)
