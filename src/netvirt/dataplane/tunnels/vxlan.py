"""VXLAN tunnel (RFC 7348, UDP 4789): the network's VNI and nothing else.

VXLAN has no room for the logical ports or offload metadata, so received
packets have ``ingress``/``egress`` None (the receiving host finds the
egress port with its own L2 lookup) and every frame crosses as wire frames:
super-frames are segmented and seeded checksums completed before
encapsulation (see ``udp.py`` for the MTU rules). Datagrams too short for the
header, without the I flag, or with less than an Ethernet header inside are
counted as ``MALFORMED_TUNNEL``.
"""

from __future__ import annotations

from netvirt.dataplane.headers.vxlan import VXLAN_HLEN, VXLAN_PORT, VxlanHeader
from netvirt.dataplane.ports.base import Frame
from netvirt.dataplane.tunnels.udp import TunnelPacket, UdpTunnel


class VxlanTunnel(UdpTunnel):
    """VXLAN endpoint bound to ``(local_ip, 4789)``; ingress/egress keys are not carried."""

    default_port = VXLAN_PORT

    @property
    def header_overhead(self) -> int:
        """The 8-byte VXLAN header."""
        return VXLAN_HLEN

    def _encap(self, vni: int, ingress: int, egress: int) -> bytes:
        return VxlanHeader(vni).pack()

    def _decap(self, payload: bytes, remote: str) -> TunnelPacket:
        header, offset = VxlanHeader.parse(payload)
        return TunnelPacket(remote, header.vni, None, None, Frame(payload[offset:]))
