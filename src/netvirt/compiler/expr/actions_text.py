"""Text form of actions: ``ct_commit; next;`` ⇄ action objects of :mod:`dataplane.actions`.

Grammar: a sequence of ``action ";"``; actions that build a packet take a
nested block ``{ action; … }`` run on the new packet. The forms::

    next;  next(ls_in_acl);  output;  drop;  drop(acl_deny);
    eth.dst = 00:11:22:33:44:55;  reg0 = 10.0.0.1;  flags.loopback = 1;
    reg1 = 0x5/0xff;  outport = "lsp1";  ip4.dst = ip4.src;  eth.src <-> eth.dst;
    ip.ttl--;  ct_next;  ct_commit;  ct_commit(mark=1);  ct_clear;
    ct_dnat;  ct_dnat(10.0.0.5);  ct_dnat(10.0.0.5:8080);  ct_dnat([fd00::5]:80);
    ct_snat;  ct_snat(172.24.4.10);  ct_snat(172.24.4.2, 1024-65535);
    ct_lb(10.0.0.5:80, 10.0.0.6:80; algorithm=SOURCE_IP, affinity_timeout=60);
    icmp_error(type=11, code=0) { … };   (icmp4_error / icmp6_error are aliases)
    arp_request { … };
    dhcp_reply(offer=…, server=…, mac=…, netmask=…, lease=43200, opts={3:…}) { … };
    nd_na(target=fd00::1, mac=…, router) { … };
    nd_ra(mac=…, src=fe80::1, mtu=1500, managed, other, prefixes={(fd00::/64, 192)}) { … };
    put_mac_binding;  lookup_mac_binding;

Port names: action objects hold port *keys* (``SetField("outport", 5)``), so
``outport = "lsp1"`` needs a ``resolve_port`` to parse and the printer takes a
``port_name`` to spell keys back (without one it prints the key: ``outport =
5``, which parses without a resolver). Stage names resolve through the stage
table; ``next(17)`` is accepted for a table with no stage.

Assignment targets are writable symbols (``tcp.dst`` assigns the key's
``tp.dst``, ``flags.loopback`` one bit of ``flags``) or raw flow-key field
names; the printer prints the key field (``tp.dst = 80;``) or the one-bit
slice symbol when a masked SetField is exactly one. Assigning a field adds no
prerequisite to the flow's match: the builder writes the match it needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from netvirt.compiler import stages
from netvirt.compiler.expr.dhcp_opts import format_options, parse_options
from netvirt.compiler.expr.lexer import ParseError, Scanner, check_literal
from netvirt.compiler.expr.spelling import format_value, mac_text, plain, quote
from netvirt.compiler.expr.symbols import FIELD_KIND, SYMBOLS, assignable, slice_symbol
from netvirt.dataplane import actions as act
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import BY_NAME

PortResolver = Callable[[str], int]
PortNamer = Callable[[int], str]
StageResolver = Callable[[str], int]

ALGORITHMS = ("ROUND_ROBIN", "SOURCE_IP", "LEAST_CONNECTIONS")
_IP4_PORT = re.compile(r"([0-9.]+):([0-9]{1,5})")

__all__ = ["ParseError", "format_action", "format_actions", "parse_actions"]


def _default_stage(name: str) -> int:
    return stages.stage(name).table


# =========================================================================== parsing


def parse_actions(
    text: str,
    resolve_port: PortResolver | None = None,
    resolve_stage: StageResolver | None = None,
) -> tuple[object, ...]:
    """Parse action text; raises :class:`ParseError` (only) on bad input."""
    parser = _Parser(Scanner(text), resolve_port, resolve_stage or _default_stage)
    return parser.sequence(None)


class _Parser:
    def __init__(
        self, sc: Scanner, resolve_port: PortResolver | None, resolve_stage: StageResolver
    ) -> None:
        self.sc = sc
        self.resolve_port = resolve_port
        self.resolve_stage = resolve_stage

    # --- structure -----------------------------------------------------------------

    def sequence(self, end: str | None) -> tuple[object, ...]:
        sc = self.sc
        out: list[object] = []
        while not (sc.at_end() if end is None else sc.peek(end)):
            if sc.at_end():
                raise sc.error(f"expected {end!r}")
            out.append(self.action())
            sc.expect(";", "';' after the action")
        return tuple(out)

    def block(self) -> tuple[object, ...]:
        sc = self.sc
        if not sc.peek("{"):
            return ()
        sc.enter()
        sc.pos += 1
        body = self.sequence("}")
        sc.expect("}", "'}'")
        sc.leave()
        return body

    def action(self) -> object:
        sc = self.sc
        start = sc.mark()
        name = sc.name()
        if name is None:
            raise sc.error("expected an action")
        keyword = _KEYWORDS.get(name)
        if keyword is not None:
            return keyword(self)
        return self.assignment(name, start)

    # --- small values --------------------------------------------------------------

    def int_value(self, bits: int, what: str) -> int:
        sc = self.sc
        lit = sc.literal()
        if lit.kind != "int" or lit.mask is not None:
            raise sc.error(f"{what} must be an integer", lit.position)
        if lit.value >= 1 << bits:
            raise sc.error(f"{what} does not fit in {bits} bits", lit.position)
        return lit.value

    def address(self, kind: str, what: str) -> int:
        sc = self.sc
        lit = sc.literal()
        if lit.kind != kind or lit.mask is not None:
            raise sc.error(f"{what} must be a {kind} value", lit.position)
        return lit.value

    def endpoint(self) -> tuple[int, int, int | None]:
        """``ip``, ``ip:port`` or ``[ipv6]:port`` → (ip, version, port)."""
        sc = self.sc
        if sc.accept("["):
            ip = self.address("ipv6", "a bracketed address")
            sc.expect("]", "']'")
            port = self.port_number() if sc.text.startswith(":", sc.pos) else None
            return ip, 6, port
        token, start = sc.run()
        m = _IP4_PORT.fullmatch(token)
        if m is not None:
            kind, ip = sc.classify(m.group(1), start)
            port = int(m.group(2))
            if kind != "ipv4" or port > 0xFFFF:
                raise sc.error("expected ipv4:port", start)
            return ip, 4, port
        kind, ip = sc.classify(token, start)
        if kind not in ("ipv4", "ipv6"):
            raise sc.error("expected an IP address", start)
        return ip, 4 if kind == "ipv4" else 6, None

    def port_number(self) -> int:
        self.sc.expect(":", "':'")
        start = self.sc.mark()
        port = self.sc.digits("a port number")
        if port > 0xFFFF:
            raise self.sc.error("port numbers are 0..65535", start)
        return port

    def args(
        self, parsers: dict[str, Callable[[], Any]], flags: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """``(key=value, flag, …)`` with each key at most once."""
        self.sc.expect("(", "'('")
        return self.keywords(parsers, flags)

    def keywords(
        self, parsers: dict[str, Callable[[], Any]], flags: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """``key=value, flag, … )`` — the list after its opening delimiter."""
        sc = self.sc
        out: dict[str, Any] = {}
        if sc.accept(")"):
            return out
        while True:
            start = sc.mark()
            key = sc.name()
            if key is None or (key not in parsers and key not in flags):
                valid = ", ".join(sorted([*parsers, *flags]))
                raise sc.error(f"expected an argument ({valid})", start)
            if key in out:
                raise sc.error(f"argument {key} given twice", start)
            if key in flags:
                out[key] = True
            else:
                sc.expect("=", f"'=' after {key}")
                out[key] = parsers[key]()
            if sc.accept(")"):
                return out
            sc.expect(",", "',' or ')'")

    def require(self, args: dict[str, Any], *names: str) -> None:
        missing = [n for n in names if n not in args]
        if missing:
            raise self.sc.error(f"missing argument(s): {', '.join(missing)}")

    # --- keywords ------------------------------------------------------------------

    def next_(self) -> act.Next:
        sc = self.sc
        if not sc.accept("("):
            return act.Next()
        start = sc.mark()
        name = sc.name()
        table = sc.digits("a stage name or table") if name is None else self.stage(name, start)
        sc.expect(")", "')'")
        return act.Next(table)

    def stage(self, name: str, start: int) -> int:
        try:
            return self.resolve_stage(name)
        except (KeyError, ValueError, LookupError):
            raise self.sc.error(f"unknown stage {name!r}", start) from None

    def drop(self) -> act.Drop:
        sc = self.sc
        if not sc.accept("("):
            return act.Drop()
        start = sc.mark()
        name = sc.name() or ""
        try:
            reason = DropReason(name)
        except ValueError:
            raise sc.error(f"unknown drop reason {name!r}", start) from None
        sc.expect(")", "')'")
        return act.Drop(reason)

    def ct_commit(self) -> act.CtCommit:
        if not self.sc.peek("("):
            return act.CtCommit()
        args = self.args({"mark": lambda: self.int_value(32, "mark")})
        return act.CtCommit(args.get("mark"))

    def ct_dnat(self) -> act.CtDnat:
        sc = self.sc
        if not sc.accept("("):
            return act.CtDnat()
        ip, version, port = self.endpoint()
        sc.expect(")", "')'")
        return act.CtDnat(ip, version, port)

    def ct_snat(self) -> act.CtSnat:
        sc = self.sc
        if not sc.accept("("):
            return act.CtSnat()
        start = sc.mark()
        ip, version, port = self.endpoint()
        if port is not None:
            raise sc.error("ct_snat takes an address and a port range, not ip:port", start)
        port_range = None
        if sc.accept(","):
            range_start = sc.mark()
            lo = sc.digits("a port range lo-hi")
            sc.expect("-", "'-'")
            hi = sc.digits("the end of the port range")
            if not lo <= hi <= 0xFFFF:
                raise sc.error("port range must be lo-hi within 0..65535", range_start)
            port_range = (lo, hi)
        sc.expect(")", "')'")
        return act.CtSnat(ip, version, port_range)

    def ct_lb(self) -> act.CtLb:
        sc = self.sc
        sc.expect("(", "'('")
        backends: list[act.Backend] = []
        if not sc.peek(";") and not sc.peek(")"):
            backends.append(act.Backend(*self._backend()))
            while sc.accept(","):
                backends.append(act.Backend(*self._backend()))
        algorithm, affinity = "ROUND_ROBIN", 0
        if sc.accept(";"):
            opts = self.keywords(
                {
                    "algorithm": self._algorithm,
                    "affinity_timeout": lambda: self.int_value(32, "affinity_timeout"),
                }
            )
            algorithm = opts.get("algorithm", algorithm)
            affinity = opts.get("affinity_timeout", affinity)
        else:
            sc.expect(")", "',', ';' or ')'")
        return act.CtLb(tuple(backends), algorithm, affinity)

    def _backend(self) -> tuple[int, int | None, int]:
        ip, version, port = self.endpoint()
        return ip, port, version

    def _algorithm(self) -> str:
        start = self.sc.mark()
        name = self.sc.name()
        if name not in ALGORITHMS:
            raise self.sc.error(f"algorithm must be one of {', '.join(ALGORITHMS)}", start)
        return name

    def icmp_error(self) -> act.EmitIcmpError:
        args = self.args(
            {
                "type": lambda: self.int_value(8, "type"),
                "code": lambda: self.int_value(8, "code"),
                "mtu": lambda: self.int_value(16, "mtu"),
            }
        )
        self.require(args, "type", "code")
        return act.EmitIcmpError(args["type"], args["code"], self.block(), args.get("mtu", 0))

    def dhcp_reply(self) -> act.DhcpReply:
        args = self.args(
            {
                "offer": lambda: self.address("ipv4", "offer"),
                "server": lambda: self.address("ipv4", "server"),
                "mac": lambda: self.address("mac", "mac"),
                "netmask": lambda: self.address("ipv4", "netmask"),
                "lease": lambda: self.int_value(32, "lease"),
                "opts": lambda: parse_options(self.sc),
            }
        )
        self.require(args, "offer", "server", "mac", "netmask", "lease")
        return act.DhcpReply(
            args["offer"],
            args["server"],
            args["mac"],
            args["netmask"],
            args["lease"],
            args.get("opts", ()),
            self.block(),
        )

    def nd_na(self) -> act.NdAdvert:
        args = self.args(
            {
                "target": lambda: self.address("ipv6", "target"),
                "mac": lambda: self.address("mac", "mac"),
            },
            frozenset({"router"}),
        )
        self.require(args, "target", "mac")
        return act.NdAdvert(args["target"], args["mac"], args.get("router", False), self.block())

    def nd_ra(self) -> act.RouterAdvert:
        args = self.args(
            {
                "mac": lambda: self.address("mac", "mac"),
                "src": lambda: self.address("ipv6", "src"),
                "mtu": lambda: self.int_value(32, "mtu"),
                "prefixes": self._ra_prefixes,
            },
            frozenset({"managed", "other"}),
        )
        self.require(args, "mac", "src", "mtu")
        return act.RouterAdvert(
            args["mac"],
            args["src"],
            args.get("prefixes", ()),
            args["mtu"],
            args.get("managed", False),
            args.get("other", False),
            self.block(),
        )

    def _ra_prefixes(self) -> tuple[tuple[int, int, int], ...]:
        sc = self.sc
        sc.expect("{", "'{'")
        out: list[tuple[int, int, int]] = []
        while not sc.accept("}"):
            if out:
                sc.expect(",", "',' or '}'")
            sc.expect("(", "'(' starting (prefix/len, flags)")
            token, start = sc.run()
            kind, prefix = sc.classify(token, start)
            if kind != "ipv6":
                raise sc.error("RA prefixes are IPv6", start)
            sc.expect("/", "'/len'")
            len_start = sc.mark()
            length = sc.digits("a prefix length")
            if length > 128:
                raise sc.error("prefix length must be 0..128", len_start)
            sc.expect(",", "','")
            flags = self.int_value(8, "prefix flags")
            sc.expect(")", "')'")
            out.append((prefix, length, flags))
        return tuple(out)

    # --- assignments ---------------------------------------------------------------

    def assignment(self, name: str, start: int) -> object:
        sc = self.sc
        target = assignable(name)
        if target is None:
            known = name in SYMBOLS or name in BY_NAME
            what = "is read-only" if known else "is not an action or a field"
            raise sc.error(f"{name} {what}", start)
        field, shift, width = target
        if sc.accept("--"):
            if name != "ip.ttl":
                raise sc.error("only ip.ttl-- is supported", start)
            return act.DecTTL()
        if sc.accept("<->"):
            return act.Exchange(field, self.whole_field(field, width, start, writable=True))
        if sc.peek("=="):
            raise sc.error("use '=' to assign ('==' compares)")
        if not sc.accept("="):
            raise sc.error("expected '=', '<->' or '--'")
        rhs_start = sc.mark()
        source = sc.name()
        sc.pos = rhs_start
        if source is not None and (source in SYMBOLS or source in BY_NAME):
            return act.Move(field, self.whole_field(field, width, start, writable=False))
        return self.set_field(field, shift, width)

    def whole_field(self, field: str, width: int, start: int, writable: bool) -> str:
        """The other side of a move or exchange: a whole field of the same width."""
        sc = self.sc
        if width != BY_NAME[field].width:
            raise sc.error("moves and exchanges need whole fields, not bit slices", start)
        other_start = sc.mark()
        other = sc.name() or ""
        found = _whole(other, writable)
        if found is None:
            what = "a writable whole field" if writable else "a whole field"
            raise sc.error(f"{other or 'this'} is not {what}", other_start)
        if BY_NAME[found].width != width:
            raise sc.error(
                f"{field} is {width} bits but {found} is {BY_NAME[found].width}", other_start
            )
        return found

    def set_field(self, field: str, shift: int, width: int) -> act.SetField:
        sc = self.sc
        lit = sc.literal()
        sliced = width != BY_NAME[field].width
        check_literal(sc, lit, "int" if sliced else FIELD_KIND[field], width)
        if sliced and lit.mask is not None:
            raise sc.error("a one-bit slice takes 0 or 1, not a mask", lit.position)
        if lit.kind == "string":
            assert lit.text is not None
            return act.SetField(field, self.port(lit.text, lit.position))
        if sliced:
            return act.SetField(field, lit.value << shift, ((1 << width) - 1) << shift)
        return act.SetField(field, lit.value, lit.mask)

    def port(self, name: str, position: int) -> int:
        if self.resolve_port is None:
            raise self.sc.error("port names need a resolver here", position)
        try:
            return self.resolve_port(name)
        except (KeyError, ValueError, LookupError):
            raise self.sc.error(f"unknown port {name!r}", position) from None


def _whole(name: str, writable: bool) -> str | None:
    """The key field a name stands for when used whole (``tcp.dst`` → ``tp.dst``)."""
    if writable:
        target = assignable(name)
        if target is None or target[2] != BY_NAME[target[0]].width:
            return None
        return target[0]
    sym = SYMBOLS.get(name)
    if sym is not None:
        return sym.field if sym.field is not None and sym.whole_field else None
    return name if name in BY_NAME and name != "metadata" else None


_KEYWORDS: dict[str, Callable[[_Parser], object]] = {
    "next": _Parser.next_,
    "output": lambda p: act.Output(),
    "drop": _Parser.drop,
    "ct_next": lambda p: act.CtNext(),
    "ct_commit": _Parser.ct_commit,
    "ct_dnat": _Parser.ct_dnat,
    "ct_snat": _Parser.ct_snat,
    "ct_lb": _Parser.ct_lb,
    "ct_clear": lambda p: act.CtClear(),
    "icmp_error": _Parser.icmp_error,
    "icmp4_error": _Parser.icmp_error,
    "icmp6_error": _Parser.icmp_error,
    "arp_request": lambda p: act.EmitArpRequest(p.block()),
    "dhcp_reply": _Parser.dhcp_reply,
    "nd_na": _Parser.nd_na,
    "nd_ra": _Parser.nd_ra,
    "put_mac_binding": lambda p: act.PutMacBinding(),
    "lookup_mac_binding": lambda p: act.LookupMacBinding(),
}


# =========================================================================== printing


def format_actions(
    actions: tuple[object, ...] | list[object], port_name: PortNamer | None = None
) -> str:
    """Canonical text of an action list: ``"ct_commit; next;"`` (empty list: ``""``)."""
    return " ".join(format_action(a, port_name) + ";" for a in actions)


def _block(then: tuple[object, ...], port_name: PortNamer | None) -> str:
    return f" {{ {format_actions(then, port_name)} }}" if then else ""


def _endpoint(ip: int, version: int, port: int | None) -> str:
    if version == 6:
        text = plain("ipv6", ip)
        return text if port is None else f"[{text}]:{port}"
    text = plain("ipv4", ip)
    return text if port is None else f"{text}:{port}"


def _set_field(a: act.SetField, port_name: PortNamer | None) -> str:
    if a.mask is not None:
        sym = slice_symbol(a.field, a.mask)
        if sym is not None:
            return f"{sym.name} = {(a.value & a.mask) >> sym.shift}"
    kind = FIELD_KIND[a.field]
    if kind == "port" and a.mask is None and port_name is not None:
        return f"{a.field} = {quote(port_name(a.value))}"
    return f"{a.field} = {format_value(kind, a.value, a.mask)}"


def _ct_lb(a: act.CtLb) -> str:
    text = ", ".join(_endpoint(b.ip, b.ip_version, b.port) for b in a.backends)
    opts = []
    if a.algorithm != "ROUND_ROBIN":
        opts.append(f"algorithm={a.algorithm}")
    if a.affinity_timeout:
        opts.append(f"affinity_timeout={a.affinity_timeout}")
    if opts:
        text += "; " + ", ".join(opts)
    return f"ct_lb({text})"


def _ct_nat(a: act.CtDnat | act.CtSnat) -> str:
    name = "ct_dnat" if isinstance(a, act.CtDnat) else "ct_snat"
    port = a.port if isinstance(a, act.CtDnat) else None
    port_range = a.port_range if isinstance(a, act.CtSnat) else None
    if a.ip is None:
        if port is not None or port_range is not None:
            raise ValueError(f"{name} without an address cannot have a port: {a!r}")
        return name
    text = _endpoint(a.ip, a.ip_version, port)
    if port_range is not None:
        text += f", {port_range[0]}-{port_range[1]}"
    return f"{name}({text})"


def _dhcp_reply(a: act.DhcpReply, port_name: PortNamer | None) -> str:
    args = [
        f"offer={plain('ipv4', a.offer_ip)}",
        f"server={plain('ipv4', a.server_ip)}",
        f"mac={mac_text(a.server_mac)}",
        f"netmask={plain('ipv4', a.netmask)}",
        f"lease={a.lease_time}",
    ]
    if a.options:
        args.append(f"opts={format_options(a.options)}")
    return f"dhcp_reply({', '.join(args)}){_block(a.then, port_name)}"


def _router_advert(a: act.RouterAdvert, port_name: PortNamer | None) -> str:
    args = [f"mac={mac_text(a.mac)}", f"src={plain('ipv6', a.src_ip)}", f"mtu={a.mtu}"]
    if a.managed:
        args.append("managed")
    if a.other:
        args.append("other")
    if a.prefixes:
        items = ", ".join(f"({plain('ipv6', p)}/{n}, {f})" for p, n, f in a.prefixes)
        args.append(f"prefixes={{{items}}}")
    return f"nd_ra({', '.join(args)}){_block(a.then, port_name)}"


def _next(a: act.Next) -> str:
    if a.table is None:
        return "next"
    st = stages.BY_TABLE.get(a.table)
    return f"next({st.name if st is not None else a.table})"


_SIMPLE: dict[type, str] = {
    act.Output: "output",
    act.DecTTL: "ip.ttl--",
    act.CtNext: "ct_next",
    act.CtClear: "ct_clear",
    act.PutMacBinding: "put_mac_binding",
    act.LookupMacBinding: "lookup_mac_binding",
}


def format_action(a: object, port_name: PortNamer | None = None) -> str:
    """One action without its ``;``."""
    simple = _SIMPLE.get(type(a))
    if simple is not None:
        return simple
    if isinstance(a, act.Next):
        return _next(a)
    if isinstance(a, act.Drop):
        return "drop" if a.reason is DropReason.EXPLICIT_DROP else f"drop({a.reason.value})"
    if isinstance(a, act.SetField):
        return _set_field(a, port_name)
    if isinstance(a, act.Move):
        return f"{a.dst} = {a.src}"
    if isinstance(a, act.Exchange):
        return f"{a.a} <-> {a.b}"
    if isinstance(a, act.CtCommit):
        return "ct_commit" if a.mark is None else f"ct_commit(mark={a.mark})"
    if isinstance(a, act.CtDnat | act.CtSnat):
        return _ct_nat(a)
    if isinstance(a, act.CtLb):
        return _ct_lb(a)
    if isinstance(a, act.EmitIcmpError):
        mtu = f", mtu={a.mtu}" if a.mtu else ""
        args = f"type={a.icmp_type}, code={a.icmp_code}{mtu}"
        return f"icmp_error({args}){_block(a.then, port_name)}"
    if isinstance(a, act.EmitArpRequest):
        return "arp_request" + _block(a.then, port_name)
    if isinstance(a, act.DhcpReply):
        return _dhcp_reply(a, port_name)
    if isinstance(a, act.NdAdvert):
        router = ", router" if a.router else ""
        args = f"target={plain('ipv6', a.target)}, mac={mac_text(a.mac)}{router}"
        return f"nd_na({args}){_block(a.then, port_name)}"
    if isinstance(a, act.RouterAdvert):
        return _router_advert(a, port_name)
    raise ValueError(f"not an action: {a!r}")
