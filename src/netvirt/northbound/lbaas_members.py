"""Member service (Octavia v2 ``/v2/lbaas/pools/{pool_id}/members``) and health reports.

A member is a backend address and port. Its ``operating_status`` is
``NO_MONITOR`` while the pool has no health monitor; with one it is
``OFFLINE`` until a host reports the result of a health check through
:func:`set_member_operating_status` (the checks themselves run on the hosts,
see the agent). Reports change discovered state only, so they do not bump the
member's ``revision_number``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from netvirt.model.lbaas import MemberCreate, MemberUpdate
from netvirt.northbound.access import fetch
from netvirt.northbound.context import Context
from netvirt.northbound.errors import Conflict, InvalidInput
from netvirt.northbound.lbaas_common import (
    ERROR,
    OFFLINE,
    ONLINE,
    apply,
    fetch_member,
    fetch_pool,
    members_of,
    monitor_of,
)
from netvirt.northbound.lbaas_status import recompute
from netvirt.northbound.schema import LoadBalancer, Member, Pool
from netvirt.northbound.schema.base import standard_fields
from netvirt.northbound.subnets import fetch_subnet

UPDATABLE = ("name", "weight", "backup", "admin_state_up", "tags")
NULLABLE = ("monitor_address", "monitor_port")
REPORTABLE = (ONLINE, OFFLINE, ERROR)


def to_dict(member: Member) -> dict[str, Any]:
    body = standard_fields(member) | {
        "address": member.address,
        "protocol_port": member.protocol_port,
        "subnet_id": member.subnet_id,
        "weight": member.weight,
        "backup": member.backup,
        "monitor_address": member.monitor_address,
        "monitor_port": member.monitor_port,
        "admin_state_up": member.admin_state_up,
        "provisioning_status": member.provisioning_status,
        "operating_status": member.operating_status,
    }
    del body["description"]  # Octavia members have no description
    return body


def _check_address(session: Session, ctx: Context, lb: LoadBalancer, req: MemberCreate) -> None:
    """Same IP version as the VIP, a unicast host address, inside ``subnet_id`` if given."""
    addr = ipaddress.ip_address(req.address)
    vip = ipaddress.ip_address(lb.vip_address)
    if addr.version != vip.version:
        raise InvalidInput(
            "address", f"{addr} is IPv{addr.version} but the VIP {vip} is IPv{vip.version}"
        )
    if addr.is_loopback or addr.is_multicast or addr.is_unspecified:
        raise InvalidInput("address", f"{addr} cannot be a backend address")
    if req.subnet_id is not None:
        subnet = fetch_subnet(session, ctx, req.subnet_id)
        if addr not in ipaddress.ip_network(subnet.cidr):
            raise InvalidInput("address", f"{addr} is not in subnet {subnet.id} ({subnet.cidr})")


def _check_unique(session: Session, pool_id: str, address: str, port: int) -> None:
    taken = session.execute(
        select(Member.id).where(
            Member.pool_id == pool_id, Member.address == address, Member.protocol_port == port
        )
    ).first()
    if taken:
        raise Conflict(
            f"Another member of pool {pool_id} already uses address {address} "
            f"on protocol_port {port}.",
            type="DuplicateMemberEntry",
        )


def create(session: Session, ctx: Context, pool_id: str, req: MemberCreate) -> dict[str, Any]:
    pool = fetch_pool(session, ctx, pool_id)
    lb = fetch(session, LoadBalancer, pool.loadbalancer_id, "load_balancer")
    _check_address(session, ctx, lb, req)
    _check_unique(session, pool.id, req.address, req.protocol_port)
    member = Member(
        project_id=pool.project_id,
        pool_id=pool.id,
        name=req.name,
        address=req.address,
        protocol_port=req.protocol_port,
        subnet_id=req.subnet_id,
        weight=req.weight,
        backup=req.backup,
        monitor_address=req.monitor_address,
        monitor_port=req.monitor_port,
        admin_state_up=req.admin_state_up,
        tags=list(req.tags),
    )
    session.add(member)
    recompute(session, lb.id)
    return to_dict(member)


def get(session: Session, ctx: Context, pool_id: str, ident: str) -> dict[str, Any]:
    return to_dict(fetch_member(session, ctx, pool_id, ident))


def list_all(session: Session, ctx: Context, pool_id: str) -> list[dict[str, Any]]:
    pool = fetch_pool(session, ctx, pool_id)
    return [to_dict(m) for m in members_of(session, pool.id)]


def update(
    session: Session, ctx: Context, pool_id: str, ident: str, req: MemberUpdate
) -> dict[str, Any]:
    member = fetch_member(session, ctx, pool_id, ident)
    changes = req.set_fields()
    apply(member, changes, UPDATABLE)
    for key in NULLABLE:
        if key in changes:
            setattr(member, key, changes[key])
    member.revision_number += 1
    _recompute_for(session, member)
    return to_dict(member)


def delete(session: Session, ctx: Context, pool_id: str, ident: str) -> None:
    member = fetch_member(session, ctx, pool_id, ident)
    pool = session.get(Pool, member.pool_id)
    session.delete(member)
    if pool is not None:
        recompute(session, pool.loadbalancer_id)


def _recompute_for(session: Session, member: Member) -> None:
    pool = session.get(Pool, member.pool_id)
    if pool is not None:
        recompute(session, pool.loadbalancer_id)


def set_member_operating_status(session: Session, member_id: str, status: str) -> dict[str, Any]:
    """Record a health check result (ONLINE, OFFLINE or ERROR) from a host.

    Re-derives the pool's and load balancer's operating status. A report for a
    member that is disabled or whose pool has no enabled monitor is ignored:
    such reports race with configuration changes and must not fail the agent.
    Called by trusted control-plane code, so it takes no tenant context.
    """
    if status not in REPORTABLE:
        raise InvalidInput("operating_status", f"'{status}' is not one of {', '.join(REPORTABLE)}")
    member = fetch(session, Member, member_id, "member")
    monitor = monitor_of(session, member.pool_id)
    if member.admin_state_up and monitor is not None and monitor.admin_state_up:
        member.operating_status = status
    _recompute_for(session, member)
    return to_dict(member)
