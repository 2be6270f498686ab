"""Request models for security groups and their rules, and IP protocol facts.

Field-level checks live here (types, ranges, protocol spelling); checks that
combine fields of a rule (port range per protocol, ethertype vs prefix) or
need the store (remote group, duplicates) are in
``northbound/security_groups.py``, so they can raise Neutron's named errors.

Protocols are stored as the client spelled them, normalized: names
lowercased, numbers as canonical decimal strings ("06" and 6 become "6").
Numbers are not rewritten to names; every semantic check (port ranges,
duplicates) compares by protocol number, so "tcp" and "6" mean the same.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from netvirt.model.types import UUID, Description, Name, ProjectId, RequestModel

Direction = Literal["ingress", "egress"]
EtherType = Literal["IPv4", "IPv6"]

# IANA protocol numbers of the names Neutron accepts for security group rules.
PROTOCOL_NUMBERS: dict[str, int] = {
    "icmp": 1,
    "igmp": 2,
    "ipip": 4,
    "tcp": 6,
    "egp": 8,
    "udp": 17,
    "dccp": 33,
    "ipv6-encap": 41,
    "ipv6-route": 43,
    "ipv6-frag": 44,
    "rsvp": 46,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmpv6": 58,
    "ipv6-icmp": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "ospf": 89,
    "vrrp": 112,
    "pgm": 113,
    "sctp": 132,
    "udplite": 136,
}
PORT_PROTOCOLS = frozenset({6, 17, 33, 132, 136})  # tcp udp dccp sctp udplite
ICMP_PROTOCOLS = frozenset({1, 58})
IPV6_ONLY_PROTOCOLS = frozenset({41, 43, 44, 58, 59, 60})
IPV4_ONLY_PROTOCOLS = frozenset({1})  # ICMPv4 over IPv6 is a mistake: use icmpv6


def normalize_protocol(value: object) -> str | None:
    """A protocol name (lowercased) or number 0-255 (decimal string); else an error."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("protocol must be a name or a number")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip().lower()
    else:
        raise ValueError("protocol must be a name or a number")
    if text in PROTOCOL_NUMBERS:
        return text
    if text.isdigit() and 0 <= int(text) <= 255:
        return str(int(text))
    names = ", ".join(sorted(PROTOCOL_NUMBERS))
    raise ValueError(
        f"protocol {value!r} not supported; use one of {names} or a number from 0 to 255"
    )


def protocol_number(protocol: str | None) -> int | None:
    """The IP protocol number of a normalized protocol (``None`` = any)."""
    if protocol is None:
        return None
    return int(protocol) if protocol.isdigit() else PROTOCOL_NUMBERS[protocol]


def _remote_prefix(value: str) -> str:
    """A prefix with host bits cleared; a bare address becomes a /32 or /128."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"'{value}' is not a valid IP prefix") from None


Protocol = Annotated[str | None, BeforeValidator(normalize_protocol)]
RemotePrefix = Annotated[str, AfterValidator(_remote_prefix)]
# Any port-sized value passes here; the per-protocol range is checked by the service.
PortBound = Annotated[int, Field(ge=0, le=65535)]


class SecurityGroupCreate(RequestModel):
    name: Name = ""
    description: Description = ""
    project_id: ProjectId | None = None
    tenant_id: ProjectId | None = None
    stateful: bool = True


class SecurityGroupUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    stateful: bool | None = None


class SecurityGroupRuleCreate(RequestModel):
    security_group_id: UUID
    direction: Direction
    ethertype: EtherType = "IPv4"
    protocol: Protocol = None
    port_range_min: PortBound | None = None
    port_range_max: PortBound | None = None
    remote_ip_prefix: RemotePrefix | None = None
    remote_group_id: UUID | None = None
    description: Description = ""
    project_id: ProjectId | None = None
    tenant_id: ProjectId | None = None
