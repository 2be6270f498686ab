"""Security groups as a stateful distributed firewall (``ls_*_pre_acl`` … ``ls_*_stateful``).

Each VM port with security groups has its own firewall, applied where its
traffic enters or leaves the switch: a group's **egress** rules run in the
ingress pipeline (``ls_in_acl``, traffic leaving the VM, from ``inport``), its
**ingress** rules in the egress pipeline (``ls_out_acl``, traffic entering the
VM, to ``outport``). The pipeline picks the conntrack zone per (datapath,
port), so the two ends of a connection are tracked independently.

Per pipeline (``in``/``out``):

* ``pre_acl`` (100): IP traffic of a port with a *stateful* group sets
  REGBIT_CONNTRACK. Neighbor discovery is exempt (110): it is never tracked
  and always allowed, as in OVN, since IPv6 cannot work without it.
* ``pre_stateful`` (100): REGBIT_CONNTRACK → ``ct_next`` (the packet gets
  ``ct_state`` in its port's zone).
* ``acl``: tracked packets: invalid → drop(invalid_ct_state) (65532);
  established or related and not new → allow (65531). This lets return
  traffic of any allowed connection through and keeps established
  connections alive when a rule is removed (as Neutron's iptables driver).
  Always-allowed infrastructure traffic (2000): ND/RS/RA both ways and DHCP
  from the VM to the server (the DHCP reply is allowed by the DHCP builder,
  which knows the server's addresses). Rules (1000): a new connection matching
  a rule sets REGBIT_CONNTRACK_COMMIT; stateless groups' rules allow per
  packet. A port's IP traffic that matches nothing is dropped (acl_deny, 1).
* ``stateful`` (100): REGBIT_CONNTRACK_COMMIT → ``ct_commit``.

A rule matches ``ip4``/``ip6`` (ethertype), a protocol (name or number; ports
for tcp/udp/sctp; type/code for ICMP), a remote prefix and/or a remote group:
the peer address is ``ip.dst`` for egress rules and ``ip.src`` for ingress
rules. A remote group expands to every fixed IP and allowed-address-pair
prefix of every port that uses the group, so membership changes recompile the
flows of every port whose rules name the group. One flow per (switch, rule)
lists all of that switch's ports using the rule's group in ``inport``/
``outport``. Neutron's default group falls out of its rules: egress anything,
ingress from members of the same group.

Remote groups as address sets (``acl_sets``, the stage before ``acl``). A rule
naming a remote group does not list the group's addresses itself: the match
``outport ∈ {ports} && ip4.src ∈ {members}`` would expand to ports x members
classifier rules (10 ports of a switch and a group of 1,000 members: 10,000,
over the expansion limit, so the flow could not be installed at all). Instead
each switch gives every group its rules name (per direction, up to
:data:`SET_BITS`) one bit of ``reg4``; ``acl_sets`` sets ``reg4`` to the bits
of the groups the peer address belongs to (one rule per member address), and
the rule tests its group's bit — ports + members rules, the same shape as Open
vSwitch's conjunctive matches. An address that belongs to several groups gets
all their bits in one rule; member prefixes (allowed address pairs) are
matched longest-prefix first (priority 100 + prefix length) and a prefix's
rule carries the bits of every member prefix containing it, so the most
specific match always holds every group the address is in. Groups beyond
:data:`SET_BITS` in one switch fall back to the expanded match. Membership
changes change only the ``acl_sets`` flows of the switches using the group.

Registers are zeroed by the pipeline when a packet enters the egress pipeline
or another datapath, so each pipeline's REGBITs are its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from functools import partial

from netvirt.compiler.build import (
    LPort,
    Switch,
    add_defaults,
    hex_mask,
    inport_in,
    ip_version,
    ips_cmp,
    outport_in,
    per_port,
    port_provenance,
    reg0_bit,
    set_reg0_bit,
    switches,
)
from netvirt.compiler.expr.ast import BoolSym, Cmp, Expr, Not, Value, conj, disj
from netvirt.compiler.lflow import FlowSink, Provenance
from netvirt.compiler.nb import NBSnapshot, Obj
from netvirt.compiler.regs import REGBIT_CONNTRACK, REGBIT_CONNTRACK_COMMIT
from netvirt.dataplane.actions import CtCommit, CtNext, Drop, Next, SetField
from netvirt.dataplane.drops import DropReason
from netvirt.model.security import PROTOCOL_NUMBERS
from netvirt.southbound.model import SBState

BUILDER = "acl"

PRIO_CT_INVALID = 65532
PRIO_CT_ALLOW = 65531
PRIO_INFRA = 2000
PRIO_RULE = 1000
PRIO_PORT_DEFAULT = 1
PRIO_SET = 100  # + the member prefix length: longest prefix first

SET_REGISTER = "reg4"  # remote-group membership bits of the peer address (acl_sets → acl)
SET_BITS = 32  # remote groups per switch and direction that get a bit (the register's width)
SET_CHUNK = 4096  # member prefixes per acl_sets flow (the match expansion limit)

PROTOCOLS = PROTOCOL_NUMBERS  # one table of names, shared with the API's validation
PORT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}
ANY_PREFIXES = ("0.0.0.0/0", "::/0")


class Direction:
    """The two halves of a port's firewall: ingress pipeline (VM egress rules) and egress."""

    def __init__(self, pipeline: str) -> None:
        self.tag = pipeline  # "in" | "out"
        self.sg_direction = "egress" if pipeline == "in" else "ingress"
        self.port_symbol = "inport" if pipeline == "in" else "outport"
        self.peer = "dst" if pipeline == "in" else "src"

    def stage(self, name: str) -> str:
        return f"ls_{self.tag}_{name}"

    def ports(self, ports: Iterable[LPort]) -> Cmp:
        return inport_in(ports) if self.tag == "in" else outport_in(ports)


DIRECTIONS = (Direction("in"), Direction("out"))


def build(nb: NBSnapshot, sb: SBState, sink: FlowSink) -> None:
    groups = {g["id"]: g for g in nb.security_groups}
    members = _RuleMatches(nb)
    for switch in switches(nb, sb):
        guarded = [p for p in switch.secured() if p.nb.get("security_groups")]
        tracked = {p.name: _stateful(p, groups) for p in guarded}
        for port in guarded:
            inputs = (switch.key, tracked[port.name])  # all _port reads but the port
            emit = partial(_port, switch, port, tracked[port.name], sink)
            per_port(sink, BUILDER, switch, port, inputs, emit)
        for way in DIRECTIONS:
            if guarded:
                _infrastructure(switch, way, sink, tracked=any(tracked.values()))
            if any(tracked.values()):
                _tracking(switch, way, sink)
            _rules(switch, way, guarded, groups, members, sink)
        defaults: dict[str, tuple[object, ...]] = {}
        for way in DIRECTIONS:
            for name in ("pre_acl", "pre_stateful", "acl_sets", "acl", "stateful"):
                defaults[way.stage(name)] = (Next(),)
        add_defaults(sink, switch, BUILDER, defaults)


def _stateful(port: LPort, groups: dict[str, Obj]) -> bool:
    """A port is tracked if any of its groups is stateful (Neutron forbids mixing)."""
    return any(groups.get(g, {}).get("stateful", True) for g in port.nb["security_groups"])


def _nd() -> Expr:
    return disj(BoolSym("nd"), BoolSym("nd_rs"), BoolSym("nd_ra"))


def _infrastructure(switch: Switch, way: Direction, sink: FlowSink, *, tracked: bool) -> None:
    prov = switch.provenance(BUILDER, "infrastructure")
    if tracked:
        sink.add(switch.key, way.stage("pre_acl"), 110, _nd(), (Next(),), prov)
    sink.add(switch.key, way.stage("acl"), PRIO_INFRA, _nd(), (Next(),), prov)
    if way.tag == "in":
        dhcp = conj(BoolSym("ip4"), _eq("udp.src", 68), _eq("udp.dst", 67))
        sink.add(switch.key, way.stage("acl"), PRIO_INFRA, dhcp, (Next(),), prov)


def _port(switch: Switch, port: LPort, tracked: bool, sink: FlowSink) -> None:
    """A guarded port's own flows: its IP traffic is tracked (a stateful group) and
    dropped when no rule allows it."""
    for way in DIRECTIONS:
        match = conj(way.ports([port]), BoolSym("ip"))
        if tracked:
            acts = (set_reg0_bit(REGBIT_CONNTRACK), Next())
            prov = port_provenance(BUILDER, port)
            sink.add(switch.key, way.stage("pre_acl"), 100, match, acts, prov)
        drop = (Drop(DropReason.ACL_DENY),)
        prov = port_provenance(BUILDER, port, "default deny")
        sink.add(switch.key, way.stage("acl"), PRIO_PORT_DEFAULT, match, drop, prov)


def _tracking(switch: Switch, way: Direction, sink: FlowSink) -> None:
    prov = switch.provenance(BUILDER, "conntrack")
    tracked = reg0_bit(REGBIT_CONNTRACK)
    sink.add(switch.key, way.stage("pre_stateful"), 100, tracked, (CtNext(),), prov)
    acl = way.stage("acl")
    invalid = conj(tracked, BoolSym("ct.inv"))
    sink.add(switch.key, acl, PRIO_CT_INVALID, invalid, (Drop(DropReason.INVALID_CT_STATE),), prov)
    established = conj(tracked, BoolSym("ct.est"), Not(BoolSym("ct.new")))
    sink.add(switch.key, acl, PRIO_CT_ALLOW, established, (Next(),), prov)
    related = conj(tracked, BoolSym("ct.rel"), Not(BoolSym("ct.new")))
    sink.add(switch.key, acl, PRIO_CT_ALLOW, related, (Next(),), prov)
    commit = reg0_bit(REGBIT_CONNTRACK_COMMIT)
    sink.add(switch.key, way.stage("stateful"), 100, commit, (CtCommit(), Next()), prov)


# -- rules ------------------------------------------------------------------------------------


def _rules(
    switch: Switch,
    way: Direction,
    guarded: list[LPort],
    groups: dict[str, Obj],
    members: _RuleMatches,
    sink: FlowSink,
) -> None:
    used = sorted({g for p in guarded for g in p.nb["security_groups"]})
    bits = _set_bits(used, groups, way)
    if bits:
        _address_sets(switch, way, bits, members, sink)
    for group_id in used:
        group = groups.get(group_id)
        if group is None:
            continue
        users = [p for p in guarded if group_id in p.nb["security_groups"]]
        stateful = bool(group.get("stateful", True))
        for rule in sorted(group.get("security_group_rules", []), key=lambda r: str(r["id"])):
            if rule["direction"] != way.sg_direction:
                continue
            match = members.match(rule, way.peer, bits.get(str(rule.get("remote_group_id"))))
            if match is None:
                continue
            prov = Provenance(BUILDER, "security_group_rule", str(rule["id"]))
            if stateful:
                full = conj(way.ports(users), BoolSym("ct.new"), match)
                acts: tuple[object, ...] = (set_reg0_bit(REGBIT_CONNTRACK_COMMIT), Next())
            else:
                full, acts = conj(way.ports(users), match), (Next(),)
            sink.add(switch.key, way.stage("acl"), PRIO_RULE, full, acts, prov)


def _set_bits(used: list[str], groups: dict[str, Obj], way: Direction) -> dict[str, int]:
    """Remote group id → its ``reg4`` bit in this switch and direction (sorted ids, the
    first :data:`SET_BITS`; the rest keep the expanded match)."""
    remotes: set[str] = set()
    for group_id in used:
        for rule in groups.get(group_id, {}).get("security_group_rules", []):
            if rule["direction"] == way.sg_direction and rule.get("remote_group_id"):
                remotes.add(str(rule["remote_group_id"]))
    return {g: 1 << i for i, g in enumerate(sorted(remotes)[:SET_BITS])}


def _address_sets(
    switch: Switch, way: Direction, bits: dict[str, int], members: _RuleMatches, sink: FlowSink
) -> None:
    """``acl_sets``: the peer address → the bits of every group of ``bits`` it belongs to."""
    prov = switch.provenance(BUILDER, "remote group members")
    stage = way.stage("acl_sets")
    for priority, match, acts in members.sets(bits, way.peer):
        sink.add(switch.key, stage, priority, match, acts, prov)


SetFlow = tuple[int, Expr, tuple[object, ...]]  # an acl_sets flow: priority, match, actions


def _set_flows(
    bits: dict[str, int], peer: str, members: Callable[[str], list[str]]
) -> list[SetFlow]:
    """The ``acl_sets`` flows (priority, match, actions) for one assignment of bits."""
    member_bits: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}
    for group_id, bit in bits.items():
        for addr in members(group_id):
            net = ipaddress.ip_network(addr, strict=False)
            member_bits[net] = member_bits.get(net, 0) | bit
    wide = [n for n in member_bits if n.prefixlen < n.max_prefixlen]
    by_flow: dict[tuple[int, int, int], list[str]] = {}
    for net, value in member_bits.items():
        for outer in wide:  # a prefix inside a member prefix is in that member's groups too
            if outer.version == net.version and outer != net and net.subnet_of(outer):  # type: ignore[arg-type]
                value |= member_bits[outer]
        by_flow.setdefault((net.version, net.prefixlen, value), []).append(str(net))
    flows: list[SetFlow] = []
    for (version, prefixlen, value), nets in sorted(by_flow.items()):
        acts = (SetField(SET_REGISTER, value), Next())
        symbol = f"ip{version}.{peer}"
        for start in range(0, len(nets), SET_CHUNK):
            match = ips_cmp(symbol, nets[start : start + SET_CHUNK])
            flows.append((PRIO_SET + prefixlen, match, acts))
    return flows


class _RuleMatches:
    """``rule_match`` per (rule, direction, set bit), computed once per compile: a rule's
    match does not depend on the switch (only on the bit its remote group got there), and
    expanding a remote group's addresses for each switch using the group was quadratic in
    the size of the cloud."""

    def __init__(self, nb: NBSnapshot) -> None:
        self.nb = nb
        self._members: dict[str, list[str]] | None = None  # read only if a rule needs it
        self._cache: dict[tuple[str, str, int | None], Expr | None] = {}
        self._sets: dict[tuple[str, tuple[tuple[str, int], ...]], list[SetFlow]] = {}

    def members(self, group_id: str) -> list[str]:
        if self._members is None:
            self._members = _group_members(self.nb)
        return self._members.get(group_id, [])

    def sets(self, bits: dict[str, int], peer: str) -> list[SetFlow]:
        """The ``acl_sets`` flows of one bit assignment: switches whose rules name the same
        groups share them (building them per switch was ports x switches of work)."""
        key = (peer, tuple(sorted(bits.items())))
        if key not in self._sets:
            self._sets[key] = _set_flows(bits, peer, self.members)
        return self._sets[key]

    def match(self, rule: Obj, peer: str, bit: int | None = None) -> Expr | None:
        key = (str(rule["id"]), peer, bit)
        if key not in self._cache:
            remote = rule.get("remote_group_id")
            listed = {str(remote): self.members(str(remote))} if remote else {}
            self._cache[key] = rule_match(rule, peer, listed, set_bit=bit)
        return self._cache[key]


def _group_members(nb: NBSnapshot) -> dict[str, list[str]]:
    """Group id → every address (fixed IPs, address pair prefixes) of the ports using it."""
    out: dict[str, list[str]] = {}
    for port in nb.ports:
        addrs = [str(f["ip_address"]) for f in port.get("fixed_ips", [])]
        addrs += [str(p["ip_address"]) for p in port.get("allowed_address_pairs", [])]
        for group_id in port.get("security_groups", []):
            out.setdefault(group_id, []).extend(addrs)
    return out


def protocol_number(protocol: object, version: int) -> int | None:
    """Neutron's protocol (None, a name or a number as text) as an IP protocol number;
    ``icmp`` on an IPv6 rule means ICMPv6, as in Neutron."""
    if protocol is None or protocol in ("", "any"):
        return None
    text = str(protocol).lower()
    number = int(text) if text.isdigit() else PROTOCOLS[text]
    if number == 1 and version == 6:
        return 58
    return number


def rule_match(
    rule: Obj, peer: str, members: dict[str, list[str]], *, set_bit: int | None = None
) -> Expr | None:
    """The match of one rule (without the port part), or None if it can match nothing.

    A remote group is matched by its ``reg4`` bit when it has one (``set_bit``, set by
    ``acl_sets``), else by listing its members' addresses."""
    version = 4 if rule.get("ethertype", "IPv4") == "IPv4" else 6
    try:
        proto = protocol_number(rule.get("protocol"), version)
    except (KeyError, ValueError):
        return None
    proto_match = _protocol_match(proto, version, rule)
    if proto_match is None:
        return None
    family = BoolSym(f"ip{version}")
    implied = proto in (1, 58)  # icmp4/icmp6 imply the family
    terms: list[Expr] = [proto_match] if implied else [family, proto_match]
    symbol = f"ip{version}.{peer}"
    prefix = rule.get("remote_ip_prefix")
    if prefix and prefix not in ANY_PREFIXES:
        net = ipaddress.ip_network(prefix, strict=False)
        if net.version != version:
            return None
        if net.prefixlen:
            terms.append(ips_cmp(symbol, [str(net)]))
    remote = rule.get("remote_group_id")
    if remote:
        addrs = [a for a in members.get(remote, []) if _version(a) == version]
        if not addrs:
            return None
        if set_bit is None:
            terms.append(ips_cmp(symbol, addrs))
        else:
            terms.append(Cmp(SET_REGISTER, "==", (hex_mask(set_bit),)))
    return conj(*terms)


def _version(addr: str) -> int:
    return ip_version(addr)


def _eq(symbol: str, value: int) -> Cmp:
    return Cmp(symbol, "==", (Value(value),))


def _protocol_match(proto: int | None, version: int, rule: Obj) -> Expr | None:
    if proto is None:
        return conj()
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if proto in PORT_PROTOCOLS:
        name = PORT_PROTOCOLS[proto]
        return conj(BoolSym(name), _port_range(f"{name}.dst", low, high))
    icmp = {1: 4, 58: 6}.get(proto)
    if icmp is not None:
        if icmp != version:
            return None
        terms: list[Expr] = [BoolSym(f"icmp{icmp}")]
        if low is not None:
            terms.append(_eq(f"icmp{icmp}.type", int(low)))
            if high is not None:
                terms.append(_eq(f"icmp{icmp}.code", int(high)))
        return conj(*terms)
    return _eq("ip.proto", proto)


def _port_range(symbol: str, low: object, high: object) -> Expr:
    if low is None and high is None:
        return conj()
    lo = int(str(low)) if low is not None else 1
    hi = int(str(high)) if high is not None else lo
    if lo == hi:
        return _eq(symbol, lo)
    if lo <= 1 and hi >= 65535:
        return conj()
    return conj(Cmp(symbol, ">=", (Value(lo),)), Cmp(symbol, "<=", (Value(hi),)))
