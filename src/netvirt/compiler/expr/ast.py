"""Match expression AST (the structured form the compiler emits directly).

Grammar of the text form (for dumps, goldens and ``netvirt trace``)::

    expr  := or
    or    := and ("||" and)*
    and   := not ("&&" not)*
    not   := "!" not | "(" expr ")" | cmp | symbol | "1" | "0"
    cmp   := symbol op value | symbol op "{" value ("," value)* "}"
    op    := "==" | "!=" | "<" | "<=" | ">" | ">="

Symbols are match-language names (``eth.src``, ``ip4.dst``, ``tcp.dst``,
``inport``, ``ct.est``…) resolved by ``symbols.py`` to flow-key fields with
prerequisites (``tcp.dst`` implies ``ip.proto == 6`` and an IP ethertype).
Values are ints, MACs, IPv4/IPv6 addresses or CIDRs, quoted port names, or
``value/mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CmpOp = Literal["==", "!=", "<", "<=", ">", ">="]


@dataclass(frozen=True, slots=True)
class Value:
    """A constant. ``mask`` None = exact; ``text`` keeps the original spelling
    (``10.0.0.0/24``, ``"lsp1"``) for printing."""

    value: int
    mask: int | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Cmp:
    symbol: str
    op: CmpOp
    values: tuple[Value, ...]  # several values = set membership (OR for ==, AND for !=)


@dataclass(frozen=True, slots=True)
class BoolSym:
    """A 1-bit symbol used alone: ``ct.est``, ``ip4``, ``tcp``."""

    symbol: str


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    term: Expr


Expr = Cmp | BoolSym | Const | And | Or | Not

TRUE = Const(True)
FALSE = Const(False)


def conj(*terms: Expr) -> Expr:
    """AND of terms, flattening nested ANDs and dropping ``1``."""
    flat: list[Expr] = []
    for t in terms:
        kind = type(t)
        if kind is And:
            flat.extend(t.terms)  # type: ignore[union-attr]
        elif kind is Const and t.value:  # type: ignore[union-attr]
            continue  # ``1`` (compared by type: ``==`` on dataclasses was a hot spot)
        else:
            flat.append(t)
    if not flat:
        return TRUE
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def disj(*terms: Expr) -> Expr:
    flat: list[Expr] = []
    for t in terms:
        if isinstance(t, Or):
            flat.extend(t.terms)
        elif t == FALSE:
            continue
        else:
            flat.append(t)
    if not flat:
        return FALSE
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def eq(symbol: str, value: int, text: str | None = None, mask: int | None = None) -> Cmp:
    return Cmp(symbol, "==", (Value(value, mask, text),))


def one_of(symbol: str, values: list[tuple[int, str | None]]) -> Cmp:
    return Cmp(symbol, "==", tuple(Value(v, None, t) for v, t in values))


def port(name: str) -> Value:
    """A logical port named in a match (``inport == "lsp1"``). The name is kept in
    ``text`` (unquoted, ``value`` 0) and resolved to a key only when the flow is
    normalized for a datapath; that is also the form the parser produces."""
    return Value(0, None, name)


def port_eq(symbol: str, *names: str) -> Cmp:
    """``inport == "a"`` or ``outport == {"a", "b"}``."""
    return Cmp(symbol, "==", tuple(port(n) for n in names))
