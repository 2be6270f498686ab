"""Scanner and literals shared by the match and action parsers.

The parsers are hand-written recursive descent over a :class:`Scanner`: the
meaning of a character run depends on where it appears (``fe80::1`` is a
value after ``==`` but would look like a name elsewhere), so there is no
separate tokenizer pass. Every problem is reported as :class:`ParseError`
with the offset it was found at; no other exception escapes for any input
(numbers are length-limited so ``int()`` never hits its digit limit, and
nesting depth is bounded so recursion never overflows).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from netvirt.compiler.expr.spelling import prefix_mask
from netvirt.compiler.expr.symbols import ValueKind

LitKind = Literal["int", "mac", "ipv4", "ipv6", "string"]

MAX_DEPTH = 64  # nesting of parentheses, negations and action blocks
_MAX_RUN = 64  # longest literal (an IPv6 address with an IPv4 tail is 45)
_RUN_CHARS = frozenset("0123456789abcdefABCDEFxX:.")
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | frozenset("0123456789.")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_DEC = re.compile(r"[0-9]+")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")


class ParseError(ValueError):
    """Bad match or action text; ``position`` is the 0-based offset of the problem."""

    def __init__(self, message: str, text: str, position: int) -> None:
        self.message = message
        self.text = text
        self.position = position
        near = text[position : position + 24]
        where = f"near {near!r}" if near else "at end of input"
        super().__init__(f"{message} at position {position} ({where})")


@dataclass(frozen=True, slots=True)
class Lit:
    """A literal as written: its kind, integer value (string: 0), mask and position."""

    kind: LitKind
    value: int
    mask: int | None
    position: int
    text: str | None = None  # strings only


class Scanner:
    """A cursor over the text with the small vocabulary both parsers need."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def error(self, message: str, position: int | None = None) -> ParseError:
        return ParseError(message, self.text, self.pos if position is None else position)

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def mark(self) -> int:
        """The position of the next token (after whitespace)."""
        self.skip_ws()
        return self.pos

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek(self, s: str) -> bool:
        self.skip_ws()
        return self.text.startswith(s, self.pos)

    def accept(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str, what: str | None = None) -> None:
        if not self.accept(s):
            raise self.error(f"expected {what or repr(s)}")

    def enter(self) -> None:
        """Count one nesting level (parenthesis, ``!``, action block)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nesting deeper than {MAX_DEPTH}")

    def leave(self) -> None:
        self.depth -= 1

    def name(self) -> str | None:
        """An identifier (``ip4.dst``, ``ct_commit``) or None without consuming anything."""
        self.skip_ws()
        text, start = self.text, self.pos
        if start >= len(text) or text[start] not in _NAME_START:
            return None
        end = start + 1
        while end < len(text) and text[end] in _NAME_CHARS:
            end += 1
        self.pos = end
        return text[start:end]

    def digits(self, what: str) -> int:
        """A short decimal number (codes, prefix lengths, ports)."""
        self.skip_ws()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos].isdigit():
            self.pos += 1
        token = self.text[start : self.pos]
        if not token or len(token) > 20 or not token.isascii():
            raise self.error(f"expected {what}", start)
        return int(token)

    def string(self) -> str:
        """A double-quoted string; ``\\"`` and ``\\\\`` are the only escapes."""
        self.skip_ws()
        start = self.pos
        if not self.text.startswith('"', start):
            raise self.error("expected a quoted string")
        out: list[str] = []
        i = start + 1
        while i < len(self.text):
            ch = self.text[i]
            if ch == '"':
                self.pos = i + 1
                return "".join(out)
            if ch == "\\":
                if i + 1 >= len(self.text) or self.text[i + 1] not in '"\\':
                    raise self.error('only \\" and \\\\ may be escaped', i)
                ch = self.text[i + 1]
                i += 1
            out.append(ch)
            i += 1
        raise self.error("unterminated string", start)

    def run(self, limit: int = _MAX_RUN) -> tuple[str, int]:
        """The longest run of literal characters (digits, hex, ``x``, ``:``, ``.``)."""
        self.skip_ws()
        start = self.pos
        end = start
        while end < len(self.text) and self.text[end] in _RUN_CHARS:
            end += 1
            if end - start > limit:
                raise self.error("value too long", start)
        self.pos = end
        return self.text[start:end], start

    def literal(self) -> Lit:
        """``value``, ``value/mask``, ``address/prefix`` or a quoted string."""
        self.skip_ws()
        if self.peek('"'):
            start = self.pos
            return Lit("string", 0, None, start, self.string())
        token, start = self.run()
        kind, value = self.classify(token, start)
        if not self.text.startswith("/", self.pos):
            return Lit(kind, value, None, start)
        self.pos += 1
        mask_token, mask_start = self.run()
        if kind in ("ipv4", "ipv6") and _DEC.fullmatch(mask_token):
            bits = 32 if kind == "ipv4" else 128
            length = int(mask_token) if len(mask_token) <= 3 else bits + 1
            if length > bits:
                raise self.error(f"prefix length must be 0..{bits}", mask_start)
            return Lit(kind, value, prefix_mask(length, bits), start)
        _, mask = self.classify(mask_token, mask_start)
        return Lit(kind, value, mask, start)

    def classify(self, token: str, start: int) -> tuple[LitKind, int]:
        if not token:
            raise self.error("expected a value", start)
        if _HEX.fullmatch(token):
            return "int", int(token, 16)
        if _DEC.fullmatch(token):
            return "int", int(token)
        if _MAC.fullmatch(token):
            return "mac", int(token.replace(":", ""), 16)
        try:
            if ":" in token:
                return "ipv6", int(ipaddress.IPv6Address(token))
            if "." in token:
                return "ipv4", int(ipaddress.IPv4Address(token))
        except ValueError:
            pass
        raise self.error(f"invalid value {token!r}", start)


_LIT_WIDTH: dict[LitKind, int] = {"mac": 48, "ipv4": 32, "ipv6": 128}


def check_literal(sc: Scanner, lit: Lit, kind: ValueKind, width: int) -> None:
    """Is ``lit`` a sensible value for a symbol or field of ``kind`` and ``width``?

    Integers go anywhere they fit; a MAC or an address only into a field of its
    own kind or a wide enough plain register; quoted names only into ports.
    """
    if lit.kind == "string":
        if kind != "port":
            raise sc.error("quoted names are only valid for inport and outport", lit.position)
        return
    if (
        lit.kind != "int"
        and lit.kind != kind
        and (kind not in ("int", "hex") or width < _LIT_WIDTH[lit.kind])
    ):
        raise sc.error(f"{lit.kind} value for a {kind} field", lit.position)
    full = (1 << width) - 1
    if lit.value & ~full:
        raise sc.error(f"value does not fit in {width} bits", lit.position)
    if lit.mask is not None:
        if lit.mask & ~full:
            raise sc.error(f"mask does not fit in {width} bits", lit.position)
        if lit.value & ~lit.mask:
            raise sc.error("value has 1-bits outside its mask", lit.position)
