"""Parse match text into the AST (and, re-exported, action text into action objects).

Grammar (whitespace is free between tokens)::

    match    := or
    or       := and ("||" and)*
    and      := unary ("&&" unary)*
    unary    := "!" unary | "(" or ")" | "1" | "0" | NAME [OP rhs]
    OP       := "==" | "!=" | "<=" | ">=" | "<" | ">"
    rhs      := value | "{" value ("," value)* "}"
    value    := literal ["/" (literal | prefix-length)] | STRING

A NAME alone must be a boolean symbol (a predicate such as ``tcp`` or a one-bit
field such as ``ct.est``); a NAME with an operator must not be a predicate.
Relational operators take one unmasked value. Literals are decimal or ``0x``
integers, MACs, IPv4 and IPv6 addresses (``/len`` after an address is a prefix
length); quoted strings name logical ports (``inport == "lsp1"``) and keep the
name in the AST, resolved to a key only by :func:`normalize.to_matches`.

The parser checks everything it can without a topology (symbols, operators,
widths, value kinds, masks) and reports the first problem as
:class:`ParseError` with its offset; it raises nothing else for any text.
"""

from __future__ import annotations

from netvirt.compiler.expr.actions_text import parse_actions
from netvirt.compiler.expr.ast import And, BoolSym, Cmp, CmpOp, Const, Expr, Not, Or, Value
from netvirt.compiler.expr.lexer import ParseError, Scanner, check_literal
from netvirt.compiler.expr.symbols import SYMBOLS, Symbol

__all__ = ["ParseError", "parse_actions", "parse_match"]

_OPS: tuple[CmpOp, ...] = ("==", "!=", "<=", ">=", "<", ">")


def parse_match(text: str) -> Expr:
    """Parse a match expression; raises :class:`ParseError` on any problem."""
    sc = Scanner(text)
    expr = _or(sc)
    if not sc.at_end():
        raise sc.error(_unexpected(sc))
    return expr


def _unexpected(sc: Scanner) -> str:
    if sc.peek("&") or sc.peek("|"):
        return "expected '&&' or '||'"
    if sc.peek("="):
        return "expected '==' to compare"
    if sc.peek(")"):
        return "unbalanced ')'"
    return "expected '&&', '||' or the end of the match"


def _or(sc: Scanner) -> Expr:
    terms = [_and(sc)]
    while sc.accept("||"):
        terms.append(_and(sc))
    return terms[0] if len(terms) == 1 else Or(tuple(terms))


def _and(sc: Scanner) -> Expr:
    terms = [_unary(sc)]
    while sc.accept("&&"):
        terms.append(_unary(sc))
    return terms[0] if len(terms) == 1 else And(tuple(terms))


def _unary(sc: Scanner) -> Expr:
    negations = 0
    while sc.peek("!") and not sc.peek("!="):
        sc.enter()
        sc.pos += 1
        negations += 1
    expr = _primary(sc)
    for _ in range(negations):
        expr = Not(expr)
        sc.leave()
    return expr


def _primary(sc: Scanner) -> Expr:
    if sc.peek("("):
        sc.enter()
        sc.pos += 1
        expr = _or(sc)
        sc.expect(")", "')'")
        sc.leave()
        return expr
    start = sc.mark()
    name = sc.name()
    if name is None:
        token, token_start = sc.run()
        if token in ("0", "1"):
            return Const(token == "1")
        raise sc.error("expected a symbol, '!', '(', 1 or 0", token_start)
    sym = SYMBOLS.get(name)
    if sym is None:
        raise sc.error(f"unknown symbol {name!r}", start)
    op = _operator(sc)
    if op is None:
        if sc.peek("="):
            raise sc.error("expected '==' to compare")
        if not sym.is_boolean:
            raise sc.error(f"{name} needs a comparison (it is {sym.width} bits wide)", start)
        return BoolSym(name)
    if sym.is_predicate:
        raise sc.error(f"{name} is a predicate: use it alone or negated, not with {op}", start)
    return Cmp(name, op, _rhs(sc, sym, op))


def _operator(sc: Scanner) -> CmpOp | None:
    for op in _OPS:
        if sc.accept(op):
            return op
    return None


def _rhs(sc: Scanner, sym: Symbol, op: CmpOp) -> tuple[Value, ...]:
    start = sc.mark()
    if sc.accept("{"):
        values = [_value(sc, sym)]
        while sc.accept(","):
            values.append(_value(sc, sym))
        sc.expect("}", "',' or '}'")
    else:
        values = [_value(sc, sym)]
    if op not in ("==", "!="):
        if len(values) != 1:
            raise sc.error(f"{op} takes a single value, not a set", start)
        if values[0].mask is not None:
            raise sc.error(f"{op} takes an unmasked value", start)
    return tuple(values)


def _value(sc: Scanner, sym: Symbol) -> Value:
    lit = sc.literal()
    check_literal(sc, lit, sym.kind, sym.width)
    if lit.kind == "string":
        return Value(0, None, lit.text)
    return Value(lit.value, lit.mask)
