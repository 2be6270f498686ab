"""Request models for routers and floating IPs (Neutron v2.0 field names).

Only the shape of each field is checked here; rules that need the store
(is the network external, is the nexthop connected, is the address free) live
in :mod:`netvirt.northbound.routers` and :mod:`netvirt.northbound.floatingips`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from netvirt.model.l2 import FixedIP
from netvirt.model.types import (
    CIDR,
    UUID,
    Description,
    IPAddress,
    Name,
    ProjectId,
    RequestModel,
)

# Neutron's default ``max_routes``: more would not fit a router's FIB budget anyway.
MAX_ROUTES = 30


class GatewayInfo(RequestModel):
    """``external_gateway_info``. An empty object (no ``network_id``) clears the
    gateway, as Neutron accepts ``{}`` and ``null`` alike."""

    network_id: UUID | None = None
    enable_snat: bool | None = None
    external_fixed_ips: list[FixedIP] | None = Field(None, max_length=8)


class Route(RequestModel):
    """One extra route: traffic to ``destination`` goes through ``nexthop``."""

    destination: CIDR
    nexthop: IPAddress


class RouterCreate(RequestModel):
    name: Name = ""
    description: Description = ""
    project_id: ProjectId | None = None
    tenant_id: ProjectId | None = None
    admin_state_up: bool = True
    external_gateway_info: GatewayInfo | None = None
    # Every netvirt router is distributed and needs no HA pair; the fields are
    # accepted so clients that send Neutron's defaults keep working.
    distributed: Literal[True] | None = None
    ha: Literal[False] | None = None
    availability_zone_hints: list[str] = Field(default_factory=list, max_length=16)
    flavor_id: None = None


class RouterUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    admin_state_up: bool | None = None
    external_gateway_info: GatewayInfo | None = None
    routes: list[Route] | None = Field(None, max_length=MAX_ROUTES)
    distributed: Literal[True] | None = None
    ha: Literal[False] | None = None


class InterfaceBody(RequestModel):
    """Body of ``add_router_interface`` / ``remove_router_interface`` (not enveloped)."""

    subnet_id: UUID | None = None
    port_id: UUID | None = None


class FloatingIPCreate(RequestModel):
    floating_network_id: UUID
    floating_ip_address: IPAddress | None = None
    subnet_id: UUID | None = None
    port_id: UUID | None = None
    fixed_ip_address: IPAddress | None = None
    description: Description = ""
    project_id: ProjectId | None = None
    tenant_id: ProjectId | None = None


class FloatingIPUpdate(RequestModel):
    port_id: UUID | None = None
    fixed_ip_address: IPAddress | None = None
    description: Description | None = None
