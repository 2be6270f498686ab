"""NAT on conntrack entries: DNAT (floating IP, LB VIP), SNAT 1:1 and masquerade.

Theory of operation
-------------------
NAT is decided once, on the first packet of a connection (as in Linux), and
recorded in its conntrack entry as the difference between the original tuple
and the reply tuple: the reply tuple is the *translated* original packet,
reversed. So translating any later packet needs no NAT state of its own:

* an original-direction packet becomes the reverse of the reply tuple;
* a reply-direction packet becomes the reverse of the original tuple
  (un-SNAT and un-DNAT at once).

Because the reply tuple is also a store key (the entry's mirror, see
``conntrack.py``), two connections can never share a reply tuple: the mirror is
created with compare-and-set "create only", which is what finally guarantees
that replies are unambiguous.

Per-destination pools keep that guarantee: the reply tuple is (protocol,
destination after DNAT, external address, destination port after DNAT,
external port), so two connections whose pools differ differ in the reply
tuple's source already, and within one pool the port claim keeps them apart;
the mirror's create-only write still backs both (a claim that expired under a
live connection, or a pool key computed differently by an older agent).

Masquerade (SNAT with a port range) claims the external source port from a
pool per (external address, protocol, destination address, destination port) —
the destination after DNAT, i.e. the reply tuple's source — for protocols with
real ports (TCP, UDP, SCTP, UDP-Lite), as Linux and OVN keep NAT tuples unique
per destination: an external port is then reused toward every other
destination, so one busy server no longer exhausts the 64k ports for all of
them (with claims held through TIME_WAIT, one pool per address ran dry at
~540 conn/s sustained). ICMP echo keeps one pool per (external address,
protocol): its "destination port" is the constant ``ECHO_PORT`` (``codec.py``),
so a per-destination key would only split by address, for traffic that never
needs it. Claims go through ``StateStore.allocate``, owned by
the connection's primary key, with the entry's TTL (renewed with the entry's
writes when they change how long it lives: ``tcp.claim_due``; a claim that
ends before its record only lets the pool offer the port again, and the
mirror's create-only write still keeps reply tuples unique). The candidates
are a window of ``window`` ports starting at a hash of the original tuple —
preceded by the original source port when it is in the range, so ports are
preserved when they can be — and later windows follow when one is full. Two
inside hosts using the same source port thus get distinct external ports; a
retry by the same connection gets its own port back (same owner). If a claimed
port still collides on the reply tuple (a claim that expired under a live
connection), the next window is tried.

ICMP echo identifiers are NATed like source ports (see ``codec.py`` for how
echo tuples carry them); protocols without ports get 1:1 NAT only, and a
collision there makes the packet invalid rather than silently shared.
"""

from __future__ import annotations

from dataclasses import dataclass

from netvirt.dataplane.actions import CtDnat, CtLb, CtSnat
from netvirt.dataplane.nf.codec import PORT_PROTOCOLS, CtEntry, CtTuple, stable_hash
from netvirt.dataplane.nf.lb import LbRequest

DEFAULT_WINDOW = 32
DEFAULT_WINDOWS = 4


@dataclass(frozen=True, slots=True)
class Dnat:
    """Destination NAT to ``ip`` (and ``port``, for protocols with ports)."""

    ip: int
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Snat:
    """Source NAT to ``ip``; with ``port_range`` (inclusive) the source port is allocated."""

    ip: int
    port_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.port_range is not None:
            lo, hi = self.port_range
            if not 0 < lo <= hi <= 0xFFFF:
                raise ValueError(f"bad SNAT port range {self.port_range}")


@dataclass(frozen=True, slots=True)
class NatRequest:
    """What a NAT action asks for. All fields None: only apply the NAT already recorded.

    That empty request is ``ct_dnat;``/``ct_snat;`` without arguments: existing
    connections are translated (replies un-NATed), new ones are left alone.
    """

    dnat: Dnat | None = None
    snat: Snat | None = None
    lb: LbRequest | None = None

    @property
    def creates(self) -> bool:
        """Whether a new connection gets NAT here (and is therefore committed, as in OVN)."""
        return self.dnat is not None or self.snat is not None or self.lb is not None

    @classmethod
    def from_action(cls, action: CtDnat | CtSnat | CtLb) -> NatRequest:
        if isinstance(action, CtLb):
            return cls(lb=LbRequest.from_action(action))
        if isinstance(action, CtDnat):
            return cls(dnat=None if action.ip is None else Dnat(action.ip, action.port))
        return cls(snat=None if action.ip is None else Snat(action.ip, action.port_range))


def nat_tuple(
    orig: CtTuple,
    dnat: tuple[int, int | None] | None,
    snat: tuple[int, int | None] | None,
) -> CtTuple:
    """The original packet after translation (its reverse is the reply tuple).

    Ports are rewritten only where the protocol has them: a DNAT port only for
    TCP/UDP/SCTP/UDP-Lite, a SNAT port also for an echo request's identifier.
    """
    src, dst, sport, dport = orig.src, orig.dst, orig.sport, orig.dport
    if dnat is not None:
        dst = dnat[0]
        if dnat[1] is not None and orig.proto in PORT_PROTOCOLS:
            dport = dnat[1]
    if snat is not None:
        src = snat[0]
        if snat[1] is not None and orig.has_ports:
            sport = snat[1]
    return CtTuple(orig.ip_version, orig.proto, src, dst, sport, dport)


def translate(entry: CtEntry, reply: bool) -> CtTuple:
    """A packet of ``entry`` in the given direction, after NAT."""
    return entry.orig.reversed() if reply else entry.reply.reversed()


def translate_related(entry: CtEntry, reply: bool, outer: CtTuple) -> tuple[CtTuple, CtTuple]:
    """Translate an ICMP error related to ``entry``: (outer header, quoted packet).

    ``reply``: the error travels in the reply direction (toward the original
    sender; it quotes an original-direction packet). Outer addresses that are
    the connection's own endpoints are translated like a packet of that
    direction; a router's address in between stays. The quoted packet becomes
    the connection's packet as the error's receiver sent it.
    """
    o, r = entry.orig, entry.reply
    if reply:
        src = o.dst if outer.src == r.src else outer.src
        dst = o.src if outer.dst == r.dst else outer.dst
        quoted = o
    else:
        src = r.dst if outer.src == o.src else outer.src
        dst = r.src if outer.dst == o.dst else outer.dst
        quoted = r
    return outer._replace(src=src, dst=dst), quoted


def pool_key(prefix: str, ip: int, dest: CtTuple) -> str:
    """The SNAT port pool of external address ``ip`` for ``dest``, the original tuple
    after DNAT (before SNAT): one per destination address and port for protocols with
    ports, one per (address, protocol) otherwise (ICMP echo: see the module doc)."""
    head = f"{prefix}snat:{dest.ip_version}:{ip:x}:{dest.proto}"
    if dest.proto in PORT_PROTOCOLS:
        return f"{head}:{dest.dst:x}:{dest.dport}"
    return head


def snat_pool(prefix: str, entry: CtEntry) -> tuple[str, str]:
    """(pool, member) of an entry's claimed SNAT port (its destination after DNAT is
    the reply tuple's source)."""
    ip, port = entry.nat_src
    return pool_key(prefix, ip, entry.reply.reversed()), str(port)


def port_window(orig: CtTuple, lo: int, hi: int, size: int, attempt: int) -> list[int]:
    """Candidate external ports for ``orig``: attempt 0 tries its own source port first."""
    span = hi - lo + 1
    start = stable_hash(orig.ip_version, orig.proto, orig.src, orig.dst, orig.sport, orig.dport)
    first = (start % span) + attempt * size
    ports = [lo + (first + i) % span for i in range(min(size, span))]
    if attempt == 0 and lo <= orig.sport <= hi:
        ports = [orig.sport, *(p for p in ports if p != orig.sport)]
    return ports
