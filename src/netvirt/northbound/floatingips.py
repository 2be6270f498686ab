"""Floating IP service: allocation from external networks and association with ports.

The address itself is a port on the external network (``device_owner``
``network:floatingip``, ``device_id`` = the floating IP, no project, as in
Neutron), so the external network's IPAM is the only place that hands out
addresses and a floating IP can never collide with a router gateway.

Association resolves, once, the router that links the port's subnet to the
floating network and stores it in ``router_id``: the compiler then knows which
router does the NAT, and the router refuses to drop that subnet or its
gateway while the floating IP relies on them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.model.l3 import FloatingIPCreate, FloatingIPUpdate
from netvirt.northbound import ipam, ports, routers
from netvirt.northbound.access import fetch_network, owned_clause, select_visible
from netvirt.northbound.context import Context
from netvirt.northbound.errors import BadRequest, Conflict, NotFound, not_found
from netvirt.northbound.schema import FloatingIP, IPAllocation, Network, Port, Subnet
from netvirt.northbound.schema.base import new_id, standard_fields

FLOATINGIP = "network:floatingip"
# Ports that belong to the network itself can never be the inside of a NAT.
NOT_FIP_TARGETS = (
    routers.INTERFACE,
    routers.GATEWAY,
    FLOATINGIP,
    "network:dhcp",
    "network:router_interface_distributed",
)


def port_details(session: Session, port_id: str | None) -> dict[str, Any] | None:
    port = session.get(Port, port_id) if port_id else None
    if port is None:
        return None
    return {
        "name": port.name,
        "network_id": port.network_id,
        "mac_address": port.mac_address,
        "admin_state_up": port.admin_state_up,
        "status": port.status,
        "device_id": port.device_id,
        "device_owner": port.device_owner,
    }


def to_dict(session: Session, ctx: Context, fip: FloatingIP) -> dict[str, Any]:
    body = standard_fields(fip)
    del body["name"]  # Neutron floating IPs have no name
    return body | {
        "floating_network_id": fip.floating_network_id,
        "floating_ip_address": fip.floating_ip_address,
        "port_id": fip.fixed_port_id,
        "fixed_ip_address": fip.fixed_ip_address,
        "router_id": fip.router_id,
        "status": fip.status,
        "port_details": port_details(session, fip.fixed_port_id),
        "port_forwardings": [],
    }


def fetch_floatingip(session: Session, ctx: Context, ident: str) -> FloatingIP:
    """Neutron spells the 404 ``FloatingIPNotFound``, which ``not_found`` cannot derive."""
    fip = session.get(FloatingIP, ident)
    if fip is None or not ctx.owns(fip.project_id):
        raise NotFound(f"Floating IP {ident} could not be found", type="FloatingIPNotFound")
    return fip


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(session, ctx, fetch_floatingip(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    rows = session.execute(select_visible(FloatingIP, owned_clause(ctx, FloatingIP))).scalars()
    return [to_dict(session, ctx, f) for f in rows]


# ---------------------------------------------------------------- allocation


def _external_network(session: Session, ctx: Context, network_id: str) -> Network:
    net = fetch_network(session, ctx, network_id)
    if not net.external:
        raise BadRequest(
            f"Bad floatingip request: Network {network_id} is not a valid external network.",
            type="BadRequest",
        )
    return net


def _requested_address(
    session: Session, net: Network, req: FloatingIPCreate
) -> list[dict[str, Any]]:
    """The fixed_ips request for the floating IP port: IPv4 only, as Neutron."""
    if req.floating_ip_address is not None:
        if ipaddress.ip_address(req.floating_ip_address).version != 4:
            raise BadRequest(
                f"Bad floatingip request: {req.floating_ip_address} is not an IPv4 address.",
                type="BadRequest",
            )
        return [{"subnet_id": req.subnet_id, "ip_address": req.floating_ip_address}]
    if req.subnet_id is not None:
        subnet = session.get(Subnet, req.subnet_id)
        if subnet is not None and subnet.network_id == net.id and subnet.ip_version != 4:
            raise BadRequest(
                f"Bad floatingip request: Subnet {req.subnet_id} is not an IPv4 subnet.",
                type="BadRequest",
            )
        return [{"subnet_id": req.subnet_id}]
    return [{"subnet_id": _subnet_with_room(session, net)}]


def _subnet_with_room(session: Session, net: Network) -> str:
    candidates = list(
        session.execute(
            select(Subnet)
            .where(Subnet.network_id == net.id, Subnet.ip_version == 4)
            .order_by(Subnet.created_at, Subnet.id)
        ).scalars()
    )
    if not candidates:
        raise BadRequest(
            f"Bad floatingip request: Network {net.id} does not contain any IPv4 subnet.",
            type="BadRequest",
        )
    for subnet in candidates:
        if ipam.next_free(session, subnet) is not None:
            return subnet.id
    raise Conflict(
        f"No more IP addresses available on network {net.id}.",
        type="IpAddressGenerationFailure",
    )


# ---------------------------------------------------------------- association


def _target_port(session: Session, ctx: Context, fip: FloatingIP, port_id: str) -> Port:
    port = ports.fetch_port(session, ctx, port_id)
    if port.project_id != fip.project_id and not ctx.is_admin:
        raise not_found("port", port_id)
    if port.device_owner in NOT_FIP_TARGETS:
        raise BadRequest(
            f"Bad floatingip request: Port {port.id} has owner {port.device_owner} and "
            "therefore cannot be associated with a floating IP.",
            type="BadRequest",
        )
    return port


def _fixed_ipv4(session: Session, port: Port, wanted: str | None) -> IPAllocation:
    rows = list(
        session.execute(
            select(IPAllocation)
            .where(IPAllocation.port_id == port.id)
            .order_by(IPAllocation.ordinal)
        ).scalars()
    )
    if wanted is not None:
        for row in rows:
            if row.ip_address == wanted:
                if ipaddress.ip_address(wanted).version != 4:
                    break
                return row
        raise BadRequest(
            f"Bad floatingip request: Port {port.id} does not have fixed IPv4 address {wanted}.",
            type="BadRequest",
        )
    v4 = [r for r in rows if ipaddress.ip_address(r.ip_address).version == 4]
    if not v4:
        raise BadRequest(
            f"Bad floatingip request: Cannot add floating IP to port {port.id} that has no "
            "fixed IPv4 addresses.",
            type="BadRequest",
        )
    if len(v4) > 1:
        raise BadRequest(
            f"Bad floatingip request: Port {port.id} has multiple fixed IPv4 addresses. Must "
            "provide a specific IPv4 address when assigning a floating IP.",
            type="BadRequest",
        )
    return v4[0]


def _check_not_associated(session: Session, fip: FloatingIP, port: Port, ip: str) -> None:
    other = session.execute(
        select(FloatingIP).where(
            FloatingIP.fixed_port_id == port.id,
            FloatingIP.fixed_ip_address == ip,
            FloatingIP.id != fip.id,
        )
    ).scalar()
    if other is not None:
        raise Conflict(
            f"Cannot associate floating IP {fip.floating_ip_address} ({fip.id}) with port "
            f"{port.id} using fixed IP {ip}, as that fixed IP already has a floating IP on "
            f"external network {other.floating_network_id}.",
            type="FloatingIPPortAlreadyAssociated",
        )


def _associate(
    session: Session, ctx: Context, fip: FloatingIP, port_id: str, fixed: str | None
) -> None:
    port = _target_port(session, ctx, fip, port_id)
    alloc = _fixed_ipv4(session, port, fixed)
    _check_not_associated(session, fip, port, alloc.ip_address)
    router = routers.router_for(
        session, fip.floating_network_id, alloc.subnet_id, prefer_project=fip.project_id
    )
    if router is None:
        raise NotFound(
            f"External network {fip.floating_network_id} is not reachable from subnet "
            f"{alloc.subnet_id}. Therefore, cannot associate Port {port.id} with a Floating IP.",
            type="ExternalGatewayForFloatingIPNotFound",
        )
    fip.fixed_port_id = port.id
    fip.fixed_ip_address = alloc.ip_address
    fip.router_id = router.id
    fip.status = "ACTIVE"


def _disassociate(fip: FloatingIP) -> None:
    fip.fixed_port_id = None
    fip.fixed_ip_address = None
    fip.router_id = None
    fip.status = "DOWN"


# ---------------------------------------------------------------- CRUD


def create(session: Session, ctx: Context, req: FloatingIPCreate) -> dict[str, Any]:
    if req.fixed_ip_address is not None and req.port_id is None:
        raise BadRequest(
            "Bad floatingip request: fixed_ip_address cannot be given without port_id."
        )
    project = ctx.project_for_create(req.project_id or req.tenant_id)
    net = _external_network(session, ctx, req.floating_network_id)
    fip_id = new_id()
    port = ports.create_port_row(
        session,
        net=net,
        project_id="",
        device_owner=FLOATINGIP,
        device_id=fip_id,
        fixed=_requested_address(session, net, req),
    )
    address = ports.first_ipv4(session, port.id)
    assert address is not None  # the request named an IPv4 subnet or address
    fip = FloatingIP(
        id=fip_id,
        project_id=project,
        description=req.description,
        floating_network_id=net.id,
        floating_ip_address=address,
        floating_port_id=port.id,
        status="DOWN",
    )
    session.add(fip)
    session.flush()
    if req.port_id is not None:
        _associate(session, ctx, fip, req.port_id, req.fixed_ip_address)
        session.flush()
    return to_dict(session, ctx, fip)


def update(session: Session, ctx: Context, ident: str, req: FloatingIPUpdate) -> dict[str, Any]:
    fip = fetch_floatingip(session, ctx, ident)
    changes = req.set_fields()
    if "fixed_ip_address" in changes and "port_id" not in changes:
        raise BadRequest(
            "Bad floatingip request: fixed_ip_address cannot be given without port_id."
        )
    if "port_id" in changes:
        if req.port_id is None:
            _disassociate(fip)
        else:
            _associate(session, ctx, fip, req.port_id, req.fixed_ip_address)
    if req.description is not None:
        fip.description = req.description
    fip.revision_number += 1
    session.flush()
    return to_dict(session, ctx, fip)


def delete(session: Session, ctx: Context, ident: str) -> None:
    fip = fetch_floatingip(session, ctx, ident)
    port_id = fip.floating_port_id
    session.delete(fip)
    session.flush()
    if session.get(Port, port_id) is not None:
        ports.delete(session, routers.SERVICE, port_id, internal=True)
