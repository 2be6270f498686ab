"""Router service: gateways, interfaces and extra routes.

A router owns no addresses itself: its interfaces and its gateway are ports
(``device_owner`` ``network:router_interface`` / ``network:router_gateway``,
``device_id`` = the router), created through :func:`ports.create_port_row` so
every address goes through the one IPAM path. Interface ports belong to the
router's project (the tenant sees them); the gateway port belongs to no
project (``""``), as in Neutron, so tenants never see or touch the address
the provider lent them.

Invariants kept here:

* a router connects a given subnet at most once, and no two of its subnets
  overlap (otherwise a destination would have two connected routes);
* at most one IPv4 and one IPv6 interface per network (one port per network
  and family keeps ARP/ND answers unambiguous);
* every extra route's nexthop is inside a connected subnet, and a subnet a
  route or a floating IP relies on cannot be disconnected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.model.l3 import GatewayInfo, InterfaceBody, RouterCreate, RouterUpdate
from netvirt.northbound import ports
from netvirt.northbound.access import (
    fetch_network,
    fetch_owned,
    network_usable,
    owned_clause,
    select_visible,
)
from netvirt.northbound.context import Context
from netvirt.northbound.errors import BadRequest, Conflict, NotFound, not_found
from netvirt.northbound.schema import FloatingIP, IPAllocation, Network, Port, Router, Subnet
from netvirt.northbound.schema.base import standard_fields
from netvirt.northbound.subnets import fetch_subnet

INTERFACE = "network:router_interface"
GATEWAY = "network:router_gateway"
# Service ports are created and removed on the router's authority, which the
# caller already proved; the gateway port has no project a member could own.
SERVICE = Context.admin()


# ---------------------------------------------------------------- reading


def fetch_router(session: Session, ctx: Context, ident: str) -> Router:
    return fetch_owned(session, ctx, Router, ident, "router")


def interface_ports(session: Session, router_id: str) -> list[Port]:
    stmt = (
        select(Port)
        .where(Port.device_id == router_id, Port.device_owner == INTERFACE)
        .order_by(Port.created_at, Port.id)
    )
    return list(session.execute(stmt).scalars())


def port_subnets(session: Session, port_id: str) -> list[Subnet]:
    stmt = (
        select(Subnet)
        .join(IPAllocation, IPAllocation.subnet_id == Subnet.id)
        .where(IPAllocation.port_id == port_id)
        .order_by(IPAllocation.ordinal)
    )
    return list(dict.fromkeys(session.execute(stmt).scalars()))


def router_ports(session: Session, router: Router) -> list[Port]:
    """Interface ports, then the gateway port if any."""
    found = interface_ports(session, router.id)
    if router.gw_port_id is not None:
        gw = session.get(Port, router.gw_port_id)
        if gw is not None:
            found.append(gw)
    return found


def connected_subnets(
    session: Session, router: Router, exclude_port: str | None = None
) -> list[Subnet]:
    return [
        subnet
        for port in router_ports(session, router)
        if port.id != exclude_port
        for subnet in port_subnets(session, port.id)
    ]


def router_ips(session: Session, router: Router) -> set[str]:
    return {
        str(ip["ip_address"])
        for port in router_ports(session, router)
        for ip in ports.fixed_ips(session, port.id)
    }


def gateway_info(session: Session, router: Router) -> dict[str, Any] | None:
    if router.gw_port_id is None:
        return None
    return {
        "network_id": router.gw_network_id,
        "enable_snat": router.enable_snat,
        "external_fixed_ips": ports.fixed_ips(session, router.gw_port_id),
    }


def to_dict(session: Session, ctx: Context, router: Router) -> dict[str, Any]:
    return standard_fields(router) | {
        "admin_state_up": router.admin_state_up,
        "status": router.status,
        "external_gateway_info": gateway_info(session, router),
        "routes": [dict(r) for r in router.routes or []],
        "distributed": True,
        "ha": False,
        "flavor_id": None,
        "availability_zone_hints": [],
        "availability_zones": ["nova"],
    }


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(session, ctx, fetch_router(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    rows = session.execute(select_visible(Router, owned_clause(ctx, Router))).scalars()
    return [to_dict(session, ctx, r) for r in rows]


# ---------------------------------------------------------------- extra routes


def validate_routes(
    routes: list[dict[str, str]], connected: Iterable[str], own_ips: set[str]
) -> None:
    """Neutron's extraroute rules, on plain data so they can be tested alone."""
    nets = [ipaddress.ip_network(c) for c in connected]
    seen: set[tuple[str, str]] = set()
    for route in routes:
        dest = ipaddress.ip_network(route["destination"])
        hop = ipaddress.ip_address(route["nexthop"])
        key = (str(dest), str(hop))
        if key in seen:
            raise _invalid_route(route, "the route is given twice")
        seen.add(key)
        if dest.version != hop.version:
            raise _invalid_route(route, "destination and nexthop are of different IP versions")
        if str(hop) in own_ips:
            raise _invalid_route(route, "the nexthop is used by router")
        if not any(hop in net for net in nets):
            raise _invalid_route(route, "the nexthop is not connected with router")


def _invalid_route(route: dict[str, str], reason: str) -> BadRequest:
    return BadRequest(f"Invalid format for routes: {route}, {reason}.", type="InvalidRoutes")


def _check_routes_keep(router: Router, gone: Iterable[Subnet]) -> None:
    """Refuse to disconnect a subnet that an extra route's nexthop lies in."""
    for subnet in gone:
        net = ipaddress.ip_network(subnet.cidr)
        for route in router.routes or []:
            if ipaddress.ip_address(route["nexthop"]) in net:
                raise Conflict(
                    f"Router interface for subnet {subnet.id} on router {router.id} cannot be "
                    "deleted, as it is required by one or more routes.",
                    type="RouterInterfaceInUseByRoute",
                )


# ---------------------------------------------------------------- topology checks


def _check_overlap(
    session: Session, router: Router, new: list[Subnet], exclude_port: str | None = None
) -> None:
    for have in connected_subnets(session, router, exclude_port):
        for subnet in new:
            if have.id == subnet.id:
                raise BadRequest(
                    f"Bad router request: Router already has a port on subnet {subnet.id}.",
                    type="BadRequest",
                )
            if ipaddress.ip_network(have.cidr).overlaps(ipaddress.ip_network(subnet.cidr)):
                raise BadRequest(
                    f"Bad router request: Cidr {subnet.cidr} of subnet {subnet.id} overlaps "
                    f"with cidr {have.cidr} of subnet {have.id}.",
                    type="BadRequest",
                )


def _check_one_per_network(
    session: Session, router: Router, network_id: str, versions: set[int]
) -> None:
    for port in interface_ports(session, router.id):
        if port.network_id != network_id:
            continue
        taken = {s.ip_version for s in port_subnets(session, port.id)} & versions
        if 4 in taken:
            raise BadRequest(
                f"Bad router request: Router {router.id} already has an IPv4 interface "
                f"(port {port.id}) on network {network_id}; only one is allowed per network.",
                type="BadRequest",
            )
        if 6 in taken:
            raise BadRequest(
                "Bad router request: Cannot have multiple router ports with the same network "
                f"id if both contain IPv6 subnets. Existing port {port.id} has IPv6 subnet(s) "
                f"and network id {network_id}.",
                type="BadRequest",
            )


def _floating_ips_on(session: Session, router: Router, subnet: Subnet) -> bool:
    stmt = (
        select(FloatingIP.id)
        .join(
            IPAllocation,
            (IPAllocation.port_id == FloatingIP.fixed_port_id)
            & (IPAllocation.ip_address == FloatingIP.fixed_ip_address),
        )
        .where(FloatingIP.router_id == router.id, IPAllocation.subnet_id == subnet.id)
    )
    return session.execute(stmt).first() is not None


def _uses_of_router(session: Session, router_id: str) -> bool:
    stmt = select(FloatingIP.id).where(FloatingIP.router_id == router_id)
    return session.execute(stmt).first() is not None


def router_for(
    session: Session, external_network_id: str, subnet_id: str, prefer_project: str
) -> Router | None:
    """The router that links ``subnet_id`` to ``external_network_id`` (Neutron picks any
    router with that gateway and an interface on the subnet; the caller's own first)."""
    stmt = (
        select(Router)
        .join(Port, Port.device_id == Router.id)
        .join(IPAllocation, IPAllocation.port_id == Port.id)
        .where(
            Router.gw_network_id == external_network_id,
            Router.gw_port_id.is_not(None),
            Port.device_owner == INTERFACE,
            IPAllocation.subnet_id == subnet_id,
        )
        .order_by(Router.id)
    )
    found = list(dict.fromkeys(session.execute(stmt).scalars()))
    found.sort(key=lambda r: r.project_id != prefer_project)
    return found[0] if found else None


# ---------------------------------------------------------------- gateway


def _remove_gateway_port(session: Session, router: Router) -> None:
    port_id = router.gw_port_id
    router.gw_port_id = None
    router.gw_network_id = None
    session.flush()
    if port_id is not None and session.get(Port, port_id) is not None:
        ports.delete(session, SERVICE, port_id, internal=True)


def _check_gateway_unused(session: Session, router: Router) -> None:
    if router.gw_port_id is None:
        return
    if _uses_of_router(session, router.id):
        raise Conflict(
            f"Gateway cannot be updated for router {router.id}, since a gateway to external "
            f"network {router.gw_network_id} is required by one or more floating IPs.",
            type="RouterExternalGatewayInUseByFloatingIp",
        )


def _clear_gateway(session: Session, router: Router) -> None:
    _check_gateway_unused(session, router)
    if router.gw_port_id is not None:
        _check_routes_keep(router, port_subnets(session, router.gw_port_id))
    _remove_gateway_port(session, router)


def _set_gateway(session: Session, ctx: Context, router: Router, info: GatewayInfo | None) -> None:
    if info is None or info.network_id is None:
        if info is not None and (info.enable_snat is not None or info.external_fixed_ips):
            raise BadRequest(
                "Invalid input for external_gateway_info. Reason: network_id is required.",
                type="InvalidInput",
            )
        _clear_gateway(session, router)
        return
    net = fetch_network(session, ctx, info.network_id)
    if not net.external:
        raise BadRequest(
            f"Bad router request: Network {net.id} is not an external network.",
            type="BadRequest",
        )
    same_network = router.gw_port_id is not None and router.gw_network_id == net.id
    if not same_network:
        _check_gateway_unused(session, router)
        router.enable_snat = True
    if not same_network or info.external_fixed_ips is not None:
        _replace_gateway_port(session, router, net, info)
    if info.enable_snat is not None:
        router.enable_snat = info.enable_snat


def _replace_gateway_port(
    session: Session, router: Router, net: Network, info: GatewayInfo
) -> None:
    old = port_subnets(session, router.gw_port_id) if router.gw_port_id else []
    _remove_gateway_port(session, router)
    fixed = (
        None
        if info.external_fixed_ips is None
        else [f.model_dump() for f in info.external_fixed_ips]
    )
    port = ports.create_port_row(
        session, net=net, project_id="", device_owner=GATEWAY, device_id=router.id, fixed=fixed
    )
    new = port_subnets(session, port.id)
    _check_overlap(session, router, new, exclude_port=port.id)
    kept = {s.id for s in new}
    _check_routes_keep(router, [s for s in old if s.id not in kept])
    router.gw_port_id = port.id
    router.gw_network_id = net.id
    session.flush()


# ---------------------------------------------------------------- CRUD


def create(session: Session, ctx: Context, req: RouterCreate) -> dict[str, Any]:
    router = Router(
        project_id=ctx.project_for_create(req.project_id or req.tenant_id),
        name=req.name,
        description=req.description,
        admin_state_up=req.admin_state_up,
        enable_snat=True,
        routes=[],
    )
    session.add(router)
    session.flush()
    if req.external_gateway_info is not None:
        _set_gateway(session, ctx, router, req.external_gateway_info)
    return to_dict(session, ctx, router)


def update(session: Session, ctx: Context, ident: str, req: RouterUpdate) -> dict[str, Any]:
    router = fetch_router(session, ctx, ident)
    changes = req.set_fields()
    if "external_gateway_info" in changes:
        _set_gateway(session, ctx, router, req.external_gateway_info)
    if "routes" in changes:
        routes = [r.model_dump() for r in req.routes or []]
        cidrs = [s.cidr for s in connected_subnets(session, router)]
        validate_routes(routes, cidrs, router_ips(session, router))
        router.routes = routes
    for key in ("name", "description", "admin_state_up"):
        if changes.get(key) is not None:
            setattr(router, key, changes[key])
    router.revision_number += 1
    session.flush()
    return to_dict(session, ctx, router)


def delete(session: Session, ctx: Context, ident: str) -> None:
    router = fetch_router(session, ctx, ident)
    if interface_ports(session, router.id) or _uses_of_router(session, router.id):
        raise Conflict(f"Router {ident} still has ports", type="RouterInUse")
    _remove_gateway_port(session, router)
    session.delete(router)
    session.flush()


# ---------------------------------------------------------------- interfaces


def _interface_info(router: Router, port: Port, subnets: list[Subnet]) -> dict[str, Any]:
    ids = [s.id for s in subnets]
    return {
        "id": router.id,
        "tenant_id": router.project_id,
        "project_id": router.project_id,
        "port_id": port.id,
        "subnet_id": ids[0] if ids else None,
        "subnet_ids": ids,
        "network_id": port.network_id,
    }


def _usable_subnet(session: Session, ctx: Context, subnet_id: str) -> tuple[Subnet, Network]:
    """A subnet the caller may plug a router into: its own network's, or a shared one's."""
    subnet = fetch_subnet(session, ctx, subnet_id)
    net = session.get(Network, subnet.network_id)
    if net is None or not network_usable(ctx, net):
        raise not_found("subnet", subnet_id)
    return subnet, net


def _add_by_subnet(session: Session, ctx: Context, router: Router, subnet_id: str) -> Port:
    subnet, net = _usable_subnet(session, ctx, subnet_id)
    if subnet.gateway_ip is None:
        raise BadRequest(
            f"Bad router request: Subnet {subnet.id} for router interface must have a gateway IP.",
            type="BadRequest",
        )
    _check_overlap(session, router, [subnet])
    _check_one_per_network(session, router, net.id, {subnet.ip_version})
    return ports.create_port_row(
        session,
        net=net,
        project_id=router.project_id,
        device_owner=INTERFACE,
        device_id=router.id,
        fixed=[{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}],
    )


def _add_by_port(session: Session, ctx: Context, router: Router, port_id: str) -> Port:
    port = ports.fetch_port(session, ctx, port_id)
    if port.device_owner or port.device_id:
        raise Conflict(
            f"Unable to complete operation on port {port.id} for network {port.network_id}. "
            f"Port already has an attached device {port.device_id or port.device_owner}.",
            type="PortInUse",
        )
    subnets = port_subnets(session, port.id)
    if not subnets:
        raise BadRequest(
            "Bad router request: Router port must have at least one fixed IP.",
            type="BadRequest",
        )
    if sum(1 for s in subnets if s.ip_version == 4) > 1:
        raise BadRequest(
            "Bad router request: Cannot have multiple IPv4 subnets on router port.",
            type="BadRequest",
        )
    _check_overlap(session, router, subnets)
    _check_one_per_network(session, router, port.network_id, {s.ip_version for s in subnets})
    port.device_owner = INTERFACE
    port.device_id = router.id
    port.revision_number += 1
    session.flush()
    return port


def add_interface(
    session: Session, ctx: Context, ident: str, body: InterfaceBody
) -> dict[str, Any]:
    router = fetch_router(session, ctx, ident)
    if body.subnet_id is not None and body.port_id is not None:
        raise BadRequest("Bad router request: Cannot specify both subnet-id and port-id.")
    if body.subnet_id is not None:
        port = _add_by_subnet(session, ctx, router, body.subnet_id)
    elif body.port_id is not None:
        port = _add_by_port(session, ctx, router, body.port_id)
    else:
        raise BadRequest("Bad router request: Either subnet_id or port_id must be specified.")
    router.revision_number += 1
    session.flush()
    return _interface_info(router, port, port_subnets(session, port.id))


def _interface_not_found_for_subnet(router: Router, subnet_id: str) -> NotFound:
    return NotFound(
        f"Router {router.id} has no interface on subnet {subnet_id}",
        type="RouterInterfaceNotFoundForSubnet",
    )


def _find_interface(
    session: Session, ctx: Context, router: Router, body: InterfaceBody
) -> tuple[Port, list[Subnet]]:
    if body.port_id is not None:
        port = session.get(Port, body.port_id)
        if port is None or port.device_id != router.id or port.device_owner != INTERFACE:
            raise NotFound(
                f"Router {router.id} does not have an interface with id {body.port_id}",
                type="RouterInterfaceNotFound",
            )
        subnets = port_subnets(session, port.id)
        if body.subnet_id is not None and body.subnet_id not in {s.id for s in subnets}:
            raise _interface_not_found_for_subnet(router, body.subnet_id)
        return port, subnets
    if body.subnet_id is None:
        raise BadRequest("Bad router request: Either subnet_id or port_id must be specified.")
    subnet = fetch_subnet(session, ctx, body.subnet_id)
    for port in interface_ports(session, router.id):
        subnets = port_subnets(session, port.id)
        if subnet.id in {s.id for s in subnets}:
            return port, subnets
    raise _interface_not_found_for_subnet(router, subnet.id)


def remove_interface(
    session: Session, ctx: Context, ident: str, body: InterfaceBody
) -> dict[str, Any]:
    router = fetch_router(session, ctx, ident)
    port, subnets = _find_interface(session, ctx, router, body)
    for subnet in subnets:
        if _floating_ips_on(session, router, subnet):
            raise Conflict(
                f"Router interface for subnet {subnet.id} on router {router.id} cannot be "
                "deleted, as it is required by one or more floating IPs.",
                type="RouterInterfaceInUseByFloatingIP",
            )
    _check_routes_keep(router, subnets)
    info = _interface_info(router, port, subnets)
    ports.delete(session, SERVICE, port.id, internal=True)
    router.revision_number += 1
    session.flush()
    return info
