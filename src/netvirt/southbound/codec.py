"""SB state and deltas ⇄ JSON-able dicts: the wire format of the southbound service.

Theory of operation
-------------------
Flows travel as text, the same text goldens and ``netvirt trace`` print: match
text from :func:`format_match`, actions from :func:`format_actions`, each flow a
compact row ``[datapath, stage, priority, match, actions, builder, nb_kind,
nb_id, note]`` (the last four are its provenance). Text keeps the format
independent of Python class layouts and readable in a packet capture.

Port names: a match names ports (``inport == "lsp1"``) and the compiler keeps
the port's key next to the name; actions hold only keys (``outport = 5``),
spelled back as names with a per-datapath namer. To decode, a flow block
carries its own table ``{datapath: {name: key}}`` of every name its rows
use, so a delta decodes without the state it applies to. That matters: when a
port's key changes (hash probing after a neighbour is deleted), a removed flow
and its re-added twin have the same text but different keys, and each must
decode to exactly the flow the agent holds.

What does not survive the trip: :class:`~netvirt.compiler.expr.ast.Value`
``text`` of non-port values (``10.0.0.0/24`` as the builder spelled it). The
printer ignores it (values are spelled by kind), so it carries no meaning;
decoded flows have ``text=None`` there. :func:`wire_form` applies the same
loss to a state in memory, so ``decode_state(encode_state(sb)) ==
wire_form(sb)`` — and exactly ``sb`` for states whose values have no
spelling. Provenance does survive (flow equality ignores it; the codec tests
compare it separately).

Decoding parses each distinct match or action text of a flow block once
(:class:`_Texts`): most repeat across switches, and a port-free match then
decodes to one object shared by its rows (docs/compiler.md).

Every decoding error (missing field, bad text, unknown port) raises
:class:`CodecError`, so a client can tell a broken peer from a broken link.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, TypeVar, cast

from netvirt.compiler.expr.actions_text import format_actions, parse_actions
from netvirt.compiler.expr.ast import And, Cmp, Expr, Not, Or, Value
from netvirt.compiler.expr.lexer import ParseError
from netvirt.compiler.expr.parser import parse_match
from netvirt.compiler.expr.printer import format_match
from netvirt.compiler.expr.spelling import mac_text
from netvirt.compiler.expr.symbols import SYMBOLS
from netvirt.compiler.lflow import LogicalFlow, Provenance
from netvirt.compiler.stages import stage
from netvirt.southbound.model import (
    BandwidthLimit,
    Chassis,
    Datapath,
    MacBinding,
    MulticastGroup,
    PortBinding,
    SBState,
    ServiceMonitor,
)
from netvirt.southbound.source import SBDelta

FORMAT = 1
FLOOD = "_MC_flood"  # a switch's flood group lists its ports (compiler/topology.py)
Wire = dict[str, Any]
PortTable = dict[int, dict[str, int]]  # datapath -> name -> key
T = TypeVar("T")

_DATAPATH_KINDS = ("switch", "router")
_PORT_TYPES = ("vif", "patch", "vip", "external", "localnet")
_ENCAPS = ("geneve", "vxlan")
_MONITOR_TYPES = ("PING", "TCP", "HTTP")


class CodecError(ValueError):
    """The peer sent something that is not a valid SB document."""


# =========================================================================== plain objects


def _mac(value: int) -> str:
    return mac_text(value)


def _parse_mac(text: str) -> int:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise CodecError(f"bad MAC address {text!r}")
    return int("".join(parts), 16)


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise CodecError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


def encode_datapath(dp: Datapath) -> Wire:
    return {
        "key": dp.key,
        "kind": dp.kind,
        "name": dp.name,
        "project_id": dp.project_id,
        "display_name": dp.display_name,
    }


def decode_datapath(d: Wire) -> Datapath:
    kind = _choice(d["kind"], _DATAPATH_KINDS, "datapath kind")
    return Datapath(
        int(d["key"]), cast(Any, kind), str(d["name"]), str(d["project_id"]), str(d["display_name"])
    )


def encode_port(p: PortBinding) -> Wire:
    return {
        "name": p.name,
        "key": p.key,
        "datapath": p.datapath,
        "type": p.type,
        "mac": _mac(p.mac),
        "ips": list(p.ips),
        "peer": p.peer,
        "requested_chassis": p.requested_chassis,
        "up": p.up,
        "nb_id": p.nb_id,
    } | _encode_qos(p)


def _encode_qos(p: PortBinding) -> Wire:
    """``{"qos": {"egress": {...}, "ingress": {...}}}`` for a port with limits, else
    nothing: most ports have none, and an absent key keeps the document small."""
    limits = {"egress": p.egress_limit, "ingress": p.ingress_limit}
    qos = {
        direction: {"max_kbps": limit.max_kbps, "max_burst_kbps": limit.max_burst_kbps}
        for direction, limit in limits.items()
        if limit is not None
    }
    return {"qos": qos} if qos else {}


def _decode_limit(d: Wire | None) -> BandwidthLimit | None:
    if d is None:
        return None
    rate, burst = int(d["max_kbps"]), int(d["max_burst_kbps"])
    if rate <= 0 or burst <= 0:
        raise CodecError(f"bandwidth limit {d!r} must have a positive rate and burst")
    return BandwidthLimit(rate, burst)


def decode_port(d: Wire) -> PortBinding:
    qos = d.get("qos") or {}
    return PortBinding(
        name=str(d["name"]),
        key=int(d["key"]),
        datapath=int(d["datapath"]),
        type=cast(Any, _choice(d["type"], _PORT_TYPES, "port type")),
        mac=_parse_mac(d["mac"]),
        ips=tuple(str(ip) for ip in d["ips"]),
        peer=None if d["peer"] is None else str(d["peer"]),
        requested_chassis=str(d["requested_chassis"]),
        up=bool(d["up"]),
        nb_id=str(d["nb_id"]),
        egress_limit=_decode_limit(qos.get("egress")),
        ingress_limit=_decode_limit(qos.get("ingress")),
    )


def encode_group(g: MulticastGroup) -> Wire:
    return {"datapath": g.datapath, "name": g.name, "key": g.key, "ports": list(g.ports)}


def decode_group(d: Wire) -> MulticastGroup:
    ports = tuple(str(p) for p in d["ports"])
    return MulticastGroup(int(d["datapath"]), str(d["name"]), int(d["key"]), ports)


def encode_chassis(c: Chassis) -> Wire:
    return {"name": c.name, "encap": c.encap, "ip": c.ip}


def decode_chassis(d: Wire) -> Chassis:
    encap = _choice(d["encap"], _ENCAPS, "encapsulation")
    ip = str(d["ip"])
    ipaddress.ip_address(ip)  # ValueError → CodecError; kept as sent (round trips exactly)
    return Chassis(str(d["name"]), cast(Any, encap), ip)


def encode_mac_binding(m: MacBinding) -> Wire:
    return {"logical_port": m.logical_port, "ip": m.ip, "mac": _mac(m.mac)}


def decode_mac_binding(d: Wire) -> MacBinding:
    return MacBinding(str(d["logical_port"]), str(d["ip"]), _parse_mac(d["mac"]))


def encode_monitor(m: ServiceMonitor) -> Wire:
    return {
        "member_id": m.member_id,
        "pool_id": m.pool_id,
        "monitor_id": m.monitor_id,
        "logical_port": m.logical_port,
        "member_mac": _mac(m.member_mac),
        "ip": m.ip,
        "port": m.port,
        "type": m.type,
        "delay": m.delay,
        "timeout": m.timeout,
        "max_retries": m.max_retries,
        "max_retries_down": m.max_retries_down,
        "source_ip": m.source_ip,
        "source_mac": _mac(m.source_mac),
        "http_method": m.http_method,
        "url_path": m.url_path,
        "expected_codes": m.expected_codes,
    }


def decode_monitor(d: Wire) -> ServiceMonitor:
    ip, source_ip = str(d["ip"]), str(d["source_ip"])
    ipaddress.ip_address(ip)  # ValueError → CodecError
    ipaddress.ip_address(source_ip)
    return ServiceMonitor(
        member_id=str(d["member_id"]),
        pool_id=str(d["pool_id"]),
        monitor_id=str(d["monitor_id"]),
        logical_port=str(d["logical_port"]),
        member_mac=_parse_mac(d["member_mac"]),
        ip=ip,
        port=int(d["port"]),
        type=cast(Any, _choice(d["type"], _MONITOR_TYPES, "monitor type")),
        delay=int(d["delay"]),
        timeout=int(d["timeout"]),
        max_retries=int(d["max_retries"]),
        max_retries_down=int(d["max_retries_down"]),
        source_ip=source_ip,
        source_mac=_parse_mac(d["source_mac"]),
        http_method=str(d["http_method"]),
        url_path=str(d["url_path"]),
        expected_codes=str(d["expected_codes"]),
    )


# =========================================================================== flows


def _port_values(expr: Expr) -> Iterator[Value]:
    """Every port-valued constant of a match (``inport == "a"``)."""
    if isinstance(expr, Cmp):
        sym = SYMBOLS.get(expr.symbol)
        if sym is not None and sym.kind == "port":
            yield from (v for v in expr.values if v.text is not None)
    elif isinstance(expr, And | Or):
        for term in expr.terms:
            yield from _port_values(term)
    elif isinstance(expr, Not):
        yield from _port_values(expr.term)


class _Namer:
    """key → name per datapath from one state's ports and groups; records what it
    names (and what matches name) into the flow block's port table.

    Only the datapaths of the flows being encoded are looked at, a switch through its
    flood group (which lists its ports): a delta of one switch's flows must not walk
    the ten thousand ports of the cloud. A key not found that way (a VIP, a router's
    port) makes one pass over every port and group."""

    def __init__(self, sb: SBState) -> None:
        self.sb = sb
        self.names: dict[int, dict[int, str]] = {}
        self._scanned = False
        self.table: PortTable = {}

    def _lookup(self, dp: int) -> dict[int, str]:
        names = self.names.get(dp)
        if names is None:
            names = self.names[dp] = {}
            flood = self.sb.groups.get((dp, FLOOD))
            if flood is not None:
                names[flood.key] = flood.name
                for member in flood.ports:
                    port = self.sb.ports.get(member)
                    if port is not None and port.datapath == dp:
                        names[port.key] = member
        return names

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for port in self.sb.ports.values():
            self.names.setdefault(port.datapath, {})[port.key] = port.name
        for group in self.sb.groups.values():
            self.names.setdefault(group.datapath, {})[group.key] = group.name

    def record(self, dp: int, name: str, key: int) -> None:
        """``name`` means ``key`` in the flows of ``dp`` (a match's port value carries the
        key the compiler gave it; an action's key is spelled with its datapath's name)."""
        self.table.setdefault(dp, {})[name] = key

    def for_datapath(self, dp: int) -> Callable[[int], str]:
        def name(key: int) -> str:
            found = self._lookup(dp).get(key)
            if found is None:
                self._scan()
                found = self.names[dp][key]  # KeyError: the caller prints the key instead
            self.record(dp, found, key)
            return found

        return name


def _flow_row(flow: LogicalFlow, namer: _Namer) -> list[object]:
    for value in _port_values(flow.match):
        assert value.text is not None
        namer.record(flow.datapath, value.text, value.value)
    try:
        actions = format_actions(flow.actions, namer.for_datapath(flow.datapath))
    except KeyError:  # a key with no name here: spell keys as numbers (they parse back)
        actions = format_actions(flow.actions)
    p = flow.provenance
    match = format_match(flow.match)
    return [flow.datapath, flow.stage.name, flow.priority, match, actions, *_prov(p)]


def _prov(p: Provenance) -> list[str]:
    return [p.builder, p.nb_kind, p.nb_id, p.note]


def encode_flows(flows: Iterable[LogicalFlow], sb: SBState) -> Wire:
    """A flow block: rows plus the port table they decode with (names as in ``sb``)."""
    namer = _Namer(sb)
    rows = [_flow_row(f, namer) for f in flows]
    ports = {str(dp): dict(sorted(names.items())) for dp, names in sorted(namer.table.items())}
    return {"rows": rows, "ports": ports}


def _with_keys(expr: Expr, resolve: Callable[[str], int]) -> Expr:
    """The parsed match with port keys filled in (the compiler's form of port values)."""
    if isinstance(expr, Cmp):
        sym = SYMBOLS.get(expr.symbol)
        if sym is None or sym.kind != "port":
            return expr
        values = tuple(
            v if v.text is None else Value(resolve(v.text), v.mask, v.text) for v in expr.values
        )
        return Cmp(expr.symbol, expr.op, values)
    if isinstance(expr, And):
        return And(tuple(_with_keys(t, resolve) for t in expr.terms))
    if isinstance(expr, Or):
        return Or(tuple(_with_keys(t, resolve) for t in expr.terms))
    if isinstance(expr, Not):
        return Not(_with_keys(expr.term, resolve))
    return expr


def _resolver(table: PortTable, dp: int) -> Callable[[str], int]:
    names = table.get(dp, {})

    def resolve(name: str) -> int:
        if name not in names:
            raise CodecError(f"port {name!r} of datapath {dp} is not in the port table")
        return names[name]

    return resolve


def _has_ports(expr: Expr) -> bool:
    return next(_port_values(expr), None) is not None


class _Texts:
    """Parsed match and action texts of one flow block, shared between its rows.

    Most texts repeat across datapaths (the same ACL, address-set or DHCP flow in
    every switch): each distinct text is parsed once. A match without port values
    decodes to the very same object for every row that spells it (which also lets
    the agent's translator recognise it); one with ports gets its keys per datapath.
    Actions are reused when every port name they resolved means the same key in the
    row's datapath (recorded while parsing), else parsed again."""

    def __init__(self, table: PortTable) -> None:
        self.table = table
        self.matches: dict[str, tuple[Expr, bool]] = {}
        self.actions: dict[str, tuple[tuple[object, ...], tuple[tuple[str, int], ...]]] = {}

    def match(self, text: str, dp: int) -> Expr:
        entry = self.matches.get(text)
        if entry is None:
            parsed = parse_match(text)
            entry = self.matches[text] = (parsed, _has_ports(parsed))
        parsed, ports = entry
        return _with_keys(parsed, _resolver(self.table, dp)) if ports else parsed

    def actions_of(self, text: str, dp: int) -> tuple[object, ...]:
        names = self.table.get(dp, {})
        entry = self.actions.get(text)
        if entry is not None and all(names.get(n) == k for n, k in entry[1]):
            return entry[0]
        resolve = _resolver(self.table, dp)
        used: dict[str, int] = {}

        def recording(name: str) -> int:
            used[name] = key = resolve(name)
            return key

        parsed = parse_actions(text, recording)
        self.actions[text] = (parsed, tuple(used.items()))
        return parsed


def _decode_row(row: list[Any], texts: _Texts) -> LogicalFlow:
    dp, stage_name, priority, match_text, actions_text, builder, kind, nb_id, note = row
    dp = int(dp)
    try:
        match = texts.match(match_text, dp)
        actions = texts.actions_of(actions_text, dp)
        st = stage(stage_name)
    except (ParseError, KeyError) as err:
        raise CodecError(f"bad flow {row!r}: {err}") from None
    prov = Provenance(str(builder), str(kind), str(nb_id), str(note))
    return LogicalFlow(dp, st, int(priority), match, actions, prov)


def decode_flows(block: Wire) -> list[LogicalFlow]:
    table: PortTable = {
        int(dp): {str(n): int(k) for n, k in names.items()} for dp, names in block["ports"].items()
    }
    texts = _Texts(table)
    return [_decode_row(row, texts) for row in block["rows"]]


# =========================================================================== states and deltas


def encode_state(sb: SBState) -> Wire:
    return {
        "format": FORMAT,
        "kind": "state",
        "generation": sb.generation,
        "datapaths": [encode_datapath(d) for _, d in sorted(sb.datapaths.items())],
        "ports": [encode_port(p) for _, p in sorted(sb.ports.items())],
        "groups": [encode_group(g) for _, g in sorted(sb.groups.items())],
        "chassis": [encode_chassis(c) for _, c in sorted(sb.chassis.items())],
        "mac_bindings": [encode_mac_binding(m) for _, m in sorted(sb.mac_bindings.items())],
        "monitors": [encode_monitor(m) for _, m in sorted(sb.monitors.items())],
        "flows": encode_flows(sb.flows, sb),
    }


def _check(data: Wire, kind: str) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("kind") != kind:
        raise CodecError(f"not an SB {kind} of format {FORMAT}")


def decode_state(data: Wire) -> SBState:
    _check(data, "state")
    try:
        return SBState(
            generation=int(data["generation"]),
            datapaths={d.key: d for d in map(decode_datapath, data["datapaths"])},
            ports={p.name: p for p in map(decode_port, data["ports"])},
            groups={(g.datapath, g.name): g for g in map(decode_group, data["groups"])},
            flows=decode_flows(data["flows"]),
            chassis={c.name: c for c in map(decode_chassis, data["chassis"])},
            mac_bindings={
                (m.logical_port, m.ip): m for m in map(decode_mac_binding, data["mac_bindings"])
            },
            monitors={m.member_id: m for m in map(decode_monitor, data["monitors"])},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        if isinstance(err, CodecError):
            raise
        raise CodecError(f"malformed SB state: {err!r}") from None


def _of(items: tuple[object, ...], cls: type[T]) -> list[T]:
    out = []
    for item in items:
        if not isinstance(item, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(item).__name__}")
        out.append(item)
    return out


def encode_delta(delta: SBDelta, old: SBState, new: SBState) -> Wire:
    """``old``/``new``: the states at ``delta.base``/``delta.generation`` (to name ports)."""
    return {
        "format": FORMAT,
        "kind": "delta",
        "base": delta.base,
        "generation": delta.generation,
        "datapaths_removed": list(delta.datapaths_removed),
        "datapaths": [encode_datapath(d) for d in _of(delta.datapaths, Datapath)],
        "ports_removed": list(delta.ports_removed),
        "ports": [encode_port(p) for p in _of(delta.ports, PortBinding)],
        "groups_removed": [[dp, name] for dp, name in delta.groups_removed],
        "groups": [encode_group(g) for g in _of(delta.groups, MulticastGroup)],
        "chassis_removed": list(delta.chassis_removed),
        "chassis": [encode_chassis(c) for c in delta.chassis],
        "monitors_removed": list(delta.monitors_removed),
        "monitors": [encode_monitor(m) for m in delta.monitors],
        "flows_removed": encode_flows(_of(delta.flows_removed, LogicalFlow), old),
        "flows": encode_flows(_of(delta.flows, LogicalFlow), new),
    }


def decode_delta(data: Wire) -> SBDelta:
    _check(data, "delta")
    try:
        return SBDelta(
            base=int(data["base"]),
            generation=int(data["generation"]),
            datapaths_removed=tuple(int(k) for k in data["datapaths_removed"]),
            datapaths=tuple(map(decode_datapath, data["datapaths"])),
            ports_removed=tuple(str(n) for n in data["ports_removed"]),
            ports=tuple(map(decode_port, data["ports"])),
            groups_removed=tuple((int(dp), str(n)) for dp, n in data["groups_removed"]),
            groups=tuple(map(decode_group, data["groups"])),
            flows_removed=tuple(decode_flows(data["flows_removed"])),
            flows=tuple(decode_flows(data["flows"])),
            chassis=tuple(map(decode_chassis, data["chassis"])),
            chassis_removed=tuple(str(n) for n in data["chassis_removed"]),
            monitors=tuple(map(decode_monitor, data["monitors"])),
            monitors_removed=tuple(str(n) for n in data["monitors_removed"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        if isinstance(err, CodecError):
            raise
        raise CodecError(f"malformed SB delta: {err!r}") from None


def decode(data: Wire) -> SBState | SBDelta:
    """A document of either kind (what ``GET /changes`` answers)."""
    if isinstance(data, dict) and data.get("kind") == "delta":
        return decode_delta(data)
    return decode_state(data)


# =========================================================================== wire form


def _plain_value(v: Value, port: bool) -> Value:
    return v if port or v.text is None else Value(v.value, v.mask)


def plain_match(expr: Expr) -> Expr:
    """``expr`` without the spelling of non-port values (what decoding yields)."""
    if isinstance(expr, Cmp):
        sym = SYMBOLS.get(expr.symbol)
        port = sym is not None and sym.kind == "port"
        return Cmp(expr.symbol, expr.op, tuple(_plain_value(v, port) for v in expr.values))
    if isinstance(expr, And):
        return And(tuple(plain_match(t) for t in expr.terms))
    if isinstance(expr, Or):
        return Or(tuple(plain_match(t) for t in expr.terms))
    if isinstance(expr, Not):
        return Not(plain_match(expr.term))
    return expr


def wire_form(sb: SBState) -> SBState:
    """``sb`` as it looks after a trip through the codec (see the module docstring)."""
    flows = [replace(f, match=plain_match(f.match)) for f in sb.flows]
    return sb.with_flows(flows)


__all__ = [
    "FORMAT",
    "CodecError",
    "decode",
    "decode_delta",
    "decode_monitor",
    "decode_state",
    "encode_delta",
    "encode_monitor",
    "encode_state",
    "plain_match",
    "wire_form",
]
