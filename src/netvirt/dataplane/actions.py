"""Action types executed by the pipeline (data only; see ``pipeline.py`` for semantics).

The compiler's action language (``next; ct_commit; eth.dst = …;``) parses to
these objects, and the datapath executes them on the flow key. They are
frozen and hashable so rules can be deduplicated and cached.

Semantics summary (full detail in ``pipeline.py``):

* ``Next(table)``: continue at ``table`` (``None`` = the next table).
* ``Output()``: in an ingress pipeline, continue in the egress pipeline of
  the same datapath; in egress, deliver to ``outport`` (a patch port enters
  the peer datapath's ingress).
* ``Drop(reason)``: stop; the packet is counted under ``reason``.
* ``SetField``/``Move``/``Exchange``/``DecTTL``: rewrite key fields.
* ``CtNext``: look the connection up in conntrack (zone from ``ct_zone``),
  set ``ct_state`` and continue at the next table; ``CtCommit`` commits it;
  ``CtDnat``/``CtSnat`` translate (allocating a SNAT port when ``port_range``
  is given); ``CtLb`` picks a backend and DNATs; ``CtClear`` forgets state.
* ``EmitIcmpError``, ``EmitArpRequest``, ``DhcpReply``, ``NdAdvert``: build a
  new packet from the current one and send it through ``then`` actions.
* ``PutMacBinding``: learn an IP → MAC binding on a router port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import BY_NAME, F


@dataclass(frozen=True, slots=True)
class Next:
    table: int | None = None


@dataclass(frozen=True, slots=True)
class Output:
    pass


@dataclass(frozen=True, slots=True)
class Drop:
    reason: DropReason = DropReason.EXPLICIT_DROP


@dataclass(frozen=True, slots=True)
class SetField:
    field: str
    value: int
    mask: int | None = None  # None = the whole field


@dataclass(frozen=True, slots=True)
class Move:
    dst: str
    src: str


@dataclass(frozen=True, slots=True)
class Exchange:
    a: str
    b: str


@dataclass(frozen=True, slots=True)
class DecTTL:
    pass


@dataclass(frozen=True, slots=True)
class CtNext:
    pass


@dataclass(frozen=True, slots=True)
class CtCommit:
    mark: int | None = None


@dataclass(frozen=True, slots=True)
class CtDnat:
    ip: int | None = None  # None: only reverse (un-DNAT) existing connections
    ip_version: int = 4
    port: int | None = None


@dataclass(frozen=True, slots=True)
class CtSnat:
    ip: int | None = None  # None: only reverse (un-SNAT) existing connections
    ip_version: int = 4
    port_range: tuple[int, int] | None = None  # masquerade: allocate a source port


@dataclass(frozen=True, slots=True)
class Backend:
    ip: int
    port: int | None
    ip_version: int = 4


@dataclass(frozen=True, slots=True)
class CtLb:
    backends: tuple[Backend, ...]
    algorithm: str = "ROUND_ROBIN"  # ROUND_ROBIN | SOURCE_IP | LEAST_CONNECTIONS
    affinity_timeout: int = 0  # seconds; 0 = no affinity


@dataclass(frozen=True, slots=True)
class CtClear:
    pass


@dataclass(frozen=True, slots=True)
class EmitIcmpError:
    """Build an ICMP error (v4: type/code; v6: ICMPv6 type/code) quoting the packet."""

    icmp_type: int
    icmp_code: int
    then: tuple[object, ...] = ()
    mtu: int = 0  # for "fragmentation needed" / "packet too big"


@dataclass(frozen=True, slots=True)
class EmitArpRequest:
    """Replace the packet with an ARP (v4) or NS (v6) request for the next hop in reg0/xreg0."""

    then: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class DhcpOption:
    code: int
    value: bytes


@dataclass(frozen=True, slots=True)
class DhcpReply:
    """Answer a DHCPDISCOVER/REQUEST with an OFFER/ACK (or NAK for a wrong address)."""

    offer_ip: int
    server_ip: int
    server_mac: int
    netmask: int
    lease_time: int
    options: tuple[DhcpOption, ...] = field(default=())
    then: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class NdAdvert:
    """Answer a neighbor solicitation for ``target`` with ``mac``."""

    target: int
    mac: int
    router: bool = False
    then: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class RouterAdvert:
    """Answer a router solicitation with an RA (prefixes as (prefix, length, flags))."""

    mac: int
    src_ip: int
    prefixes: tuple[tuple[int, int, int], ...]
    mtu: int
    managed: bool = False
    other: bool = False
    then: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class PutMacBinding:
    """Learn (port=inport, ip=arp.spa or nd.target, mac=arp.sha or nd.tll)."""


@dataclass(frozen=True, slots=True)
class LookupMacBinding:
    """Set ``eth.dst`` from the binding learned for reg0 (or xreg0) on ``outport``;
    sets ``reg7`` to 1 when one was found and 0 otherwise."""


@dataclass(frozen=True, slots=True)
class SelectEcmp:
    """Set ``reg3`` to a member number in 1..``count`` chosen by a hash of the
    packet's IP source, IP destination, protocol and L4 ports, so every packet
    of one flow takes the same path while flows spread over the members.

    lr_in_ip_routing sets ``reg2`` (the ECMP group) and runs this action;
    lr_in_ip_routing_ecmp then matches ``reg2``/``reg3`` and sets the member's
    next hop, source MAC and output port with ordinary actions.
    """

    count: int


Action = (
    Next
    | Output
    | Drop
    | SetField
    | Move
    | Exchange
    | DecTTL
    | CtNext
    | CtCommit
    | CtDnat
    | CtSnat
    | CtLb
    | CtClear
    | EmitIcmpError
    | EmitArpRequest
    | DhcpReply
    | NdAdvert
    | RouterAdvert
    | PutMacBinding
    | LookupMacBinding
    | SelectEcmp
)


# --------------------------------------------------------------------------- #
# action lists compiled for the pipeline's slow path
# --------------------------------------------------------------------------- #
# An op is (code, operands...): field names resolved to key indexes once per rule.
Op = tuple[Any, ...]
Program = int | tuple[Op, ...] | None  # a jump to a table | plain ops | run by _execute
OP_SET, OP_SET_MASKED, OP_MOVE, OP_EXCHANGE, OP_DEC_TTL = range(5)
OP_NEXT, OP_END, OP_DROP, OP_CT_CLEAR, OP_LEARN, OP_LOOKUP_BINDING, OP_ECMP = range(5, 12)
OP_OUTPUT, OP_CT = 12, 13  # last ops only: run by Pipeline._run itself (they yield)
YIELD = -1  # _run_plain stopped at OP_OUTPUT or OP_CT (never a table number)


def compile_program(
    acts: Iterable[object], table: int, next_table: Callable[[int], int | None]
) -> Program:
    """Compile a rule's action list for the pipeline's table walk (``Pipeline._run``).

    A lone ``next`` to a known table compiles to that table's number; a list of
    actions that never yield (no conntrack, output nor generated packet) to ops
    for ``Pipeline._run_plain``, possibly ended by an ``output`` that is the
    last action or by a conntrack action that ends the list (``ct_next``,
    ``ct_dnat``, ``ct_snat``, ``ct_lb``: what follows them is never run);
    anything else to None (``Pipeline._execute``). Compilation stops where
    ``_execute`` would stop (``next``, ``drop``, those conntrack actions), so
    actions it would never reach are never looked at."""
    ops: list[Op] = []
    acts = tuple(acts)
    for position, act in enumerate(acts):
        if isinstance(act, CtNext | CtDnat | CtSnat | CtLb):
            ops.append((OP_CT, act))
            return tuple(ops)
        if isinstance(act, Output) and position == len(acts) - 1:
            ops.append((OP_OUTPUT,))
            return tuple(ops)
        if isinstance(act, Next):
            target = act.table if act.table is not None else next_table(table)
            if target is None:
                ops.append((OP_END,))
            elif not ops:
                return target
            else:
                ops.append((OP_NEXT, target))
            return tuple(ops)
        op = _plain_op(act)
        if op is None:
            return None
        ops.append(op)
        if op[0] == OP_DROP:
            break
    return tuple(ops)


def _plain_op(act: object) -> Op | None:
    """The op of an action that never yields; None for the others."""
    if isinstance(act, SetField):
        if act.mask is None:
            return (OP_SET, F(act.field), act.value)
        return (OP_SET_MASKED, F(act.field), act.value & act.mask, ~act.mask)
    if isinstance(act, Output | CtNext | CtDnat | CtSnat | CtLb | CtCommit):
        return None
    if isinstance(act, Drop):
        return (OP_DROP, act.reason)
    if isinstance(act, Move):
        return (OP_MOVE, F(act.dst), F(act.src))
    if isinstance(act, Exchange):
        return (OP_EXCHANGE, F(act.a), F(act.b))
    if isinstance(act, DecTTL):
        return (OP_DEC_TTL,)
    if isinstance(act, CtClear):
        return (OP_CT_CLEAR,)
    if isinstance(act, PutMacBinding):
        return (OP_LEARN,)
    if isinstance(act, LookupMacBinding):
        return (OP_LOOKUP_BINDING,)
    if isinstance(act, SelectEcmp):
        return (OP_ECMP, max(act.count, 1))
    return None  # a generated packet


# --------------------------------------------------------------------------- #
# what an action list adds to a megaflow's wildcards
# --------------------------------------------------------------------------- #
Reads = tuple[tuple[int, int], ...]  # (field index, mask)
_NOTHING = (Next, Output, Drop, CtClear)
_ECMP_READS = ("ip4.src", "ip4.dst", "ip6.src", "ip6.dst", "ip.proto", "tp.src", "tp.dst", "reg3")
_BINDING_READS = ("eth.type", "eth.dst", "reg0", "xreg0", "reg7", "metadata", "outport")


def megaflow_reads(acts: Iterable[object]) -> Reads | None:
    """The key fields a rule's actions read or write, for the megaflow of a walk that ran
    them (``pipeline.py``); None when the walk may not be cached as a megaflow at all.

    A whitelist: only actions whose effect is a function of the key. A field an action
    writes is recorded whole so that every packet of the megaflow has the same value
    there before and after, which keeps the output's byte patches constants (a packet
    already carrying the value written must not share a megaflow with one that does
    not); a field it reads (a ``Move`` source, the TTL of ``dec_ttl``, the ECMP hash)
    is recorded because the outcome depends on it. Conntrack, generated packets and
    learning read more than the key: no megaflow."""
    reads: dict[int, int] = {}
    names: tuple[str, ...]
    for act in acts:
        if isinstance(act, _NOTHING):
            continue
        if isinstance(act, SetField):
            names = (act.field,)
        elif isinstance(act, Move):
            names = (act.dst, act.src)
        elif isinstance(act, Exchange):
            names = (act.a, act.b)
        elif isinstance(act, DecTTL):
            names = ("ip.ttl",)
        elif isinstance(act, SelectEcmp):
            names = _ECMP_READS
        elif isinstance(act, LookupMacBinding):
            names = _BINDING_READS
        else:
            return None
        for name in names:
            spec = BY_NAME[name]
            reads[spec.index] = spec.full_mask
    return tuple(sorted(reads.items()))
