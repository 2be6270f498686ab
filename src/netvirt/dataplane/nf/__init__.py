"""Network functions with per-connection state: conntrack, NAT, load balancing.

The state lives in a :class:`~netvirt.state.StateStore` (in-process or Redis),
so any host can continue any connection. ``conntrack.py`` holds the theory of
operation; docs/conntrack.md the API, the store layout and the timeouts.

* :class:`Conntrack` — ``process``/``process_batch``/``lookup_batch`` on
  :class:`CtTuple` s: the functional core.
* :class:`FlowKeyConntrack` (``flowkey.py``) — the pipeline's ``ConnTracker``:
  reads the tuple from a flow key, writes back ``ct_state``, ``ct_mark`` and
  NAT rewrites; :meth:`FlowKeyConntrack.ct_batch` answers the conntrack
  actions of a whole packet batch (:class:`CtCall` s) with one conntrack batch.
* :func:`packet_tuple`, :func:`related_tuple` — tuples from a parsed packet
  (including the ICMP echo identifier and the packet an ICMP error quotes,
  which the flow key does not carry).
"""

from __future__ import annotations

from netvirt.dataplane.headers.icmp import IcmpHeader
from netvirt.dataplane.nf.codec import (
    PORT_PROTOCOLS,
    CtEntry,
    CtState,
    CtTuple,
    icmp_tuple,
    is_icmp_error,
    quoted_tuple,
)
from netvirt.dataplane.nf.conntrack import (
    FAIL_POLICIES,
    Conntrack,
    CtHit,
    CtRequest,
    CtResult,
    Timeouts,
    tcp_step,
)
from netvirt.dataplane.nf.flowkey import CtCall, FlowKeyConntrack, tuple_of_key, write_tuple
from netvirt.dataplane.nf.lb import LbRequest
from netvirt.dataplane.nf.nat import Dnat, NatRequest, Snat
from netvirt.dataplane.packet import Packet

__all__ = [
    "FAIL_POLICIES",
    "Conntrack",
    "CtCall",
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
