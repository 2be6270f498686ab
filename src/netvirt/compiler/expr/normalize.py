"""Match expressions → classifier matches (disjunctive normal form), and the reference evaluator.

Theory of operation
-------------------
Semantics (shared by :func:`to_matches` and :func:`evaluate`, which is the
oracle the tests compare it with). Negation is first pushed to the leaves (De
Morgan); at a leaf it flips the operator (``!(x == 1)`` is ``x != 1``,
``!(x < 5)`` is ``x >= 5``, ``!(x == {1, 2})`` is ``x != {1, 2}``, ``!ct.est``
is ``ct.est == 0``). A field leaf then holds when its symbol's prerequisite
holds *and* the comparison holds on the symbol's bits of the flow key — so
``tcp.dst != 80`` and ``!(tcp.dst == 80)`` match only TCP packets. A
predicate leaf (``tcp``, ``ip4``) is its expansion, and a negated predicate
its exact complement (``!tcp`` matches ARP). ``x != {a, b}`` means x differs
from every value; ranges compare the symbol's bits as an unsigned integer.

Expansion. The tree is walked with a polarity flag and turned into a list of
*terms*: a conjunction of masked field matches plus the set of prerequisite
symbols it still needs. ``==`` on a masked value is one match; ``!=`` is an OR
of single-bit differences (as OVN does); a range is its prefix cover (at most
2*width-2 masked matches), and the ranges on one symbol inside one ``&&`` are
intersected before they are covered. ``&&`` is a cross product in which
matches on the same field are merged when compatible and the product is
dropped when not; ``||`` concatenates. Prerequisites are collected, not
expanded, while walking, and expanded once per term at the end — each needed
symbol exactly once, together with what it needs in turn — so
``tcp.src == 1 && tcp.dst == 2`` expands ``tcp`` once. Finally duplicates and
terms implied by a more general term are removed.

The result is capped (:data:`MAX_CONJUNCTIONS` terms, and a bound on the merge
work) so a careless ``ip6.src != x && ip6.dst != y`` (128*128 terms) fails with
:class:`ExpansionError` instead of eating the compiler. Predicate expansions
are cached (they do not depend on the topology).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from netvirt.compiler.expr.ast import And, BoolSym, Cmp, CmpOp, Const, Expr, Not, Or, Value
from netvirt.compiler.expr.symbols import SYMBOLS, Symbol
from netvirt.dataplane.fields import BY_NAME
from netvirt.dataplane.flow import FieldMatch

MAX_CONJUNCTIONS = 4096
MAX_WORK = 2_000_000  # pairwise merges in one expansion

PortResolver = Callable[[str], int]
Atoms = dict[str, tuple[int, int]]  # field -> (value, mask); value already masked

_FLIP: dict[CmpOp, CmpOp] = {"==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">"}
_RANGE_OPS = frozenset({"<", "<=", ">", ">="})
# the evaluator compares directly (not through _interval), so it stays an independent oracle
_RELATIONS: dict[str, Callable[[int, int], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class ExprError(ValueError):
    """An expression the symbol table rejects (unknown symbol, bad operator or value)."""


class ExpansionError(ExprError):
    """The expression expands to more classifier matches than allowed."""


# --------------------------------------------------------------------------- values


def _symbol(name: str) -> Symbol:
    sym = SYMBOLS.get(name)
    if sym is None:
        raise ExprError(f"unknown symbol {name!r}")
    return sym


def _resolve(sym: Symbol, v: Value, resolve_port: PortResolver | None) -> tuple[int, int]:
    """A comparison value as (value, mask) in the symbol's own bits, checked and masked."""
    if v.text is not None and sym.kind == "port":
        if resolve_port is None:
            raise ExprError(f"port name {v.text!r} in {sym.name} needs a port resolver")
        try:
            value = resolve_port(v.text)
        except LookupError as err:
            raise ExprError(f"unknown port {v.text!r} in {sym.name}") from err
    else:
        value = v.value
    mask = sym.value_mask if v.mask is None else v.mask
    if value < 0 or value > sym.value_mask or mask < 0 or mask > sym.value_mask:
        raise ExprError(f"value {value:#x}/{mask:#x} does not fit {sym.name} ({sym.width} bits)")
    return value & mask, mask


def _leaf_values(
    sym: Symbol, op: CmpOp, values: tuple[Value, ...], resolve_port: PortResolver | None
) -> list[tuple[int, int]]:
    if sym.is_predicate:
        raise ExprError(f"{sym.name} is a predicate and cannot be compared")
    if not values:
        raise ExprError(f"comparison of {sym.name} with no value")
    resolved = [_resolve(sym, v, resolve_port) for v in values]
    if op in _RANGE_OPS and (len(values) != 1 or values[0].mask is not None):
        raise ExprError(f"{op} on {sym.name} takes one unmasked value")
    return resolved


def _interval(op: CmpOp, value: int, top: int) -> tuple[int, int]:
    """``x op value`` as the inclusive interval [lo, hi] (empty when lo > hi)."""
    if op == "<":
        return 0, value - 1
    if op == "<=":
        return 0, value
    if op == ">":
        return value + 1, top
    return value, top


def prefix_cover(lo: int, hi: int, width: int) -> list[tuple[int, int]]:
    """The fewest (value, mask) prefixes whose union is exactly [lo, hi] over ``width`` bits."""
    full = (1 << width) - 1
    lo, hi = max(lo, 0), min(hi, full)
    out: list[tuple[int, int]] = []
    while lo <= hi:
        size = (lo & -lo) if lo else 1 << width
        while size > hi - lo + 1:
            size >>= 1
        mask = full & ~(size - 1)
        out.append((lo, mask))
        lo += size
    return out


# --------------------------------------------------------------------------- the evaluator


def evaluate(expr: Expr, key: Sequence[int], resolve_port: PortResolver | None = None) -> bool:
    """Does the flow key satisfy ``expr``? Straight from the AST: the oracle for tests."""
    return _eval(expr, True, key, resolve_port)


def _eval(e: Expr, positive: bool, key: Sequence[int], rp: PortResolver | None) -> bool:
    if isinstance(e, Const):
        return e.value == positive
    if isinstance(e, Not):
        return _eval(e.term, not positive, key, rp)
    if isinstance(e, And | Or):
        results = (_eval(t, positive, key, rp) for t in e.terms)
        return all(results) if isinstance(e, And) == positive else any(results)
    if isinstance(e, BoolSym):
        sym = _symbol(e.symbol)
        if sym.expansion is not None:
            return _eval(sym.expansion, True, key, rp) == positive
        if not sym.is_boolean:
            raise ExprError(f"{sym.name} needs a comparison")
        return _eval_leaf(sym, "==" if positive else "!=", (Value(1),), key, rp)
    if isinstance(e, Cmp):
        op = e.op if positive else _FLIP[e.op]
        return _eval_leaf(_symbol(e.symbol), op, e.values, key, rp)
    raise ExprError(f"not a match expression: {e!r}")


def _eval_leaf(
    sym: Symbol,
    op: CmpOp,
    values: tuple[Value, ...],
    key: Sequence[int],
    rp: PortResolver | None,
) -> bool:
    resolved = _leaf_values(sym, op, values, rp)
    if sym.prereq is not None and not _eval(BoolSym(sym.prereq), True, key, rp):
        return False
    assert sym.field is not None
    x = (key[BY_NAME[sym.field].index] >> sym.shift) & sym.value_mask
    if op == "==":
        return any(x & m == v for v, m in resolved)
    if op == "!=":
        return all(x & m != v for v, m in resolved)
    return _RELATIONS[op](x, resolved[0][0])


# --------------------------------------------------------------------------- expansion


@dataclass(frozen=True, slots=True)
class _Term:
    atoms: Atoms  # never mutated once built
    needs: frozenset[str] = frozenset()

    def key(self) -> tuple[frozenset[tuple[str, tuple[int, int]]], frozenset[str]]:
        return frozenset(self.atoms.items()), self.needs


_TRUE = _Term({})


def _merge(a: Atoms, b: Atoms) -> Atoms | None:
    """The conjunction of two match sets, or None when they contradict."""
    out = dict(a)
    for name, (v, m) in b.items():
        cur = out.get(name)
        if cur is None:
            out[name] = (v, m)
            continue
        cv, cm = cur
        if (cv ^ v) & cm & m:
            return None
        out[name] = (cv | v, cm | m)
    return out


def _atom(sym: Symbol, value: int, mask: int) -> Atoms:
    assert sym.field is not None
    return {sym.field: (value << sym.shift, mask << sym.shift)} if mask else {}


def _bit_differences(field_name: str, value: int, mask: int) -> list[Atoms]:
    """``key[field] & mask != value`` as an OR of single-bit mismatches."""
    return [
        {field_name: (~value & (1 << b), 1 << b)}
        for b in range(BY_NAME[field_name].width)
        if mask & (1 << b)
    ]


def _implies(general: Atoms, specific: Atoms) -> bool:
    """Does every key matching ``specific`` also match ``general``?"""
    for name, (v, m) in general.items():
        other = specific.get(name)
        if other is None or m & ~other[1] or (other[0] ^ v) & m:
            return False
    return True


def _prune(terms: list[Atoms]) -> list[Atoms]:
    """Drop terms implied by another, more general term (fewer mask bits); keeps the order.

    Matches shared by every term cannot decide an implication, so they are left
    out of the pairwise checks (usually all but one or two fields).
    """
    if len(terms) < 2 or len(terms) > 1024:
        return terms
    common = frozenset.intersection(*(frozenset(t.items()) for t in terms))
    rest = [{f: vm for f, vm in t.items() if (f, vm) not in common} for t in terms]
    fields = [frozenset(t) for t in rest]
    bits = [sum(m.bit_count() for _, m in t.values()) for t in rest]
    # only a term with fewer mask bits can imply another: compare each term with those
    # alone (an address set times a port set has thousands of terms of equal width,
    # where comparing every pair was quadratic for nothing)
    order = sorted(range(len(terms)), key=bits.__getitem__)
    widths = [bits[j] for j in order]
    return [
        terms[i]
        for i in range(len(terms))
        if not any(
            fields[j] <= fields[i] and _implies(rest[j], rest[i])
            for j in order[: bisect.bisect_left(widths, bits[i])]
        )
    ]


class _Expander:
    def __init__(self, resolve_port: PortResolver | None, limit: int) -> None:
        self.resolve_port = resolve_port
        self.limit = limit
        self.work = 0

    def check(self, n: int) -> None:
        if n > self.limit:
            raise ExpansionError(
                f"match expands to more than {self.limit} conjunctions; "
                "split the flow or avoid != and ranges on wide fields"
            )

    def product(self, left: list[_Term], right: list[_Term]) -> list[_Term]:
        self.work += len(left) * len(right)
        if self.work > MAX_WORK:
            raise ExpansionError(f"match too complex to expand (over {MAX_WORK} merges)")
        out: dict[object, _Term] = {}
        for a in left:
            for b in right:
                atoms = _merge(a.atoms, b.atoms)
                if atoms is not None:
                    t = _Term(atoms, a.needs | b.needs)
                    out.setdefault(t.key(), t)
            self.check(len(out))
        return list(out.values())

    def union(self, parts: list[list[_Term]]) -> list[_Term]:
        out: dict[object, _Term] = {}
        for part in parts:
            for t in part:
                out.setdefault(t.key(), t)
        self.check(len(out))
        return list(out.values())

    def dnf(self, e: Expr, positive: bool) -> list[_Term]:
        if isinstance(e, Const):
            return [_TRUE] if e.value == positive else []
        if isinstance(e, Not):
            return self.dnf(e.term, not positive)
        if isinstance(e, And | Or):
            if isinstance(e, And) == positive:
                return self.conjunction(e.terms, positive)
            return self.union([self.dnf(t, positive) for t in e.terms])
        if isinstance(e, BoolSym):
            sym = _symbol(e.symbol)
            if sym.is_predicate:
                return [_Term(a) for a in _predicate(sym.name, positive)]
            if not sym.is_boolean:
                raise ExprError(f"{sym.name} needs a comparison")
            return self.leaf(sym, "==" if positive else "!=", (Value(1),))
        if isinstance(e, Cmp):
            return self.leaf(_symbol(e.symbol), e.op if positive else _FLIP[e.op], e.values)
        raise ExprError(f"not a match expression: {e!r}")

    def conjunction(self, terms: tuple[Expr, ...], positive: bool) -> list[_Term]:
        parts: list[list[_Term]] = []
        ranges: dict[str, tuple[int, int, int]] = {}  # symbol -> (part index, lo, hi)
        for t in terms:
            r = self.range_leaf(t, positive)
            if r is None:
                parts.append(self.dnf(t, positive))
                continue
            sym, lo, hi = r
            if sym.name in ranges:
                index, old_lo, old_hi = ranges[sym.name]
                lo, hi = max(lo, old_lo), min(hi, old_hi)
            else:
                index = len(parts)
                parts.append([])
            ranges[sym.name] = (index, lo, hi)
        for name, (index, lo, hi) in ranges.items():
            parts[index] = self.range_terms(SYMBOLS[name], lo, hi)
        result = [_TRUE]
        for part in sorted(parts, key=len):
            result = self.product(result, part)
            if not result:
                break
        return result

    def range_leaf(self, e: Expr, positive: bool) -> tuple[Symbol, int, int] | None:
        """``e`` as (symbol, lo, hi) if it is a range comparison under this polarity."""
        while isinstance(e, Not):
            e, positive = e.term, not positive
        if not isinstance(e, Cmp):
            return None
        op = e.op if positive else _FLIP[e.op]
        if op not in _RANGE_OPS:
            return None
        sym = _symbol(e.symbol)
        (value, _), *_ = _leaf_values(sym, op, e.values, self.resolve_port)
        lo, hi = _interval(op, value, sym.value_mask)
        return sym, lo, hi

    def range_terms(self, sym: Symbol, lo: int, hi: int) -> list[_Term]:
        needs = frozenset({sym.prereq}) if sym.prereq else frozenset()
        return [_Term(_atom(sym, v, m), needs) for v, m in prefix_cover(lo, hi, sym.width)]

    def leaf(self, sym: Symbol, op: CmpOp, values: tuple[Value, ...]) -> list[_Term]:
        resolved = _leaf_values(sym, op, values, self.resolve_port)
        needs = frozenset({sym.prereq}) if sym.prereq else frozenset()
        if op in _RANGE_OPS:
            lo, hi = _interval(op, resolved[0][0], sym.value_mask)
            return self.range_terms(sym, lo, hi)
        if op == "==":
            return self.union([[_Term(_atom(sym, v, m), needs)] for v, m in resolved])
        result = [_Term({}, needs)]
        for v, m in resolved:
            assert sym.field is not None
            diffs = _bit_differences(sym.field, v << sym.shift, m << sym.shift)
            result = self.product(result, [_Term(a) for a in diffs])
        return result

    def finalize(self, terms: list[_Term]) -> list[Atoms]:
        """Expand every term's prerequisites (each symbol once per term) and deduplicate."""
        out: dict[object, Atoms] = {}
        for t in terms:
            for atoms in self.complete(t.atoms, t.needs, frozenset()):
                out.setdefault(frozenset(atoms.items()), atoms)
                self.check(len(out))
        return _prune(list(out.values()))

    def complete(
        self, atoms: Atoms, needs: frozenset[str], done: frozenset[str]
    ) -> Iterator[Atoms]:
        pending = needs - done
        if not pending:
            yield atoms
            return
        expanded = done | pending
        for sub in _requirements(pending):
            merged = _merge(atoms, sub.atoms)
            if merged is not None:
                yield from self.complete(merged, sub.needs, expanded)


@cache
def _requirements(names: frozenset[str]) -> tuple[_Term, ...]:
    """The conjunction of prerequisite symbols (each may still need its own)."""
    requirement = tuple(BoolSym(n) for n in sorted(names))
    return tuple(_Expander(None, MAX_CONJUNCTIONS).conjunction(requirement, True))


@cache
def _predicate(name: str, positive: bool) -> tuple[Atoms, ...]:
    """A predicate's full expansion (prerequisites included), or its exact complement."""
    ex = _Expander(None, MAX_CONJUNCTIONS)
    expansion = SYMBOLS[name].expansion
    assert expansion is not None
    terms = ex.finalize(ex.dnf(expansion, True))
    if positive:
        return tuple(terms)
    result = [_TRUE]
    for atoms in terms:
        sym_diffs = [
            _Term(diff)
            for field_name, (v, m) in atoms.items()
            for diff in _bit_differences(field_name, v, m)
        ]
        result = ex.product(result, sym_diffs)
    return tuple(_prune([t.atoms for t in result]))


def to_matches(
    expr: Expr,
    resolve_port: PortResolver | None = None,
    *,
    limit: int = MAX_CONJUNCTIONS,
) -> list[tuple[FieldMatch, ...]]:
    """``expr`` (prerequisites included) as an OR of ANDs of masked field matches.

    ``1`` gives one empty conjunction, ``0`` none. Matches inside a conjunction
    are in flow-key order; conjunctions come in expansion order (deterministic).
    Raises :class:`ExprError` for invalid expressions and :class:`ExpansionError`
    past ``limit`` conjunctions.
    """
    ex = _Expander(resolve_port, limit)
    terms = ex.finalize(ex.dnf(expr, True))
    return [
        tuple(
            FieldMatch(name, v, m)
            for name, (v, m) in sorted(atoms.items(), key=lambda item: BY_NAME[item[0]].index)
        )
        for atoms in terms
    ]
