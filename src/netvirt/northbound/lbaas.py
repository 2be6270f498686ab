"""Load balancer service (Octavia v2 ``/v2/lbaas/loadbalancers``).

A load balancer owns one VIP, which is an ordinary port (``device_owner
"Octavia"``, ``device_id`` = the load balancer's id) allocated through the
port service's IPAM, so the VIP can never collide with another address on the
network and a floating IP can be associated with it like with any port. The
port API refuses to delete it; deleting the load balancer releases it.

Listeners, pools, members and health monitors live in ``lbaas_listeners``,
``lbaas_pools``, ``lbaas_members`` and ``lbaas_monitors``; operating status is
derived in ``lbaas_status``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.model.lbaas import PROVIDER, LoadBalancerCreate, LoadBalancerUpdate
from netvirt.northbound import ports
from netvirt.northbound.access import fetch_network, network_usable, owned_clause, select_visible
from netvirt.northbound.context import Context
from netvirt.northbound.errors import BadRequest, Conflict, Forbidden, InvalidInput
from netvirt.northbound.lbaas_common import apply, fetch_lb, listener_ids, pool_ids, refs
from netvirt.northbound.lbaas_members import set_member_operating_status
from netvirt.northbound.lbaas_status import recompute, status_tree
from netvirt.northbound.schema import (
    HealthMonitor,
    Listener,
    LoadBalancer,
    Member,
    Network,
    Pool,
    Port,
    Subnet,
)
from netvirt.northbound.schema.base import new_id, standard_fields
from netvirt.northbound.subnets import fetch_subnet

__all__ = [
    "create",
    "delete",
    "get",
    "list_all",
    "set_member_operating_status",
    "status_tree",
    "update",
]

VIP_OWNER = "Octavia"


def to_dict(session: Session, lb: LoadBalancer) -> dict[str, Any]:
    return standard_fields(lb) | {
        "vip_address": lb.vip_address,
        "vip_subnet_id": lb.vip_subnet_id,
        "vip_network_id": lb.vip_network_id,
        "vip_port_id": lb.vip_port_id,
        "provider": lb.provider,
        "flavor_id": None,
        "admin_state_up": lb.admin_state_up,
        "provisioning_status": lb.provisioning_status,
        "operating_status": lb.operating_status,
        "listeners": refs(listener_ids(session, lb.id)),
        "pools": refs(pool_ids(session, lb.id)),
    }


def _check_options(req: LoadBalancerCreate) -> None:
    if req.provider not in (None, PROVIDER):
        raise BadRequest(
            f"Provider '{req.provider}' is not enabled; the only provider is '{PROVIDER}'.",
            type="ProviderNotEnabled",
        )
    if req.flavor_id is not None:
        raise InvalidInput("flavor_id", f"provider '{PROVIDER}' has no flavors; leave it null")
    if req.vip_port_id is not None:
        raise InvalidInput(
            "vip_port_id", "an existing port cannot be a VIP; give vip_subnet_id or vip_network_id"
        )


def _vip_network(session: Session, ctx: Context, req: LoadBalancerCreate) -> tuple[Network, str]:
    """The network to allocate the VIP on, and the subnet to take it from ('' = by address)."""
    subnet: Subnet | None = None
    if req.vip_subnet_id is not None:
        subnet = fetch_subnet(session, ctx, req.vip_subnet_id)
    net_id = req.vip_network_id or (subnet.network_id if subnet else "")
    net = fetch_network(session, ctx, net_id)
    if subnet is not None and subnet.network_id != net.id:
        raise InvalidInput("vip_subnet_id", f"subnet {subnet.id} is not on network {net.id}")
    if not network_usable(ctx, net):
        raise Forbidden(f"Project {ctx.project_id} may not allocate a VIP on network {net.id}.")
    if subnet is not None or req.vip_address is not None:
        return net, subnet.id if subnet else ""
    return net, _default_subnet(session, net).id


def _default_subnet(session: Session, net: Network) -> Subnet:
    """With only a network given: its oldest IPv4 subnet, else its oldest IPv6 one."""
    subnets = list(
        session.execute(
            select(Subnet)
            .where(Subnet.network_id == net.id)
            .order_by(Subnet.ip_version, Subnet.created_at, Subnet.id)
        ).scalars()
    )
    if not subnets:
        raise InvalidInput("vip_network_id", f"network {net.id} has no subnet to take a VIP from")
    return subnets[0]


def create(session: Session, ctx: Context, req: LoadBalancerCreate) -> dict[str, Any]:
    _check_options(req)
    project = ctx.project_for_create(req.project_id or req.tenant_id)
    net, subnet_id = _vip_network(session, ctx, req)
    lb_id = new_id()
    wanted: dict[str, Any] = {"ip_address": req.vip_address}
    if subnet_id:
        wanted["subnet_id"] = subnet_id
    port = ports.create_port_row(
        session,
        net=net,
        project_id=project,
        device_owner=VIP_OWNER,
        device_id=lb_id,
        fixed=[wanted],
        name=f"octavia-lb-{lb_id}",
    )
    vip = ports.fixed_ips(session, port.id)[0]
    lb = LoadBalancer(
        id=lb_id,
        project_id=project,
        name=req.name,
        description=req.description,
        vip_subnet_id=vip["subnet_id"],
        vip_network_id=net.id,
        vip_port_id=port.id,
        vip_address=vip["ip_address"],
        admin_state_up=req.admin_state_up,
        provider=PROVIDER,
        tags=list(req.tags),
    )
    session.add(lb)
    session.flush()
    recompute(session, lb.id)
    return to_dict(session, lb)


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(session, fetch_lb(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    rows = session.execute(select_visible(LoadBalancer, owned_clause(ctx, LoadBalancer)))
    return [to_dict(session, lb) for lb in rows.scalars()]


def update(session: Session, ctx: Context, ident: str, req: LoadBalancerUpdate) -> dict[str, Any]:
    lb = fetch_lb(session, ctx, ident)
    apply(lb, req.set_fields(), ("name", "description", "admin_state_up", "tags"))
    lb.revision_number += 1
    recompute(session, lb.id)
    return to_dict(session, lb)


def _delete_children(session: Session, lb_id: str) -> None:
    """Everything under the load balancer, leaves first (no ORM relationships to cascade)."""
    pools = pool_ids(session, lb_id)
    stages: list[Any] = [
        select(HealthMonitor).where(HealthMonitor.pool_id.in_(pools)),
        select(Member).where(Member.pool_id.in_(pools)),
        select(Pool).where(Pool.loadbalancer_id == lb_id),
        select(Listener).where(Listener.loadbalancer_id == lb_id),
    ]
    for stmt in stages:
        for row in session.execute(stmt).scalars().all():
            session.delete(row)
        session.flush()


def delete(session: Session, ctx: Context, ident: str, *, cascade: bool = False) -> None:
    """Delete a load balancer and release its VIP; with children only when ``cascade``."""
    lb = fetch_lb(session, ctx, ident)
    if not cascade and (listener_ids(session, lb.id) or pool_ids(session, lb.id)):
        raise Conflict(
            f"Cannot delete load balancer {ident}: it still has listeners or pools. "
            "Delete them first, or delete with cascade=true.",
            type="LoadBalancerInUse",
        )
    _delete_children(session, lb.id)
    vip_port_id = lb.vip_port_id
    session.delete(lb)
    session.flush()
    if vip_port_id is not None and session.get(Port, vip_port_id) is not None:
        ports.delete(session, ctx, vip_port_id, internal=True)
