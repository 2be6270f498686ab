"""UDP tunnels between hosts: Geneve (with logical ports) and VXLAN.

Both share ``udp.UdpTunnel``: a non-blocking socket bound to the host's
underlay address, DF set, batched receive that counts malformed datagrams
instead of raising. See docs/datapath-io.md for the MTU rules.
"""

from netvirt.dataplane.tunnels.geneve import GeneveTunnel
from netvirt.dataplane.tunnels.udp import TunnelPacket, UdpTunnel
from netvirt.dataplane.tunnels.vxlan import VxlanTunnel

__all__ = ["GeneveTunnel", "TunnelPacket", "UdpTunnel", "VxlanTunnel"]
