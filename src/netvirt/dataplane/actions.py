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

from dataclasses import dataclass, field

from netvirt.dataplane.drops import DropReason


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
