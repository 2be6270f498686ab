"""The symbol table of the match language: names → flow-key fields, slices and prerequisites.

Theory of operation
-------------------
Every name a match may use is a :class:`Symbol` of one of three shapes:

* a **field** symbol names a flow-key field (``eth.src``) or an alias of one
  (``tcp.dst`` is the key's ``tp.dst``), compared with ``==``/``!=``/ranges;
* a **bit** symbol is a slice of a field (``ct.est`` is ``ct_state`` bit
  ``CT_EST``, ``flags.loopback`` a bit of ``flags``, ``eth.mcast`` bit 40 of
  ``eth.dst``); it may be used alone (``ct.est``), negated (``!ct.est``) or
  compared with 0/1;
* a **predicate** is a named expression (``ip4`` is ``eth.type == 0x800``,
  ``tcp`` is ``ip.proto == 6``); it may only be used alone or negated.

A field or bit symbol may have a **prerequisite**: the name of a boolean
symbol that must hold for the field to mean anything (``tcp.dst`` needs
``tcp``, ``ct.est`` needs ``ct.trk``: conntrack bits are only meaningful on a
tracked packet). Prerequisites are part of the semantics of a comparison,
whatever its operator: ``tcp.dst != 80`` and ``!(tcp.dst == 80)`` both match
only TCP packets, and ``!ct.est`` means "tracked and not established". A
predicate, in contrast, is a macro whose negation is exact: ``!tcp`` matches
every packet that is not TCP, ARP included. (This is how OVN defines it.)

Widths and slices come from :mod:`netvirt.dataplane.fields`; ``metadata``
(the logical datapath) is deliberately not a symbol: the flow translator adds
it, so no match or action can cross datapaths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from netvirt.compiler.expr.ast import BoolSym, Cmp, Expr, Value, conj, disj
from netvirt.dataplane import fields as fl

ValueKind = Literal["int", "hex", "mac", "ipv4", "ipv6", "port"]
"""How values of a symbol are spelled by the printer (and which literals it accepts)."""


@dataclass(frozen=True, slots=True)
class Symbol:
    """One name of the match language (see the module docstring for the shapes)."""

    name: str
    field: str | None  # flow-key field; None for predicates
    shift: int = 0  # lowest bit of the slice inside the field
    width: int = 1  # bits of the symbol's value
    kind: ValueKind = "int"
    prereq: str | None = None  # boolean symbol that must hold
    expansion: Expr | None = None  # predicates only
    writable: bool = False  # may be the target of an assignment action
    doc: str = ""

    @property
    def is_predicate(self) -> bool:
        return self.expansion is not None

    @property
    def is_boolean(self) -> bool:
        """Usable alone in a match: a predicate or a 1-bit field/slice."""
        return self.is_predicate or self.width == 1

    @property
    def value_mask(self) -> int:
        """All ones over the symbol's own value (before shifting into the field)."""
        return (1 << self.width) - 1

    @property
    def field_mask(self) -> int:
        """The slice's bits inside its field."""
        return self.value_mask << self.shift

    @property
    def whole_field(self) -> bool:
        return self.field is not None and fl.field(self.field).width == self.width


# --- how each flow-key field's values are spelled ------------------------------------------

_DEFAULT_KIND: ValueKind = "int"
FIELD_KIND: dict[str, ValueKind] = {f.name: _DEFAULT_KIND for f in fl.FIELDS}
FIELD_KIND |= {
    "inport": "port",
    "outport": "port",
    "flags": "hex",
    "reg1": "ipv4",  # the router port's own address (ICMP source, ARP sender)
    "ct_state": "hex",
    "eth.type": "hex",
    "tcp.flags": "hex",
    "eth.src": "mac",
    "eth.dst": "mac",
    "arp.sha": "mac",
    "arp.tha": "mac",
    "nd.sll": "mac",
    "nd.tll": "mac",
    "reg0": "ipv4",  # IPv4 next hop (routing, ARP resolution)
    "ip4.src": "ipv4",
    "ip4.dst": "ipv4",
    "arp.spa": "ipv4",
    "arp.tpa": "ipv4",
    "xreg0": "ipv6",  # IPv6 next hop
    "ip6.src": "ipv6",
    "ip6.dst": "ipv6",
    "nd.target": "ipv6",
}

# --- table construction helpers ------------------------------------------------------------


def _cmp(name: str, *values: int, mask: int | None = None) -> Cmp:
    return Cmp(name, "==", tuple(Value(v, mask) for v in values))


def _field(
    name: str, key_field: str | None = None, prereq: str | None = None, doc: str = ""
) -> Symbol:
    key_field = key_field or name
    spec = fl.field(key_field)
    return Symbol(
        name,
        key_field,
        0,
        spec.width,
        FIELD_KIND[key_field],
        prereq,
        None,
        key_field != "metadata",
        doc,
    )


def _bit(
    name: str, key_field: str, bit: int, prereq: str | None = None, *, writable: bool, doc: str
) -> Symbol:
    """A one-bit slice; ``bit`` is the bit's mask inside the field (one bit set)."""
    return Symbol(name, key_field, bit.bit_length() - 1, 1, "int", prereq, None, writable, doc)


def _pred(name: str, expansion: Expr, doc: str) -> Symbol:
    return Symbol(name, None, 0, 1, "int", None, expansion, False, doc)


def _nd(*types: int) -> Expr:
    return conj(_cmp("icmp6.type", *types), _cmp("icmp6.code", 0), _cmp("ip.ttl", 255))


_TABLE: tuple[Symbol, ...] = (
    # L2
    _field("eth.src"),
    _field("eth.dst"),
    _field("eth.type"),
    _pred("eth.bcast", _cmp("eth.dst", 0xFFFF_FFFF_FFFF), "broadcast destination"),
    _bit("eth.mcast", "eth.dst", 1 << 40, writable=False, doc="group bit of eth.dst"),
    _field("vlan.present"),
    _field("vlan.vid", prereq="vlan.present"),
    # ARP
    _pred("arp", _cmp("eth.type", 0x806), "ARP packet"),
    _field("arp.op", prereq="arp"),
    _field("arp.spa", prereq="arp"),
    _field("arp.tpa", prereq="arp"),
    _field("arp.sha", prereq="arp"),
    _field("arp.tha", prereq="arp"),
    # IP
    _pred("ip4", _cmp("eth.type", 0x800), "IPv4 packet"),
    _pred("ip6", _cmp("eth.type", 0x86DD), "IPv6 packet"),
    _pred("ip", disj(BoolSym("ip4"), BoolSym("ip6")), "IPv4 or IPv6 packet"),
    _field("ip.proto", prereq="ip"),
    _field("ip.ttl", prereq="ip"),
    _field("ip.dscp", prereq="ip"),
    _field("ip.ecn", prereq="ip"),
    _field("ip.frag", prereq="ip", doc="bit 0: a fragment; bit 1: not the first one"),
    _field("ip4.src", prereq="ip4"),
    _field("ip4.dst", prereq="ip4"),
    _field("ip6.src", prereq="ip6"),
    _field("ip6.dst", prereq="ip6"),
    _pred("ip4.mcast", _cmp("ip4.dst", 0xE000_0000, mask=0xF000_0000), "224.0.0.0/4"),
    _pred("ip6.mcast", _cmp("ip6.dst", 0xFF << 120, mask=0xFF << 120), "ff00::/8"),
    # L4
    _pred("tcp", _cmp("ip.proto", 6), "TCP over IPv4 or IPv6"),
    _pred("udp", _cmp("ip.proto", 17), "UDP over IPv4 or IPv6"),
    _pred("sctp", _cmp("ip.proto", 132), "SCTP over IPv4 or IPv6"),
    _pred("icmp4", conj(BoolSym("ip4"), _cmp("ip.proto", 1)), "ICMPv4"),
    _pred("icmp6", conj(BoolSym("ip6"), _cmp("ip.proto", 58)), "ICMPv6"),
    _pred("icmp", disj(BoolSym("icmp4"), BoolSym("icmp6")), "ICMPv4 or ICMPv6"),
    _field("tcp.src", "tp.src", "tcp"),
    _field("tcp.dst", "tp.dst", "tcp"),
    _field("tcp.flags", prereq="tcp"),
    _field("udp.src", "tp.src", "udp"),
    _field("udp.dst", "tp.dst", "udp"),
    _field("sctp.src", "tp.src", "sctp"),
    _field("sctp.dst", "tp.dst", "sctp"),
    _field("icmp4.type", "icmp.type", "icmp4"),
    _field("icmp4.code", "icmp.code", "icmp4"),
    _field("icmp6.type", "icmp.type", "icmp6"),
    _field("icmp6.code", "icmp.code", "icmp6"),
    # neighbor discovery (RFC 4861: hop limit 255, code 0)
    _pred("nd", _nd(135, 136), "neighbor solicitation or advertisement"),
    _pred("nd_ns", _nd(135), "neighbor solicitation"),
    _pred("nd_na", _nd(136), "neighbor advertisement"),
    _pred("nd_rs", _nd(133), "router solicitation"),
    _pred("nd_ra", _nd(134), "router advertisement"),
    _field("nd.target", prereq="nd"),
    _field("nd.sll", prereq="nd_ns"),
    _field("nd.tll", prereq="nd_na"),
    # pipeline metadata
    _field("inport", doc="logical ingress port (quoted name)"),
    _field("outport", doc="logical egress port or multicast group (quoted name)"),
    *(_field(f"reg{i}") for i in range(8)),
    _field("xreg0"),
    _bit("flags.loopback", "flags", fl.FLAG_LOOPBACK, writable=True, doc="may go back out inport"),
    _bit("flags.force_snat", "flags", fl.FLAG_FORCE_SNAT, writable=True, doc="SNAT after DNAT"),
    _bit("flags.skip_acl", "flags", fl.FLAG_SKIP_ACL, writable=True, doc="port has no security"),
    _bit("flags.nat_done", "flags", fl.FLAG_NAT_DONE, writable=True, doc="already translated"),
    # conntrack: every state bit but ct.trk is only meaningful on a tracked packet
    _bit("ct.trk", "ct_state", fl.CT_TRK, writable=False, doc="went through ct_next"),
    _bit("ct.new", "ct_state", fl.CT_NEW, "ct.trk", writable=False, doc="new connection"),
    _bit("ct.est", "ct_state", fl.CT_EST, "ct.trk", writable=False, doc="established"),
    _bit("ct.rel", "ct_state", fl.CT_REL, "ct.trk", writable=False, doc="related (ICMP error)"),
    _bit("ct.rpl", "ct_state", fl.CT_RPL, "ct.trk", writable=False, doc="reply direction"),
    _bit("ct.inv", "ct_state", fl.CT_INV, "ct.trk", writable=False, doc="invalid"),
    _bit("ct.snat", "ct_state", fl.CT_SNAT, "ct.trk", writable=False, doc="source translated"),
    _bit("ct.dnat", "ct_state", fl.CT_DNAT, "ct.trk", writable=False, doc="dest. translated"),
    _field("ct_mark"),
)

SYMBOLS: dict[str, Symbol] = {s.name: s for s in _TABLE}

# writable one-bit slices by (field, mask), so the printer can spell SetField(flags, …, 0x1)
# back as ``flags.loopback = 1``
_SLICES: dict[tuple[str, int], Symbol] = {
    (s.field, s.field_mask): s
    for s in _TABLE
    if s.field is not None and s.writable and not s.whole_field
}


class UnknownSymbol(KeyError):
    """A name that is not in the symbol table."""


def lookup(name: str) -> Symbol:
    try:
        return SYMBOLS[name]
    except KeyError:
        raise UnknownSymbol(f"unknown symbol {name!r}") from None


def slice_symbol(field_name: str, mask: int) -> Symbol | None:
    """The writable slice symbol covering exactly ``mask`` of ``field_name``, if any."""
    return _SLICES.get((field_name, mask))


def assignable(name: str) -> tuple[str, int, int] | None:
    """Target of an assignment: ``(field, shift, width)`` for a writable symbol or a raw
    flow-key field name (``tp.dst``), else None. ``metadata`` is never assignable."""
    sym = SYMBOLS.get(name)
    if sym is not None:
        if sym.writable and sym.field is not None:
            return sym.field, sym.shift, sym.width
        return None
    spec = fl.BY_NAME.get(name)
    if spec is None or name == "metadata":
        return None
    return spec.name, 0, spec.width


def prerequisite_chain(name: str) -> list[str]:
    """``name``'s prerequisite, its prerequisite's, … (a test checks the graph is acyclic)."""
    chain: list[str] = []
    sym = lookup(name)
    while sym.prereq is not None:
        if sym.prereq in chain or len(chain) > len(SYMBOLS):
            raise ValueError(f"prerequisite cycle through {name!r}")
        chain.append(sym.prereq)
        sym = lookup(sym.prereq)
    return chain
