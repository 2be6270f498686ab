"""Register and flag conventions shared by the builders and the pipeline.

Switch pipelines
  ``reg0`` bit 0 (REGBIT_CONNTRACK): the packet must go through conntrack for
  security groups (set in ls_*_pre_acl, consumed in ls_*_pre_stateful).
  ``reg0`` bit 1 (REGBIT_CONNTRACK_COMMIT): commit the connection in
  ls_*_stateful (set by an ACL allowing a new connection).
  ``reg0`` bit 2 (REGBIT_LB): the packet is addressed to a VIP (ls_in_pre_lb).
  ``reg4``: one bit per remote security group named by the switch's rules (per
  direction): set in ls_*_acl_sets to the groups the peer address belongs to,
  tested by the rules in ls_*_acl (``build/acl.py``).
Router pipelines
  ``reg0``: IPv4 next hop chosen by lr_in_ip_routing; ``xreg0``: IPv6 next hop.
  ``reg1``: the router port's own IPv4 address on the output side (ICMP source,
  SNAT address of ARP requests).
  ``reg7``: result of ``lookup_mac_binding`` (1 = found).
  ``reg2``: ECMP group id chosen by ip_routing (0 = none), ``reg3``: the
  group member (1..n) picked by ``SelectEcmp``.
Conntrack zones are chosen by the pipeline, not by flows: switch ingress
uses the zone of (datapath, inport), switch egress (datapath, outport), a
router one zone per router — so the two ends of a connection inside one
switch are tracked independently, as each VIF has its own firewall.
"""

from __future__ import annotations

REGBIT_CONNTRACK = 0x1
REGBIT_CONNTRACK_COMMIT = 0x2
REGBIT_LB = 0x4
