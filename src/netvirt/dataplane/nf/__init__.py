"""Network functions with per-connection state: conntrack, NAT, load balancing.

The state lives in a :class:`~netvirt.state.StateStore` (in-process or Redis),
so any host can continue any connection. ``conntrack.py`` holds the theory of
operation; docs/conntrack.md the API, the store layout and the timeouts.

* :class:`Conntrack` — ``process``/``process_batch``/``lookup_batch`` on
  :class:`CtTuple` s: the functional core.
* :class:`FlowKeyConntrack` — the pipeline's ``ConnTracker``: reads the tuple
  from a flow key, writes back ``ct_state``, ``ct_mark`` and NAT rewrites.
* :func:`packet_tuple`, :func:`related_tuple` — tuples from a parsed packet
  (including the ICMP echo identifier and the packet an ICMP error quotes,
  which the flow key does not carry).
"""

from __future__ import annotations

from collections.abc import Sequence

from netvirt.dataplane.actions import CtDnat, CtLb, CtSnat
from netvirt.dataplane.drops import DropReason
from netvirt.dataplane.fields import F
from netvirt.dataplane.headers.icmp import IcmpHeader
from netvirt.dataplane.nf.codec import (
    ECHO_PORT,
    PORT_PROTOCOLS,
    CtEntry,
    CtState,
    CtTuple,
    icmp_ident,
    icmp_tuple,
    is_icmp_error,
    quoted_tuple,
)
from netvirt.dataplane.nf.conntrack import (
    Conntrack,
    CtHit,
    CtRequest,
    CtResult,
    Timeouts,
    tcp_step,
)
from netvirt.dataplane.nf.lb import LbRequest
from netvirt.dataplane.nf.nat import Dnat, NatRequest, Snat
from netvirt.dataplane.packet import Packet

__all__ = [
    "Conntrack",
    "CtEntry",
    "CtHit",
    "CtRequest",
    "CtResult",
    "CtState",
    "CtTuple",
    "Dnat",
    "FlowKeyConntrack",
    "LbRequest",
    "NatRequest",
    "Snat",
    "Timeouts",
    "icmp_tuple",
    "packet_tuple",
    "related_tuple",
    "tcp_step",
    "tuple_of_key",
    "write_tuple",
]

_ETH_TYPE, _IP_PROTO = F("eth.type"), F("ip.proto")
_IP4_SRC, _IP4_DST, _IP6_SRC, _IP6_DST = F("ip4.src"), F("ip4.dst"), F("ip6.src"), F("ip6.dst")
_TP_SRC, _TP_DST, _TCP_FLAGS = F("tp.src"), F("tp.dst"), F("tcp.flags")
_ICMP_TYPE, _CT_STATE, _CT_MARK = F("icmp.type"), F("ct_state"), F("ct_mark")
_IPV4, _IPV6 = 0x0800, 0x86DD


def packet_tuple(packet: Packet) -> CtTuple | None:
    """The conntrack tuple of a parsed packet; None when it is not IP."""
    if packet.ip_version not in (4, 6):
        return None
    v, proto, src, dst = packet.ip_version, packet.ip_proto, packet.ip_src, packet.ip_dst
    if proto in PORT_PROTOCOLS:
        return CtTuple(v, proto, src, dst, packet.l4_sport, packet.l4_dport)
    if isinstance(packet.l4, IcmpHeader):
        return icmp_tuple(v, src, dst, packet.icmp_type, packet.l4.rest >> 16)
    if v == 6 and packet.l4 is not None and packet.icmp_type in (128, 129):
        ident = int.from_bytes(packet.payload[0:2], "big")
        return icmp_tuple(6, src, dst, packet.icmp_type, ident)
    if packet.l4 is not None:
        return icmp_tuple(v, src, dst, packet.icmp_type)
    return CtTuple(v, proto, src, dst)


def related_tuple(packet: Packet) -> CtTuple | None:
    """For an ICMP/ICMPv6 error, the tuple of the packet it quotes; None otherwise."""
    if packet.l4 is None or not is_icmp_error(packet.ip_version, packet.icmp_type):
        return None
    if packet.ip_proto not in (1, 58):
        return None
    quote = packet.payload if packet.ip_version == 4 else packet.payload[4:]
    return quoted_tuple(packet.ip_version, quote)


def tuple_of_key(key: Sequence[int]) -> CtTuple | None:
    """The tuple of a flow key; for ICMP echo the identifier is read from ``tp.src``."""
    if key[_ETH_TYPE] == _IPV4:
        v, src, dst = 4, key[_IP4_SRC], key[_IP4_DST]
    elif key[_ETH_TYPE] == _IPV6:
        v, src, dst = 6, key[_IP6_SRC], key[_IP6_DST]
    else:
        return None
    proto = key[_IP_PROTO]
    if proto in PORT_PROTOCOLS:
        return CtTuple(v, proto, src, dst, key[_TP_SRC], key[_TP_DST])
    if proto == (1 if v == 4 else 58):
        return icmp_tuple(v, src, dst, key[_ICMP_TYPE], key[_TP_SRC])
    return CtTuple(v, proto, src, dst)


def write_tuple(key: list[int], t: CtTuple) -> None:
    """Write a (translated) tuple back into a flow key."""
    if t.ip_version == 4:
        key[_IP4_SRC], key[_IP4_DST] = t.src, t.dst
    else:
        key[_IP6_SRC], key[_IP6_DST] = t.src, t.dst
    if t.proto in PORT_PROTOCOLS:
        key[_TP_SRC], key[_TP_DST] = t.sport, t.dport
    elif t.is_icmp and ECHO_PORT in (t.sport, t.dport):
        key[_TP_SRC] = icmp_ident(t)


class FlowKeyConntrack:
    """The pipeline's ``ConnTracker`` over :class:`Conntrack`.

    Within one packet, calls in one zone after a NAT rewrite must reach the
    same connection although the key's tuple changed (Open vSwitch keeps the
    packet↔connection association in the packet). This adapter remembers, per
    zone, the last connection and translated tuple together with ``now``, and
    passes it as ``hint`` when the next call has that tuple and the same
    ``now``; :meth:`begin_packet` forgets it (call it per packet when packets
    can share a timestamp). ``last`` is the last result, for traces.
    """

    def __init__(self, conntrack: Conntrack) -> None:
        self.conntrack = conntrack
        self.last: CtResult | None = None
        self._assoc: dict[int, tuple[float, CtTuple, CtEntry]] = {}

    def begin_packet(self) -> None:
        self._assoc.clear()

    def ct_next(self, zone: int, key: list[int], now: float, related: CtTuple | None = None) -> int:
        """Look up (and advance) the connection: the ct_state bits (0 for non-IP)."""
        result = self._call(zone, key, now, related=related)
        return result.state if result is not None else 0

    def ct_commit(self, zone: int, key: list[int], now: float, mark: int | None) -> None:
        self._call(zone, key, now, commit=True, mark=mark)

    def ct_nat(self, zone: int, key: list[int], now: float, action: CtDnat | CtSnat) -> None:
        """Translate the key; a NAT failure leaves ``ct_state`` with ``ct.inv`` set."""
        self._call(zone, key, now, nat=NatRequest.from_action(action))

    def ct_lb(self, zone: int, key: list[int], now: float, action: CtLb) -> bool:
        """Pick a backend and DNAT to it; False means drop with ``NO_LB_BACKEND``."""
        if not action.backends:
            return False
        result = self._call(zone, key, now, nat=NatRequest.from_action(action))
        return result is None or result.drop is not DropReason.NO_LB_BACKEND

    def _call(
        self,
        zone: int,
        key: list[int],
        now: float,
        *,
        commit: bool = False,
        mark: int | None = None,
        nat: NatRequest | None = None,
        related: CtTuple | None = None,
    ) -> CtResult | None:
        t = tuple_of_key(key)
        if t is None:
            return None
        assoc = self._assoc.get(zone)
        hint = assoc[2] if assoc is not None and assoc[:2] == (now, t) else None
        result = self.conntrack.process(
            zone,
            t,
            key[_TCP_FLAGS],
            now,
            commit=commit,
            mark=mark,
            nat=nat,
            related=related,
            hint=hint,
        )
        self.last = result
        key[_CT_MARK] = result.mark
        if nat is not None:
            write_tuple(key, result.tuple)
            key[_CT_STATE] = result.state
        if result.entry is not None:
            self._assoc[zone] = (now, result.tuple, result.entry)
        return result
