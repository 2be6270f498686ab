"""The flow key: every field a flow can match or an action can set, as integers.

Theory of operation
-------------------
A packet entering the pipeline is reduced to a *flow key*: a list of ints,
one slot per :data:`FIELDS` entry (``key[F.eth_src.index]``). Classifier
matches are ``(field, value, mask)`` over those slots; actions rewrite slots;
the final packet is produced from the original frame and the changed slots.
Metadata (logical datapath, in/out port, registers, conntrack state) lives in
the same key, so one classifier handles headers and pipeline state alike.

Names are the match-language names (``eth.src``, ``ip4.dst``); protocol
aliases (``tcp.dst`` = ``tp.dst`` with a prerequisite) are resolved by the
compiler's symbol table, not here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    index: int
    width: int

    @property
    def full_mask(self) -> int:
        return (1 << self.width) - 1


_SPEC: tuple[tuple[str, int], ...] = (
    # pipeline metadata
    ("metadata", 32),  # logical datapath tunnel key
    ("inport", 32),  # logical ingress port key
    ("outport", 32),  # logical egress port key (multicast groups >= 0x8000)
    ("flags", 32),  # pipeline flags (see FLAG_*)
    ("reg0", 32),
    ("reg1", 32),
    ("reg2", 32),
    ("reg3", 32),
    ("reg4", 32),
    ("reg5", 32),
    ("reg6", 32),
    ("reg7", 32),
    ("xreg0", 128),  # 128-bit register: IPv6 next hop
    ("ct_state", 8),  # CT_* bits
    ("ct_mark", 32),
    ("ct_zone", 16),
    # L2
    ("eth.src", 48),
    ("eth.dst", 48),
    ("eth.type", 16),
    ("vlan.vid", 12),
    ("vlan.present", 1),
    # ARP
    ("arp.op", 16),
    ("arp.spa", 32),
    ("arp.tpa", 32),
    ("arp.sha", 48),
    ("arp.tha", 48),
    # IP (version independent)
    ("ip.proto", 8),
    ("ip.ttl", 8),
    ("ip.dscp", 6),
    ("ip.ecn", 2),
    ("ip.frag", 2),  # bit0: is a fragment, bit1: later fragment
    ("ip4.src", 32),
    ("ip4.dst", 32),
    ("ip6.src", 128),
    ("ip6.dst", 128),
    # L4
    ("tp.src", 16),
    ("tp.dst", 16),
    ("tcp.flags", 12),
    ("icmp.type", 8),
    ("icmp.code", 8),
    ("nd.target", 128),
    ("nd.sll", 48),
    ("nd.tll", 48),
)

FIELDS: tuple[Field, ...] = tuple(Field(n, i, w) for i, (n, w) in enumerate(_SPEC))
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
NUM_FIELDS = len(FIELDS)

# ct_state bits (same layout as Open vSwitch, so dumps read the same)
CT_NEW = 0x01
CT_EST = 0x02
CT_REL = 0x04
CT_RPL = 0x08
CT_INV = 0x10
CT_TRK = 0x20
CT_SNAT = 0x40
CT_DNAT = 0x80

# flags bits
FLAG_LOOPBACK = 0x01  # allow output back to the input port (ARP/ICMP replies)
FLAG_FORCE_SNAT = 0x02
FLAG_SKIP_ACL = 0x04  # set for traffic of ports without port security
FLAG_NAT_DONE = 0x08

MULTICAST_BASE = 0x8000  # outport values at or above this are multicast groups


def field(name: str) -> Field:
    """Look a field up by name; ``KeyError`` names the field on a typo."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown field {name!r}") from None


def new_key() -> list[int]:
    return [0] * NUM_FIELDS


def F(name: str) -> int:  # noqa: N802 - reads like a constant lookup
    """Index of a field in the flow key."""
    return BY_NAME[name].index
