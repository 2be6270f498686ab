"""Request models for networks, subnets and ports (Neutron v2.0 field names)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from netvirt.model.types import (
    CIDR,
    MAC,
    UUID,
    Description,
    IPAddress,
    IPOrCIDR,
    Name,
    ProjectId,
    RequestModel,
)

NetworkType = Literal["geneve", "vxlan"]
Ipv6Mode = Literal["slaac", "dhcpv6-stateful", "dhcpv6-stateless"]


class NetworkCreate(RequestModel):
    name: Name = ""
    description: Description = ""
    project_id: ProjectId | None = None
    tenant_id: ProjectId | None = None
    admin_state_up: bool = True
    shared: bool = False
    mtu: int | None = Field(None, ge=68, le=9000)
    port_security_enabled: bool = True
    router_external: bool = Field(False, alias="router:external")
    network_type: NetworkType | None = Field(None, alias="provider:network_type")
    physical_network: str | None = Field(None, alias="provider:physical_network", max_length=64)
    segmentation_id: int | None = Field(
        None, alias="provider:segmentation_id", ge=1, le=(1 << 24) - 1
    )
    qos_policy_id: UUID | None = None
    dns_domain: str = Field("", max_length=255)
    availability_zone_hints: list[str] = Field(default_factory=list, max_length=16)
    is_default: bool = False


class NetworkUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    admin_state_up: bool | None = None
    shared: bool | None = None
    mtu: int | None = Field(None, ge=68, le=9000)
    port_security_enabled: bool | None = None
    router_external: bool | None = Field(None, alias="router:external")
    qos_policy_id: UUID | None = None
    dns_domain: str | None = Field(None, max_length=255)


class AllocationPool(RequestModel):
    start: IPAddress
    end: IPAddress


class HostRoute(RequestModel):
    destination: CIDR
    nexthop: IPAddress


class SubnetCreate(RequestModel):
    network_id: UUID
    cidr: CIDR
    ip_version: Literal[4, 6] = 4
    name: Name = ""
    description: Description = ""
    project_id: ProjectId | None = None
    tenant_id: ProjectId | None = None
    # absent ("auto") = the first host address; an explicit null = no gateway
    gateway_ip: Literal["auto"] | IPAddress | None = "auto"
    allocation_pools: list[AllocationPool] | None = Field(None, max_length=64)
    dns_nameservers: list[IPAddress] = Field(default_factory=list, max_length=5)
    host_routes: list[HostRoute] = Field(default_factory=list, max_length=32)
    enable_dhcp: bool = True
    ipv6_ra_mode: Ipv6Mode | None = None
    ipv6_address_mode: Ipv6Mode | None = None
    subnetpool_id: None = None
    segment_id: None = None


class SubnetUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    gateway_ip: IPAddress | None = None
    allocation_pools: list[AllocationPool] | None = Field(None, max_length=64)
    dns_nameservers: list[IPAddress] | None = Field(None, max_length=5)
    host_routes: list[HostRoute] | None = Field(None, max_length=32)
    enable_dhcp: bool | None = None


class FixedIP(RequestModel):
    subnet_id: UUID | None = None
    ip_address: IPAddress | None = None


class AddressPair(RequestModel):
    ip_address: IPOrCIDR
    mac_address: MAC | None = None


class PortCreate(RequestModel):
    network_id: UUID
    name: Name = ""
    description: Description = ""
    project_id: ProjectId | None = None
    tenant_id: ProjectId | None = None
    admin_state_up: bool = True
    mac_address: MAC | None = None
    fixed_ips: list[FixedIP] | None = Field(None, max_length=32)
    device_id: str = Field("", max_length=255)
    device_owner: str = Field("", max_length=255)
    security_groups: list[UUID] | None = Field(None, max_length=32)
    port_security_enabled: bool | None = None
    allowed_address_pairs: list[AddressPair] = Field(default_factory=list, max_length=32)
    binding_host_id: str = Field("", alias="binding:host_id", max_length=255)
    binding_vnic_type: Literal["normal"] = Field("normal", alias="binding:vnic_type")
    binding_profile: dict[str, Any] = Field(default_factory=dict, alias="binding:profile")
    qos_policy_id: UUID | None = None


class PortUpdate(RequestModel):
    name: Name | None = None
    description: Description | None = None
    admin_state_up: bool | None = None
    mac_address: MAC | None = None
    fixed_ips: list[FixedIP] | None = Field(None, max_length=32)
    device_id: str | None = Field(None, max_length=255)
    device_owner: str | None = Field(None, max_length=255)
    security_groups: list[UUID] | None = Field(None, max_length=32)
    port_security_enabled: bool | None = None
    allowed_address_pairs: list[AddressPair] | None = Field(None, max_length=32)
    binding_host_id: str | None = Field(None, alias="binding:host_id", max_length=255)
    binding_profile: dict[str, Any] | None = Field(None, alias="binding:profile")
    qos_policy_id: UUID | None = None
