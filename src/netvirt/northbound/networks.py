"""Network service: create/read/update/delete, VNI allocation, provider attributes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from netvirt.model.l2 import NetworkCreate, NetworkUpdate
from netvirt.northbound.access import (
    fetch_network,
    network_visible_clause,
    select_visible,
)
from netvirt.northbound.context import Context
from netvirt.northbound.errors import Conflict, Forbidden
from netvirt.northbound.schema import Network, Port, QosPolicy, Subnet
from netvirt.northbound.schema.base import standard_fields

VNI_MAX = (1 << 24) - 1
# Geneve over IPv4/UDP adds 58 bytes with netvirt's port TLV; VXLAN adds 50.
# One default that fits both keeps VMs portable between encapsulations.
DEFAULT_OVERLAY_MTU = 1442
ADMIN_ONLY = ("shared", "router_external", "network_type", "physical_network", "segmentation_id")


def to_dict(session: Session, ctx: Context, net: Network) -> dict[str, Any]:
    subnets = session.execute(
        select(Subnet.id).where(Subnet.network_id == net.id).order_by(Subnet.id)
    ).scalars()
    body = standard_fields(net) | {
        "admin_state_up": net.admin_state_up,
        "status": net.status,
        "subnets": list(subnets),
        "shared": net.shared,
        "mtu": net.mtu,
        "port_security_enabled": net.port_security_enabled,
        "router:external": net.external,
        "qos_policy_id": net.qos_policy_id,
        "dns_domain": net.dns_domain,
        "availability_zone_hints": [],
        "availability_zones": ["nova"],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "is_default": False,
        "l2_adjacency": True,
    }
    if ctx.is_admin:
        body |= {
            "provider:network_type": net.network_type,
            "provider:physical_network": net.physical_network,
            "provider:segmentation_id": net.segmentation_id,
        }
    return body


def allocate_vni(session: Session) -> int:
    """The next free 24-bit VNI (max + 1, scanning for a gap once the space wraps)."""
    highest = session.execute(select(func.max(Network.segmentation_id))).scalar()
    if highest is None:
        return 1
    if highest < VNI_MAX:
        return int(highest) + 1
    used = set(session.execute(select(Network.segmentation_id)).scalars())
    for vni in range(1, VNI_MAX + 1):
        if vni not in used:
            return vni
    raise Conflict("No free segmentation id left.", type="NoNetworkAvailable")


def check_qos_policy(session: Session, ctx: Context, policy_id: str | None) -> None:
    if policy_id is None:
        return
    policy = session.get(QosPolicy, policy_id)
    if policy is None or not (ctx.owns(policy.project_id) or policy.shared):
        from netvirt.northbound.errors import not_found

        raise not_found("qos_policy", policy_id)


def create(session: Session, ctx: Context, req: NetworkCreate) -> dict[str, Any]:
    sent = req.set_fields()
    if not ctx.is_admin and any(sent.get(k) not in (None, False) for k in ADMIN_ONLY):
        raise Forbidden(
            "Only admins may set shared, router:external or provider attributes.",
        )
    project = ctx.project_for_create(req.project_id or req.tenant_id)
    if req.segmentation_id is not None:
        taken = session.execute(
            select(Network.id).where(Network.segmentation_id == req.segmentation_id)
        ).first()
        if taken:
            raise Conflict(
                f"Unable to create the network. "
                f"The segmentation id {req.segmentation_id} is in use.",
                type="SegmentationIdInUse",
            )
    check_qos_policy(session, ctx, req.qos_policy_id)
    net = Network(
        project_id=project,
        name=req.name,
        description=req.description,
        admin_state_up=req.admin_state_up,
        shared=req.shared,
        external=req.router_external,
        mtu=req.mtu or DEFAULT_OVERLAY_MTU,
        port_security_enabled=req.port_security_enabled,
        network_type=req.network_type or "geneve",
        physical_network=req.physical_network,
        segmentation_id=req.segmentation_id or allocate_vni(session),
        qos_policy_id=req.qos_policy_id,
        dns_domain=req.dns_domain,
    )
    session.add(net)
    session.flush()
    return to_dict(session, ctx, net)


def get(session: Session, ctx: Context, ident: str) -> dict[str, Any]:
    return to_dict(session, ctx, fetch_network(session, ctx, ident))


def list_all(session: Session, ctx: Context) -> list[dict[str, Any]]:
    rows = session.execute(select_visible(Network, network_visible_clause(ctx))).scalars()
    return [to_dict(session, ctx, n) for n in rows]


def update(session: Session, ctx: Context, ident: str, req: NetworkUpdate) -> dict[str, Any]:
    net = fetch_network(session, ctx, ident, write=True)
    changes = req.set_fields()
    if not ctx.is_admin and any(k in changes for k in ADMIN_ONLY):
        raise Forbidden("Only admins may change shared or router:external.")
    if changes.get("shared") is False and net.shared:
        others = session.execute(
            select(Port.id).where(Port.network_id == net.id, Port.project_id != net.project_id)
        ).first()
        if others:
            raise Conflict(
                f"Unable to reconfigure sharing settings for network {ident}. "
                "Multiple tenants are using it.",
                type="InvalidSharedSetting",
            )
    if "qos_policy_id" in changes:
        check_qos_policy(session, ctx, changes["qos_policy_id"])
    mapping = {"router_external": "external"}
    for key, value in changes.items():
        if value is None and key not in ("qos_policy_id",):
            continue
        setattr(net, mapping.get(key, key), value)
    net.revision_number += 1
    session.flush()
    return to_dict(session, ctx, net)


def delete(session: Session, ctx: Context, ident: str) -> None:
    net = fetch_network(session, ctx, ident, write=True)
    in_use = session.execute(select(Port.id).where(Port.network_id == net.id)).first()
    if in_use:
        raise Conflict(
            f"Unable to complete operation on network {ident}. "
            "There are one or more ports still in use on the network.",
            type="NetworkInUse",
        )
    for subnet in session.execute(select(Subnet).where(Subnet.network_id == net.id)).scalars():
        session.delete(subnet)
    session.flush()
    session.delete(net)
