"""Canonical text of match expressions (and, re-exported, of actions).

Goldens, dumps and ``netvirt trace`` print through here, so the output is a
function of the AST alone. Structure is printed as built: ``&&``/``||`` terms
keep the builder's order (it is meaningful to a reader), a nested ``&&``/``||``
is always parenthesized, ``!`` binds to the term after it. Values are spelled
by the symbol's kind (see :mod:`spelling`), never as written; ``Value.text``
is only used for port names, printed quoted.

``parse_match(format_match(e)) == e`` for every AST the parser can produce
(non-port values without ``text``, ``&&``/``||`` with two or more terms);
degenerate connectives print as their meaning (empty ``&&`` is ``1``).
"""

from __future__ import annotations

from netvirt.compiler.expr.actions_text import format_actions
from netvirt.compiler.expr.ast import And, BoolSym, Cmp, Const, Expr, Not, Or, Value
from netvirt.compiler.expr.spelling import format_value, quote
from netvirt.compiler.expr.symbols import SYMBOLS, ValueKind

__all__ = ["format_actions", "format_match", "format_value", "quote"]


def _format_cmp_value(kind: ValueKind, v: Value) -> str:
    if kind == "port" and v.text is not None:
        return quote(v.text)
    return format_value(kind, v.value, v.mask)


def _format_cmp(c: Cmp) -> str:
    sym = SYMBOLS.get(c.symbol)
    if sym is None:
        raise ValueError(f"unknown symbol {c.symbol!r}")
    if not c.values:
        raise ValueError(f"comparison of {c.symbol} with no value")
    values = [_format_cmp_value(sym.kind, v) for v in c.values]
    rhs = values[0] if len(values) == 1 else "{" + ", ".join(values) + "}"
    return f"{c.symbol} {c.op} {rhs}"


def _operand(e: Expr) -> str:
    """A term inside ``&&``/``||``: nested connectives get parentheses."""
    text = format_match(e)
    if isinstance(e, And | Or) and len(e.terms) > 1:
        return f"({text})"
    return text


def format_match(expr: Expr) -> str:
    """The canonical text of a match expression (see the module docstring)."""
    if isinstance(expr, Const):
        return "1" if expr.value else "0"
    if isinstance(expr, BoolSym):
        return expr.symbol
    if isinstance(expr, Cmp):
        return _format_cmp(expr)
    if isinstance(expr, Not):
        inner = format_match(expr.term)
        if isinstance(expr.term, BoolSym | Const | Not):
            return f"!{inner}"
        return f"!({inner})"
    if isinstance(expr, And | Or):
        if not expr.terms:
            return "1" if isinstance(expr, And) else "0"
        if len(expr.terms) == 1:
            return format_match(expr.terms[0])
        sep = " && " if isinstance(expr, And) else " || "
        return sep.join(_operand(t) for t in expr.terms)
    raise ValueError(f"not a match expression: {expr!r}")
