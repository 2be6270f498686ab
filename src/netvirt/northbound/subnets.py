"""Subnet service: CIDR and gateway rules, pools, DNS, host routes, IPv6 modes."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.model.l2 import SubnetCreate, SubnetUpdate
from netvirt.northbound import ipam
from netvirt.northbound.access import fetch, fetch_network, network_visible
from netvirt.northbound.context import Context
from netvirt.northbound.errors import BadRequest, Conflict, InvalidInput, not_found
from netvirt.northbound.schema import IPAllocation, Network, Port, Subnet
from netvirt.northbound.schema.base import standard_fields

ROUTER_OWNERS = ("network:router_interface", "network:router_gateway")


def to_dict(subnet: Subnet) -> dict[str, Any]:
    return standard_fields(subnet) | {
        "network_id": subnet.network_id,
        "ip_version": subnet.ip_version,
        "cidr": subnet.cidr,
        "gateway_ip": subnet.gateway_ip,
        "allocation_pools": list(subnet.allocation_pools),
        "dns_nameservers": list(subnet.dns_nameservers),
        "host_routes": list(subnet.host_routes),
        "enable_dhcp": subnet.enable_dhcp,
        "ipv6_ra_mode": subnet.ipv6_ra_mode,
        "ipv6_address_mode": subnet.ipv6_address_mode,
        "subnetpool_id": None,
        "segment_id": None,
        "service_types": [],
    }


def fetch_subnet(session: Session, ctx: Context, ident: str) -> Subnet:
    subnet = fetch(session, Subnet, ident, "subnet")
    net = session.get(Network, subnet.network_id)
    if net is None or not (ctx.owns(subnet.project_id) or network_visible(ctx, net)):
        raise not_found("subnet", ident)
    return subnet


def _check_version(field: str, value: str, version: int) -> None:
    if ipaddress.ip_address(value).version != version:
        raise InvalidInput(field, f"{value} is not an IPv{version} address")


def _check_ipv6_modes(req: SubnetCreate) -> None:
    if req.ip_version == 4 and (req.ipv6_ra_mode or req.ipv6_address_mode):
        raise InvalidInput("ipv6_ra_mode", "IPv6 modes are not valid on an IPv4 subnet")
    if req.ipv6_ra_mode and req.ipv6_address_mode and req.ipv6_ra_mode != req.ipv6_address_mode:
        raise InvalidInput(
            "ipv6_address_mode",
            f"ipv6_ra_mode set to '{req.ipv6_ra_mode}' with ipv6_address_mode set to "
            f"'{req.ipv6_address_mode}' is not valid; if both are set they must be equal",
        )
    slaac = req.ipv6_address_mode in ("slaac", "dhcpv6-stateless")
    if slaac and ipaddress.ip_network(req.cidr).prefixlen != 64:
        raise InvalidInput("cidr", "SLAAC and DHCPv6-stateless need a /64 prefix")


def _resolve_gateway(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network, gw: str | None
) -> str | None:
    if gw == "auto":
        return str(ipam.first_host(net))
    if gw is None:
        return None
    addr = ipaddress.ip_address(gw)
    if addr.version != net.version:
        raise InvalidInput("gateway_ip", f"{gw} is not an IPv{net.version} address")
    if addr not in net:
        raise InvalidInput("gateway_ip", f"gateway {gw} is not in subnet {net}")
    if (
        net.version == 4
        and net.num_addresses > 2
        and addr in (net.network_address, net.broadcast_address)
    ):
        raise InvalidInput("gateway_ip", f"gateway {gw} is the network or broadcast address")
    return gw


def _check_lists(version: int, dns: list[str], routes: list[dict[str, str]]) -> None:
    if len(set(dns)) != len(dns):
        raise InvalidInput("dns_nameservers", "duplicate nameserver")
    for ns in dns:
        _check_version("dns_nameservers", ns, version)
    seen = set()
    for route in routes:
        if ipaddress.ip_network(route["destination"]).version != version:
            raise InvalidInput("host_routes", f"{route['destination']} is not IPv{version}")
        _check_version("host_routes", route["nexthop"], version)
        key = (route["destination"], route["nexthop"])
        if key in seen:
            raise InvalidInput("host_routes", f"duplicate route {route}")
        seen.add(key)


def create(session: Session, ctx: Context, req: SubnetCreate) -> dict[str, Any]:
    net_row = fetch_network(session, ctx, req.network_id)
    if not ctx.owns(net_row.project_id):
        raise not_found("network", req.network_id)
    cidr = ipaddress.ip_network(req.cidr)
    if cidr.version != req.ip_version:
        raise InvalidInput("cidr", f"{req.cidr} does not match ip_version {req.ip_version}")
    if (cidr.version == 6 and cidr.prefixlen > 126) or (cidr.version == 4 and cidr.prefixlen > 30):
        raise InvalidInput("cidr", f"prefix of {req.cidr} is too long to hold any port")
    _check_ipv6_modes(req)
    for other in session.execute(select(Subnet).where(Subnet.network_id == net_row.id)).scalars():
        if ipaddress.ip_network(other.cidr).overlaps(cidr):
            raise BadRequest(
                f"Invalid input for operation: Requested subnet with cidr: {cidr} for network: "
                f"{net_row.id} overlaps with another subnet.",
                type="InvalidInput",
            )
    gateway = _resolve_gateway(cidr, req.gateway_ip)
    if req.allocation_pools is None:
        pools = ipam.default_pools(cidr, gateway)
    else:
        pools = [p.model_dump() for p in req.allocation_pools]
        ipam.check_pools(cidr, pools, gateway)
    routes = [r.model_dump() for r in req.host_routes]
    _check_lists(cidr.version, req.dns_nameservers, routes)
    subnet = Subnet(
        project_id=ctx.project_for_create(req.project_id or req.tenant_id),
        network_id=net_row.id,
        name=req.name,
        description=req.description,
        ip_version=req.ip_version,
        cidr=str(cidr),
        gateway_ip=gateway,
        allocation_pools=pools,
        dns_nameservers=list(req.dns_nameservers),
        host_routes=routes,
        enable_dhcp=req.enable_dhcp,
        ipv6_ra_mode=req.ipv6_ra_mode,
        ipv6_address_mode=req.ipv6_address_mode,
    )
    session.add(subnet)
    session.flush()
    return to_dict(subnet)


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(fetch_subnet(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    stmt = select(Subnet).join(Network, Network.id == Subnet.network_id).order_by(Subnet.id)
    rows = session.execute(stmt).scalars()
    out = []
    for subnet in rows:
        if ctx.is_admin or ctx.owns(subnet.project_id):
            out.append(to_dict(subnet))
            continue
        net = session.get(Network, subnet.network_id)
        if net is not None and network_visible(ctx, net):
            out.append(to_dict(subnet))
    return out


def _gateway_in_use(session: Session, subnet: Subnet) -> bool:
    if subnet.gateway_ip is None:
        return False
    row = session.execute(
        select(Port.device_owner)
        .join(IPAllocation, IPAllocation.port_id == Port.id)
        .where(IPAllocation.subnet_id == subnet.id, IPAllocation.ip_address == subnet.gateway_ip)
    ).first()
    return row is not None and row[0] in ROUTER_OWNERS


def update(session: Session, ctx: Context, ident: str, req: SubnetUpdate) -> dict[str, Any]:
    subnet = fetch_subnet(session, ctx, ident)
    if not ctx.owns(subnet.project_id):
        raise not_found("subnet", ident)
    changes = req.set_fields()
    cidr = ipaddress.ip_network(subnet.cidr)
    gateway = subnet.gateway_ip
    if "gateway_ip" in changes and changes["gateway_ip"] != subnet.gateway_ip:
        if _gateway_in_use(session, subnet):
            raise Conflict(
                f"Gateway {subnet.gateway_ip} of subnet {ident} is in use by a router interface.",
                type="SubnetInUse",
            )
        gateway = _resolve_gateway(cidr, changes["gateway_ip"])
        subnet.gateway_ip = gateway
    if changes.get("allocation_pools") is not None:
        pools = [dict(p) for p in changes["allocation_pools"]]
        ipam.check_pools(cidr, pools, gateway)
        subnet.allocation_pools = pools
    elif "gateway_ip" in changes:
        ipam.check_pools(cidr, list(subnet.allocation_pools), gateway)
    dns = changes.get("dns_nameservers")
    routes = changes.get("host_routes")
    _check_lists(
        cidr.version,
        list(subnet.dns_nameservers) if dns is None else dns,
        list(subnet.host_routes) if routes is None else [dict(r) for r in routes],
    )
    if dns is not None:
        subnet.dns_nameservers = list(dns)
    if routes is not None:
        subnet.host_routes = [dict(r) for r in routes]
    for key in ("name", "description", "enable_dhcp"):
        if changes.get(key) is not None:
            setattr(subnet, key, changes[key])
    subnet.revision_number += 1
    session.flush()
    return to_dict(subnet)


def delete(session: Session, ctx: Context, ident: str) -> None:
    subnet = fetch_subnet(session, ctx, ident)
    if not ctx.owns(subnet.project_id):
        raise not_found("subnet", ident)
    used = session.execute(
        select(IPAllocation.port_id).where(IPAllocation.subnet_id == subnet.id)
    ).first()
    if used:
        raise Conflict(
            f"Unable to complete operation on subnet {ident}: "
            "one or more ports have an IP allocation from this subnet.",
            type="SubnetInUse",
        )
    session.delete(subnet)
